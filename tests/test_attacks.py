"""Tests of robustseg_lib.attacks against independent oracles (tiny models, tiny volumes)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from torch import nn

from robustseg_lib.attacks import (
    TARGET_POLICIES,
    SlidingWindowModel,
    attack_sweep,
    fgsm,
    ifgsm,
    make_target,
    target_region,
    tifgsm,
)

SHAPE = (2, 4, 3, 4, 5)  # N, C, D, H, W


# ----------------------------------------------------------------------------- tiny models
def linear_net(c: int = 4, k: int = 4, seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Conv3d:
    """Voxel-wise linear classifier (1×1×1 conv) with fixed random weights."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Conv3d(c, k, 1).to(dtype)
    with torch.no_grad():
        net.weight.copy_(torch.randn(k, c, 1, 1, 1, generator=g, dtype=dtype))
        net.bias.copy_(torch.randn(k, generator=g, dtype=dtype) * 0.5)
    return net


def hand_ce_grad(net: nn.Conv3d, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∇ₓ mean-CE of a 1×1×1 linear net, written out by hand (float64, no autograd):
    g_c(v) = Σ_k W[k, c] (softmax_k(v) − [y(v) = k]) / M."""
    w = net.weight.detach().double()[:, :, 0, 0, 0]  # (K, C)
    b = net.bias.detach().double()
    xd = x.double()
    logits = torch.einsum("kc,ncdhw->nkdhw", w, xd) + b[None, :, None, None, None]
    p = torch.exp(logits - logits.max(1, keepdim=True).values)
    p = p / p.sum(1, keepdim=True)
    onehot = torch.zeros_like(p).scatter_(1, y[:, None], 1.0)
    m = y.numel()
    return torch.einsum("kc,nkdhw->ncdhw", w, p - onehot) / m


def conv_net(seed: int = 0, dtype: torch.dtype = torch.float32, c: int = 4, k: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv3d(c, 6, 3, padding=1), nn.Tanh(), nn.Conv3d(6, k, 1)).to(dtype)


def data(seed: int = 0, shape: tuple[int, ...] = SHAPE, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 1.7).to(dtype)
    y = torch.randint(0, 4, (shape[0], *shape[2:]), generator=g)
    return x, y


def ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(model(x), y))


# ----------------------------------------------------------------------------- FGSM / i-FGSM oracles
def test_fgsm_two_class_sign_is_analytic() -> None:
    # 2 classes: g_c(v) ∝ (W1c − W0c)(p1 − [y=1]) so sign g = sign(W1c − W0c)·(+1 if y=0 else −1)
    net = nn.Conv3d(3, 2, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.5, -1.0, 0.2], [-0.5, 1.0, 0.9]])[:, :, None, None, None])
        net.bias.zero_()
    x, _ = data(1, (2, 3, 2, 3, 4))
    y = torch.randint(0, 2, (2, 2, 3, 4), generator=torch.Generator().manual_seed(3))
    s_w = torch.tensor([-1.0, 1.0, 1.0])[None, :, None, None, None]
    s_y = torch.where(y == 0, 1.0, -1.0)[:, None]
    adv = fgsm(net, x, y, 0.25)
    torch.testing.assert_close(adv, x + 0.25 * s_w * s_y, rtol=0, atol=1e-6)


def test_fgsm_matches_hand_gradient_voxelwise() -> None:
    net, (x, y) = linear_net(), data()
    g = hand_ce_grad(net, x, y)
    assert g.abs().min() > 1e-9  # sign well defined everywhere
    adv = fgsm(net, x, y, 0.1)
    torch.testing.assert_close(adv, (x.double() + 0.1 * g.sign()).float(), rtol=0, atol=1e-6)
    assert torch.equal((adv - x).sign(), g.sign().float())


def test_per_sample_eps_is_never_read_per_channel_when_n_equals_c() -> None:
    """N = C = 4: an (N, 1, 1, 1, 1) eps is per sample (oracle: x_n + eps_n·sign(g), g the hand-written CE gradient),
    not per channel as the old reshape read it; (1, C, 1, 1, 1) and 1-D C values stay per channel; (N, C, 1, 1, 1)
    is both; shapes that could be read two ways are refused with an error naming eps."""
    net, (x, y) = linear_net(), data(shape=(4, 4, 2, 3, 3))
    g = hand_ce_grad(net, x, y)
    assert g.abs().min() > 1e-9
    per = torch.tensor([0.05, 0.1, 0.2, 0.4], dtype=torch.float64)
    by_sample, by_channel = per[:, None, None, None, None], per[None, :, None, None, None]
    adv = fgsm(net, x, y, by_sample.float())
    torch.testing.assert_close(adv, (x.double() + by_sample * g.sign()).float(), rtol=0, atol=1e-6)
    assert (adv[0] - x[0]).abs().max() <= 0.05 and (adv[3] - x[3]).abs().amin() > 0.39  # sample 0 moved 0.05, sample 3 0.4
    for eps in (by_channel, per, per.tolist()):
        torch.testing.assert_close(fgsm(net, x, y, eps), (x.double() + by_channel * g.sign()).float(), rtol=0, atol=1e-6)
    both = by_sample * torch.tensor([1.0, 0.5, 0.0, 2.0], dtype=torch.float64)[None, :, None, None, None]
    torch.testing.assert_close(fgsm(net, x, y, both), (x.double() + both * g.sign()).float(), rtol=0, atol=1e-6)
    # a batch attack with per-sample eps and alpha equals per-case attacks with scalars (mask and clip included)
    lo, hi, mask = x.amin(dim=(2, 3, 4), keepdim=True), x.amax(dim=(2, 3, 4), keepdim=True), x[:, :1] > -1.5
    batch = ifgsm(net, x, y, by_sample, by_sample / 4, 2, clip=(lo, hi), mask=mask)
    for i in range(4):
        one = ifgsm(net, x[i : i + 1], y[i : i + 1], float(per[i]), float(per[i]) / 4, 2,
                    clip=(lo[i : i + 1], hi[i : i + 1]), mask=mask[i : i + 1])
        assert torch.equal(batch[i : i + 1], one)
    x2, y2 = data(shape=(2, 4, 2, 3, 3))
    for bad in (per[:, None, None, None, None], per[None, :], per[:, None], torch.ones(2, 4), torch.ones(3, 1, 1, 1, 1)):
        with pytest.raises(ValueError, match=r"eps must be a float, a 1-D sequence of 4 per-channel values, or a tensor shaped \(2 or 1, 4 or 1"):
            fgsm(net, x2, y2, bad)
    with pytest.raises(ValueError, match="alpha must be"):
        ifgsm(net, x2, y2, 0.1, per[:, None, None, None, None], 2)


def test_a_budget_with_spatial_extent_is_refused_not_reshaped() -> None:
    """An eps or alpha map over voxels ((1, 1, D, 1, 1), or one value per voxel as x's shape) fits none of the shapes
    the rule allows: it is refused with the ValueError naming the budget, never reshaped into per-channel values
    (oracle: the documented shapes (N|1, C|1, 1, 1, 1))."""
    net, (x, y) = linear_net(), data(shape=(2, 4, 2, 3, 3))
    for bad in (torch.full((1, 1, 2, 1, 1), 0.1), torch.full((1, 4, 1, 3, 1), 0.1), torch.full(tuple(x.shape), 0.1)):
        with pytest.raises(ValueError, match=r"eps must be a float, a 1-D sequence of 4 per-channel values, or a tensor shaped \(2 or 1, 4 or 1, 1, 1, 1\)"):
            fgsm(net, x, y, bad)
        with pytest.raises(ValueError, match=r"alpha must be a float"):
            ifgsm(net, x, y, 0.1, bad, 2)


def test_ifgsm_one_step_alpha_eps_equals_fgsm() -> None:
    net, (x, y) = conv_net(), data()
    lo, hi = x.amin(dim=(2, 3, 4), keepdim=True), x.amax(dim=(2, 3, 4), keepdim=True)
    mask = x[:, :1] > -1.0
    a = fgsm(net, x, y, (0.1, 0.2, 0.0, 0.3), clip=(lo, hi), mask=mask)
    b = ifgsm(net, x, y, (0.1, 0.2, 0.0, 0.3), (0.1, 0.2, 0.0, 0.3), 1, clip=(lo, hi), mask=mask)
    assert torch.equal(a, b)


def test_ifgsm_two_step_trajectory_by_hand() -> None:
    net, (x, y) = linear_net(seed=1), data(seed=1)
    x = x * 0.1  # near the decision boundaries, so some gradient signs flip after step 1
    eps, alpha = 0.5, 0.3  # the second step overshoots the ball wherever the sign repeats
    x0 = x.double()
    x1 = x0 + (alpha * hand_ce_grad(net, x0.float(), y).sign()).clamp(-eps, eps)
    x2 = x0 + (x1 - x0 + alpha * hand_ce_grad(net, x1.float(), y).sign()).clamp(-eps, eps)
    trace = []
    adv = ifgsm(net, x, y, eps, alpha, 2, callback=lambda k, xk: trace.append((k, xk)))
    torch.testing.assert_close(adv, x2.float(), rtol=0, atol=1e-6)
    assert [k for k, _ in trace] == [0, 1, 2]
    assert torch.equal(trace[0][1], x) and torch.equal(trace[2][1], adv)
    torch.testing.assert_close(trace[1][1], x1.float(), rtol=0, atol=1e-6)
    # both cases occur: sign repeated -> clipped onto the sphere; sign flipped -> back to x
    d = (adv - x).abs()
    assert (d > 0.49).any() and (d < 0.01).any()


def test_gradient_sign_matches_finite_differences() -> None:
    net = conv_net(seed=5, dtype=torch.float64)
    x, y = data(5, (1, 4, 4, 4, 4), torch.float64)
    adv = fgsm(net, x, y, 1e-3)
    sign = (adv - x).sign()
    h = 1e-6
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(40):
        idx = tuple(int(rng.integers(0, s)) for s in x.shape)
        e = torch.zeros_like(x)
        e[idx] = h
        fd = (ce(net, x + e, y) - ce(net, x - e, y)) / (2 * h)
        if abs(fd) < 1e-5:  # |g| tiny: sign not meaningful
            continue
        assert sign[idx].item() == np.sign(fd), idx
        checked += 1
    assert checked >= 10


# ----------------------------------------------------------------------------- invariants
@pytest.mark.parametrize("attack", ["fgsm", "ifgsm", "pgd", "tifgsm"])
def test_per_channel_budget_clip_and_mask(attack: str) -> None:
    net, (x, y) = conv_net(), data()
    eps = (0.0, 0.1, 0.2, 0.3)
    lo = x.amin(dim=(2, 3, 4), keepdim=True) + 0.5  # per-case per-modality (N, C, 1, 1, 1)
    hi = x.amax(dim=(2, 3, 4), keepdim=True) - 0.5
    x = torch.maximum(torch.minimum(x, hi), lo)  # clean inside clip
    mask = torch.rand(x.shape[0], *x.shape[2:], generator=torch.Generator().manual_seed(0)) > 0.3  # (N, D, H, W)
    kw = dict(clip=(lo, hi), mask=mask)
    if attack == "fgsm":
        adv = fgsm(net, x, y, eps, **kw)
    elif attack == "ifgsm":
        adv = ifgsm(net, x, y, eps, 0.07, 5, **kw)
    elif attack == "pgd":
        adv = ifgsm(net, x, y, eps, 0.07, 5, random_start=True, generator=torch.Generator().manual_seed(1), **kw)
    else:
        adv = tifgsm(net, x, make_target(y, "erase"), eps, 0.07, 5, **kw)
    d = adv - x
    for c, e in enumerate(eps):
        assert (d[:, c].abs() <= e).all()  # in x's dtype
        assert ((adv[:, c].double() - x[:, c].double()).abs() <= e).all()  # and exactly
    assert torch.equal(adv[:, 0], x[:, 0])
    assert (adv >= lo).all() and (adv <= hi).all()
    m = mask[:, None].expand_as(x)
    assert torch.equal(adv[~m], x[~m])
    assert (d[:, 1:][m[:, 1:]] != 0).float().mean() > 0.5  # it did move inside the mask


@pytest.mark.parametrize("clip", [(-1.0, 1.5), ([-1.0, -2.0, -0.5, -3.0], [1.0, 2.0, 0.5, 3.0])])
def test_scalar_and_per_channel_clip(clip: tuple) -> None:
    net, (x, y) = conv_net(), data()
    lo = torch.as_tensor(clip[0], dtype=torch.float32).reshape(1, -1, 1, 1, 1)
    hi = torch.as_tensor(clip[1], dtype=torch.float32).reshape(1, -1, 1, 1, 1)
    x_in = torch.maximum(torch.minimum(x, hi), lo)
    adv = ifgsm(net, x_in, y, 0.3, 0.1, 4, clip=clip)
    assert (adv >= lo).all() and (adv <= hi).all()
    assert ((adv - x_in).abs() <= 0.3).all()
    # voxels outside the clip range are never pushed further out, and move at most eps
    adv2 = ifgsm(net, x, y, 0.3, 0.1, 4, clip=clip)
    assert ((adv2 - x).abs() <= 0.3).all()
    above, below = x > hi, x < lo
    assert (adv2[above.expand_as(x)] <= x[above.expand_as(x)]).all()
    assert (adv2[below.expand_as(x)] >= x[below.expand_as(x)]).all()


def test_rounding_cannot_break_the_budget() -> None:
    # large-magnitude values: x + eps rounds in float32; the guarantee must still hold exactly
    net = conv_net()
    x = torch.linspace(-300, 300, 2 * 4 * 3 * 4 * 5).reshape(SHAPE) + 0.123
    y = torch.zeros(2, 3, 4, 5, dtype=torch.long)
    for eps in (0.1, 0.3, 1e-3):
        adv = ifgsm(net, x, y, eps, eps / 3, 3)
        assert ((adv - x).abs() <= eps).all()
        assert ((adv.double() - x.double()).abs() <= eps).all()


def test_eps_zero_returns_x_exactly_without_running_the_model() -> None:
    def boom(_: torch.Tensor) -> torch.Tensor:
        raise AssertionError("model must not run for eps = 0")

    x, y = data()
    x[0, 0, 0, 0, 0] = -0.0
    for adv in (fgsm(boom, x, y, 0.0), ifgsm(boom, x, y, 0, 0.1, 3), tifgsm(boom, x, y, [0, 0, 0, 0], 0.1, 3)):
        assert torch.equal(adv, x) and adv is not x
        assert torch.equal(torch.signbit(adv), torch.signbit(x))


def test_dtype_device_detached_and_no_grad_context() -> None:
    net = conv_net(dtype=torch.float64)
    x, y = data(dtype=torch.float64)
    x.requires_grad_(True)
    with torch.no_grad():  # attacks enable grad themselves
        adv = ifgsm(net, x, y, 0.1, 0.05, 2)
    assert adv.dtype == torch.float64 and adv.device == x.device
    assert not adv.requires_grad and adv.grad_fn is None
    assert x.grad is None
    assert not torch.equal(adv, x.detach())


class Mixed(nn.Module):
    """Has train-mode dependent layers, a submodule in another mode, frozen parameters."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv3d(4, 6, 3, padding=1)
        self.bn = nn.BatchNorm3d(6)
        self.drop = nn.Dropout(0.5)
        self.b = nn.Conv3d(6, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.drop(torch.relu(self.bn(self.a(x)))))


def test_model_mode_params_and_grads_untouched_and_eval_used() -> None:
    net = Mixed().train()
    net.b.eval()  # mixed modes must be restored exactly
    net.a.bias.requires_grad_(False)
    known = torch.full_like(net.a.weight, 7.0)
    net.a.weight.grad = known.clone()
    state = copy.deepcopy(net.state_dict())
    modes = {n: m.training for n, m in net.named_modules()}
    flags = {n: p.requires_grad for n, p in net.named_parameters()}
    x, y = data()
    seen = []
    cb = lambda k, xk: seen.append((net.training, torch.is_grad_enabled()))  # noqa: E731
    outs = [
        fgsm(net, x, y, 0.1),
        ifgsm(net, x, y, 0.1, 0.05, 2, random_start=True, generator=torch.Generator().manual_seed(0), callback=cb),
        tifgsm(net, x, make_target(y, "erase"), 0.1, 0.05, 2),
    ]
    # eps = 0 (scalar or every channel) takes a shortcut without running the model: its callbacks get the same
    # contract, and the shortcut leaves the modes as they were too
    for eps in (0.0, [0.0] * 4):
        assert torch.equal(ifgsm(net, x, y, eps, 0.05, 2, callback=cb), x)
        assert torch.equal(tifgsm(net, x, make_target(y, "erase"), eps, 0.05, 2, callback=cb), x)
        assert torch.equal(fgsm(net, x, y, eps), x)
    assert seen == [(False, False)] * (3 + 4 * 3)  # callbacks: eval mode, no grad
    assert {n: m.training for n, m in net.named_modules()} == modes
    assert {n: p.requires_grad for n, p in net.named_parameters()} == flags
    assert torch.equal(net.a.weight.grad, known)
    assert all(p.grad is None for n, p in net.named_parameters() if n != "a.weight")
    for k, v in net.state_dict().items():  # incl. BatchNorm running stats
        assert torch.equal(v, state[k]), k
    # the attack ran in eval mode: identical to attacking an eval-mode copy (dropout would differ)
    ref = copy.deepcopy(net).eval()
    assert torch.equal(outs[0], fgsm(ref, x, y, 0.1))
    assert torch.equal(outs[2], tifgsm(ref, x, make_target(y, "erase"), 0.1, 0.05, 2))


def test_random_start_is_deterministic_and_in_ball() -> None:
    net, (x, y) = conv_net(), data()

    def run(seed: int, steps: int = 1) -> torch.Tensor:
        return ifgsm(net, x, y, 0.2, 1e-6, steps, random_start=True, generator=torch.Generator().manual_seed(seed))

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert ((a - x).abs() <= 0.2).all()
    assert (a - x).abs().mean() > 0.05  # spread over the ball, not at the centre
    # plain i-FGSM is deterministic too
    assert torch.equal(ifgsm(net, x, y, 0.2, 0.05, 3), ifgsm(net, x, y, 0.2, 0.05, 3))


# ----------------------------------------------------------------------------- targeted
def test_targeted_lowers_target_loss_and_moves_predictions() -> None:
    net = linear_net(seed=3)
    x, _ = data(3, (2, 4, 4, 4, 4))
    x = x * 0.3
    with torch.no_grad():
        y = net(x).argmax(1)  # attack what the model currently predicts
    target = make_target(y, "erase")
    region = target_region(y, "erase")
    assert region.float().mean() > 0.3
    before = ce(net, x, target)
    adv_t = tifgsm(net, x, target, 1.0, 0.2, 10)
    adv_u = ifgsm(net, x, y, 1.0, 0.2, 10)
    assert ce(net, adv_t, target) < before
    assert ce(net, adv_t, target) < ce(net, adv_u, target)
    with torch.no_grad():
        frac_before = (net(x).argmax(1)[region] == target[region]).float().mean()
        frac_after = (net(adv_t).argmax(1)[region] == target[region]).float().mean()
    assert frac_before == 0 and frac_after > 0.5


def test_make_target_and_region_by_hand() -> None:
    y = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    assert torch.equal(make_target(y, "erase"), torch.zeros_like(y))
    assert torch.equal(make_target(y, "et_to_ncr"), torch.tensor([[0, 1, 2, 1], [1, 2, 1, 0]]))
    assert torch.equal(make_target(y, "ed_to_et"), torch.tensor([[0, 1, 3, 3], [3, 3, 1, 0]]))
    assert torch.equal(target_region(y, "erase"), y > 0)
    assert torch.equal(target_region(y, "et_to_ncr"), y == 3)
    assert torch.equal(target_region(y, "ed_to_et"), y == 2)
    for p in TARGET_POLICIES:
        assert torch.equal(target_region(y, p), make_target(y, p) != y)
    yn = y.numpy().astype(np.uint8)
    out = make_target(yn, "ed_to_et")
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and (yn == y.numpy()).all()
    assert set(TARGET_POLICIES) >= {"erase", "et_to_ncr", "ed_to_et"}
    with pytest.raises(ValueError, match="erase"):
        make_target(y, "grow")
    with pytest.raises(ValueError, match="policy"):
        target_region(y, "grow")


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(eps=-0.1), "eps"),
        (dict(eps=(0.1, 0.2)), "eps"),
        (dict(eps=float("nan")), "eps"),
        (dict(alpha=-1.0), "alpha"),
        (dict(steps=0), "steps"),
        (dict(steps=1.5), "steps"),
        (dict(y=torch.zeros(2, 3, 4, 5)), "y"),
        (dict(y=torch.zeros(2, 3, 4, 4, dtype=torch.long)), "y"),
        (dict(x=torch.zeros(2, 4)), "x"),
        (dict(mask=torch.ones(2, 2, 3, 4, 5, dtype=torch.bool)), "mask"),
        (dict(mask=torch.ones(2, 1, 3, 4, 5)), "mask"),
        (dict(clip=(1.0, 0.0)), "lo"),
        (dict(clip=([0.0, 0.0], 1.0)), "lo"),
        (dict(clip=(0.0,)), "clip"),
        (dict(loss_fn=3), "loss_fn"),
    ],
)
def test_validation_errors_name_the_parameter(kwargs: dict, match: str) -> None:
    x, y = data()
    args = dict(x=x, y=y, eps=0.1, alpha=0.05, steps=2)
    args.update(kwargs)
    a = args.pop("x"), args.pop("y"), args.pop("eps"), args.pop("alpha"), args.pop("steps")
    with pytest.raises(ValueError, match=match):
        ifgsm(conv_net(), *a, **args)


