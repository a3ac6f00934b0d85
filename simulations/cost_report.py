"""What a simulation cost (paper Appendix B): per-user time and where it went, throughput,
memory, growth.

Reads the ``cost`` dict ``oppu.simulations.simulate`` puts in the table: one entry per user
with their training items, item length, seconds, time split and worker memory after the user,
plus the run's users per hour and the peak memory of every process the simulation ran
(SuperLink, Ray, workers).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from oppu.simulations.plotting import new_figure, save_png

CORE_PHASES = ("training", "evaluation")
"""The work a user is simulated for; every other phase is overhead to keep small."""


def growth_fit(per_user: list[Mapping[str, Any]], along: str = "train_items"
               ) -> tuple[float, float] | None:
    """Least-squares seconds = a + b * ``along`` over the users (None below 3 users)."""
    points = [(float(u[along]), float(u["seconds"])) for u in per_user
              if u.get("seconds") is not None and u.get(along) is not None]
    if len(points) < 3 or len({x for x, _ in points}) < 2:
        return None
    x, y = np.array(points).T
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(slope)


def worker_memory(per_user: list[Mapping[str, Any]]) -> dict[str, list[float]]:
    """Each worker's resident memory (MB) after each of its users, in the order they
    finished (users from records that predate the measurement left out)."""
    rows = sorted((u for u in per_user if u.get("worker_rss_mb") is not None),
                  key=lambda u: u.get("finished") or 0.0)
    traces: dict[str, list[float]] = {}
    for u in rows:
        traces.setdefault(str(u.get("worker_pid")), []).append(float(u["worker_rss_mb"]))
    return traces


def memory_growth(traces: Mapping[str, list[float]]) -> dict[str, float] | None:
    """How the workers' resident memory moved after their first user: the largest rise of
    any worker from its first user to its last, and the least-squares slope per user."""
    long = [t for t in traces.values() if len(t) >= 3]
    if not long:
        return None
    slopes = [float(np.polyfit(np.arange(len(t)), t, 1)[0]) for t in long]
    return {"users_max": max(map(len, long)),
            "rise_mb_max": round(max(t[-1] - t[0] for t in long), 1),
            "slope_mb_per_user_max": round(max(slopes), 2),
            "rss_mb_max": round(max(max(t) for t in long), 1)}


def split_markdown(split: Mapping[str, float]) -> str:
    total = sum(split.values()) or 1.0
    parts = ", ".join(f"{name} {100 * value / total:.1f}%" for name, value
                      in sorted(split.items(), key=lambda kv: -kv[1]))
    overhead = 100 * sum(v for k, v in split.items() if k not in CORE_PHASES) / total
    return (f"- Where the workers' time went (users computed in this run): {parts}; "
            f"everything but training and evaluation: {overhead:.1f}%.")


def cost_markdown(cost: Mapping[str, Any]) -> list[str]:
    """The cost section of ``table1.md`` as Markdown lines."""
    resumed = cost.get("resumed") or 0
    lines = [f"- Users: {cost.get('users')} ({resumed} answered from an earlier run's "
             f"record); this run's round took {cost.get('round_seconds')} s with "
             f"{cost.get('workers_this_run')} simulation worker(s) training, each loading "
             "the base once."]
    lines.append(f"- Per-user wall time (every variant of the suite): median "
                 f"{cost.get('user_seconds_median')} s, max {cost.get('user_seconds_max')} s; "
                 f"{cost.get('users_per_hour_per_worker')} users per hour per worker"
                 + (f", {cost['users_per_hour']} users per hour in this run."
                    if cost.get("users_per_hour") else "."))
    if cost.get("time_split"):
        lines.append(split_markdown(cost["time_split"]))
    if cost.get("worker_peak_rss_mb_max"):
        lines.append(f"- Peak resident memory of one worker: "
                     f"{cost['worker_peak_rss_mb_max']:.0f} MB (largest over the users' "
                     "records).")
    growth = memory_growth(worker_memory(list(cost.get("per_user", ()))))
    if growth:
        lines.append(f"- Resident memory of a worker after each user: at most "
                     f"{growth['rss_mb_max']:.0f} MB; from its first user to its last (up to "
                     f"{growth['users_max']} users) it rose by at most "
                     f"{growth['rise_mb_max']:.0f} MB, slope at most "
                     f"{growth['slope_mb_per_user_max']:.2f} MB per user.")
    if cost.get("peak_rss_mb_all_processes") is not None:
        lines.append(f"- Peak resident memory of all simulation processes together during "
                     f"this run: {cost['peak_rss_mb_all_processes']:.0f} MB.")
    per_user = list(cost.get("per_user", ()))
    fit = growth_fit(per_user)
    if fit is not None:
        lines.append(f"- Cost growth with history length: about {fit[0]:.0f} s + "
                     f"{fit[1]:.2f} s per training item (least squares over the users).")
    fit = growth_fit(per_user, "train_item_words_mean")
    if fit is not None:
        lines.append(f"- Cost growth with item length: about {fit[0]:.0f} s + "
                     f"{fit[1]:.2f} s per word of a user's mean training item.")
    return lines


def cost_figure(cost: Mapping[str, Any], path: str | Path) -> Path:
    """Per-user seconds against history length and against item length, each with its
    linear fit (Appendix B, both halves), and each worker's memory after every user."""
    per_user = [u for u in cost.get("per_user", ()) if u.get("seconds") is not None]
    if len(per_user) < 2:
        raise ValueError("fewer than two users with timings")
    traces = worker_memory(per_user)
    fig = new_figure(width=15.0 if traces else 10.0, height=4.5)
    axes = fig.subplots(1, 3 if traces else 2)
    for ax, along, label, unit in ((axes[0], "train_items", "training history items", "item"),
                                   (axes[1], "train_item_words_mean",
                                    "mean words per training item", "word")):
        users = [u for u in per_user if u.get(along) is not None]
        ax.set_xlabel(label)
        if not users:
            ax.text(0.5, 0.5, "not recorded", ha="center", transform=ax.transAxes)
            continue
        x = [u[along] for u in users]
        ax.scatter(x, [u["seconds"] for u in users], label="users")
        fit = growth_fit(users, along)
        if fit is not None:
            xs = np.linspace(min(x), max(x), 20)
            ax.plot(xs, fit[0] + fit[1] * xs, linestyle="--",
                    label=f"{fit[0]:.0f} s + {fit[1]:.2f} s/{unit}")
        ax.set_ylabel("wall time per user (s, whole suite)")
        ax.legend()
    axes[0].set_title("Cost per user vs history length")
    axes[1].set_title("Cost per user vs item length")
    if traces:
        ax = axes[2]
        for pid, trace in traces.items():
            ax.plot(range(1, len(trace) + 1), trace, marker=".", label=f"worker {pid}")
        ax.set_xlabel("users done by the worker")
        ax.set_ylabel("resident memory after the user (MB)")
        ax.set_title("Worker memory over users")
        ax.set_ylim(bottom=0)
        if len(traces) <= 8:
            ax.legend()
    return save_png(fig, path)
