"""Task-adaptation examples: the three variants of the paper differ only in their prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TEST_HOME
from test_cli import run

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


# --- the base check (slow: the real model) ---------------------------------------------------

REVIEWS = ["Great blender, works as described.", "The strap broke after a week.",
           "Okay for the price, nothing special.", "Battery lasts two days, very happy.",
           "Arrived late and the box was crushed.", "My kids love this puzzle.",
           "Too small for my hands.", "Best coffee grinder I have owned.", "It does the job.",
           "Color faded after one wash."]
ASK = ("What is the score of the following review on a scale of 1 to 5? just answer with 1, "
       "2, 3, 4, or 5 without further explanation. review: ")


def five_star_lamp_dir(root: Path, users: int = 10) -> Path:
    """A LaMP-3-style set whose every gold is 5 and with no test users: all base users.
    The untuned embedded model answers 1 to these reviews, so "always 5" beats it."""
    questions, golds = [], []
    for u in range(users):
        profile = [{"id": f"p{u}-{i}", "text": REVIEWS[(u + i) % 10], "score": "5"}
                   for i in range(3)]
        for q in range(3):
            qid = f"{u}-{q}"
            questions.append({"id": qid, "input": ASK + REVIEWS[(u * 3 + q) % 10],
                              "profile": profile, "user_id": f"user{u}"})
            golds.append({"id": qid, "output": "5"})
    root.mkdir(parents=True)
    (root / "questions.json").write_text(json.dumps(questions))
    (root / "outputs.json").write_text(json.dumps({"task": "LaMP_3", "golds": golds}))
    (root / "split.json").write_text(json.dumps({"test_users": [],
                                                 "base_users": [f"user{u}" for u in range(users)]}))
    return root


@pytest.mark.slow
def test_adapt_refuses_a_base_below_the_trivial_answer_and_shows_its_table(tmp_path):
    data = five_star_lamp_dir(tmp_path / "lamp3")
    out = tmp_path / "base"
    args = ["oppu-coordinator", "adapt", "--data", str(data), "--epochs", "1", "--lr", "1e-7",
            "--max-steps", "1", "--out", str(out)]
    refused = run(*args, home=TEST_HOME)  # the converted embedded model; --out is tmp
    assert refused.returncode != 0
    text = refused.stdout + refused.stderr
    assert "Base check on 6 queries of 2 held-out base users (mae, lower is better)" in text
    assert "always '5' (the base users' most common answer)  0.000" in text
    assert "is worse than always '5'" in text and "Nothing was saved" in text
    assert not out.exists()

    kept = run(*args, "--accept-weak-base", home=TEST_HOME)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "Warning:" in kept.stdout + kept.stderr
    check = json.loads((out / "oppu_manifest.json").read_text())["training"]["check"]
    assert check["beaten_by"] == ["always '5' (the base users' most common answer)"]
    assert check["untuned"] == 4.0 and check["adapted"] > 0
    # The private adapters' recipe, chosen on the two held-out base users' own queries.
    recipe = json.loads((out / "oppu_manifest.json").read_text())["training"]["recipe"]
    assert recipe["lr"] in (1e-3, 3e-3) and 1 <= recipe["epochs"] <= 4
    assert len(recipe["users"]) == 2 and recipe["metric"] == "mae"
    assert "Private-adapter recipe chosen on 2 held-out base users" in kept.stdout + kept.stderr
