"""Models, the training loop (resume, determinism, learning) and whole-volume prediction."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from robustseg_lib import models
from robustseg_lib.training import Objective, TrainConfig, TrainResult, dice_ce_objective, train


def _blob_data(n: int = 6, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Volumes with one bright ball per case: class = nested shells by distance (an easy task)."""
    g = torch.Generator().manual_seed(seed)
    zz, yy, xx = torch.meshgrid(*(torch.arange(size, dtype=torch.float32),) * 3, indexing="ij")
    imgs, labs = [], []
    for _ in range(n):
        c = 4 + torch.rand(3, generator=g) * (size - 8)
        r = torch.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2)
        lab = torch.zeros_like(r, dtype=torch.long)
        lab[r < 4.5] = 2
        lab[r < 3.0] = 3
        lab[r < 1.5] = 1
        img = torch.stack([(lab == k).float() * (0.5 + k) for k in (1, 2, 3)] + [(r < 4.5).float()])
        img = img + 0.3 * torch.randn(img.shape, generator=g)
        imgs.append(img)
        labs.append(lab)
    return torch.stack(imgs), torch.stack(labs)


def _tiny() -> torch.nn.Module:
    return models.build_unet("unet", seed=0, channels=(8, 16), strides=(2,), num_res_units=0)


def test_build_unet_names_and_logits_shape() -> None:
    x = torch.zeros(1, 4, 32, 32, 32)  # BasicUNet always pools four times
    for name in models.MODEL_NAMES:
        spec = models.model_spec(name, width=4, levels=3)
        net = models.build_unet(name, seed=0, **spec["kwargs"])
        assert net(x).shape == (1, 4, 32, 32, 32), name
    with pytest.raises(ValueError, match="known: unet, basicunet, dynunet"):
        models.build_unet("resnet")
    with pytest.raises(ValueError, match="bad options"):
        models.build_unet("unet", nonsense=3)


def test_build_unet_seed_is_deterministic_and_leaves_global_rng() -> None:
    state = torch.get_rng_state()
    a, b = _tiny(), _tiny()
    assert torch.equal(torch.get_rng_state(), state)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_save_load_roundtrip_weights_only(tmp_path) -> None:
    net = _tiny()
    spec = {"name": "unet", "kwargs": {"channels": [8, 16], "strides": [2], "num_res_units": 0}, "crop": None}
    path = models.save_model(net, tmp_path / "m.pt", spec)
    # loading must work with weights_only=True, i.e. the file holds no pickled objects
    blob = torch.load(path, weights_only=True)
    assert set(blob) == {"spec", "state_dict"}
    net2, spec2 = models.load_model(path)
    assert spec2["kwargs"]["channels"] == [8, 16]
    x = torch.randn(1, 4, 16, 16, 16)
    assert torch.equal(net.eval()(x), net2(x))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        models.load_model(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        models.load_model(tmp_path / "missing.pt")
    other = {**spec, "kwargs": {**spec["kwargs"], "channels": [4, 8]}}  # a spec whose network the weights do not fit
    torch.save({"spec": other, "state_dict": net.state_dict()}, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match=r"mismatch.pt: weights do not fit the 'unet' network"):
        models.load_model(tmp_path / "mismatch.pt")
    torch.save({"spec": {"kwargs": {}}, "state_dict": net.state_dict()}, tmp_path / "noname.pt")
    with pytest.raises(ValueError, match="noname.pt: the model spec has no network 'name'"):
        models.load_model(tmp_path / "noname.pt")


def test_logit_scale_saves_inner_net_and_loads_back_scaled(tmp_path) -> None:
    net = _tiny()
    spec = {"name": "unet", "kwargs": {"channels": [8, 16], "strides": [2], "num_res_units": 0}}
    scaled = models.LogitScale(net, 20.0)
    path = models.save_model(scaled, tmp_path / "s.pt", spec)
    blob = torch.load(path, weights_only=True)
    assert blob["spec"]["logit_scale"] == 20.0 and set(blob["state_dict"]) == set(net.state_dict())
    loaded, spec2 = models.load_model(path)
    assert isinstance(loaded, models.LogitScale) and loaded.scale == 20.0
    x = torch.randn(1, 4, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded(x), 20.0 * net.eval()(x))
    # saving the loaded model again with its own spec keeps the factor (not 20 x 20)
    again, spec3 = models.load_model(models.save_model(loaded, tmp_path / "again.pt", spec2))
    assert again.scale == 20.0 and spec3["logit_scale"] == 20.0
    nested, _ = models.load_model(models.save_model(models.LogitScale(scaled, 0.5), tmp_path / "n.pt", spec))
    assert nested.scale == 10.0
    plain, spec4 = models.load_model(models.save_model(net, tmp_path / "p.pt", spec2))
    assert not isinstance(plain, models.LogitScale) and "logit_scale" not in spec4
    with pytest.raises(ValueError, match="scale"):
        models.LogitScale(net, 0.0)


def test_output_scaled_training_at_t_equals_training_at_1() -> None:
    """Training LogitScale(net, T) with the loss at temperature T is the same computation as
    training net at T = 1 (the loss sees (T f(x)) / T = f(x)): the oracle behind reusing the
    baseline as the teacher at T. Equal up to float rounding of the x T / T round trip."""
    x, y = _blob_data(4)
    cfg = TrainConfig(epochs=2, batch_size=2, steps_per_epoch=3, crop=(12, 12, 12), seed=5)
    plain, scaled = _tiny(), _tiny()
    train(plain, x, y, cfg, progress=False)
    train(models.LogitScale(scaled, 20.0), x, y, TrainConfig(**{**cfg.__dict__, "temperature": 20.0}), progress=False)
    with torch.no_grad():
        z0, z_plain, z_scaled = _tiny().eval()(x), plain.eval()(x), scaled.eval()(x)
    # same function (weights differ only in biases that an instance norm cancels, where Adam turns
    # zero-gradient rounding noise into steps)
    assert (z_plain - z_scaled).abs().max() < 1e-4 * (z_plain - z0).abs().max()
    # while the plain net trained at T = 20 has barely lowered its loss at T: its logits must grow 20-fold first
    slow = _tiny()
    train(slow, x, y, TrainConfig(**{**cfg.__dict__, "temperature": 20.0}), progress=False)
    with torch.no_grad():
        ce = lambda z: float(torch.nn.functional.cross_entropy(z, y))  # noqa: E731
        z_slow = slow.eval()(x)
    assert ce(z0 / 20) - ce(z_slow / 20) < 0.25 * (ce(z0) - ce(z_plain)), (ce(z0), ce(z_plain), ce(z0 / 20), ce(z_slow / 20))


def test_predict_sliding_window_matches_monai_and_whole_volume() -> None:
    from monai.inferers import sliding_window_inference

    net = _tiny().eval()
    x = torch.randn(2, 4, 24, 16, 20)
    with torch.no_grad():
        ref = sliding_window_inference(x, (16, 16, 16), 2, net, overlap=0.5, mode="gaussian")
        out = models.predict(net, x, roi_size=(16, 16, 16), overlap=0.5)
        assert torch.allclose(out, ref)
        assert torch.equal(models.predict(net, x[:, :, :16, :16, :16], roi_size=(16, 16, 16)), net(x[:, :, :16, :16, :16]))
        cls = models.predict_classes(net, x, roi_size=(16, 16, 16), overlap=0.5)
    assert cls.shape == (2, 24, 16, 20) and torch.equal(cls, ref.argmax(1))


def test_spatial_divisor_is_what_each_network_needs_for_one_pass() -> None:
    """Oracle: the networks themselves. Sides divisible by the divisor pass through unchanged;
    for UNet and DynUNet a side that is not fails or comes out resized (BasicUNet pads: divisor 1)."""
    for name, levels, want in (("unet", 3, 4), ("dynunet", 3, 4), ("basicunet", 5, 1)):
        spec = models.model_spec(name, width=2, levels=levels)
        div = models.spatial_divisor(spec)
        assert div == want, (name, div)
        net = models.build_unet(name, seed=0, **spec["kwargs"]).eval()
        with torch.no_grad():
            assert net(torch.zeros(1, 4, 32, 32, 36)).shape == (1, 4, 32, 32, 36)
            try:
                odd = net(torch.zeros(1, 4, 34, 32, 32)).shape[2:]
            except RuntimeError:
                odd = None
        assert (odd == (34, 32, 32)) == (div == 1), (name, odd)


def test_inference_roi_modes() -> None:
    spec = models.model_spec("unet", levels=4, crop=[16, 16, 16])
    assert spec["inference"] == "sliding"
    assert models.inference_roi(spec, (24, 16, 32)) == (16, 16, 16)
    assert models.inference_roi(spec, (16, 16, 16)) is None  # the volume is the window
    assert models.inference_roi({**spec, "crop": None}, (24, 16, 32)) is None
    legacy = {k: v for k, v in spec.items() if k != "inference"}  # checkpoints written before the option
    assert models.inference_roi(legacy, (24, 16, 32)) == (16, 16, 16)
    whole = models.model_spec("unet", levels=4, crop=[16, 16, 16], inference="whole")
    assert models.inference_roi(whole, (24, 16, 32)) is None
    with pytest.raises(ValueError, match=r"divisible by 8.*\(20, 16, 32\)"):
        models.inference_roi(whole, (20, 16, 32))
    with pytest.raises(ValueError, match="inference"):
        models.model_spec("unet", inference="tiles")
    with pytest.raises(ValueError, match="inference"):
        TrainConfig(inference="tiles")


def test_whole_volume_mode_predicts_in_one_pass() -> None:
    from robustseg_lib import evaluation
    from robustseg_lib.attacks import SlidingWindowModel

    net = _tiny().eval()
    x = torch.randn(2, 4, 24, 16, 20)
    es = evaluation.EvalSet(x, torch.zeros(2, 24, 16, 20, dtype=torch.long), torch.ones(2, 24, 16, 20, dtype=torch.bool),
                            x.amin((2, 3, 4)), x.amax((2, 3, 4)), torch.ones(2, 4), ["a", "b"])
    sliding = {"name": "unet", "kwargs": {}, "crop": [16, 16, 16], "overlap": 0.5}
    whole = {**sliding, "inference": "whole", "kwargs": {"channels": [8, 16], "strides": [2]}}
    assert evaluation.wrap_model(net, whole, x.shape[2:]) is net
    assert isinstance(evaluation.wrap_model(net, sliding, x.shape[2:]), SlidingWindowModel)
    with torch.no_grad():
        one_pass = net(x).argmax(1)
        windows = models.predict(net, x, roi_size=(16, 16, 16), overlap=0.5).argmax(1)
    assert torch.equal(evaluation.predict_set(net, es, whole), one_pass)
    assert torch.equal(evaluation.predict_set(net, es, sliding), windows)
    assert not torch.equal(one_pass, windows)  # the two modes are really different computations


def test_validation_follows_the_inference_mode() -> None:
    """With inference='whole' the validation Dice is that of one pass over each volume (oracle: the
    network's own forward and the metrics module), not of sliding windows of the crop."""
    from robustseg_lib.metrics import dice_per_region

    x, y = _blob_data(4, size=16, seed=2)
    scores = {}
    for mode in ("whole", "sliding"):
        net = _tiny()
        cfg = TrainConfig(epochs=1, batch_size=2, steps_per_epoch=2, crop=(8, 8, 8), seed=0, inference=mode)
        res = train(net, x, y, cfg, val_images=x[:2], val_labels=y[:2], progress=False)
        scores[mode] = float(res.history["val_WT"].iloc[-1])
        net.eval()
        with torch.no_grad():
            pred = net(x[:2]).argmax(1) if mode == "whole" else models.predict(net, x[:2], roi_size=(8, 8, 8)).argmax(1)
        assert scores[mode] == pytest.approx(np.mean([dice_per_region(pred[i], y[i])["WT"] for i in range(2)]), abs=1e-6)
        # checkpoint selection: Dice of the pooled voxels of both cases, averaged over regions (hand formula)
        pooled = []
        for vals in ((1, 2, 3), (1, 3), (3,)):
            pm, tm = np.isin(pred.numpy(), vals), np.isin(y[:2].numpy(), vals)
            pooled.append(1.0 if pm.sum() + tm.sum() == 0 else 2 * (pm & tm).sum() / (pm.sum() + tm.sum()))
        assert float(res.history["val_score"].iloc[-1]) == pytest.approx(np.mean(pooled), abs=1e-12)


def test_train_config_validation() -> None:
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="crop"):
        TrainConfig(crop=(8, 8))
    for bad, name in (({"epochs": 2.5}, "epochs"), ({"val_every": 0}, "val_every"), ({"warmup_frac": 1.5}, "warmup_frac"),
                      ({"warmup_frac": -0.1}, "warmup_frac"), ({"seed": -1}, "seed"), ({"seed": True}, "seed"),
                      ({"weight_decay": -1.0}, "weight_decay"), ({"steps_per_epoch": 2.0}, "steps_per_epoch"),
                      ({"sw_overlap": 1.0}, "sw_overlap")):
        with pytest.raises(ValueError, match=name):
            TrainConfig(**bad)
    x, y = _blob_data(2)
    with pytest.raises(ValueError, match="train_labels"):
        train(_tiny(), x, y[:1], TrainConfig(epochs=1), progress=False)
    with pytest.raises(ValueError, match="larger than the volumes"):
        train(_tiny(), x, y, TrainConfig(epochs=1, crop=(32, 32, 32)), progress=False)


