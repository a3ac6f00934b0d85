"""Variant families (the compared methods of a suite), one module each, registered on import.

``registry`` holds the grammar; importing this package registers the built-in families (each
family's ``order`` places it in the paper's order). A new family: one module with a
``Family`` subclass and ``register_family``, plus its import below.
"""

from oppu.shared.personal.variants import (  # noqa: F401  (each registers its families)
    baselines,
    non_personalized,
    oppu,
    profile,
)
from oppu.shared.personal.variants.registry import (
    FAMILIES,
    Family,
    Variant,
    ordered_families,
    parse_variant,
    register_family,
    variant_forms,
)

__all__ = ["FAMILIES", "Family", "Variant", "ordered_families", "parse_variant",
           "register_family", "variant_forms"]