# ----------------------------------------------------------------------------- sliding window
class SoftmaxNet(nn.Module):
    """Ends in an op that saves its output (breaks naive MONAI sliding-window autograd)."""

    def __init__(self, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(4, 4, 3, padding=1).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.conv(x), 1) * 3  # returns logits-like scores


def test_sliding_window_equals_net_when_roi_is_volume() -> None:
    net = conv_net()
    x, _ = data(shape=(2, 4, 6, 6, 6))
    sw = SlidingWindowModel(net, (6, 6, 6))
    with torch.no_grad():
        assert torch.equal(sw(x), net(x))


def test_sliding_window_forward_and_gradient() -> None:
    net = nn.Sequential(conv_net(dtype=torch.float64), nn.ReLU())  # last op saves its output
    x, y = data(shape=(1, 4, 10, 9, 8), dtype=torch.float64)
    sw = SlidingWindowModel(net, (6, 6, 6), sw_batch_size=2, overlap=0.5, mode="gaussian")
    with torch.no_grad():
        ref = sliding_window_inference(x, (6, 6, 6), 2, net, overlap=0.5, mode="gaussian")
        assert torch.equal(sw(x), ref)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(sw(xr), y), xr)
    assert g.abs().sum() > 0
    h = 1e-6
    for idx in [(0, 0, 1, 1, 1), (0, 2, 5, 4, 3), (0, 3, 9, 8, 7)]:
        e = torch.zeros_like(x)
        e[idx] = h
        fd = (ce(sw, x + e, y) - ce(sw, x - e, y)) / (2 * h)
        assert g[idx].item() == pytest.approx(fd, rel=1e-4, abs=1e-9)