def test_tiny_unet_learns(tmp_path) -> None:
    """Dice rises well above chance on an easy task within a few CPU epochs."""
    from robustseg_lib.metrics import dice_per_region

    x, y = _blob_data(6, seed=1)
    cfg = TrainConfig(epochs=12, batch_size=2, steps_per_epoch=6, lr=1e-2, seed=0)
    net = _tiny()
    before = np.mean([dice_per_region(models.predict_classes(net, x[i : i + 1])[0], y[i])["WT"] for i in range(6)])
    res = train(net, x, y, cfg, val_images=x[:2], val_labels=y[:2], progress=False)
    after = np.mean([dice_per_region(models.predict_classes(net, x[i : i + 1])[0], y[i])["WT"] for i in range(6)])
    assert after > 0.8 and after > before + 0.3, (before, after)
    assert list(res.history.columns[:3]) == ["epoch", "loss", "lr"]
    assert res.history["loss"].iloc[-1] < res.history["loss"].iloc[0]


def test_resume_gives_same_weights_as_uninterrupted(tmp_path) -> None:
    x, y = _blob_data(4)
    cfg = TrainConfig(epochs=3, batch_size=2, steps_per_epoch=2, crop=(12, 12, 12), seed=3)
    ref = _tiny()
    r_ref = train(ref, x, y, cfg, val_images=x[:2], val_labels=y[:2], ckpt_dir=tmp_path / "a", progress=False)

    net = _tiny()
    r1 = train(net, x, y, cfg, val_images=x[:2], val_labels=y[:2], ckpt_dir=tmp_path / "b", progress=False, stop_after_epoch=1)
    assert r1.extra.get("stopped") and len(r1.history) == 1
    torch.manual_seed(12345)  # a "new process": global RNG state differs; the checkpoint restores it
    resumed = _tiny()
    r2 = train(resumed, x, y, cfg, val_images=x[:2], val_labels=y[:2], ckpt_dir=tmp_path / "b", progress=False)
    assert r2.resumed_from == 1
    for (k, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert r_ref.history["loss"].tolist() == r2.history["loss"].tolist()
    # the checkpoint loads with weights_only=True
    state = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert state["epoch"] == 3


def test_resume_only_with_the_same_module_settings(tmp_path, capsys) -> None:
    """The recorded layout holds each module's class and settings (extra_repr), not only state-dict keys and shapes:
    another LogitScale factor or dropout rate starts afresh naming the difference; the same network resumes; a
    checkpoint of an earlier version (no layout recorded) starts afresh instead of crashing."""
    x, y = _blob_data(2, size=8)
    cfg = TrainConfig(epochs=2, batch_size=2, steps_per_epoch=1, seed=3)

    def net(**kw):
        return models.build_unet("unet", seed=0, channels=(4, 8), strides=(2,), num_res_units=0, **kw)

    def run(m):
        return train(m, x, y, cfg, ckpt_dir=tmp_path, progress=False, stop_after_epoch=1, resume_tag="t")

    run(models.LogitScale(net(), 10.0))
    capsys.readouterr()
    assert run(models.LogitScale(net(), 5.0)).resumed_from == 0
    out = capsys.readouterr().out
    assert "written with another network layout" in out and "scale=10.0" in out and "scale=5.0" in out, out
    assert "training data" not in out, out
    assert run(models.LogitScale(net(), 5.0)).resumed_from == 1  # the same network resumes as before
    # an architecture setting that leaves the state dict alone (the dropout rate) is part of the layout too
    from robustseg_lib.training import _layout_difference, _network_layout

    a, b = _network_layout(net(dropout=0.1)), _network_layout(net(dropout=0.2))
    assert a != b and "p=0.1" in _layout_difference(a, b) and "p=0.2" in _layout_difference(a, b)
    assert [e for e in a if e.startswith("tensor")] == [e for e in b if e.startswith("tensor")]
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    del state["layout"]
    torch.save(state, tmp_path / "last.pt")
    capsys.readouterr()
    assert run(net()).resumed_from == 0
    assert "earlier version" in capsys.readouterr().out


class _ShiftLogits(torch.nn.Module):
    """Adds a learnt offset to the logits; its shape (how many channels it covers) is in no extra_repr."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.shift = torch.nn.Parameter(torch.zeros(k, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.shift


def test_resume_only_with_the_same_state_dict_shapes(tmp_path, capsys) -> None:
    """Two networks alike in every module's class and settings (extra_repr) but with a parameter of another shape:
    the checkpoint of one is not resumed by the other, training starts afresh naming the tensor, rather than failing
    in load_state_dict (oracle: the shapes (1, 1, 1, 1) and (4, 1, 1, 1) written by hand)."""
    x, y = _blob_data(2, size=8)
    cfg = TrainConfig(epochs=2, batch_size=2, steps_per_epoch=1, seed=3)

    def net(k: int) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Conv3d(4, 4, 1), _ShiftLogits(k))

    def run(m: torch.nn.Module) -> TrainResult:
        return train(m, x, y, cfg, ckpt_dir=tmp_path, progress=False, stop_after_epoch=1)

    run(net(1))
    assert run(net(1)).resumed_from == 1  # the same network resumes
    capsys.readouterr()
    assert run(net(4)).resumed_from == 0
    out = capsys.readouterr().out
    assert "written with another network layout" in out and "(1, 1, 1, 1)" in out and "(4, 1, 1, 1)" in out, out


def test_resume_only_with_same_tag_network_and_data(tmp_path) -> None:
    """A checkpoint of another objective (tag), network layout or dataset is not resumed: training starts afresh."""
    x, y = _blob_data(4)
    cfg = TrainConfig(epochs=2, batch_size=2, steps_per_epoch=1, crop=(12, 12, 12), seed=3)

    def run(net, tag="a", xs=x):
        return train(net, xs, y, cfg, ckpt_dir=tmp_path / "c", progress=False, stop_after_epoch=1, resume_tag=tag)

    run(_tiny())
    assert run(_tiny()).resumed_from == 1  # same everything: resumes
    run(_tiny())  # a tag-"a" checkpoint again
    assert run(_tiny(), tag="b").resumed_from == 0
    run(_tiny())
    assert run(models.LogitScale(_tiny(), 5.0)).resumed_from == 0  # other state-dict keys: no crash, fresh
    run(_tiny())
    assert run(_tiny(), xs=x + 1.0).resumed_from == 0
    (tmp_path / "c" / "last.pt").write_bytes(b"truncated by a kill")  # unreadable: start afresh, never unpickle
    assert run(_tiny()).resumed_from == 0
    a, b = _tiny(), _tiny()
    assert models.weights_signature(a) == models.weights_signature(b)
    with torch.no_grad():
        b.model[0].conv.weight[0, 0, 0, 0, 0] += 1e-3
    assert models.weights_signature(a) != models.weights_signature(b)


def test_training_is_bit_for_bit_repeatable() -> None:
    x, y = _blob_data(4)
    cfg = TrainConfig(epochs=2, batch_size=2, steps_per_epoch=2, crop=(12, 12, 12), seed=7)
    a, b = _tiny(), _tiny()
    train(a, x, y, cfg, progress=False)
    train(b, x, y, cfg, progress=False)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_batch_hook_and_objective_are_used() -> None:
    x, y = _blob_data(2)
    seen = {}

    def hook(net, xb, yb, gen, brain):
        seen["hook"] = xb.shape[0]
        assert brain.dtype == torch.bool and brain.shape == (xb.shape[0], 1, *xb.shape[2:])
        return torch.cat([xb, xb]), torch.cat([yb, yb])

    def objective(logits, xb, yb):
        seen["objective"] = logits.shape[0]
        return logits.float().square().mean()

    train(_tiny(), x, y, TrainConfig(epochs=1, batch_size=2, steps_per_epoch=1), batch_hook=hook, objective=objective, progress=False)
    assert seen == {"hook": 2, "objective": 4}


def test_gpu_resident_data_path_on_cpu() -> None:
    """The paper profile's data path (float16 images, uint8 labels, as evaluation.resident keeps them
    on a GPU) runs through the same training code; on the CPU resident() leaves tensors alone."""
    from robustseg_lib.evaluation import EvalSet, resident

    x, y = _blob_data(4)
    es = EvalSet(x, y, x[:, 0] > 0, x.amin((2, 3, 4)), x.amax((2, 3, 4)), torch.ones(4, 4), list("abcd"))
    rx, ry = resident(es, "cpu")
    assert rx is x and ry is y
    cfg = TrainConfig(epochs=2, batch_size=2, steps_per_epoch=2, crop=(12, 12, 12), seed=1)
    a, b = _tiny(), _tiny()
    train(a, x.half(), y.to(torch.uint8), cfg, progress=False)
    train(b, x.half().float(), y, cfg, progress=False)
    for pa, pb in zip(a.parameters(), b.parameters()):  # same values once cast: identical training
        assert torch.equal(pa, pb)


def test_bf16_autocast_path_runs_on_cpu(monkeypatch) -> None:
    """The GPU's mixed-precision path (bf16 forward, float32 loss), exercised on the CPU: the objectives see
    bf16 logits, the losses stay finite, and the result differs from float32 training (autocast was on)."""
    from robustseg_lib import training as T
    from robustseg_lib.defenses import DistillationObjective

    x, y = _blob_data(4)
    cfg = TrainConfig(epochs=2, batch_size=2, steps_per_epoch=2, crop=(12, 12, 12), seed=1)
    seen: list[torch.dtype] = []

    def watch(objective):
        def wrapped(logits, xb, yb):
            seen.append(logits.dtype)
            return objective(logits, xb, yb)
        return wrapped

    fp32 = _tiny()
    train(fp32, x, y, cfg, progress=False)
    monkeypatch.setattr(T, "AMP_DEVICE_TYPES", frozenset({"cuda", "cpu"}))
    amp = _tiny()
    res = train(amp, x, y, cfg, val_images=x[:2], val_labels=y[:2], objective=watch(T.dice_ce_objective(1.0)), progress=False)
    assert seen and set(seen) == {torch.bfloat16}
    assert np.isfinite(res.history["loss"]).all() and np.isfinite(res.best_score)
    assert any(not torch.equal(a, b) for a, b in zip(amp.parameters(), fp32.parameters()))
    assert all(p.dtype == torch.float32 for p in amp.parameters())  # weights stay float32 under autocast
    seen.clear()
    student = _tiny()
    res = train(student, x, y, cfg, objective=watch(DistillationObjective(fp32, 20.0, hard_weight=0.5)), progress=False)
    assert set(seen) == {torch.bfloat16} and np.isfinite(res.history["loss"]).all()
    seen.clear()
    train(_tiny(), x, y, dataclasses.replace(cfg, amp=False), objective=watch(T.dice_ce_objective(1.0)), progress=False)
    assert set(seen) == {torch.float32}  # amp=False turns it off


# ----------------------------------------------------------------------------- tensor batches (the GPU path)
def test_kth_absent_matches_a_listed_complement() -> None:
    """_kth_absent (binary search over the foreground alone) against the background list numpy gives."""
    from robustseg_lib.training import _kth_absent

    rng = np.random.default_rng(0)
    for n, frac in [(50, 0.0), (50, 0.3), (200, 0.9), (64, 0.05)]:
        mask = rng.random(n) < frac
        mask[:3] = [True, False, True]  # foreground at the start and around the first background voxel
        present, absent = np.flatnonzero(mask), np.flatnonzero(~mask)
        assert [_kth_absent(present, k) for k in range(len(absent))] == absent.tolist()
    assert _kth_absent(np.array([], dtype=np.int64), 7) == 7


def _coded_volume(n: int = 3, shape=(20, 18, 16)) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel 0 holds each voxel's flat index, channel 1 its label x 10 + 5: a crop tells where it came from."""
    g = torch.Generator().manual_seed(0)
    lab = (torch.rand((n, *shape), generator=g) < 0.04).long() * torch.randint(1, 4, (n, *shape), generator=g)
    flat = torch.arange(int(np.prod(shape)), dtype=torch.float32).reshape(shape)
    img = torch.stack([torch.stack([flat, lab[i].float() * 10 + 5]) for i in range(n)])
    return img, lab


