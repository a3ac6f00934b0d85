"""Where a user's time goes: named phases timed where they run, summed per user.

The pipeline marks its phases (``with phase("training"):``) wherever they run, however deep;
a caller that wants the split wraps the user's work in ``time_split()``. Time is exclusive: a
phase inside another (the evaluations that choose a private adapter's epoch, inside its
training) counts for the inner one only, so the parts add up to the whole. Without an
enclosing ``time_split`` a phase costs one context-variable lookup.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

UNMARKED = "other"
"""The split's name for the time no phase claimed (indexing, adapter I/O, bookkeeping)."""


@dataclass
class _Split:
    seconds: dict[str, float] = field(default_factory=dict)
    stack: list[str] = field(default_factory=lambda: [UNMARKED])
    mark: float = field(default_factory=time.perf_counter)

    def switch(self, push: str | None) -> None:
        """Charge the time since the last switch to the running phase, then enter ``push``
        (or leave the running phase when None)."""
        now = time.perf_counter()
        running = self.stack[-1]
        self.seconds[running] = self.seconds.get(running, 0.0) + now - self.mark
        self.mark = now
        if push is None:
            self.stack.pop()
        else:
            self.stack.append(push)


_CURRENT: ContextVar[_Split | None] = ContextVar("oppu_time_split", default=None)


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Count the enclosed work as ``name`` in the enclosing ``time_split`` (if any)."""
    split = _CURRENT.get()
    if split is None:
        yield
        return
    split.switch(name)
    try:
        yield
    finally:
        split.switch(None)


@contextmanager
def time_split() -> Iterator[dict[str, float]]:
    """Seconds per phase of the enclosed work, filled in when the block ends (rounded to
    milliseconds; ``UNMARKED`` holds what no phase claimed)."""
    split = _Split()
    token = _CURRENT.set(split)
    result: dict[str, float] = {}
    try:
        yield result
    finally:
        _CURRENT.reset(token)
        split.switch(None)
        result.update({name: round(seconds, 3) for name, seconds in split.seconds.items()})
