"""The busy-fraction helper of the benchmarks: interval union by hand, profiler events on the CPU."""

from __future__ import annotations

import pytest
import torch

from robustseg_lib.profiling import busy_fraction_of_events, device_busy_fraction, interval_union


def test_interval_union_hand_computed() -> None:
    assert interval_union([]) == 0.0
    assert interval_union([(0, 2)]) == 2.0
    # [0,2] ∪ [1,3] = [0,3]; [5,6] separate; [5.5,5.8] inside it; [3,4] touches [0,3]
    assert interval_union([(5, 6), (1, 3), (0, 2), (5.5, 5.8), (3, 4)]) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="ends before"):
        interval_union([(2, 1)])


class _Ev:
    def __init__(self, a: float, b: float, dev) -> None:
        self.time_range = type("R", (), {"start": a, "end": b})()
        self.device_type = dev


def test_busy_fraction_counts_only_the_device_and_overlaps_once() -> None:
    cuda, cpu = torch.autograd.DeviceType.CUDA, torch.autograd.DeviceType.CPU
    events = [_Ev(0, 30, cuda), _Ev(20, 50, cuda), _Ev(0, 100, cpu), _Ev(80, 90, cuda)]
    assert busy_fraction_of_events(events, cuda, 100.0) == pytest.approx(0.6)
    assert busy_fraction_of_events(events, cpu, 100.0) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="wall_us"):
        busy_fraction_of_events(events, cuda, 0.0)


def test_busy_fraction_on_real_profiler_events_cpu() -> None:
    from torch.profiler import ProfilerActivity, profile

    a = torch.randn(256, 256)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            a = (a @ a).tanh()
    events = prof.events()
    span = max(e.time_range.end for e in events) - min(e.time_range.start for e in events)
    frac = busy_fraction_of_events(events, torch.autograd.DeviceType.CPU, span)
    assert 0.5 < frac <= 1.0  # the ops run back to back inside the window
    assert busy_fraction_of_events(events, torch.autograd.DeviceType.CUDA, span) == 0.0
    frac_none, wall = device_busy_fraction(lambda: a.sum(), "cpu")
    assert frac_none is None and wall >= 0
