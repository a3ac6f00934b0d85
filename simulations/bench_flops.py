"""How close a training run comes to this CPU's limit: FLOPs counted by torch, peak measured.

A run's FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` wrapped around the whole
training (forward, backward, and a checkpointed pipeline's recomputation). torch counts its
CUDA attention kernels but not the CPU flash-attention kernel that SDPA picks here, so that
one is added with torch's own SDPA formulas. The peak is this machine's, measured now: the
best rate of ``torch.mm`` on the model's own matrix shapes with the same threads and dtype.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

PEAK_ROWS = (256, 512, 1024, 2048)
"""Token counts the peak is measured at: a batch's tokens, from small to large."""


def _cpu_attention_formulas() -> dict:
    import torch
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten

    def forward(query, key, value, *_args, **_kwargs) -> int:
        return sdpa_flop_count(query.shape, key.shape, value.shape)

    def backward(grad_out, query, key, value, *_args, **_kwargs) -> int:
        return sdpa_backward_flop_count(grad_out.shape, query.shape, key.shape, value.shape)

    forward._get_raw = backward._get_raw = True  # the counter hands raw tensors to these
    return {aten._scaled_dot_product_flash_attention_for_cpu: forward,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: backward}


@contextmanager
def counted_flops(*, per_module: bool = False, enabled: bool = True
                  ) -> Iterator[dict[str, int]]:
    """Count the FLOPs of everything torch runs inside; ``total`` is set on exit (left unset
    when not ``enabled``: the counter sees every op in Python, and slowed oppu's loop 1.7x).

    Without ``per_module`` torch's counter runs without its module tracker: the tracker hooks
    every module's outputs, and under activation checkpointing that kept the reference's
    activations alive (3 of its steps on 100 items: peak RSS 10.9 GB with the tracker, 3.8 GB
    without, and 15% slower).
    """
    from torch.utils.flop_counter import FlopCounterMode, _FlopCounterMode

    class GlobalFlopCounter(FlopCounterMode):
        def __enter__(self):
            self.flop_counts.clear()
            self.mode = _FlopCounterMode(self)
            self.mode.__enter__()
            return self

        def __exit__(self, *args):
            done, self.mode = self.mode.__exit__(*args), None
            return done

    result: dict[str, int] = {}
    if not enabled:
        yield result
        return
    kind = FlopCounterMode if per_module else GlobalFlopCounter
    counter = kind(display=False, custom_mapping=_cpu_attention_formulas())
    with counter:
        yield result
    result["total"] = int(counter.get_total_flops())


def matmul_peak_gflops(hidden: int, intermediate: int, *, dtype: str = "float32",
                       device: str = "cpu", rows: tuple[int, ...] = PEAK_ROWS,
                       seconds: float = 0.5) -> dict:
    """The best ``torch.mm`` rate on the model's MLP shapes (both directions), in GFLOPS.

    Runs with torch's current threads, so the caller sets them as the benchmark does.
    """
    import torch

    torch_dtype = getattr(torch, dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    best, best_shape = 0.0, None
    for m in rows:
        for k, n in ((hidden, intermediate), (intermediate, hidden)):
            a = torch.randn(m, k, dtype=torch_dtype, device=device)
            b = torch.randn(k, n, dtype=torch_dtype, device=device)
            torch.mm(a, b)  # warm up
            sync()
            calls, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds or calls < 3:
                torch.mm(a, b)
                sync()
                calls += 1
            rate = 2 * m * k * n * calls / elapsed / 1e9
            if rate > best:
                best, best_shape = rate, [m, k, n]
    return {"gflops": best, "shape": best_shape, "dtype": dtype, "device": device,
            "threads": torch.get_num_threads()}


def flop_rates(flops: int, seconds: float, peak_gflops: float) -> dict:
    """GFLOPS of ``flops`` done in ``seconds``, and that rate's share of the peak."""
    rate = flops / seconds / 1e9 if seconds > 0 else 0.0
    return {"gflops_per_second": rate, "peak_fraction": rate / peak_gflops if peak_gflops else None}
