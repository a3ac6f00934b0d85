"""What a simulation cost (paper Appendix B): per-user time, throughput, memory, growth.

Reads the ``cost`` dict ``oppu.simulations.simulate`` puts in the table: one entry per user
with their training items and seconds, plus the run's users per hour and the peak memory of
every process the simulation ran (SuperLink, Ray, workers).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from oppu.simulations.plotting import new_figure, save_png


def growth_fit(per_user: list[Mapping[str, Any]]) -> tuple[float, float] | None:
    """Least-squares seconds = a + b * train_items over the users (None below 3 users)."""
    points = [(float(u["train_items"]), float(u["seconds"])) for u in per_user
              if u.get("seconds") is not None]
    if len(points) < 3 or len({x for x, _ in points}) < 2:
        return None
    x, y = np.array(points).T
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(slope)


def cost_markdown(cost: Mapping[str, Any]) -> list[str]:
    """The cost section of ``table1.md`` as Markdown lines."""
    resumed = cost.get("resumed") or 0
    lines = [f"- Users: {cost.get('users')} ({resumed} answered from an earlier run's "
             f"record); this run's round took {cost.get('round_seconds')} s with "
             f"{cost.get('workers_this_run')} simulation worker(s) training, each loading "
             "the base once."]
    lines.append(f"- Per-user wall time (every variant of the suite): median "
                 f"{cost.get('user_seconds_median')} s, max {cost.get('user_seconds_max')} s; "
                 f"{cost.get('users_per_hour_per_worker')} users per hour per worker.")
    if cost.get("worker_peak_rss_mb_max"):
        lines.append(f"- Peak resident memory of one worker: "
                     f"{cost['worker_peak_rss_mb_max']:.0f} MB (largest over the users' "
                     "records).")
    if cost.get("peak_rss_mb_all_processes") is not None:
        lines.append(f"- Peak resident memory of all simulation processes together during "
                     f"this run: {cost['peak_rss_mb_all_processes']:.0f} MB.")
    fit = growth_fit(list(cost.get("per_user", ())))
    if fit is not None:
        lines.append(f"- Cost growth with history length: about {fit[0]:.0f} s + "
                     f"{fit[1]:.2f} s per training item (least squares over the users).")
    return lines


def cost_figure(cost: Mapping[str, Any], path: str | Path) -> Path:
    """Per-user seconds against training items, with the linear fit (Appendix B)."""
    per_user = [u for u in cost.get("per_user", ()) if u.get("seconds") is not None]
    if len(per_user) < 2:
        raise ValueError("fewer than two users with timings")
    fig = new_figure()
    ax = fig.add_subplot()
    x = [u["train_items"] for u in per_user]
    y = [u["seconds"] for u in per_user]
    ax.scatter(x, y, label="users")
    fit = growth_fit(per_user)
    if fit is not None:
        xs = np.linspace(min(x), max(x), 20)
        ax.plot(xs, fit[0] + fit[1] * xs, linestyle="--",
                label=f"{fit[0]:.0f} s + {fit[1]:.2f} s/item")
    ax.set_xlabel("training history items")
    ax.set_ylabel("wall time per user (s, whole suite)")
    ax.set_title("Cost per user vs history length")
    ax.legend()
    return save_png(fig, path)
