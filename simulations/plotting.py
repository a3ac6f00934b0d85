"""Drawing helpers every report figure shares: a display-free figure and an atomic PNG save.

Their own module so that any report section (``figures``, ``cost_report``) can draw without
importing another section: the figures module draws the cost figure, so the cost report
borrowing helpers from it would make the two import each other.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any


def new_figure(width: float = 7.0, height: float = 4.5) -> Any:
    """A ``matplotlib.figure.Figure`` (not pyplot: no display, no global backend switch)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def save_png(fig: Any, path: str | Path) -> Path:
    """Save as PNG via a temp file in the same folder and a rename: never half a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=120)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path
