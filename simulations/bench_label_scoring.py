"""Label scoring's seconds per query on this machine, at each k, scored together (as an
evaluation does) and one at a time.

    python -m oppu.simulations.bench_label_scoring --queries 15 --k 0,1,4

Prints one line per k and a ``LABEL_SCORING_JSON {...}`` line; the issue 15 target is at most
0.5 s per query for a 25-label task on this CPU.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence

JSON_PREFIX = "LABEL_SCORING_JSON "


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/huffpost_lamp2n",
                        help="a LaMP directory of a closed-label task")
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--k", default="0,1,4", help="retrieved items per prompt, comma-separated")
    parser.add_argument("--base-model", default=None, help="default: the embedded model")
    return parser.parse_args(argv)


def time_scored_together(model, tokenizer, task, queries: Sequence, *, k: int = 0
                         ) -> tuple[float, list]:
    """Seconds per query of ``label_scores`` over ``queries`` scored together, as an
    evaluation scores them, after a one-query warm-up (kernels, allocator); and the scores."""
    from oppu.shared.personal.evaluation import label_scores

    label_scores(model, tokenizer, task, queries[:1], k=k)
    start = time.perf_counter()
    scored = label_scores(model, tokenizer, task, queries, k=k)
    return (time.perf_counter() - start) / len(queries), scored


def main(argv: Sequence[str] | None = None) -> dict:
    from oppu.shared.data.lamp import load_lamp
    from oppu.shared.llm.chat import encode_prompt
    from oppu.shared.llm.model import load_base_model
    from oppu.shared.personal.evaluation import EvalQuery, label_scores, retrieved_items

    args = parse_args(argv)
    model, tokenizer, _plan = load_base_model(args.base_model, device="cpu")
    dataset = load_lamp(args.data)
    task = dataset.spec
    queries = [EvalQuery(q.input, q.gold or "", tuple(q.profile))
               for q in dataset.queries[: args.queries]]
    result: dict = {"task": task.name, "queries": len(queries), "by_k": {}}
    for k in (int(v) for v in args.k.split(",")):
        together, scored = time_scored_together(model, tokenizer, task, queries, k=k)
        start = time.perf_counter()
        for query in queries:
            label_scores(model, tokenizer, task, [query], k=k)
        alone = (time.perf_counter() - start) / len(queries)
        lengths = sorted(len(encode_prompt(tokenizer, task.build_prompt(q.input, retrieved=r)))
                         for q, r in zip(queries, retrieved_items(task, queries, k), strict=True))
        row = {"seconds_per_query_together": round(together, 3),
               "seconds_per_query_alone": round(alone, 3),
               "labels": max(len(labels) for labels, _ in scored),
               "prompt_tokens_median": lengths[len(lengths) // 2]}
        result["by_k"][str(k)] = row
        print(f"k={k}: {together:.3f} s/query together, {alone:.3f} s/query alone "
              f"({row['labels']} labels, median prompt {row['prompt_tokens_median']} tokens)",
              flush=True)
    print(JSON_PREFIX + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