def test_attacks_through_sliding_window_keep_invariants() -> None:
    net = SoftmaxNet(torch.float32)
    x, y = data(shape=(2, 4, 8, 7, 9))
    sw = SlidingWindowModel(net, (4, 4, 4), sw_batch_size=3)
    net.train()
    lo, hi = x.amin(dim=(2, 3, 4), keepdim=True), x.amax(dim=(2, 3, 4), keepdim=True)
    mask = x[:, :1] > 0
    eps = (0.0, 0.1, 0.2, 0.3)
    for adv in (
        fgsm(sw, x, y, eps, clip=(lo, hi), mask=mask),
        ifgsm(sw, x, y, eps, 0.05, 3, clip=(lo, hi), mask=mask),
        tifgsm(sw, x, make_target(y, "ed_to_et"), eps, 0.05, 3, clip=(lo, hi), mask=mask),
    ):
        for c, e in enumerate(eps):
            assert ((adv[:, c] - x[:, c]).abs() <= e).all()
        assert (adv >= lo).all() and (adv <= hi).all()
        m = mask.expand_as(x)
        assert torch.equal(adv[~m], x[~m]) and not torch.equal(adv, x)
    assert net.training and sw.training


# ----------------------------------------------------------------------------- sweep
def test_attack_sweep_schema_and_clean_rows() -> None:
    from robustseg_lib import metrics

    net = linear_net(seed=4)
    x, _ = data(4, (3, 4, 6, 6, 6))
    with torch.no_grad():  # labels close to the model's own prediction: Dice is meaningful
        y = net(x).argmax(1)
    y[0, :2] = 0
    brain = torch.ones(3, 6, 6, 6, dtype=torch.bool)
    brain[:, 0] = False
    ids = ["a", "b", "c"]
    res, per, ex = attack_sweep(
        net, x, y.to(torch.uint8), attack="ifgsm", eps_grid=[0.0, 0.3], steps=2, mask=brain,
        clip=(x.amin(dim=(2, 3, 4)), x.amax(dim=(2, 3, 4))), case_ids=ids, progress=False, keep_examples=1,
    )
    assert list(res.columns) == ["case_id", "model", "attack", "eps", "steps", "region", "dice", "hd95"]
    assert len(res) == 3 * 2 * 3 and set(res["region"]) == {"WT", "TC", "ET"}
    assert list(per.columns) == ["case_id", "model", "attack", "eps", "steps", "modality", "linf", "l2", "psnr", "ssim"]
    assert len(per) == 3 * 2 * 4
    with torch.no_grad():
        clean = metrics.evaluate(net(x).argmax(1), y, ids, model="baseline")
    got = res[res.eps == 0].reset_index(drop=True)
    np.testing.assert_array_equal(got["dice"].to_numpy(), clean["dice"].to_numpy())
    assert (per[per.eps == 0]["linf"] == 0).all()
    adv_rows = per[per.eps == 0.3]
    assert (adv_rows["linf"] <= 0.3 + 1e-6).all() and (adv_rows["linf"] > 0).any()
    assert res[res.eps == 0.3]["dice"].mean() < got["dice"].mean()
    assert set(ex) == {0.0, 0.3} and ex[0.3]["x_adv"].shape == (1, 4, 6, 6, 6) and ex[0.3]["pred"].shape == (1, 6, 6, 6)
    assert torch.equal(ex[0.0]["x_adv"], x[:1])
    # a targeted sweep names its policy in both tables, so two policies' rows stay apart
    res_t, per_t, _ = attack_sweep(
        net, x, y.to(torch.uint8), attack="tifgsm", policy="erase", eps_grid=[0.3], steps=2, mask=brain, case_ids=ids, progress=False,
    )
    assert list(per_t.columns) == ["case_id", "model", "attack", "eps", "steps", "target_policy", "modality", "linf", "l2", "psnr", "ssim"]
    assert set(per_t["target_policy"]) == {"erase"} and set(res_t["target_policy"]) == {"erase"}
    # determinism: the same sweep twice gives identical tables
    res2, _, _ = attack_sweep(
        net, x, y, attack="ifgsm", eps_grid=[0.0, 0.3], steps=2, mask=brain,
        clip=(x.amin(dim=(2, 3, 4)), x.amax(dim=(2, 3, 4))), case_ids=ids, progress=False,
    )
    assert res.equals(res2)
    # metrics on background threads (the GPU default): the same table, row for row
    res3, _, _ = attack_sweep(
        net, x, y, attack="ifgsm", eps_grid=[0.0, 0.3], steps=2, mask=brain,
        clip=(x.amin(dim=(2, 3, 4)), x.amax(dim=(2, 3, 4))), case_ids=ids, progress=False, metric_workers=2,
    )
    assert res.equals(res3)
    with pytest.raises(ValueError, match="metric_workers"):
        attack_sweep(net, x, y, attack="fgsm", eps_grid=[0.1], progress=False, metric_workers=-1)


