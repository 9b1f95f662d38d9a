"""How busy the accelerator is: the union of its kernel intervals over a wall-clock window.

Used by ``benchmarks/bench_training.py`` for the "GPU busy during training" figure. The
kernel intervals come from ``torch.profiler`` (no extra dependency such as pynvml); busy time
is the *union* of the intervals, so kernels overlapping on several streams are not counted twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import torch

__all__ = ["interval_union", "busy_fraction_of_events", "device_busy_fraction"]


def interval_union(intervals: Iterable[tuple[float, float]]) -> float:
    """Total length covered by a set of ``(start, end)`` intervals (overlaps counted once).

    Args:
        intervals: pairs with ``start <= end``, any order, any unit.

    Returns:
        The length of their union (0 for none).
    """
    spans = sorted((float(a), float(b)) for a, b in intervals)
    total, cur_a, cur_b = 0.0, None, None
    for a, b in spans:
        if b < a:
            raise ValueError(f"interval ({a}, {b}) ends before it starts")
        if cur_b is None or a > cur_b:
            if cur_b is not None:
                total += cur_b - cur_a  # type: ignore[operator]
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_b is not None:
        total += cur_b - cur_a  # type: ignore[operator]
    return total


def busy_fraction_of_events(events: Iterable, device_type: torch.autograd.DeviceType, wall_us: float) -> float:
    """Fraction of ``wall_us`` covered by profiler events of one device type.

    Args:
        events: ``prof.events()`` of a finished ``torch.profiler.profile``.
        device_type: e.g. ``DeviceType.CUDA`` for GPU kernels and copies.
        wall_us: the window's wall time in microseconds (> 0).

    Returns:
        Busy fraction in [0, 1] (clipped: profiler clocks can overshoot the window by a few µs).
    """
    if not wall_us > 0:
        raise ValueError(f"wall_us must be > 0, got {wall_us}")
    spans = [(e.time_range.start, e.time_range.end) for e in events if e.device_type == device_type]
    return min(1.0, interval_union(spans) / wall_us)


def device_busy_fraction(fn: Callable[[], object], device: torch.device | str) -> tuple[float | None, float]:
    """Run ``fn`` under the profiler and measure how busy ``device`` was.

    Args:
        fn: the workload (e.g. a few training steps); called once.
        device: a CUDA device, or the CPU (then no busy fraction is measured).

    Returns:
        ``(busy fraction or None on the CPU, wall seconds)``.
    """
    dev = torch.device(device)
    if dev.type != "cuda":
        t = time.perf_counter()
        fn()
        return None, time.perf_counter() - t
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize(dev)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize(dev)
        wall = time.perf_counter() - t
    return busy_fraction_of_events(prof.events(), torch.autograd.DeviceType.CUDA, wall * 1e6), wall
