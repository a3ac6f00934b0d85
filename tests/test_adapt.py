"""Task-adaptation examples: the three variants of the paper differ only in their prompts."""

from __future__ import annotations

from pathlib import Path

import pytest

from oppu.coordinator.adapt import AdaptSettings, adaptation_examples
from oppu.shared.data import load_lamp

TINY = Path(__file__).parent / "fixtures" / "lamp2n_tiny"


@pytest.fixture
def dataset():
    return load_lamp(TINY)


def base_users(dataset):
    """The fixture is too small for a 100-user test cohort: let every user adapt here."""
    return list(dataset.users())


def test_plain_examples_are_base_users_queries_with_golds(dataset):
    users = base_users(dataset)
    examples = adaptation_examples(dataset, users, AdaptSettings(variant="plain"))
    golds = [q.gold for q in dataset.queries if q.user_id in set(users) and q.gold is not None]
    assert [e.target for e in examples] == golds
    assert all(not e.unsupervised for e in examples)


def test_rag_prompts_carry_a_retrieved_item(dataset):
    users = base_users(dataset)
    plain = adaptation_examples(dataset, users, AdaptSettings(variant="plain"))
    rag = adaptation_examples(dataset, users, AdaptSettings(variant="rag", k=1))
    assert len(rag) == len(plain)
    longer = [r for r, p in zip(rag, plain, strict=True) if len(r.prompt) > len(p.prompt)]
    assert longer, "no rag prompt gained retrieved context"
    assert all(r.prompt.endswith(p.prompt) for r, p in zip(rag, plain, strict=True))


def test_profile_variant_prepends_the_written_profile(dataset):
    users = base_users(dataset)
    seen = []

    def profile_of(items):
        seen.append(len(items))
        return "PROFILE: writes about politics"

    examples = adaptation_examples(dataset, users, AdaptSettings(variant="profile"),
                                   profile_of=profile_of)
    assert seen and all(n > 0 for n in seen)
    assert sum(e.prompt.startswith("PROFILE: writes about politics") for e in examples) == len(seen)


def test_profile_variant_needs_a_writer(dataset):
    with pytest.raises(ValueError, match="profile_of"):
        adaptation_examples(dataset, base_users(dataset), AdaptSettings(variant="profile"))


def test_max_examples_caps_the_list(dataset):
    examples = adaptation_examples(dataset, base_users(dataset), AdaptSettings(max_examples=1))
    assert len(examples) == 1


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="variant"):
        AdaptSettings(variant="bogus")