def test_background_metric_jobs_keep_order_bound_the_queue_and_raise() -> None:
    import threading
    import time

    from robustseg_lib.attacks import _Ordered

    running, peak, lock = [0], [0], threading.Lock()

    def job(i: int, delay: float) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(delay)
        with lock:
            running[0] -= 1
        return i

    q = _Ordered(3)
    for i in range(20):  # early jobs are the slowest: they finish last
        q.submit(job, i, 0.02 if i % 4 == 0 else 0.001)
        assert sum(not f.done() for f in q.waiting) <= q.limit
    assert q.collect() == list(range(20)) and peak[0] <= 3
    assert _Ordered(0).pool is None

    def boom() -> None:
        raise RuntimeError("metric failed")

    q = _Ordered(2)
    q.submit(boom)
    with pytest.raises(RuntimeError, match="metric failed"):
        q.collect()


def test_attack_sweep_targeted_columns() -> None:
    net = linear_net(seed=3)
    x, _ = data(3, (2, 4, 5, 5, 5))
    x = x * 0.3
    with torch.no_grad():
        y = net(x).argmax(1)
    res, _, _ = attack_sweep(
        net, x, y, attack="tifgsm", policy="erase", eps_grid=[0, 1.0], steps=5, hd95=False, progress=False, batch_size=1
    )
    assert {"target_policy", "target_frac"} <= set(res.columns)
    assert (res.target_policy == "erase").all()
    frac = res.groupby("eps")["target_frac"].mean()
    assert frac[0.0] == 0 and frac[1.0] > 0.5
    assert (res.steps == 5).all() and (res.attack == "tifgsm").all()
    with pytest.raises(ValueError, match="policy"):
        attack_sweep(net, x, y, attack="tifgsm", eps_grid=[0.1], progress=False)
    with pytest.raises(ValueError, match="attack"):
        attack_sweep(net, x, y, attack="pgd", eps_grid=[0.1], progress=False)


