"""Tests of robustseg_lib.models: checkpoint errors and prediction helpers (oracles: hand-built inputs)."""

from __future__ import annotations

import pytest
import torch

from robustseg_lib import models


class _Twice(torch.nn.Module):
    """A network without parameters: logits = the input's first 4 channels, doubled."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x[:, :4]


def test_predict_classes_runs_a_network_without_parameters() -> None:
    """A parameter-free module (a fixed function, a test double) has no device of its own: the images' device is
    used instead of raising a bare StopIteration from ``next(net.parameters())``. Oracle: argmax by hand."""
    x = torch.zeros(3, 4, 2, 2, 2)
    x[0, 1], x[1, 3], x[2, 2] = 1.0, 1.0, 1.0
    out = models.predict_classes(_Twice(), x, batch_size=2)
    assert out.dtype == torch.int64
    assert out[0].unique().tolist() == [1] and out[1].unique().tolist() == [3] and out[2].unique().tolist() == [2]


@pytest.mark.parametrize(("spec", "what"), [
    ({"name": "unet", "kwargs": {"channels": [4, 8], "strides": [2, 2]}}, "len\\(strides\\)"),
    ({"name": "unet", "kwargs": [4, 8]}, "kwargs"),
    ({"name": "nope"}, "unknown model name"),
    ({"name": "unet", "kwargs": {"channels": [4, 8], "strides": [2]}, "logit_scale": "x"}, "logit_scale"),
    ({"name": "unet", "kwargs": {"channels": [4, 8], "strides": [2]}, "logit_scale": -1.0}, "logit_scale"),
])
def test_load_model_names_the_file_when_its_spec_is_bad(tmp_path, spec, what) -> None:
    """A checkpoint whose spec cannot build a network is reported as a ValueError naming the file (and what is
    wrong), not as an error of build_unet without the path or a TypeError about ``**``. The bad logit scale is
    caught before the weights are compared (its message, not the state-dict mismatch)."""
    net = models.build_unet("unet", channels=(4, 8), strides=(2,), seed=0)
    path = tmp_path / "bad.pt"
    torch.save({"spec": spec, "state_dict": net.state_dict()}, path)
    with pytest.raises(ValueError, match=f"bad.pt: .*{what}"):
        models.load_model(path)


@pytest.mark.parametrize("scale", [float("inf"), float("nan"), 0.0, -2.0])
def test_logit_scale_must_be_positive_and_finite(scale) -> None:
    """An infinite factor would turn every logit into ±inf and the softmax into NaN."""
    with pytest.raises(ValueError, match="scale"):
        models.LogitScale(torch.nn.Identity(), scale)


def test_load_model_round_trip_restores_the_logit_scale(tmp_path) -> None:
    """Oracle: the saved network's own logits (same weights, same factor)."""
    net = models.LogitScale(models.build_unet("unet", channels=(4, 8), strides=(2,), seed=0), 3.0).eval()
    spec = models.model_spec("unet", width=4, levels=2)
    path = models.save_model(net, tmp_path / "m.pt", spec)
    back, spec2 = models.load_model(path)
    assert isinstance(back, models.LogitScale) and back.scale == 3.0 and spec2["logit_scale"] == 3.0
    x = torch.randn(1, 4, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(back(x), net(x))


# ----------------------------------------------------------------------------- session 21: weights_signature
def test_weights_signature_tells_apart_logit_scale_factors_and_dtypes() -> None:
    """Networks that compute different outputs never share a signature: the same weights under LogitScale 2 and 3
    (oracle: their outputs differ), and float64 weights against their float32 rounding (equal after the float32 cast
    the old signature hashed); a persistent buffer's or a non-persistent buffer's value, too."""
    torch.manual_seed(0)
    inner = torch.nn.Linear(3, 2)
    a, b = models.LogitScale(inner, 2.0), models.LogitScale(inner, 3.0)
    x = torch.ones(1, 3)
    assert not torch.equal(a(x), b(x))
    assert models.weights_signature(a) != models.weights_signature(b)
    assert models.weights_signature(models.LogitScale(inner, 2.0)) == models.weights_signature(a)

    wide = torch.nn.Linear(3, 2).double()
    with torch.no_grad():
        wide.weight[0, 0] = 1.0 + 2.0**-40  # rounds to 1.0 in float32
    narrow = torch.nn.Linear(3, 2).double()
    narrow.load_state_dict({k: v.float().double() for k, v in wide.state_dict().items()})
    assert not torch.equal(wide.weight, narrow.weight) and torch.equal(wide.weight.float(), narrow.weight.float())
    assert models.weights_signature(wide) != models.weights_signature(narrow)
    assert models.weights_signature(narrow) != models.weights_signature(narrow.float())  # same values, other dtype

    m1, m2 = torch.nn.Module(), torch.nn.Module()
    m1.register_buffer("w", torch.zeros(2), persistent=False)
    m2.register_buffer("w", torch.ones(2), persistent=False)
    assert models.weights_signature(m1) != models.weights_signature(m2)
    with pytest.raises(TypeError, match="net must be a torch.nn.Module"):
        models.weights_signature({"w": torch.zeros(1)})  # type: ignore[arg-type]


def test_weights_signature_is_stable_and_matches_the_documented_byte_stream() -> None:
    """An unchanged network gives the same signature on every call and across train/eval mode; the value is SHA-1
    over the documented stream (oracle: hashlib over hand-written header, module line, tensor line and raw float32
    bytes); a bfloat16 network (which numpy cannot hold) is hashed from its own 2-byte values."""
    import hashlib

    import numpy as np

    lin = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0]]))
    want = hashlib.sha1(
        b"robustseg weights_signature v2\n"
        b":torch.nn.modules.linear.Linear(in_features=2, out_features=1, bias=False)\n"
        b"weight:(1, 2):torch.float32\n" + np.array([1.0, -2.0], dtype=np.float32).tobytes()
    ).hexdigest()
    assert models.weights_signature(lin) == want == models.weights_signature(lin.eval()) == models.weights_signature(lin.train())
    half = torch.nn.Linear(2, 1, bias=False).to(torch.bfloat16)
    with torch.no_grad():
        half.weight.copy_(torch.tensor([[1.0, -2.0]]))
    want_bf16 = hashlib.sha1(
        b"robustseg weights_signature v2\n"
        b":torch.nn.modules.linear.Linear(in_features=2, out_features=1, bias=False)\n"
        b"weight:(1, 2):torch.bfloat16\n" + np.array([0x3F80, 0xC000], dtype=np.uint16).tobytes()  # bfloat16 1.0, -2.0
    ).hexdigest()
    assert models.weights_signature(half) == want_bf16


def test_predict_classes_restores_each_submodules_mode(mode_probe) -> None:
    """A net in train mode with one submodule in eval mode (frozen) runs in eval mode and comes back exactly as it
    was: the frozen submodule still in eval mode, the rest in train mode (oracle: the probes' flags)."""
    frozen = type(mode_probe)()
    net = torch.nn.Sequential(mode_probe, _Twice(), frozen).train()
    frozen.eval()
    models.predict_classes(net, torch.zeros(1, 4, 2, 2, 2))
    assert mode_probe.seen == [False] and frozen.seen == [False]
    assert net.training and mode_probe.training and not frozen.training
