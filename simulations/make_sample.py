"""Cut the small bundled sample out of a LaMP-format directory (provenance of shared/sample).

    python -m oppu.simulations.make_sample \
        ../shared/data/huffpost_lamp2n shared/sample/huffpost_lamp2n
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TEST_USERS = ["Carol Kuruvilla", "Dave Jamieson", "Marita Vlachou", "Antonia Blumberg"]
BASE_USERS = 80  # first N base users (one query each) for task adaptation


def main(source: str, target: str) -> None:
    src, dst = Path(source), Path(target)
    questions = json.loads((src / "questions.json").read_text())
    outputs = json.loads((src / "outputs.json").read_text())
    split = json.loads((src / "split.json").read_text())
    base = split["base_users"][:BASE_USERS]
    keep_users = set(TEST_USERS) | set(base)
    kept = [q for q in questions if q["user_id"] in keep_users]
    ids = {q["id"] for q in kept}
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "questions.json").write_text(json.dumps(kept, ensure_ascii=False))
    golds = [g for g in outputs["golds"] if g["id"] in ids]
    (dst / "outputs.json").write_text(
        json.dumps({"task": outputs["task"], "golds": golds}, ensure_ascii=False)
    )
    (dst / "split.json").write_text(json.dumps({"test_users": TEST_USERS, "base_users": base}))
    users: dict[str, list[str]] = {}
    for q in kept:
        users.setdefault(q["user_id"], []).append(q["id"])
    (dst / "users.json").write_text(json.dumps(users, ensure_ascii=False))
    # One test user's history as a per-user JSONL, the format oppu-client reads.
    last = [q for q in kept if q["user_id"] == TEST_USERS[0]][-1]
    with (dst.parent / "my_history.jsonl").open("w") as fh:
        for item in last["profile"]:
            fh.write(json.dumps(item, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