# ----------------------------------------------------------------------------- found by mutation testing (session 12)
def test_mask_without_clip_and_per_channel_eps_match_hand_gradient() -> None:
    """Oracle: hand-written CE gradient; x' = x + eps_c·sign(g) inside the mask, x bit for bit outside
    (incl. the sign of -0.0), with a per-channel budget and no clip."""
    net, (x, y) = linear_net(), data()
    mask = torch.rand(x.shape[0], *x.shape[2:], generator=torch.Generator().manual_seed(4)) > 0.4  # (N, D, H, W)
    x[:, :, 0, 0, :] = -0.0  # some of these are masked out: they must keep their sign bit
    m = mask[:, None].expand_as(x)
    assert (~m[:, :, 0, 0, :]).any() and m.any()
    eps = (0.1, 0.2, 0.05, 0.3)
    e = torch.tensor(eps, dtype=torch.float64)[None, :, None, None, None]
    g = hand_ce_grad(net, x, y)
    assert g.abs().min() > 1e-9
    want = torch.where(m, x.double() + e * g.sign(), x.double()).float()
    adv = fgsm(net, x, y, eps, mask=mask)
    torch.testing.assert_close(adv, want, rtol=0, atol=1e-6)
    assert torch.equal(adv[~m], x[~m]) and torch.equal(torch.signbit(adv[~m]), torch.signbit(x[~m]))
    # iterative attacks honour the mask without a clip too
    target = make_target(y, "erase")
    for adv in (ifgsm(net, x, y, eps, 0.07, 3, mask=mask), tifgsm(net, x, target, eps, 0.07, 3, mask=mask)):
        assert torch.equal(adv[~m], x[~m]) and (adv[m] != x[m]).float().mean() > 0.9


