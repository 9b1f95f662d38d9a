"""checks.check_int and checks.check_float: the integer and real rules of the library's arguments, against hand-written tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustseg_lib import attacks, data, defenses, replicates, runtime, synthetic, training
from robustseg_lib.checks import check_float, check_int


@pytest.mark.parametrize(("value", "kw", "expected"), [
    (0, {}, 0), (7, {}, 7), (np.int64(3), {}, 3), (np.uint8(2), {"minimum": 2}, 2), (1, {"minimum": 1}, 1),
    (None, {"none_ok": True}, None), (5, {"minimum": 1, "none_ok": True}, 5),
])
def test_check_int_accepts_ints_at_or_above_the_minimum(value, kw, expected) -> None:
    out = check_int(value, "k", **kw)
    assert out == expected and (out is None or type(out) is int)  # numpy ints come back as Python ints


@pytest.mark.parametrize(("value", "kw", "message"), [
    (-1, {}, "k must be a non-negative int, got -1"),
    (True, {}, "k must be a non-negative int, got True"),
    (np.bool_(True), {}, "k must be a non-negative int, got "),
    (2.0, {}, "k must be a non-negative int, got 2.0"),
    ("3", {}, "k must be a non-negative int, got '3'"),
    (None, {}, "k must be a non-negative int, got None"),
    (0, {"minimum": 1}, "k must be an int >= 1, got 0"),
    (-3, {"none_ok": True}, "k must be a non-negative int or None, got -3"),
    (0, {"minimum": 1, "none_ok": True}, "k must be an int >= 1 or None, got 0"),
])
def test_check_int_refuses_with_a_message_that_names_the_parameter(value, kw, message) -> None:
    with pytest.raises(ValueError) as err:
        check_int(value, "k", **kw)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(("value", "kw", "expected"), [
    (0.5, {}, 0.5), (-2.0, {}, -2.0), (3, {}, 3.0), (np.float64(0.25), {}, 0.25), (np.float32(0.5), {}, 0.5),
    (np.int64(2), {"minimum": 0, "strict": True}, 2.0), (0.0, {"minimum": 0}, 0.0), (1e-300, {"minimum": 0, "strict": True}, 1e-300),
])
def test_check_float_accepts_finite_reals_as_python_floats(value, kw, expected) -> None:
    out = check_float(value, "f", **kw)
    assert out == expected and type(out) is float  # numpy floats come back as Python floats (weights_only-loadable)


@pytest.mark.parametrize(("value", "kw", "message"), [
    (float("nan"), {}, "f must be a finite number, got nan"),
    (float("inf"), {}, "f must be a finite number, got inf"),
    (np.float64("-inf"), {"minimum": 0}, "f must be a finite number >= 0, got "),
    (True, {}, "f must be a finite number, got True"),
    (np.bool_(False), {}, "f must be a finite number, got "),
    ("0.5", {}, "f must be a finite number, got '0.5'"),
    (None, {}, "f must be a finite number, got None"),
    (torch.tensor(0.5), {}, "f must be a finite number, got tensor(0.5000)"),
    (-0.1, {"minimum": 0}, "f must be a finite number >= 0, got -0.1"),
    (0.0, {"minimum": 0, "strict": True}, "f must be a finite number > 0, got 0.0"),
    (0.5, {"minimum": 1, "strict": True}, "f must be a finite number > 1, got 0.5"),
])
def test_check_float_refuses_with_a_message_that_names_the_parameter(value, kw, message) -> None:
    with pytest.raises(ValueError) as err:
        check_float(value, "f", **kw)
    assert str(err.value).startswith(message)


_NET = torch.nn.Conv3d(4, 4, 1)


def _sweep(**kw):
    """attack_sweep on two 4-channel 4³ cases, with one argument changed."""
    x, y = torch.zeros(2, 4, 4, 4, 4), torch.zeros(2, 4, 4, 4, dtype=torch.long)
    return attacks.attack_sweep(_NET, x, y, attack="ifgsm", eps_grid=[0.0], progress=False, hd95=False, **kw)


@pytest.mark.parametrize(("call", "name"), [
    (lambda: runtime.seed_everything(True), "seed must be a non-negative int"),
    (lambda: synthetic.generate_case(-1, (24, 24, 24)), "seed must be a non-negative int"),
    (lambda: data.bootstrap_cases(["a"], {"a": "test"}, 1.0), "seed must be a non-negative int"),
    (lambda: data.prepare_synthetic("x.npz", 2, workers=0), "workers must be an int >= 1"),
    (lambda: data.prepare_synthetic("x.npz", 0), "n_cases must be an int >= 1"),
    (lambda: replicates.run_level_min_p(0), "n_runs must be an int >= 1"),
    (lambda: runtime.limit_threads(False), "budget must be an int >= 1 or None"),
    (lambda: attacks.SlidingWindowModel(_NET, (4, 4, 4), sw_batch_size=1.5), "sw_batch_size must be an int >= 1"),
    (lambda: _sweep(batch_size=2.5), "batch_size must be an int >= 1"),  # int(2.5) once passed, then range() failed
    (lambda: _sweep(batch_size=0), "batch_size must be an int >= 1"),
    (lambda: _sweep(metric_workers=-1), "metric_workers must be a non-negative int"),
    (lambda: _sweep(steps=2.0), "steps must be an int >= 1"),
    (lambda: _sweep(alpha_frac=float("inf")), "alpha_frac must be a finite number > 0"),  # `inf > 0` once passed
    (lambda: defenses.AdversarialAugmenter(alpha_frac=0.0), "alpha_frac must be a finite number > 0"),
    (lambda: defenses.AdversarialAugmenter(steps=2.5), "steps must be an int >= 1"),
    (lambda: training.TrainConfig(epochs=2.5), "epochs must be an int >= 1"),
    (lambda: training.TrainConfig(lr=float("inf")), "lr must be a finite number > 0"),
])
def test_the_library_uses_it(call, name) -> None:
    """The public functions that take counts, seeds and real-valued settings refuse through check_int or check_float (their
    message, the parameter named)."""
    with pytest.raises(ValueError, match=name):
        call()