def test_tensor_batcher_crops_are_views_of_the_volume_centred_as_asked() -> None:
    from robustseg_lib.training import TensorBatcher

    img, lab = _coded_volume()
    shape, crop = img.shape[2:], (8, 6, 10)
    for pos in (1.0, 0.0):
        b = TensorBatcher(lab, TrainConfig(crop=crop, pos_fraction=pos, augment=False))
        hits = 0
        for step in range(60):
            x, y, _ = b(img, lab, [0, 2], seed=1, epoch=1, step=step)
            assert x.shape == (2, 2, *crop) and y.shape == (2, *crop) and x.dtype == torch.float32 and y.dtype == torch.int64
            for i, j in enumerate([0, 2]):
                start = np.unravel_index(int(x[i, 0, 0, 0, 0]), shape)
                sl = tuple(slice(a, a + k) for a, k in zip(start, crop))
                assert torch.equal(x[i], img[j][(slice(None), *sl)]) and torch.equal(y[i], lab[j][sl])
                assert all(0 <= a <= d - k for a, d, k in zip(start, shape, crop))
                hits += int((y[i] > 0).any())
        if pos == 1.0:  # every centre on tumour: every crop holds some
            assert hits == 120
    # 1-voxel crops are the centres themselves: tumour for pos_fraction 1, background for 0
    for pos, want in ((1.0, True), (0.0, False)):
        b = TensorBatcher(lab, TrainConfig(crop=(1, 1, 1), pos_fraction=pos, augment=False))
        assert all((b(img, lab, [1], seed=0, epoch=0, step=s)[1].item() > 0) == want for s in range(100))