def test_fgsm_projection_onto_the_feasible_set_by_hand() -> None:
    """Oracle: the documented feasible set written out directly: x + eps·sign(g) (hand gradient) clamped to
    [x − eps, x + eps] ∩ [min(lo, x), max(hi, x)], so a voxel outside the clip range may stay where it is."""
    net, (x, y) = linear_net(), data()
    lo, hi = -1.0, 1.2  # many voxels of the N(0, 1.7²) data lie outside, on both sides
    eps = 0.4
    g = hand_ce_grad(net, x, y)
    xd = x.double()
    want = (xd + eps * g.sign()).clamp(xd - eps, xd + eps)
    want = torch.minimum(torch.maximum(want, torch.clamp(xd, max=lo)), torch.clamp(xd, min=hi)).float()
    adv = fgsm(net, x, y, eps, clip=(lo, hi))
    torch.testing.assert_close(adv, want, rtol=0, atol=1e-6)
    # both sides have voxels that stay put because the gradient points further out
    stay_lo, stay_hi = (x < lo) & (g < 0), (x > hi) & (g > 0)
    assert stay_lo.sum() > 3 and stay_hi.sum() > 3
    assert torch.equal(adv[stay_lo], x[stay_lo]) and torch.equal(adv[stay_hi], x[stay_hi])


