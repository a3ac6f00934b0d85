"""What DP costs in accuracy of the estimate: each cohort metric's error against epsilon.

No training: the cohort's exact statistics come from a LaMP directory's test users answered by
their own majority label (the ``majority`` baseline), drawn with replacement into cohorts of
10, 100 and 1,000 users. For each epsilon the round's Skellam noise is planned exactly as the
coordinator plans it (``dp_mechanism.calibrate`` on the statistics' sensitivities), drawn onto
the exact sums many times, and the metrics recomputed from the noisy sums (clipped at 0, as
the coordinator does) and clipped into [0, 1]. The error is the root mean square difference
from the exact metric;
where noise took the count to 0 a metric is undefined (n/a), the share of such draws is given.

    python -m oppu.simulations.dp_error --data ../shared/data/huffpost_lamp2n --out runs/dp_error
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from oppu.shared.dp_bounds import DEFAULT_MAX_QUERIES, bound_contribution, contribution_bounds
from oppu.shared.federation.dp_mechanism import calibrate, grid_scale
from oppu.shared.federation.dp_noise import skellam
from oppu.shared.metrics import MetricSpec, make_metric
from oppu.shared.noisy_stats import clamped

COHORTS = (10, 100, 1000)
EPSILONS = (0.1, 0.3, 1.0, 3.0, 10.0)
METRICS = ("accuracy", "f1")


def user_vectors(data: Path, max_queries: int) -> tuple[MetricSpec, np.ndarray]:
    """Every test user's bounded statistics under the majority-label baseline."""
    from oppu.shared.data.cohort import load_cohort
    from oppu.shared.personal.user_run import majority_label
    from oppu.shared.tasks import get_task

    cohort = load_cohort(data)
    task = get_task(cohort.dataset.spec.name)
    metric = make_metric(task.kind, cohort.labels())
    rows = []
    for partition in range(len(cohort)):
        user = cohort.user(partition)
        golds = [q.gold for q in user.answered]
        guess = majority_label(task, user.history)
        vector = metric.to_vector(metric.stats_for([guess] * len(golds), golds))
        rows.append(bound_contribution(metric, vector, max_queries))
    return metric, np.asarray(rows)


def error_table(data: Path, *, delta: float = 1e-5, max_queries: int = DEFAULT_MAX_QUERIES,
                draws: int = 1000, seed: int = 0, stat_bound: float = 1 << 20) -> list[dict]:
    """One row per (cohort size, epsilon): noise std per sum, each metric's RMS error.

    ``stat_bound`` only sets the grid: large enough for any epsilon here's noise to fit.
    """
    rng = np.random.default_rng(seed)
    metric, vectors = user_vectors(data, max_queries)
    names = metric.stat_names()
    bounds = contribution_bounds(metric, max_queries)
    scale = grid_scale(stat_bound)
    cohorts = {size: vectors[rng.integers(0, len(vectors), size)].sum(axis=0)
               for size in COHORTS}
    rows = []
    for epsilon in EPSILONS:
        variance = calibrate(bounds, stat_bound, epsilon=epsilon, delta=delta).variance
        for size, exact in cohorts.items():
            truth = metric.compute(dict(zip(names, exact, strict=True)))
            noise = skellam(rng, variance, draws * len(names)).reshape(draws, len(names))
            errors = {m: [] for m in METRICS}
            for draw in exact + noise / scale:
                noisy = metric.compute(clamped(dict(zip(names, draw, strict=True))))
                for m in METRICS:  # both lie in [0, 1]: clipping is free post-processing
                    errors[m].append(min(max(noisy[m], 0.0), 1.0) - truth[m])
            rows.append({"users": size, "epsilon": epsilon, "delta": delta,
                         "queries": float(exact[names.index("count")]),
                         "noise_std": math.sqrt(variance) / scale,
                         **{f"{m}_exact": truth[m] for m in METRICS},
                         **{f"{m}_rmse": float(np.sqrt(np.nanmean(np.square(errors[m]))))
                            for m in METRICS},
                         "undefined": float(np.mean(np.isnan(errors["accuracy"])))})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| users | queries | epsilon | noise std per sum | accuracy (exact) | "
             "accuracy RMS error | macro-F1 (exact) | macro-F1 RMS error |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["users"], r["epsilon"])):
        gone = f" ({r['undefined']:.0%} n/a)" if r["undefined"] else ""
        lines.append(f"| {r['users']} | {r['queries']:.0f} | {r['epsilon']:g} | "
                     f"{r['noise_std']:.1f} | {r['accuracy_exact']:.3f} | "
                     f"{r['accuracy_rmse']:.3f}{gone} | {r['f1_exact']:.3f} | "
                     f"{r['f1_rmse']:.3f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> Path:
    from oppu.simulations.plotting import new_figure, save_png

    fig = new_figure(9.0, 4.0)
    for i, name in enumerate(METRICS):
        ax = fig.add_subplot(1, 2, i + 1)
        for size in COHORTS:
            mine = sorted((r for r in rows if r["users"] == size), key=lambda r: r["epsilon"])
            ax.plot([r["epsilon"] for r in mine], [r[f"{name}_rmse"] for r in mine],
                    marker="o", label=f"{size} users")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("epsilon per round")
        ax.set_ylabel(f"RMS error of {'macro-F1' if name == 'f1' else name}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    return save_png(fig, path)


def main(data: Annotated[Path, typer.Option(help="LaMP directory (its test users).")],
         out: Annotated[Path, typer.Option(help="Where the table and figure go.")],
         delta: Annotated[float, typer.Option(help="Delta of each round.")] = 1e-5,
         max_queries: Annotated[int, typer.Option(help="dp-max-queries.")] = DEFAULT_MAX_QUERIES,
         draws: Annotated[int, typer.Option(help="Noise draws per cell.")] = 1000) -> None:
    """Write ``dp_error.md`` and ``figDP_error.png`` under ``out``."""
    rows = error_table(data, delta=delta, max_queries=max_queries, draws=draws)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows)
    (out / "dp_error.md").write_text(table + "\n")
    typer.echo(table)
    typer.echo(f"Figure: {plot(rows, out / 'figDP_error.png')}")


if __name__ == "__main__":
    typer.run(main)
