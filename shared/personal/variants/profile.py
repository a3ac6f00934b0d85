"""The base with a generated user profile (PAG, or GPG's guided two steps) and top-J items."""

from __future__ import annotations

from oppu.shared.personal.variants.registry import Family, K, Variant, register_family


class Profile(Family):
    name = "profile"
    forms = ("pag-kJ", "gpg-kJ")
    group = "Profile"
    order = 3

    def patterns(self) -> tuple[str, ...]:
        return (r"(?P<profile>pag|gpg)" + K,)

    def label(self, variant: Variant) -> str:
        return f"{variant.profile.upper()} (k={variant.k})"

    def evaluate(self, run, variant: Variant):
        return run.evaluate(run.model, variant.k, variant.profile)


register_family(Profile())