def test_random_start_is_uniform_in_the_ball_and_feasible() -> None:
    """Statistical oracle for PGD's start (iterate k = 0 via the callback): symmetric and spread over
    [-eps, eps] like a uniform draw, and already projected (masked-out voxels untouched)."""
    net, (x, y) = conv_net(), data()
    mask = torch.rand(x.shape[0], *x.shape[2:], generator=torch.Generator().manual_seed(2)) > 0.3
    m = mask[:, None].expand_as(x)
    trace: list[torch.Tensor] = []
    ifgsm(net, x, y, 0.2, 1e-3, 1, mask=mask, random_start=True, generator=torch.Generator().manual_seed(0),
          callback=lambda k, xk: trace.append(xk) if k == 0 else None)
    start = (trace[0] - x)[m].double()
    assert torch.equal(trace[0][~m], x[~m])  # projected before use
    assert start.numel() > 300 and start.abs().max() <= 0.2
    assert 0.4 < (start < 0).double().mean() < 0.6  # both signs, like U(-eps, eps)
    assert 0.4 < (start.abs() > 0.1).double().mean() < 0.6  # |U(-eps, eps)| > eps/2 with probability 1/2
    assert abs(float(start.mean())) < 0.02


def _sweep_case_data() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """3 cases with different brain masks and per-case (N, C) clip ranges (sliced per batch by the sweep)."""
    net = linear_net(seed=4)
    x, _ = data(4, (3, 4, 5, 5, 5))
    with torch.no_grad():
        y = net(x).argmax(1)
    mask = torch.rand(3, 5, 5, 5, generator=torch.Generator().manual_seed(7)) > 0.4
    lo = x.amin(dim=(2, 3, 4)).numpy() + np.array([[0.2], [0.6], [1.0]], dtype=np.float32)  # differs per case
    hi = x.amax(dim=(2, 3, 4)).numpy() - np.array([[1.0], [0.2], [0.6]], dtype=np.float32)
    return net, x, y, mask, lo, hi