def test_tensor_batcher_pos_fraction_flips_and_intensity() -> None:
    from robustseg_lib.training import TensorBatcher

    img, lab = _coded_volume()
    b = TensorBatcher(lab, TrainConfig(crop=(1, 1, 1), pos_fraction=0.3, augment=False))
    draws = [b(img, lab, [0], seed=5, epoch=1, step=s)[1].item() > 0 for s in range(600)]
    assert 0.24 < np.mean(draws) < 0.36  # 1-voxel crops: the centre's own label
    b = TensorBatcher(lab, TrainConfig(crop=(12, 10, 8), augment=True))
    scaled = flipped = 0
    for s in range(80):
        x, y, _ = b(img, lab, [1], seed=2, epoch=3, step=s)
        code = x[0, 1]  # label x 10 + 5 after the same affine scale/shift: constant within each class
        vals = {c: code[y[0] == c] for c in range(4) if (y[0] == c).any()}
        assert all(float(v.max() - v.min()) < 1e-4 for v in vals.values())  # image and label flipped alike
        base = vals[0][0]
        scaled += abs(float(base) - 5.0) > 1e-6
        flipped += int(x[0, 0, 0, 0, 0] > x[0, 0, -1, -1, -1])  # flat index decreasing along some axis
    assert 20 < scaled < 80 and 0 < flipped < 80
    a = b(img, lab, [0, 1], seed=2, epoch=3, step=4, with_brain=True)
    c = b(img, lab, [0, 1], seed=2, epoch=3, step=4, with_brain=True)
    assert all(torch.equal(u, v) for u, v in zip(a, c))  # seeded: the same batch again


def _brain_is_label_data(n: int = 3, shape: tuple[int, int, int] = (20, 18, 16)) -> tuple[torch.Tensor, torch.Tensor]:
    """Volumes whose brain (a ball, nonzero in every modality) is exactly the labelled region."""
    g = torch.Generator().manual_seed(3)
    zz, yy, xx = torch.meshgrid(*[torch.arange(k, dtype=torch.float32) for k in shape], indexing="ij")
    imgs, labs = [], []
    for i in range(n):
        c = [k / 2 + (i - 1) for k in shape]
        ball = ((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) < (5 + i) ** 2
        img = (torch.rand((4, *shape), generator=g) + 0.5) * ball  # strictly positive inside, 0 outside
        imgs.append(img)
        labs.append(ball.long() * (1 + i % 3))
    return torch.stack(imgs), torch.stack(labs)


@pytest.mark.parametrize("backend", ["monai", "tensor"])
def test_batches_carry_the_brain_mask_of_the_crop_before_the_intensity_shift(backend: str) -> None:
    """Both backends hand the hook the brain of each augmented crop: here the brain is the labelled ball, so the
    mask must equal label > 0 after every crop and flip, and the image outside it is one value (0 or the shift)."""
    from robustseg_lib import training as T

    img, lab = _brain_is_label_data()
    cfg = TrainConfig(crop=(12, 12, 10), pos_fraction=0.5, augment=True)
    make = (lambda ids, s: T._batch(img, lab, ids, T._augmenter(cfg), 0, 1, s, with_brain=True)) if backend == "monai" else \
        (lambda ids, s, b=T.TensorBatcher(lab, cfg): b(img, lab, ids, 0, 1, s, with_brain=True))
    shifted = 0
    for step in range(40):
        x, y, brain = make([0, 1, 2], step)
        assert brain.dtype == torch.bool and brain.shape == (3, 1, 12, 12, 10)
        assert torch.equal(brain[:, 0], y > 0)
        for i in range(3):
            outside = x[i][:, ~brain[i, 0]]
            if outside.numel():
                assert float(outside.max() - outside.min()) == 0.0
                shifted += float(outside.abs().max()) > 0
    assert shifted > 0  # the shift did move the background off zero, so x != 0 would have been wrong


def test_monai_batches_are_unchanged_by_the_brain_key() -> None:
    """Cropping and flipping the brain mask alongside draws no extra random numbers: images and labels are those
    of the same MONAI recipe without the key (the pipeline as it was before the mask was added)."""
    from monai.transforms import Compose, RandCropByPosNegLabeld, RandFlipd, RandScaleIntensityd, RandShiftIntensityd

    from robustseg_lib import training as T

    img, lab = _brain_is_label_data()
    cfg = TrainConfig(crop=(12, 12, 10), pos_fraction=0.5, augment=True)
    old = Compose([RandCropByPosNegLabeld(keys=["image", "label"], label_key="label", spatial_size=cfg.crop, pos=0.5,
                                          neg=0.5, num_samples=1, allow_smaller=False),
                   *[RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=a) for a in range(3)],
                   RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
                   RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5)])
    for step in range(10):
        x, y, _ = T._batch(img, lab, [0, 2], T._augmenter(cfg), 4, 2, step, with_brain=True)
        x0, y0, none = T._batch(img, lab, [0, 2], T._augmenter(cfg), 4, 2, step)  # no hook: no mask made
        assert none is None and torch.equal(x0, x) and torch.equal(y0, y)
        for i, j in enumerate([0, 2]):
            old.set_random_state(seed=T._sample_seed(4, 2, step, i))
            ref = old({"image": img[j].float(), "label": lab[j].long()[None]})[0]
            assert torch.equal(x[i], ref["image"].as_tensor()) and torch.equal(y[i], ref["label"].as_tensor()[0].long())


