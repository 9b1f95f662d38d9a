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
