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


# ----------------------------------------------------------------------------- found by mutation testing (session 14)
def test_interval_union_accepts_zero_length_intervals() -> None:
    """start == end is allowed (the docstring's start <= end): hand, [1, 1] adds 0 and [2, 3] adds 1."""
    assert interval_union([(1, 1), (2, 3)]) == 1.0


def test_busy_fraction_clips_overshoot_and_refuses_nan_window() -> None:
    """A kernel interval 10 µs longer than the window (profiler clock overshoot) gives 1.0, not 1.1;
    a NaN window is not > 0 and is refused."""
    cuda = torch.autograd.DeviceType.CUDA
    assert busy_fraction_of_events([_Ev(0, 110, cuda)], cuda, 100.0) == 1.0
    with pytest.raises(ValueError, match="wall_us"):
        busy_fraction_of_events([_Ev(0, 1, cuda)], cuda, float("nan"))


def test_device_busy_fraction_other_devices_are_only_timed() -> None:
    """Every device but CUDA (here 'meta') gets no busy fraction, only the wall time; the workload runs once."""
    calls = []
    frac, wall = device_busy_fraction(lambda: calls.append(1), "meta")
    assert frac is None and wall >= 0 and calls == [1]


def test_device_busy_fraction_cuda_path_with_a_fake_profiler(monkeypatch) -> None:
    """The CUDA path without a GPU: torch.cuda.synchronize and torch.profiler.profile are replaced by fakes. The
    fake profiler reports one CUDA kernel lasting half of the workload's own duration (measured inside it), so the
    fraction must be that duration / 2 / the returned wall (both in s; at most 0.5, never clipped): microseconds
    over seconds × 10⁶. The clock stops only after a synchronize that follows the workload."""
    import time

    import torch.profiler

    calls: list[str] = []

    class _Prof:
        def __init__(self, activities) -> None:
            assert torch.profiler.ProfilerActivity.CUDA in activities

        def __enter__(self):
            calls.append("enter")
            return self

        def __exit__(self, *exc) -> None:
            calls.append("exit")

        def events(self) -> list:
            half_us = 0.5 * busy[0] * 1e6
            return [_Ev(0.0, half_us, torch.autograd.DeviceType.CUDA), _Ev(0.0, 1e12, torch.autograd.DeviceType.CPU)]

    busy: list[float] = []

    def work() -> None:
        calls.append("fn")
        t = time.perf_counter()
        time.sleep(0.01)
        busy.append(time.perf_counter() - t)

    monkeypatch.setattr(torch.profiler, "profile", _Prof)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda dev=None: calls.append("sync"))
    frac, wall = device_busy_fraction(work, "cuda")
    assert calls == ["sync", "enter", "fn", "sync", "exit"]
    assert 0 < busy[0] <= wall and frac == pytest.approx(0.5 * busy[0] / wall)