def test_augment_backends_train_and_auto_keeps_monai_on_cpu() -> None:
    """auto = monai on the CPU (CPU numbers unchanged); the tensor backend trains, repeatably, from
    float16/uint8 resident tensors as on a GPU."""
    x, y = _blob_data(4)
    base = dict(epochs=2, batch_size=2, steps_per_epoch=2, crop=(12, 12, 12), seed=1)
    nets = {}
    for backend in ("auto", "monai", "tensor", "tensor"):
        net = _tiny()
        res = train(net, x.half(), y.to(torch.uint8), TrainConfig(**base, augment_backend=backend), progress=False)
        assert np.isfinite(res.history["loss"]).all()
        nets.setdefault(backend, []).append(net)
    same = lambda a, b: all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))  # noqa: E731
    assert same(nets["auto"][0], nets["monai"][0])
    assert same(*nets["tensor"]) and not same(nets["tensor"][0], nets["monai"][0])
    with pytest.raises(ValueError, match="augment_backend"):
        TrainConfig(augment_backend="gpu")


def test_history_loss_is_the_mean_of_the_epochs_step_losses() -> None:
    """The losses stay on the device during an epoch and are read once: the history still holds their mean."""
    x, y = _blob_data(4)
    seen: list[float] = []
    base = dice_ce_objective()

    def objective(logits, xb, yb):
        loss = base(logits, xb, yb)
        seen.append(float(loss.detach()))
        return loss

    res = train(_tiny(), x, y, TrainConfig(epochs=2, batch_size=2, steps_per_epoch=3, crop=(12, 12, 12), seed=2), objective=objective, progress=False)
    assert len(seen) == 6
    assert res.history["loss"].tolist() == [float(np.mean(seen[:3])), float(np.mean(seen[3:]))]


# ----------------------------------------------------------------------------- found by mutation testing (session 13)
def _cube_data(n: int = 4, size: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n tiny (4, size³) volumes, case i's channel 0 holding the constant i + 1 (so a batch tells which cases it
    holds), classes 0..3 at random."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, size, size, size, generator=g)
    x[:, 0] = torch.arange(1, n + 1, dtype=torch.float32)[:, None, None, None]
    return x, torch.randint(0, 4, (n, size, size, size), generator=g)


def _conv() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Conv3d(4, 4, 1)


def test_train_config_refuses_degenerate_values_and_accepts_the_boundaries() -> None:
    """Docstring ranges, by hand: warmup_frac in [0, 1), lr and temperature > 0, batch_size >= 1, steps_per_epoch
    >= 1 or None (0 must not silently mean "the default"); the closed ends (warm-up 0, pos_fraction 0 and 1,
    weight decay 0, overlap 0) are valid."""
    for bad, name in (({"warmup_frac": 1.0}, "warmup_frac"), ({"batch_size": 0}, "batch_size"),
                      ({"steps_per_epoch": 0}, "steps_per_epoch"), ({"lr": 0.0}, "lr"),
                      ({"temperature": 0.0}, "temperature"), ({"crop": (8, 0, 8)}, "crop")):
        with pytest.raises(ValueError, match=name):
            TrainConfig(**bad)
    for ok in ({"warmup_frac": 0.0}, {"pos_fraction": 0.0}, {"pos_fraction": 1.0}, {"weight_decay": 0.0}, {"sw_overlap": 0.0}):
        TrainConfig(**ok)


def test_lr_schedule_is_linear_warmup_then_cosine_by_hand() -> None:
    """One step per epoch, 15 steps, warmup_frac 0.1: warm-up round(1.5) = 2 steps, so the history's lr (after s
    steps) is 0.1 + 0.9 s / 2 for s < 2, then 0.001 + 0.999 · ½(1 + cos(π (s − 2) / 13)); literal values at
    s = 1 (0.55), 2 (1) and 15 (0.001), all times the peak lr."""
    x, y = _cube_data(1)
    cfg = TrainConfig(epochs=15, batch_size=1, steps_per_epoch=1, lr=0.01, warmup_frac=0.1, augment=False, seed=0)
    lr = train(_conv(), x, y, cfg, progress=False).history["lr"].to_numpy()
    hand = [0.1 + 0.9 * s / 2 if s < 2 else 0.001 + 0.999 * 0.5 * (1 + np.cos(np.pi * (s - 2) / 13)) for s in range(1, 16)]
    np.testing.assert_allclose(lr, 0.01 * np.array(hand), rtol=1e-12)
    np.testing.assert_allclose(lr[[0, 1, 14]], [0.0055, 0.01, 0.00001], rtol=1e-12)