@pytest.mark.parametrize("attack", ["fgsm", "ifgsm", "tifgsm"])
def test_attack_sweep_examples_equal_direct_attacks(attack: str) -> None:
    """Oracle: the sweep's kept adversarial images equal one direct call of the attack on all cases with
    alpha = alpha_frac·eps, the same steps, the target map, and each case's own clip range and mask
    (batch_size 2 over 3 cases, so the second batch must get case 3's mask and range)."""
    net, x, y, mask, lo, hi = _sweep_case_data()
    eps, frac, steps = 0.4, 0.3, 3
    policy = "erase" if attack == "tifgsm" else None
    _, _, ex = attack_sweep(net, x, y, attack=attack, eps_grid=[eps], alpha_frac=frac, steps=steps, policy=policy,
                            clip=(lo, hi), mask=mask, batch_size=2, keep_examples=3, hd95=False, with_percept=False,
                            progress=False)  # fmt: skip
    lo_t, hi_t = (torch.from_numpy(v)[..., None, None, None] for v in (lo, hi))  # (N, C, 1, 1, 1)
    kw = dict(clip=(lo_t, hi_t), mask=mask)
    if attack == "fgsm":
        want = fgsm(net, x, y, eps, **kw)
    elif attack == "ifgsm":
        want = ifgsm(net, x, y, eps, frac * eps, steps, **kw)
    else:
        want = tifgsm(net, x, make_target(y, "erase"), eps, frac * eps, steps, **kw)
    torch.testing.assert_close(ex[eps]["x_adv"], want, rtol=0, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(ex[eps]["pred"], net(want).argmax(1))
    res, _, _ = attack_sweep(net, x, y, attack=attack, eps_grid=[0.0, eps], steps=steps, policy=policy, hd95=False,
                             with_percept=False, progress=False)  # fmt: skip
    assert (res.steps == (1 if attack == "fgsm" else steps)).all()  # FGSM rows record one step


def test_attack_sweep_predicts_in_eval_mode_and_restores_train_mode() -> None:
    """Oracle: the prediction of an eval-mode copy; a train-mode net (BatchNorm batch statistics, dropout)
    would predict differently, and the caller's train mode must survive the sweep."""
    net = Mixed().train()
    x, y = data(6, (2, 4, 5, 5, 5))
    ref = copy.deepcopy(net).eval()
    with torch.no_grad():
        want = ref(x).argmax(1)
    _, _, ex = attack_sweep(net, x, y, attack="fgsm", eps_grid=[0.0, 0.2], keep_examples=2, hd95=False,
                            with_percept=False, progress=False)  # fmt: skip
    assert torch.equal(ex[0.0]["pred"], want)
    with torch.no_grad():
        assert torch.equal(ex[0.2]["pred"], ref(ex[0.2]["x_adv"]).argmax(1))
        assert torch.equal(ex[0.2]["x_adv"], fgsm(ref, x, y, 0.2))
    assert all(m.training for m in net.modules())


def test_output_detached_when_x_requires_grad_outside_no_grad() -> None:
    """x that is part of a graph (e.g. a differentiable preprocessing), grad mode on: the output is still detached
    and x's graph is not backpropagated into."""
    net = conv_net()
    x0, y = data()
    w = torch.ones((), requires_grad=True)
    x = x0 * w  # non-leaf, requires grad
    target = make_target(y, "erase")
    for adv in (fgsm(net, x, y, 0.1), ifgsm(net, x, y, 0.1, 0.05, 2), tifgsm(net, x, target, 0.1, 0.05, 2)):
        assert not adv.requires_grad and adv.grad_fn is None
        assert not torch.equal(adv, x0)
    assert w.grad is None


def test_rounding_cannot_step_over_the_clip_range() -> None:
    """Oracle: exact comparison with the bounds. x and per-voxel bounds are small and of mixed sign, where
    x + (hi − x) rounds above hi (or below lo) for a few % of voxels in float32; eps exceeds the range, so
    the attack drives nearly every voxel onto a bound."""
    net, (_, y) = linear_net(), data()
    g = torch.Generator().manual_seed(5)
    lo = -torch.rand(SHAPE, generator=g) * 0.3
    hi = torch.rand(SHAPE, generator=g) * 0.3
    x = torch.minimum(torch.maximum(lo + (hi - lo) * torch.rand(SHAPE, generator=g), lo), hi)
    for adv in (fgsm(net, x, y, 0.7, clip=(lo, hi)), ifgsm(net, x, y, 0.7, 0.7, 2, clip=(lo, hi))):
        assert (adv >= lo).all() and (adv <= hi).all()
        near = torch.minimum((adv - lo).abs(), (adv - hi).abs()) <= 1e-6
        assert near.float().mean() > 0.9  # the bounds were reached (where the rounding happens)


def test_inference_mode_and_inference_models_are_refused_up_front_with_advice() -> None:
    """Under torch.inference_mode() (which enable_grad cannot undo) every attack and attack_sweep refuse up front with a
    RuntimeError that says what to do (they died in autograd with "does not require grad"); so does a model whose
    parameters or buffers are inference tensors. Images, labels and clip bounds made under inference mode work and
    give the same result as ordinary tensors (labels used to fail in the loss's backward)."""
    net, (x, y) = linear_net(), data(shape=(2, 4, 2, 3, 3))
    target = make_target(y, "erase")
    calls = [
        lambda m: fgsm(m, x, y, 0.1),
        lambda m: ifgsm(m, x, y, 0.1, 0.05, 2),
        lambda m: tifgsm(m, x, target, 0.1, 0.05, 2),
        lambda m: ifgsm(m, x, y, 0.0, 0.0, 2),
        lambda m: attack_sweep(m, x, y, attack="fgsm", eps_grid=[0.0, 0.1], progress=False, hd95=False, with_percept=False),
    ]
    for call in calls:
        with torch.inference_mode(), pytest.raises(RuntimeError, match=r"torch.inference_mode\(\) is active.*outside inference mode"):
            call(net)
    with torch.inference_mode():
        inf_net = linear_net()
        bn = nn.BatchNorm3d(4).eval()  # its running statistics (buffers) are inference tensors
        xi, yi, lo, hi = x.clone(), y.clone(), x.amin(), x.amax()
    for m in (inf_net, nn.Sequential(linear_net(), bn), SlidingWindowModel(inf_net, (2, 3, 3))):
        for call in calls:
            with pytest.raises(RuntimeError, match="model holds tensors created under torch.inference_mode.*build or load the model outside"):
                call(m)
    assert torch.equal(ifgsm(net, xi, yi, 0.1, 0.05, 2, clip=(lo, hi)), ifgsm(net, x, y, 0.1, 0.05, 2, clip=(float(lo), float(hi))))


def test_a_boolean_budget_is_refused() -> None:
    """True, numpy's bool_ and a bool tensor are flags, not budgets: each is refused with the ValueError naming the
    budget (numpy's True used to be read as eps = 1.0, hand: a step of 1 on every voxel)."""
    net, (x, y) = linear_net(), data(shape=(2, 4, 2, 3, 3))
    for bad in (True, np.bool_(True), torch.tensor(True), np.array([True] * 4)):
        with pytest.raises(ValueError, match="eps must be a float"):
            fgsm(net, x, y, bad)
        with pytest.raises(ValueError, match="alpha must be a float"):
            ifgsm(net, x, y, 0.1, bad, 2)