def test_each_epoch_is_a_fresh_permutation_in_ceil_n_over_b_steps() -> None:
    """Without steps_per_epoch an epoch is ceil(5 / 2) = 3 steps; the batches (cases read off channel 0, no
    augmentation) cover every case once per epoch, wrap around with the next permutation for the sixth slot, and
    the order changes from epoch to epoch (oracle: counting)."""
    x, y = _cube_data(5)
    seen: list[list[int]] = []

    def objective(logits: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        seen.append([int(v) for v in xb[:, 0, 0, 0, 0].round()])
        return logits.float().square().mean()

    res = train(_conv(), x, y, TrainConfig(epochs=3, batch_size=2, augment=False, seed=4), objective=objective, progress=False)
    assert len(res.history) == 3 and len(seen) == 9 and all(len(b) == 2 for b in seen)
    epochs = [sum(seen[3 * e : 3 * e + 3], []) for e in range(3)]
    for order in epochs:
        assert sorted(order[:5]) == [1, 2, 3, 4, 5]
    assert len({tuple(o[:5]) for o in epochs}) > 1


def test_monai_augmentation_differs_between_the_steps_of_an_epoch() -> None:
    """One case, one sample per step, flips and intensity jitter: the eight augmented batches of an epoch must not
    all be the same (each step draws its own seed); rerunning repeats them exactly (oracle: comparison)."""
    x, y = _cube_data(1, size=6)

    def run() -> list[torch.Tensor]:
        seen: list[torch.Tensor] = []

        def objective(logits: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            seen.append(xb.detach().clone())
            return logits.float().square().mean()

        train(_conv(), x, y, TrainConfig(epochs=1, batch_size=1, steps_per_epoch=8, augment_backend="monai", seed=1),
              objective=objective, progress=False)
        return seen

    a, b = run(), run()
    assert len({a_.numpy().tobytes() for a_ in a}) > 4
    assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_sample_seeds_do_not_collide_across_epochs_steps_and_samples() -> None:
    """Every (epoch, step, sample) of a run, special streams included, gets its own seed: epoch 1 step 2 must not
    reuse epoch 2 step 1's augmentation (oracle: counting distinct values)."""
    from robustseg_lib.training import _sample_seed

    keys = [(e, s, i) for e in range(6) for s in range(-2, 6) for i in range(-2, 4)]
    assert len({_sample_seed(3, e, s, i) for e, s, i in keys}) == len(keys)


def test_hook_generator_is_fresh_each_step_and_repeatable() -> None:
    """The hook's generator is seeded per (seed, epoch, step): its first draw differs at every step of every epoch
    and is the same on a rerun (oracle: counting and comparison)."""
    x, y = _cube_data(2)

    def run() -> list[float]:
        draws: list[float] = []

        def hook(net: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor, gen: torch.Generator, brain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            draws.append(float(torch.rand(1, generator=gen)))
            return xb, yb

        train(_conv(), x, y, TrainConfig(epochs=2, batch_size=1, steps_per_epoch=3, augment=False), batch_hook=hook, progress=False)
        return draws

    a = run()
    assert len(a) == 6 and len(set(a)) == 6 and run() == a


def test_every_training_forward_is_in_train_mode_and_the_result_in_eval_mode(mode_probe) -> None:
    """A net handed over in eval mode, and a hook that leaves it in eval mode (as an attack would), must still
    see train mode at each training forward; the returned net is in eval mode (oracle: a probe layer)."""
    x, y = _cube_data(2)
    probe = mode_probe
    torch.manual_seed(0)
    net = torch.nn.Sequential(probe, torch.nn.Conv3d(4, 4, 1)).eval()

    def hook(net_: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor, gen: torch.Generator, brain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net_.eval()
        return xb, yb

    train(net, x, y, TrainConfig(epochs=2, batch_size=1, steps_per_epoch=2, augment=False), batch_hook=hook, progress=False)
    assert probe.seen == [True] * 4
    train(net.eval(), x, y, TrainConfig(epochs=2, batch_size=1, steps_per_epoch=2, augment=False),
          val_images=x, val_labels=y, progress=False)  # validation (eval mode) after epoch 1, then epoch 2 trains
    assert probe.seen[4:] == [True, True, False, False, True, True, False, False]  # 2 steps, then 2 cases validated
    assert not net.training and not probe.training


def _pooled_wt_tc_et(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """Pooled Dice over all voxels of all cases, averaged over WT/TC/ET (hand formula, numpy)."""
    out = []
    for vals in ((1, 2, 3), (1, 3), (3,)):
        pm, tm = np.isin(pred.numpy(), vals), np.isin(truth.numpy(), vals)
        out.append(1.0 if pm.sum() + tm.sum() == 0 else 2 * (pm & tm).sum() / (pm.sum() + tm.sum()))
    return float(np.mean(out))


def test_best_epoch_weights_are_returned_when_training_gets_worse() -> None:
    """Epoch 1 descends, later epochs ascend the loss: the returned net must hold epoch 1's weights (oracle: the
    same run stopped after epoch 1), and its validation Dice (hand pooled formula) must be the best score."""
    x, y = _blob_data(4, size=16, seed=2)
    cfg = TrainConfig(epochs=3, batch_size=2, steps_per_epoch=3, lr=3e-2, seed=0)
    base = dice_ce_objective()

    def make_objective() -> Objective:
        calls = [0]

        def objective(logits: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            calls[0] += 1
            loss = base(logits, xb, yb)
            return loss if calls[0] <= 3 else -loss

        return objective

    net = _tiny()
    res = train(net, x, y, cfg, val_images=x[:2], val_labels=y[:2], objective=make_objective(), progress=False)
    assert res.best_epoch == 1 and res.history["val_score"].iloc[-1] < res.best_score
    stopped = _tiny()
    train(stopped, x, y, cfg, val_images=x[:2], val_labels=y[:2], objective=make_objective(), progress=False, stop_after_epoch=1)
    for (k, a), b in zip(net.state_dict().items(), stopped.state_dict().values()):
        assert torch.equal(a, b), k
    with torch.no_grad():
        pred = net.eval()(x[:2]).argmax(1)
    assert res.best_score == pytest.approx(_pooled_wt_tc_et(pred, y[:2]), abs=1e-12)


def test_later_epochs_win_ties_and_unvalidated_epochs_never_win() -> None:
    """lr 1e-12: the predictions never change, so every validated epoch scores the same and the last one must be
    kept (docstring: later epochs win ties); with val_every = 2 over 3 epochs, epochs 2 and 3 are validated (the
    last always) and epoch 1, not validated, carries no score and cannot be chosen."""
    x, y = _cube_data(2)
    res = train(_conv(), x, y, TrainConfig(epochs=3, batch_size=1, lr=1e-12, augment=False), val_images=x, val_labels=y, progress=False)
    assert res.history["val_score"].nunique() == 1 and res.best_epoch == 3
    res = train(_conv(), x, y, TrainConfig(epochs=3, batch_size=1, lr=1e-12, augment=False, val_every=2),
                val_images=x, val_labels=y, progress=False)
    assert res.history["val_score"].isna().tolist() == [True, False, False]
    assert res.best_epoch == 3 and res.best_score == res.history["val_score"].iloc[-1]


def test_without_validation_the_best_score_is_nan_and_the_last_epoch_is_kept() -> None:
    """Docstring of TrainResult: best_score is NaN without validation data; the last epoch's weights are kept."""
    x, y = _cube_data(2)
    res = train(_conv(), x, y, TrainConfig(epochs=2, batch_size=1, augment=False), progress=False)
    assert np.isnan(res.best_score) and res.best_epoch == 2


def test_validation_uses_the_configured_sliding_window_overlap() -> None:
    """val_WT/TC/ET are per-case means of Dice of MONAI's sliding_window_inference with the config's overlap
    (0.5 here, not the default 0.25), and val_mean is the mean of those three (oracle: MONAI and the metrics)."""
    from monai.inferers import sliding_window_inference

    from robustseg_lib.metrics import dice_per_region

    x, y = _blob_data(2, size=16, seed=3)
    net = _tiny()
    cfg = TrainConfig(epochs=1, batch_size=2, steps_per_epoch=1, crop=(8, 8, 8), sw_overlap=0.5, seed=0)
    row = train(net, x, y, cfg, val_images=x, val_labels=y, progress=False).history.iloc[-1]
    with torch.no_grad():
        pred = sliding_window_inference(x, (8, 8, 8), 2, net.eval(), overlap=0.5, mode="gaussian").argmax(1)
        other = sliding_window_inference(x, (8, 8, 8), 2, net.eval(), overlap=0.25, mode="gaussian").argmax(1)
    assert not torch.equal(pred, other)  # the overlap matters here
    want = {r: np.mean([dice_per_region(pred[i], y[i])[r] for i in range(2)]) for r in ("WT", "TC", "ET")}
    for r, v in want.items():
        assert row[f"val_{r}"] == pytest.approx(v, abs=1e-12)
    assert row["val_mean"] == pytest.approx(np.mean(list(want.values())), abs=1e-12)


def test_train_checks_its_data_and_accepts_a_crop_the_size_of_the_volume() -> None:
    """val_images without val_labels, and float class maps, are refused with a ValueError; a crop equal to the
    volume is allowed (only a larger one is refused)."""
    x, y = _cube_data(2)
    cfg = TrainConfig(epochs=1, batch_size=1, augment=False)
    with pytest.raises(ValueError, match="give both"):
        train(_conv(), x, y, cfg, val_images=x, progress=False)
    with pytest.raises(ValueError, match="integer class map"):
        train(_conv(), x, y.float(), cfg, progress=False)
    res = train(_conv(), x, y, TrainConfig(epochs=1, batch_size=1, crop=(4, 4, 4), augment=False), progress=False)
    assert len(res.history) == 1


def test_resume_restores_the_torch_rng_for_dropout(tmp_path) -> None:
    """A net with dropout draws from the global torch RNG: resuming after epoch 1 in a "new process" (another global
    seed) must end with the weights of the uninterrupted run (oracle: that run)."""
    x, y = _cube_data(2)
    cfg = TrainConfig(epochs=2, batch_size=1, steps_per_epoch=2, augment=False)

    def net() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv3d(4, 8, 1), torch.nn.Dropout3d(0.5), torch.nn.Conv3d(8, 4, 1))

    torch.manual_seed(1)
    ref = net()
    train(ref, x, y, cfg, ckpt_dir=tmp_path / "a", progress=False)
    torch.manual_seed(1)
    part = net()
    train(part, x, y, cfg, ckpt_dir=tmp_path / "b", progress=False, stop_after_epoch=1)
    torch.manual_seed(999)
    resumed = net()
    assert train(resumed, x, y, cfg, ckpt_dir=tmp_path / "b", progress=False).resumed_from == 1
    for (k, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("backend", ["monai", "tensor"])
def test_pos_fraction_one_and_zero_pick_tumour_and_background_centres(backend: str) -> None:
    """1-voxel crops are their centres: pos_fraction 1 must always give tumour and 0 always background, with both
    backends; the one tumour voxel sits at the far corner, which a crop must be able to reach (oracle: definition)."""
    from robustseg_lib import training as T

    img, lab = torch.rand(1, 4, 5, 4, 3) + 1.0, torch.zeros(1, 5, 4, 3, dtype=torch.long)
    lab[0, 4, 3, 2] = 3
    for pos, tumour in ((1.0, True), (0.0, False)):
        cfg = TrainConfig(crop=(1, 1, 1), pos_fraction=pos, augment=False)
        b = T.TensorBatcher(lab, cfg)
        for s in range(30):
            _, yb, _ = T._batch(img, lab, [0], T._augmenter(cfg), 0, 1, s) if backend == "monai" else b(img, lab, [0], 0, 1, s)
            assert (yb.item() == 3) == tumour


def test_tensor_intensity_jitter_is_a_scale_and_a_shift_of_either_sign_within_0_1() -> None:
    """Channel 0 zero, channel 1 one: after the jitter channel 0 holds the shift t and channel 1 s + t. Each is
    applied with p = 0.5, |s − 1| ≤ 0.1 and |t| ≤ 0.1, of either sign (oracle: the recipe of RandScaleIntensityd(0.1)
    and RandShiftIntensityd(0.1))."""
    from robustseg_lib.training import TensorBatcher

    img = torch.zeros(1, 2, 4, 4, 4)
    img[:, 1] = 1.0
    lab = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    b = TensorBatcher(lab, TrainConfig(augment=True))
    shifts, scales = [], []
    for s in range(200):
        xb, _, _ = b(img, lab, [0], seed=0, epoch=1, step=s)
        t = float(xb[0, 0, 0, 0, 0])
        assert float(xb[0, 0].max() - xb[0, 0].min()) == 0.0
        shifts.append(t)
        scales.append(float(xb[0, 1, 0, 0, 0]) - t)
    shifts_, scales_ = np.array(shifts), np.array(scales)
    assert np.abs(shifts_).max() <= 0.1 and np.abs(scales_ - 1).max() <= 0.1 + 1e-6
    assert 0.35 < np.mean(shifts_ == 0) < 0.65 and 0.35 < np.mean(np.abs(scales_ - 1) < 1e-6) < 0.65
    assert (shifts_ > 0).any() and (shifts_ < 0).any() and (scales_ > 1).any() and (scales_ < 1).any()


# ----------------------------------------------------------------------------- numpy values (review, session 19)
def _numpy_config(**kw) -> TrainConfig:
    """The resume test's config, every field given as a numpy scalar or array (what a sweep over np.arange or a
    value read out of a pandas frame hands over)."""
    return TrainConfig(epochs=np.int64(3), batch_size=np.int32(2), steps_per_epoch=np.int64(2), lr=np.float64(3e-3),
                       weight_decay=np.float32(1e-4), warmup_frac=np.float64(0.1), crop=np.array([12, 12, 12]),
                       pos_fraction=np.float64(0.5), temperature=np.float64(1.0), augment=np.bool_(True), seed=np.uint8(3),
                       sw_overlap=np.float64(0.25), inference=np.str_("sliding"), amp=np.bool_(True), val_every=np.int64(1),
                       augment_backend=np.str_("auto"), **kw)


def _literal_config() -> TrainConfig:
    """The same config in Python literals (weight_decay: the float nearest float32's 1e-4, which is what numpy gave)."""
    return TrainConfig(epochs=3, batch_size=2, steps_per_epoch=2, lr=3e-3, weight_decay=float(np.float32(1e-4)), crop=(12, 12, 12), seed=3)


def test_train_config_stores_numpy_values_as_plain_python() -> None:
    cfg = _numpy_config()
    plain = {k: type(v) for k, v in dataclasses.asdict(cfg).items()}
    assert plain == {"epochs": int, "batch_size": int, "steps_per_epoch": int, "lr": float, "weight_decay": float,
                     "warmup_frac": float, "crop": tuple, "pos_fraction": float, "temperature": float, "augment": bool,
                     "seed": int, "sw_overlap": float, "inference": str, "amp": bool, "val_every": int, "augment_backend": str}
    assert all(type(c) is int for c in cfg.crop)  # type: ignore[union-attr]
    assert cfg == _literal_config()  # the same values


def test_a_numpy_config_resumes_from_its_checkpoint(tmp_path, capsys) -> None:
    """A config built from numpy scalars went into last.pt as numpy objects; torch.load(weights_only=True) refused
    them, so every restart printed "unreadable checkpoint" and trained from scratch. Oracle: the uninterrupted run
    with the same config written in Python literals, bit for bit."""
    x, y = _blob_data(4)
    ref = _tiny()
    train(ref, x, y, _literal_config(), val_images=x[:2], val_labels=y[:2], progress=False)

    cfg = _numpy_config()
    r1 = train(_tiny(), x, y, cfg, val_images=x[:2], val_labels=y[:2], ckpt_dir=tmp_path, progress=False, stop_after_epoch=1)
    assert r1.extra.get("stopped")
    state = torch.load(tmp_path / "last.pt", weights_only=True)  # readable without unpickling
    assert state["config"]["crop"] == [12, 12, 12] and type(state["config"]["lr"]) is float
    torch.manual_seed(12345)
    resumed = _tiny()
    r2 = train(resumed, x, y, _numpy_config(), val_images=x[:2], val_labels=y[:2], ckpt_dir=tmp_path, progress=False)
    assert r2.resumed_from == 1
    assert "unreadable checkpoint" not in capsys.readouterr().out
    for (k, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize(("bad", "message"), [
    ({"lr": float("inf")}, "lr must be a finite number > 0"),
    ({"lr": float("nan")}, "lr must be a finite number > 0"),
    ({"lr": "3e-3"}, "lr must be a finite number > 0"),
    ({"weight_decay": float("inf")}, "weight_decay must be a finite number >= 0"),
    ({"temperature": float("inf")}, "temperature must be a finite number > 0"),
    ({"temperature": True}, "temperature must be a finite number > 0"),
    ({"warmup_frac": float("nan")}, "warmup_frac must be a finite number >= 0"),
    ({"pos_fraction": 1.5}, "pos_fraction must be in [0, 1]"),
    ({"sw_overlap": float("nan")}, "sw_overlap must be a finite number >= 0"),
    ({"epochs": np.float64(2.0)}, "epochs must be an int >= 1"),
    ({"batch_size": np.int64(0)}, "batch_size must be an int >= 1"),
    ({"steps_per_epoch": 1.5}, "steps_per_epoch must be an int >= 1 or None"),
    ({"seed": np.int64(-1)}, "seed must be a non-negative int"),
    ({"augment": "no"}, "augment must be a bool"),
    ({"amp": 1}, "amp must be a bool"),
    ({"crop": (8.5, 8, 8)}, "crop must be three positive ints or None"),  # int() used to cut it to 8
    ({"crop": 8}, "crop must be three positive ints or None"),
    ({"inference": 3}, "inference must be one of"),
    ({"augment_backend": ["monai"]}, "augment_backend must be one of"),
])
def test_train_config_refuses_non_finite_and_mistyped_values_naming_the_field(bad: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        TrainConfig(**bad)
    assert str(err.value).startswith(message)


def test_save_model_stores_numpy_values_as_plain_python_and_loads_back(tmp_path) -> None:
    """np.float64 passed through as a float subclass (then weights_only loading failed); other numpy scalars and
    arrays were stored as strings ([np.int64(8)] -> ['8'], np.array([8, 16]) -> '[ 8 16]'), so load_model failed later.
    Oracle: the spec written with Python literals."""
    net = _tiny()
    spec = {"name": np.str_("unet"), "kwargs": {"channels": [np.int64(8), np.int64(16)], "strides": np.array([2]),
                                                "num_res_units": np.int32(0)},
            "crop": np.array([16, 16, 16]), "overlap": np.float64(0.25), "inference": np.str_("sliding"), "flag": np.bool_(True),
            "grid": np.array([[1.5, 2.0]]), "nothing": None}
    expected = {"name": "unet", "kwargs": {"channels": [8, 16], "strides": [2], "num_res_units": 0}, "crop": [16, 16, 16],
                "overlap": 0.25, "inference": "sliding", "flag": True, "grid": [[1.5, 2.0]], "nothing": None}
    path = models.save_model(models.LogitScale(net, np.float64(2.0)), tmp_path / "np.pt", spec)
    blob = torch.load(path, weights_only=True)  # no numpy object left to unpickle

    def types(v):
        return {k: types(w) for k, w in v.items()} if isinstance(v, dict) else [types(w) for w in v] if isinstance(v, list) else type(v)

    assert types(blob["spec"]) == types({**expected, "logit_scale": 2.0})
    loaded, spec2 = models.load_model(path)
    assert spec2 == {**expected, "logit_scale": 2.0}
    x = torch.randn(1, 4, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), 2.0 * net.eval()(x))


@pytest.mark.parametrize(("spec", "where"), [
    ({"kwargs": {"act": object()}}, r"spec\['kwargs'\]\['act'\] must be a plain value"),
    ({"crop": [16, 16, torch.tensor(16)]}, r"spec\['crop'\]\[2\] must be a plain value"),
    ({"path": __import__("pathlib").Path("x")}, r"spec\['path'\] must be a plain value"),
    ({"kwargs": {1: 2}}, r"spec\['kwargs'\] has a key 1"),
])
def test_save_model_refuses_values_it_cannot_store_naming_the_key(tmp_path, spec: dict, where: str) -> None:
    """Anything else used to be stored as str(value), and the model failed to rebuild later."""
    with pytest.raises(ValueError, match=where):
        models.save_model(_tiny(), tmp_path / "x.pt", {"name": "unet", **spec})
    assert not (tmp_path / "x.pt").exists()


def test_dropout_follows_config_seed_not_the_callers_global_rng() -> None:
    """Every random choice of a run derives from ``config.seed``: a net with dropout trained twice with one config, after
    different global seeds, ends with the same weights (oracle: the other run), another config seed gives other weights,
    and ``train`` leaves the caller's global RNG as it found it."""
    x, y = _cube_data(2)
    cfg = TrainConfig(epochs=2, batch_size=1, steps_per_epoch=2, augment=False, seed=5)

    def net() -> torch.nn.Module:
        return models.build_unet("unet", seed=0, channels=(8, 16), strides=(2,), num_res_units=0, dropout=0.5)

    nets = []
    for global_seed, c in ((1, cfg), (999, cfg), (1, dataclasses.replace(cfg, seed=6))):
        torch.manual_seed(global_seed)
        before = torch.get_rng_state()
        n = net()
        train(n, x, y, c, progress=False)
        assert torch.equal(torch.get_rng_state(), before)
        nets.append(n)
    for (k, a), b in zip(nets[0].state_dict().items(), nets[1].state_dict().values()):
        assert torch.equal(a, b), k
    assert any(not torch.equal(a, b) for a, b in zip(nets[0].state_dict().values(), nets[2].state_dict().values()))


def test_a_checkpoint_tagged_with_an_old_style_teacher_signature_is_not_resumed(tmp_path, capsys) -> None:
    """A student checkpoint whose resume_tag holds the teacher's signature as the old weights_signature computed it
    (float32 values of the state dict, no version header) is a mismatch: training starts afresh and says the tag
    differs, instead of resuming on a teacher it cannot tell apart (oracle: the old formula, copied here)."""
    import hashlib

    def old_signature(net: torch.nn.Module) -> str:
        h = hashlib.sha1()
        for k, v in net.state_dict().items():
            h.update(f"{k}:{tuple(v.shape)}:{v.dtype};".encode())
            h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    teacher = models.LogitScale(_tiny(), 2.0)
    assert models.weights_signature(teacher) != old_signature(teacher)
    x, y = _blob_data(1, size=8)
    cfg = TrainConfig(epochs=2, batch_size=1, steps_per_epoch=1, crop=None, seed=3, augment=False)

    def run(sig: str) -> TrainResult:
        return train(_tiny(), x, y, cfg, ckpt_dir=tmp_path, progress=False, stop_after_epoch=1, resume_tag=f"student teacher={sig}")

    run(old_signature(teacher))
    capsys.readouterr()
    assert run(models.weights_signature(teacher)).resumed_from == 0
    assert "written with another resume_tag; starting afresh" in capsys.readouterr().out


def test_submodules_the_caller_froze_stay_in_eval_mode_at_every_training_forward(mode_probe) -> None:
    """A net handed over in train mode with one submodule in eval mode (a frozen BatchNorm or teacher): that
    submodule sees eval mode at every training forward, also after a hook that flattens the modes (eval, then
    train on the whole net) and after validation; the rest trains in train mode; the result is in eval mode
    (oracle: two probe layers)."""
    x, y = _cube_data(2)
    live, frozen = mode_probe, type(mode_probe)()
    torch.manual_seed(0)
    net = torch.nn.Sequential(live, torch.nn.Conv3d(4, 4, 1), frozen).train()
    frozen.eval()

    def hook(net_: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor, gen: torch.Generator, brain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net_.eval()
        net_.train()
        return xb, yb

    train(net, x, y, TrainConfig(epochs=2, batch_size=1, steps_per_epoch=2, augment=False), batch_hook=hook,
          val_images=x, val_labels=y, progress=False)
    assert live.seen == [True, True, False, False, True, True, False, False]  # 2 steps, then 2 cases validated
    assert frozen.seen == [False] * 8
    assert not net.training and not live.training and not frozen.training


def test_a_frozen_submodule_keeps_its_own_flag_and_its_children_theirs(mode_probe) -> None:
    """Only the flag the caller set is kept: a block left in eval mode whose child the caller put back in train mode
    (dropout kept on in a frozen teacher) has that child run in train mode at every training step, not flattened to
    eval mode with the block (oracle: the probes' flags as the caller set them)."""
    x, y = _cube_data(2)
    inner, block_probe = mode_probe, type(mode_probe)()
    torch.manual_seed(0)
    block = torch.nn.Sequential(block_probe, inner)
    net = torch.nn.Sequential(torch.nn.Conv3d(4, 4, 1), block).train()
    block.eval()
    inner.train()
    train(net, x, y, TrainConfig(epochs=1, batch_size=1, steps_per_epoch=2, augment=False), progress=False)
    assert block_probe.seen == [False, False]
    assert inner.seen == [True, True]
