"""Defensive distillation loss, adversarial augmentation and gradient-masking diagnostics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from robustseg_lib import defenses


def _logits(values, shape=(1, 2, 1, 1, 1)) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).reshape(shape)


def test_distillation_loss_hand_computed() -> None:
    # one voxel, two classes; teacher logits (0, ln 3) at T=1 -> p = (1/4, 3/4); student (0, 0) -> q = (1/2, 1/2)
    teacher, student = _logits([0.0, math.log(3.0)]), _logits([0.0, 0.0])
    # soft CE = -(1/4 ln 1/2 + 3/4 ln 1/2) = ln 2
    assert defenses.distillation_loss(student, teacher, 1.0).item() == pytest.approx(math.log(2.0), rel=1e-6)
    # at T = 2 with teacher logits (0, 2 ln 3): p is again (1/4, 3/4), q (1/2, 1/2); times T^2 = 4
    teacher2 = _logits([0.0, 2 * math.log(3.0)])
    assert defenses.distillation_loss(student, teacher2, 2.0).item() == pytest.approx(4 * math.log(2.0), rel=1e-6)
    assert defenses.distillation_loss(student, teacher2, 2.0, scale_by_t2=False).item() == pytest.approx(math.log(2.0), rel=1e-6)
    # hard term (student at T=1, CE vs class 1): ln 2, weight 0.5
    hard = torch.ones(1, 1, 1, 1, dtype=torch.long)
    v = defenses.distillation_loss(student, teacher, 1.0, hard_labels=hard, hard_weight=0.5).item()
    assert v == pytest.approx(1.5 * math.log(2.0), rel=1e-6)


def test_distillation_loss_t1_is_soft_label_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 4, 3, 3, 3, generator=g), torch.randn(2, 4, 3, 3, 3, generator=g)
    ref = F.cross_entropy(s, F.softmax(t, dim=1))
    assert torch.allclose(defenses.distillation_loss(s, t, 1.0), ref)


@pytest.mark.parametrize("T", [1.0, 5.0, 20.0])
def test_distillation_loss_minimum_at_teacher(T: float) -> None:
    g = torch.Generator().manual_seed(1)
    t = torch.randn(1, 4, 2, 2, 2, generator=g)
    s = t.clone().requires_grad_(True)
    loss = defenses.distillation_loss(s, t, T)
    (grad,) = torch.autograd.grad(loss, s)
    assert grad.abs().max() < 1e-6  # stationary at student = teacher
    for _ in range(5):  # and any perturbation increases it
        d = 0.5 * torch.randn(t.shape, generator=g)
        assert defenses.distillation_loss(t + d, t, T) > loss


def test_distillation_loss_validation() -> None:
    a = torch.zeros(1, 2, 2, 2, 2)
    with pytest.raises(ValueError, match="temperature"):
        defenses.distillation_loss(a, a, 0.0)
    with pytest.raises(ValueError, match="differ"):
        defenses.distillation_loss(a, torch.zeros(1, 3, 2, 2, 2), 1.0)
    with pytest.raises(ValueError, match="hard_labels"):
        defenses.distillation_loss(a, a, 1.0, hard_weight=1.0)


def test_distillation_objective_uses_teacher_soft_labels() -> None:
    teacher = torch.nn.Conv3d(4, 4, 1)
    obj = defenses.DistillationObjective(teacher, temperature=3.0, dice_weight=0.0)
    x = torch.randn(2, 4, 4, 4, 4)
    student_logits = torch.randn(2, 4, 4, 4, 4)
    y = torch.zeros(2, 4, 4, 4, dtype=torch.long)
    with torch.no_grad():
        t_logits = teacher(x)
        ref = defenses.distillation_loss(student_logits, t_logits, 3.0)
    assert torch.allclose(obj(student_logits, x, y), ref)
    assert not any(p.requires_grad for p in teacher.parameters())
    # the soft Dice term (Dice semimetric loss, Wang et al. 2023: intersection = (Σq + Σp − Σ|q − p|) / 2)
    # per sample and class, averaged; it is 0 exactly when the student's softmax equals the teacher's
    q = torch.softmax(student_logits / 3.0, 1)
    p = torch.softmax(t_logits / 3.0, 1)
    dims = (2, 3, 4)
    inter = (q.sum(dims) + p.sum(dims) - (q - p).abs().sum(dims)) / 2
    dice = 1 - (2 * inter + 1e-5) / (q.sum(dims) + p.sum(dims) + 1e-5)
    with_dice = defenses.DistillationObjective(teacher, temperature=3.0, dice_weight=0.5)
    assert torch.allclose(with_dice(student_logits, x, y), ref + 0.5 * dice.mean(), atol=1e-6)
    same = with_dice(t_logits, x, y) - defenses.distillation_loss(t_logits, t_logits, 3.0)
    assert abs(float(same)) < 1e-6  # the Dice term vanishes at student = teacher


def test_distillation_objective_without_t2_for_output_scaled_students() -> None:
    teacher = torch.nn.Conv3d(4, 4, 1)
    x = torch.randn(1, 4, 3, 3, 3)
    s_logits = torch.randn(1, 4, 3, 3, 3)
    y = torch.zeros(1, 3, 3, 3, dtype=torch.long)
    with torch.no_grad():
        t_logits = teacher(x)
    T = 4.0
    p = torch.softmax(t_logits / T, 1)
    by_hand = -(p * torch.log_softmax(s_logits / T, 1)).sum(1).mean()  # soft CE at T, no T^2
    plain = defenses.DistillationObjective(teacher, T, dice_weight=0.0, scale_by_t2=False)
    hinton = defenses.DistillationObjective(teacher, T, dice_weight=0.0)
    assert torch.allclose(plain(s_logits, x, y), by_hand, atol=1e-6)
    assert torch.allclose(hinton(s_logits, x, y), T**2 * by_hand, atol=1e-5)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(4, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(8, 4, 1))


def _batch(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, 4, 8, 8, 8, generator=g)
    x[:, :, :2] = 0  # "outside the brain"
    y = torch.randint(0, 4, (n, 8, 8, 8), generator=g)
    return x, y


def test_adversarial_augmenter_uses_the_given_brain_mask_after_an_intensity_shift() -> None:
    """After the training loop's intensity shift the background is no longer zero: with the brain mask it is
    given, the augmenter perturbs only the brain and clips to the brain's range, not the whole crop's."""
    net, (x, y) = _model(), _batch(2)
    brain = (x != 0).any(1, keepdim=True)
    xs = x + 0.07  # shifted crop: background 0.07 everywhere
    hook = defenses.AdversarialAugmenter("ifgsm", eps_range=(0.2, 0.3), mix=1.0, steps=3)
    adv, _ = hook(net, xs, y, torch.Generator().manual_seed(0), brain)
    assert sorted(hook.last_index) == [0, 1]
    for j in range(2):
        b = brain[j, 0]
        assert torch.equal(adv[j][:, ~b], xs[j][:, ~b])  # background untouched
        assert (adv[j][:, b] != xs[j][:, b]).any()
        lo, hi = xs[j][:, b].amin(1), xs[j][:, b].amax(1)
        assert (adv[j][:, b] >= lo[:, None]).all() and (adv[j][:, b] <= hi[:, None]).all()
    # without the mask the shifted background counts as brain and is perturbed: what the mask prevents
    unmasked, _ = hook(net, xs, y, torch.Generator().manual_seed(0))
    assert not torch.equal(unmasked[0][:, ~brain[0, 0]], xs[0][:, ~brain[0, 0]])
    with pytest.raises(ValueError, match="brain mask"):
        hook(net, xs, y, torch.Generator().manual_seed(0), brain[:1])


@pytest.mark.parametrize("attack", ["fgsm", "ifgsm", "mixed"])
def test_adversarial_augmenter_replaces_examples_within_budget(attack: str) -> None:
    net, (x, y) = _model(), _batch()
    hook = defenses.AdversarialAugmenter(attack, eps_range=(0.1, 0.3), mix=0.5, steps=2)
    x2, y2 = hook(net, x, y, torch.Generator().manual_seed(0))
    assert x2.shape == x.shape and torch.equal(y2, y) and len(hook.last_index) == 2
    for j in range(4):
        if j not in hook.last_index:
            assert torch.equal(x2[j], x[j])  # the clean half is untouched
    for j, eps in zip(hook.last_index, hook.last_eps):
        adv = x2[j]
        d = (adv - x[j]).abs().max().item()
        assert 0 < d <= eps + 1e-6 and 0.1 <= eps <= 0.3
        assert torch.equal(adv[:, :2], x[j][:, :2])  # nothing added outside the brain
        brain = (x[j] != 0).any(0)
        lo, hi = x[j][:, brain].amin(1), x[j][:, brain].amax(1)
        assert (adv[:, brain] >= lo[:, None] - 1e-6).all() and (adv[:, brain] <= hi[:, None] + 1e-6).all()
    # deterministic for a seeded generator
    again = hook(net, x, y, torch.Generator().manual_seed(0))[0]
    assert torch.equal(again, x2)
    with pytest.raises(ValueError, match="mix"):
        defenses.AdversarialAugmenter(mix=0.0)
    with pytest.raises(ValueError, match="eps_range"):
        defenses.AdversarialAugmenter(eps_range=(0.3, 0.1))


def test_static_adversarial_set_is_within_budget() -> None:
    net, (x, y) = _model(), _batch(3)
    adv, labels, eps = defenses.make_static_adversarial_set(net, x, y, eps_range=(0.1, 0.2), seed=0)
    assert adv.shape == x.shape and torch.equal(labels, y)
    for i in range(3):
        d = (adv[i] - x[i]).abs().max().item()
        assert 0 < d <= eps[i] + 1e-6


def test_gradient_masking_diagnostics_on_saturating_model() -> None:
    """A model with a huge output scale (softmax saturated) hides its input gradients;
    the diagnostic must say so, and rescaling the logits must bring them back."""
    net, (x, y) = _model(), _batch(2)
    with torch.no_grad():
        y = net(x).argmax(1)  # the model is right everywhere: saturated CE has no gradient
    saturated = defenses.LogitScale(net, 1e4)
    normal = defenses.input_gradient_stats(net, x, y)
    masked = defenses.input_gradient_stats(saturated, x, y)
    rescaled = defenses.input_gradient_stats(defenses.LogitScale(saturated, 1e-4), x, y)
    assert normal["frac_zero"] < 0.2
    assert masked["frac_near_zero"] > 0.9 and masked["median_abs"] < 1e-10
    assert rescaled["frac_zero"] < 0.2
    # same predictions after rescaling
    assert torch.equal(saturated(x).argmax(1), defenses.LogitScale(saturated, 1e-4)(x).argmax(1))


# ----------------------------------------------------------------------------- hard term under output scaling
def _hand_dice_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MONAI's DiceCELoss as dice_ce_objective configures it, written out: mean CE over all classes plus
    1 − (2 Σ p·o + 1e-5) / (Σ p + Σ o + 1e-5) per case and tumour class (1..3, no background), averaged."""
    p = torch.softmax(logits.double(), 1)
    o = F.one_hot(y, logits.shape[1]).movedim(-1, 1).double()
    dims = tuple(range(2, logits.ndim))
    inter = (p * o).sum(dims)[:, 1:]
    dice = 1 - (2 * inter + 1e-5) / (p.sum(dims)[:, 1:] + o.sum(dims)[:, 1:] + 1e-5)
    return F.cross_entropy(logits.double(), y) + dice.mean()


def test_hard_term_means_the_same_at_every_temperature_under_output_scaling() -> None:
    """Output-scaled student (logits T·f), output-scaled teacher (T·g), no T²: the soft terms see f and g at
    every T; the hard term must see f too, so the whole loss, and its gradient w.r.t. f, do not depend on T,
    and the hard part is Dice+CE of f by hand. On the raw logits T·f its gradient would grow about T-fold."""
    gen = torch.Generator().manual_seed(3)
    conv = torch.nn.Conv3d(4, 4, 1)
    x = torch.randn(2, 4, 3, 3, 3, generator=gen)
    f0 = torch.randn(2, 4, 3, 3, 3, generator=gen)
    y = torch.randint(0, 4, (2, 3, 3, 3), generator=gen)
    hard_ref = _hand_dice_ce(f0, y)
    f = f0.clone().requires_grad_(True)
    (g_hard_ref,) = torch.autograd.grad(_hand_dice_ce(f, y), f)
    for T in (1.0, 5.0, 20.0, 100.0):
        teacher = defenses.LogitScale(conv, T)
        with_hard = defenses.DistillationObjective(teacher, T, hard_weight=0.5, scale_by_t2=False)
        without = defenses.DistillationObjective(teacher, T, hard_weight=0.0, scale_by_t2=False)
        f = f0.clone().requires_grad_(True)
        hard = (with_hard(T * f, x, y) - without(T * f, x, y)) / 0.5
        (g_hard,) = torch.autograd.grad(hard, f)
        assert float(hard.detach()) == pytest.approx(float(hard_ref), rel=1e-5, abs=1e-6)
        assert torch.allclose(g_hard.double(), g_hard_ref.double(), rtol=1e-4, atol=1e-7)  # not T·(gradient at T·f)
        # distillation_loss's hard CE likewise: soft CE of f vs softmax(g) plus w·CE(f, y), whatever T
        with torch.no_grad():
            g_t = conv(x)
        v = defenses.distillation_loss(T * f0, T * g_t, T, hard_labels=y, hard_weight=0.5, scale_by_t2=False)
        by_hand = -(torch.softmax(g_t.double(), 1) * torch.log_softmax(f0.double(), 1)).sum(1).mean() + 0.5 * F.cross_entropy(f0.double(), y)
        assert float(v) == pytest.approx(float(by_hand), rel=1e-5)
    # Hinton's plain recipe (T², scale_by_t2=True) keeps the hard term at T = 1 on the raw logits
    T = 4.0
    z = 3.0 * f0
    hinton = defenses.DistillationObjective(conv, T, hard_weight=1.0, dice_weight=0.0)
    soft_only = defenses.DistillationObjective(conv, T, hard_weight=0.0, dice_weight=0.0)
    assert float(hinton(z, x, y) - soft_only(z, x, y)) == pytest.approx(float(_hand_dice_ce(z, y)), rel=1e-5)


# ----------------------------------------------------------------------------- adversarial examples are the attack
def _brain_clip(xj: torch.Tensor, brain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-modality min/max over the brain voxels of one volume ``(1, C, ...)``, as ``(1, C, 1, 1, 1)``."""
    vals = xj[0][:, brain[0, 0]]
    return vals.amin(1).reshape(1, -1, 1, 1, 1), vals.amax(1).reshape(1, -1, 1, 1, 1)


def _ce(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(net(x), y))


@pytest.mark.parametrize("attack", ["fgsm", "ifgsm", "mixed"])
def test_adversarial_augmenter_examples_are_the_attack_on_each_volume(attack: str) -> None:
    """Each replaced volume is exactly attacks.fgsm / attacks.ifgsm on that volume (its eps, true labels, brain
    mask, its crop's brain range as clip), and raises the cross-entropy above the clean volume's."""
    from robustseg_lib import attacks

    net, (x, y) = _model(), _batch()
    hook = defenses.AdversarialAugmenter(attack, eps_range=(0.1, 0.3), mix=0.75, steps=2, alpha_frac=0.5)
    out, _ = hook(net, x, y, torch.Generator().manual_seed(1))
    assert len(hook.last_index) == 3
    kinds = set()
    for j, eps in zip(hook.last_index, hook.last_eps):
        xj, yj = x[j : j + 1], y[j : j + 1]
        brain = (xj != 0).any(1, keepdim=True)
        clip = _brain_clip(xj, brain)
        refs = {
            "fgsm": attacks.fgsm(net, xj, yj, eps, clip=clip, mask=brain),
            "ifgsm": attacks.ifgsm(net, xj, yj, eps, 0.5 * eps, 2, clip=clip, mask=brain),
        }
        match = [k for k, r in refs.items() if torch.equal(out[j : j + 1], r)]
        assert match == ([attack] if attack != "mixed" else match) and len(match) == 1
        kinds.add(match[0])
        assert _ce(net, out[j : j + 1], yj) > _ce(net, xj, yj) + 1e-3  # adversarial: the loss goes up
    if attack == "mixed":
        assert kinds == {"fgsm", "ifgsm"}  # this seed draws both kinds


@pytest.mark.parametrize(
    "attack, shape, spec",
    [
        ("fgsm", (8, 8, 8), None),
        ("ifgsm", (8, 8, 8), None),
        ("fgsm", (16, 8, 8), {"crop": (8, 8, 8), "overlap": 0.5, "inference": "sliding"}),
    ],
)
def test_static_adversarial_set_examples_are_the_attack_on_each_volume(attack: str, shape: tuple, spec: dict | None) -> None:
    """Each static example is exactly the attack on its volume (its eps, true labels, brain = non-zero voxels,
    per-volume brain range as clip) through the model as it predicts: with a crop smaller than the volume, the
    sliding window with the spec's overlap (0.5 here; the default 0.25 gives different examples)."""
    from robustseg_lib import attacks

    net = _model()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 4, *shape, generator=g)
    x[:, :, :2] = 0
    y = torch.randint(0, 4, (3, *shape), generator=g)
    adv, labels, eps = defenses.make_static_adversarial_set(net, x, y, attack=attack, eps_range=(0.1, 0.3), steps=2, alpha_frac=0.5, seed=5, spec=spec)
    assert torch.equal(labels, y) and adv.shape == x.shape and len(eps) == 3
    model = net if spec is None else attacks.SlidingWindowModel(net, (8, 8, 8), sw_batch_size=2, overlap=0.5)
    for i in range(3):
        xi, yi = x[i : i + 1], y[i : i + 1]
        brain = (xi != 0).any(1, keepdim=True)
        clip = _brain_clip(xi, brain)
        if attack == "fgsm":
            ref = attacks.fgsm(model, xi, yi, float(eps[i]), clip=clip, mask=brain)
        else:
            ref = attacks.ifgsm(model, xi, yi, float(eps[i]), 0.5 * float(eps[i]), 2, clip=clip, mask=brain)
        assert torch.equal(adv[i : i + 1], ref)
        assert _ce(model, adv[i : i + 1], yi) > _ce(model, xi, yi) + 1e-3
        if spec is not None:
            default_overlap = attacks.fgsm(attacks.SlidingWindowModel(net, (8, 8, 8), sw_batch_size=2), xi, yi, float(eps[i]), clip=clip, mask=brain)
            assert not torch.equal(ref, default_overlap)
    with pytest.raises(ValueError, match="spec or roi_size"):
        defenses.make_static_adversarial_set(net, x, y, spec={"crop": (8, 8, 8)}, roi_size=(8, 8, 8))
    with pytest.raises(ValueError, match="eps_range"):
        defenses.make_static_adversarial_set(net, x, y, eps_range=(0.3, 0.1))
    with pytest.raises(ValueError, match="labels"):
        defenses.make_static_adversarial_set(net, x, y[:2])


# ----------------------------------------------------------------------------- label source ("label leaking")
def _dropout_model() -> torch.nn.Module:
    """A small net with dropout: in train mode its predictions are random, so only an eval-mode argmax is reproducible."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv3d(4, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Dropout3d(0.5), torch.nn.Conv3d(8, 4, 1)
    )


def _eval_argmax(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The oracle's prediction: eval mode, no gradient, argmax over classes (the caller's mode restored)."""
    was = model.training
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(1)
    model.train(was)
    return pred


@pytest.mark.parametrize("attack", ["fgsm", "ifgsm"])
def test_adversarial_augmenter_predicted_labels_attack_the_prediction_and_keep_the_true_target(attack: str) -> None:
    """label_source="predicted": each replaced volume is the attack run by hand against the network's eval-mode
    argmax on that clean volume; the true labels are chosen wrong everywhere (prediction + 1), so the "truth"
    examples differ, while the same volumes and eps are drawn; the target returned is the true label; the
    network is left in train mode. With labels equal to the prediction both sources give the same examples."""
    from robustseg_lib import attacks

    net, (x, _) = _dropout_model(), _batch()
    pred = _eval_argmax(net, x)
    y = (pred + 1) % 4  # truth != prediction at every voxel
    net.train()
    kw = dict(eps_range=(0.1, 0.3), mix=0.75, steps=2, alpha_frac=0.5)
    hook = defenses.AdversarialAugmenter(attack, label_source="predicted", **kw)
    out, target = hook(net, x, y, torch.Generator().manual_seed(1))
    assert net.training and all(m.training for m in net.modules())
    assert torch.equal(target, y) and not torch.equal(target, pred)  # training target: the truth
    truth_hook = defenses.AdversarialAugmenter(attack, **kw)
    out_truth, _ = truth_hook(net, x, y, torch.Generator().manual_seed(1))
    assert hook.last_index == truth_hook.last_index and hook.last_eps == truth_hook.last_eps and len(hook.last_index) == 3
    for j, eps in zip(hook.last_index, hook.last_eps):
        xj = x[j : j + 1]
        brain = (xj != 0).any(1, keepdim=True)
        clip = _brain_clip(xj, brain)
        pj = _eval_argmax(net, xj)  # per volume
        if attack == "fgsm":
            ref = attacks.fgsm(net, xj, pj, eps, clip=clip, mask=brain)
        else:
            ref = attacks.ifgsm(net, xj, pj, eps, 0.5 * eps, 2, clip=clip, mask=brain)
        assert torch.equal(out[j : j + 1], ref)
        assert not torch.equal(out[j : j + 1], out_truth[j : j + 1])
    # where the truth is the prediction, the two sources make the same examples
    same, _ = defenses.AdversarialAugmenter(attack, label_source="predicted", **kw)(net, x, pred, torch.Generator().manual_seed(1))
    assert torch.equal(same, defenses.AdversarialAugmenter(attack, **kw)(net, x, pred, torch.Generator().manual_seed(1))[0])


def test_static_adversarial_set_predicted_labels_go_through_the_wrapped_model() -> None:
    """label_source="predicted" in the static set: each example is FGSM against the argmax of the source model *as
    it predicts* (sliding window with the spec's overlap) on its clean volume; the labels returned are the true
    ones, wrong everywhere here, so the "truth" examples differ."""
    from robustseg_lib import attacks

    net = _model()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 4, 16, 8, 8, generator=g)
    x[:, :, :2] = 0
    spec = {"crop": (8, 8, 8), "overlap": 0.5, "inference": "sliding"}
    window = attacks.SlidingWindowModel(net, (8, 8, 8), sw_batch_size=2, overlap=0.5)
    y = (_eval_argmax(window, x) + 1) % 4  # truth != prediction at every voxel
    kw = dict(attack="fgsm", eps_range=(0.1, 0.3), seed=5, spec=spec)
    adv, labels, eps = defenses.make_static_adversarial_set(net, x, y, label_source="predicted", **kw)
    adv_truth, _, eps_truth = defenses.make_static_adversarial_set(net, x, y, **kw)
    assert torch.equal(labels, y) and list(eps) == list(eps_truth)
    for i in range(3):
        xi = x[i : i + 1]
        brain = (xi != 0).any(1, keepdim=True)
        clip = _brain_clip(xi, brain)
        ref = attacks.fgsm(window, xi, _eval_argmax(window, xi), float(eps[i]), clip=clip, mask=brain)
        assert torch.equal(adv[i : i + 1], ref)
        assert not torch.equal(adv[i : i + 1], adv_truth[i : i + 1])


def test_label_source_is_validated_up_front() -> None:
    net, (x, y) = _model(), _batch(2)
    for bad in ("prediction", "TRUTH", None, 1):
        with pytest.raises(ValueError, match="label_source"):
            defenses.AdversarialAugmenter(label_source=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="label_source"):
            defenses.make_static_adversarial_set(net, x, y, label_source=bad)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- output saturation
def _step_net() -> torch.nn.Module:
    """1×1×1 conv with logits (x₀, 0, 0, 0): the logit gap of class 0 is the input's channel 0."""
    net = torch.nn.Conv3d(4, 4, 1)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.zero_()
        net.weight[0, 0] = 1.0
    return net


GAPS = (0.0, 0.1, 0.4, 1.0, 3.0)  # channel-0 value along D


def _step_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(6)
    x = torch.randn(1, 4, 5, 4, 4, generator=g)
    x[0, 0] = torch.tensor(GAPS).reshape(5, 1, 1)
    y = torch.zeros(1, 5, 4, 4, dtype=torch.long)
    y[0, :, 0] = 1  # row h = 0 is misclassified (prediction 0 or a tie)
    brain = torch.ones(1, 5, 4, 4, dtype=torch.bool)
    brain[0, :, :, 3] = False  # 5 × 4 × 3 = 60 output voxels in the mask, 9 per gap with label 0
    return x, y, brain


@pytest.mark.parametrize(
    "T, n_saturated, n_zero_grad",
    [
        # saturated: label 0 and 3·exp(−gap·T) ≤ 2⁻²⁴ (gap·T ≥ 17.7); gap·T = 2, 8, 20, 60 at T = 20 → gaps 1, 3
        (20.0, 18, 0),
        # gap·T = 5, 20, 50, 150 at T = 50 → gaps 0.4, 1, 3; zero logit gradient: exp(−gap·T)/80 underflows
        # float32 (gap·T ≳ 104 − ln 80 ≈ 99.6) → gap 3 only
        (50.0, 27, 9),
        (200.0, 36, 18),  # gap·T = 20, 80, 200, 600 → gaps 0.1..3; zero gradient at 200 and 600
    ],
)
def test_output_saturation_fractions_by_hand(T: float, n_saturated: int, n_zero_grad: int) -> None:
    x, y, brain = _step_data()
    stats = defenses.input_gradient_stats(defenses.LogitScale(_step_net(), T), x, y, mask=brain)
    assert stats["frac_saturated_voxels"] == n_saturated / 60
    assert stats["frac_zero_logit_grad"] == n_zero_grad / 60


@pytest.mark.parametrize("gap, zero", [(97.5, False), (101.5, True), (106.0, True)])
def test_zero_logit_gradient_sets_in_at_104_minus_ln_n_voxels(gap: float, zero: bool) -> None:
    """Mean cross-entropy: the other classes' logit gradient is exp(−gap)/n (n = 80 voxels here), which rounds to 0 in
    float32 below 2⁻¹⁵⁰, i.e. for gap > 150·ln 2 − ln 80 ≈ 99.6 (oracle: that hand bound, not 104 + ln n ≈ 108)."""
    n = 80
    assert math.isclose(150 * math.log(2) - math.log(n), 99.59, abs_tol=0.01)
    x = torch.zeros(1, 4, 5, 4, 4)
    x[0, 0] = gap
    y = torch.zeros(1, 5, 4, 4, dtype=torch.long)
    stats = defenses.input_gradient_stats(_step_net(), x, y)
    assert stats["frac_saturated_voxels"] == 1.0
    assert stats["frac_zero_logit_grad"] == (1.0 if zero else 0.0)


def test_saturation_shows_in_a_unet_where_input_gradients_do_not() -> None:
    """A small MONAI UNet with logits × T (T = 20, 50, 200, the range of distilled students): the fraction of
    brain voxels whose float32 softmax probability of the label is exactly 1 matches a float64 oracle and rises
    with T, while the input-gradient fractions stay at ~0 (each input voxel sees many unsaturated outputs)."""
    from robustseg_lib.models import build_unet

    net = build_unet("unet", channels=(4, 8, 16), strides=(2, 2), seed=0)
    x = torch.randn(1, 4, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = net.eval()(x)
    y = z.argmax(1)
    y[0, 4:8, 4:8, 4:8] = 3  # some errors, as a real label map would have
    brain = torch.zeros(1, 16, 16, 16, dtype=torch.bool)
    brain[0, 2:14, 2:14, 2:14] = True
    fracs = []
    for T in (20.0, 50.0, 200.0):
        zt = (z * T).double()  # the logits LogitScale produces (z · T in float32 is exact to ~1 ulp)
        others = torch.exp(zt - zt.gather(1, y[:, None]))  # p_c / p_y for every class c
        others.scatter_(1, y[:, None], 0.0)
        q, q_max = others.sum(1)[brain], others.amax(1)[brain]
        surely = (q <= 0.99 * 2.0**-24).double().mean().item()  # 1 + q rounds to 1 in float32 whatever the order
        maybe = (q_max <= 1.01 * 2.0**-24).double().mean().item()  # no single class can lift the sum above 1
        stats = defenses.input_gradient_stats(defenses.LogitScale(net, T), x, y, mask=brain)
        assert surely <= stats["frac_saturated_voxels"] <= maybe and maybe - surely < 0.02
        assert stats["frac_zero_logit_grad"] <= stats["frac_saturated_voxels"]
        assert stats["frac_zero"] == 0 and stats["frac_near_zero"] < 1e-3  # what the old diagnostic reported
        fracs.append(stats["frac_saturated_voxels"])
    assert 0.1 < fracs[0] < fracs[1] < fracs[2]


def test_input_gradient_stats_mask_modes_and_grad_context(mode_probe) -> None:
    """An (N, D, H, W) mask with N == C selects whole cases (not channels); every submodule's mode is restored
    and eval mode is used; it works under no_grad; bad arguments are named."""
    torch.manual_seed(7)
    probe = mode_probe
    net = torch.nn.Sequential(torch.nn.Conv3d(4, 4, 3, padding=1), torch.nn.Dropout(0.5), probe)
    net.train()
    net[1].eval()  # mixed modes
    x = torch.randn(4, 4, 3, 3, 3)
    y = torch.randint(0, 4, (4, 3, 3, 3))
    m = torch.zeros(4, 3, 3, 3, dtype=torch.bool)
    m[0] = True  # case 0's voxels only
    with torch.no_grad():
        stats = defenses.input_gradient_stats(net, x, y, mask=m)
    assert [mod.training for mod in net.modules()] == [True, True, False, True] and probe.seen == [False]
    # oracle: the gradient of the batch's mean CE, case 0, all four channels
    xr = x.clone().requires_grad_(True)
    net.eval()
    (g,) = torch.autograd.grad(F.cross_entropy(net(xr), y), xr)
    a = g[0].abs().flatten().double()
    assert stats["median_abs"] == float(a.median()) and stats["max_abs"] == float(a.max())
    assert stats == defenses.input_gradient_stats(net, x, y, mask=m[:, None])  # (N, 1, D, H, W): the same
    for kwargs, match in [
        ({"mask": m[:2]}, "mask"),
        ({"mask": m.float()}, "mask"),
        ({"mask": torch.zeros_like(m)}, "mask"),
        ({"threshold": -1.0}, "threshold"),
        ({"loss_fn": 3}, "loss_fn"),
    ]:
        with pytest.raises(ValueError, match=match):
            defenses.input_gradient_stats(net, x, y, **kwargs)
    with pytest.raises(ValueError, match="y"):
        defenses.input_gradient_stats(net, x, y[:, :2])
    with pytest.raises(ValueError, match="x"):
        defenses.input_gradient_stats(net, x[0], y)


# ----------------------------------------------------------------------------- found by mutation testing (session 12)
def test_distillation_loss_detaches_the_teacher_and_has_the_hand_gradient() -> None:
    """No gradient reaches teacher logits that require one; the student's gradient is the textbook one: of
    T² · mean_voxels(−Σ p log softmax(s/T)) it is T·(q − p)/n_voxels (oracle: the formula by hand)."""
    g = torch.Generator().manual_seed(11)
    s = torch.randn(2, 3, 2, 2, 2, generator=g).requires_grad_(True)
    t = torch.randn(2, 3, 2, 2, 2, generator=g).requires_grad_(True)
    T = 4.0
    gs, gt = torch.autograd.grad(defenses.distillation_loss(s, t, T), [s, t], allow_unused=True)
    assert gt is None or not gt.any()
    q, p = torch.softmax(s.detach() / T, 1), torch.softmax(t.detach() / T, 1)
    assert torch.allclose(gs, T * (q - p) / (2 * 2 * 2 * 2), atol=1e-7)


def test_distillation_objective_runs_the_teacher_in_eval_mode() -> None:
    """A teacher with dropout handed over in train mode: the objective puts it (every submodule) in eval mode, so its
    soft labels are deterministic and equal to distillation_loss on the eval-mode teacher's logits."""
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Conv3d(4, 8, 1), torch.nn.Dropout3d(0.5), torch.nn.Conv3d(8, 4, 1)).train()
    g = torch.Generator().manual_seed(12)
    x, s = torch.randn(2, 4, 3, 3, 3, generator=g), torch.randn(2, 4, 3, 3, 3, generator=g)
    y = torch.zeros(2, 3, 3, 3, dtype=torch.long)
    obj = defenses.DistillationObjective(teacher, 3.0, dice_weight=0.0)
    assert not any(m.training for m in teacher.modules())
    v1, v2 = obj(s, x, y), obj(s, x, y)
    ref_teacher = torch.nn.Sequential(torch.nn.Conv3d(4, 8, 1), torch.nn.Conv3d(8, 4, 1))  # dropout is identity in eval
    ref_teacher.load_state_dict({"0.weight": teacher[0].weight, "0.bias": teacher[0].bias,
                                 "1.weight": teacher[2].weight, "1.bias": teacher[2].bias})  # fmt: skip
    with torch.no_grad():
        ref = defenses.distillation_loss(s, ref_teacher(x), 3.0)
    assert torch.equal(v1, v2) and torch.allclose(v1, ref, atol=1e-6)


def _tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Conv3d(4, 4, 1)


def _tiny_batch(n: int, seed: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, 4, 4, 4, generator=g), torch.randint(0, 4, (n, 4, 4, 4), generator=g)


def _ks_uniform_p(values: list[float], lo: float, hi: float) -> float:
    """scipy's one-sample KS test of ``values`` against the uniform distribution on [lo, hi]: its p-value."""
    from scipy import stats as sst

    assert all(lo <= v <= hi for v in values)
    return float(sst.kstest(values, "uniform", args=(lo, hi - lo)).pvalue)


@pytest.mark.parametrize("n, mix, n_adv", [(2, 0.1, 1), (4, 0.4, 2), (4, 0.6, 2), (4, 0.75, 3), (5, 0.8, 4), (4, 1.0, 4)])
def test_adversarial_augmenter_replaces_the_nearest_whole_number_of_volumes(n: int, mix: float, n_adv: int) -> None:
    """mix·B rounded to the nearest integer, at least one (hand values: 0.2 → 1, 1.6 → 2, 2.4 → 2, 3 → 3, 4 → 4):
    that many volumes are replaced by changed versions, the rest untouched."""
    net, (x, y) = _tiny_net(), _tiny_batch(n)
    hook = defenses.AdversarialAugmenter("fgsm", eps_range=(0.1, 0.3), mix=mix)
    out, _ = hook(net, x, y, torch.Generator().manual_seed(0))
    assert len(hook.last_index) == len(set(hook.last_index)) == len(hook.last_eps) == n_adv
    changed = [j for j in range(n) if not torch.equal(out[j], x[j])]
    assert sorted(changed) == sorted(hook.last_index)


def test_adversarial_augmenter_draws_eps_uniformly_and_volumes_at_random() -> None:
    """Over seeded batches the eps are uniform on eps_range (oracle: scipy's KS test) and the replaced volume is a
    uniform choice among the batch's positions (scipy's chi-square test of the counts), not always the same one."""
    net, (x, y) = _tiny_net(), _tiny_batch(8)
    hook = defenses.AdversarialAugmenter("fgsm", eps_range=(0.1, 0.3), mix=1.0)
    eps: list[float] = []
    for s in range(12):
        hook(net, x, y, torch.Generator().manual_seed(s))
        eps += hook.last_eps
    assert _ks_uniform_p(eps, 0.1, 0.3) > 0.01
    one = defenses.AdversarialAugmenter("fgsm", eps_range=(0.1, 0.3), mix=0.25)
    counts = [0] * 4
    for s in range(40):
        one(net, x[:4], y[:4], torch.Generator().manual_seed(s))
        counts[one.last_index[0]] += 1
    from scipy import stats as sst

    assert min(counts) >= 3 and sst.chisquare(counts).pvalue > 0.01


def test_adversarial_clip_is_the_brain_range_even_when_the_background_lies_outside_it() -> None:
    """Brain intensities all in [1, 2] (a crop inside bright tissue), background 0: the clip range is the brain's,
    so no adversarial brain voxel goes below the brain minimum, although 0 is in the whole crop's range. Checked for
    the augmenter and the static set (oracle: per-modality min/max over the brain by hand)."""
    net = _tiny_net()
    g = torch.Generator().manual_seed(9)
    x = 1 + torch.rand(3, 4, 4, 4, 4, generator=g)
    x[:, :, :1] = 0
    y = torch.randint(0, 4, (3, 4, 4, 4), generator=g)
    hook = defenses.AdversarialAugmenter("fgsm", eps_range=(0.5, 0.5), mix=1.0)
    out_hook, _ = hook(net, x, y, torch.Generator().manual_seed(0))
    out_static, _, _ = defenses.make_static_adversarial_set(net, x, y, eps_range=(0.5, 0.5))
    for out in (out_hook, out_static):
        for j in range(3):
            brain = (x[j] != 0).any(0)
            lo, hi = x[j][:, brain].amin(1), x[j][:, brain].amax(1)
            assert (out[j][:, brain] != x[j][:, brain]).any()
            assert (out[j][:, brain] >= lo[:, None]).all() and (out[j][:, brain] <= hi[:, None]).all()


def test_default_brain_is_where_some_modality_is_non_zero_even_with_an_all_zero_modality() -> None:
    """Without a given mask the brain is where *any* modality is non-zero: a modality that is 0 throughout (a constant
    one after z-scoring) does not empty it. Oracle: the mask by hand, ``(x != 0).any(0)``: the other modalities are
    perturbed there and only there, within their brain range; the all-zero one (range [0, 0]) stays 0. Checked for the
    augmenter and the static set."""
    net = _tiny_net()
    g = torch.Generator().manual_seed(3)
    x = 1 + torch.rand(2, 4, 4, 4, 4, generator=g)
    x[:, 3] = 0  # constant modality, z-scored
    x[:, :, :1] = 0  # background slab
    y = torch.randint(0, 4, (2, 4, 4, 4), generator=g)
    hook = defenses.AdversarialAugmenter("fgsm", eps_range=(0.5, 0.5), mix=1.0)
    out_hook, _ = hook(net, x, y, torch.Generator().manual_seed(0))
    out_static, _, _ = defenses.make_static_adversarial_set(net, x, y, eps_range=(0.5, 0.5))
    brain = torch.zeros(4, 4, 4, dtype=torch.bool)
    brain[1:] = True
    for out in (out_hook, out_static):
        for j in range(2):
            assert torch.equal(out[j][:, ~brain], x[j][:, ~brain]) and torch.equal(out[j][3], x[j][3])
            moved = out[j][:3, brain] != x[j][:3, brain]
            assert moved.any(1).all()  # every non-zero modality is perturbed inside the brain
            lo, hi = x[j][:3, brain].amin(1), x[j][:3, brain].amax(1)
            assert (out[j][:3, brain] >= lo[:, None]).all() and (out[j][:3, brain] <= hi[:, None]).all()


def test_adversarial_augmenter_uses_each_volumes_own_brain_mask() -> None:
    """Two volumes with different given brain masks (front half, back half) after an intensity shift: each is perturbed
    inside its own mask only."""
    net, (x, y) = _tiny_net(), _tiny_batch(2)
    x = x + 0.07
    brain = torch.zeros(2, 1, 4, 4, 4, dtype=torch.bool)
    brain[0, :, :2] = True
    brain[1, :, 2:] = True
    hook = defenses.AdversarialAugmenter("fgsm", eps_range=(0.2, 0.3), mix=1.0)
    out, _ = hook(net, x, y, torch.Generator().manual_seed(0), brain)
    for j in range(2):
        b = brain[j, 0]
        assert torch.equal(out[j][:, ~b], x[j][:, ~b])
        assert (out[j][:, b] != x[j][:, b]).any()


def test_static_adversarial_set_draws_eps_uniformly_and_returns_a_copy_of_the_labels() -> None:
    """One eps per volume, uniform on eps_range (oracle: scipy's KS test over 100 volumes); the labels returned are
    a copy: changing them leaves the caller's labels alone."""
    net, (x, y) = _tiny_net(), _tiny_batch(100)
    adv, labels, eps = defenses.make_static_adversarial_set(net, x, y, eps_range=(0.1, 0.3), seed=0)
    assert len(eps) == 100 and _ks_uniform_p(list(eps), 0.1, 0.3) > 0.01
    y_before = y.clone()
    labels += 1
    assert torch.equal(y, y_before)


def test_input_gradient_stats_near_zero_counts_values_equal_to_the_threshold() -> None:
    """frac_near_zero is the fraction with |g| ≤ threshold (documented: ≤). With the threshold set to a value |g|
    takes, that value counts (oracle: the input gradient by hand with autograd)."""
    net, (x, y) = _tiny_net(), _tiny_batch(2)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(net(xr), y), xr)
    a = g.abs().flatten().double()
    thr = float(a.sort().values[len(a) // 2])  # a value |g| takes
    want = float((a <= thr).double().mean())
    stats = defenses.input_gradient_stats(net, x, y, threshold=thr)
    assert stats["frac_near_zero"] == pytest.approx(want, abs=1e-12)
    assert defenses.input_gradient_stats(net, x, y, threshold=float(a.max()))["frac_near_zero"] == 1.0


def test_output_saturation_counts_a_voxel_if_any_mask_channel_is_set() -> None:
    """A per-channel input mask: channel 0 covers the 60 brain voxels, channels 1-3 only the two front slices. An output
    voxel counts when any channel is set, so the fractions are those of the whole brain (hand values at T = 20:
    18/60 saturated, as in test_output_saturation_fractions_by_hand)."""
    x, y, brain = _step_data()
    mask = brain[:, None].repeat(1, 4, 1, 1, 1)
    mask[:, 1:, 2:] = False
    stats = defenses.input_gradient_stats(defenses.LogitScale(_step_net(), 20.0), x, y, mask=mask)
    assert stats["frac_saturated_voxels"] == 18 / 60


# ----------------------------------------------------------------------------- argument checks (review, session 19)
class _MustNotRun(torch.nn.Module):
    """A network whose forward fails: a check that passes it means the argument was refused before any attack ran."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the attack ran: the argument was not checked up front")


_BAD_ALPHA_FRACS = [0, 0.0, -0.5, float("nan"), float("inf"), True, "0.5", None]


@pytest.mark.parametrize("alpha_frac", _BAD_ALPHA_FRACS)
def test_alpha_frac_is_a_finite_positive_number_checked_up_front(alpha_frac) -> None:
    """attack_sweep's rule (alpha_frac > 0, finite) in both adversarial-training entry points, before any attack:
    alpha_frac = 0 used to turn i-FGSM training into clean training while last_eps still recorded eps > 0."""
    x, y = _tiny_batch(2)
    for attack in ("fgsm", "ifgsm", "mixed"):
        with pytest.raises(ValueError, match=r"^alpha_frac must be a finite number > 0"):
            defenses.AdversarialAugmenter(attack, alpha_frac=alpha_frac)
    for attack in ("fgsm", "ifgsm"):
        with pytest.raises(ValueError, match=r"^alpha_frac must be a finite number > 0"):
            defenses.make_static_adversarial_set(_MustNotRun(), x, y, attack=attack, alpha_frac=alpha_frac)


def test_alpha_frac_zero_would_have_trained_on_clean_volumes() -> None:
    """Why alpha_frac = 0 is refused: i-FGSM with alpha = 0 returns the clean volume bit for bit (the oracle: x
    itself), so every "adversarial" example would be the clean one; a tiny positive fraction is accepted and moves."""
    from robustseg_lib import attacks

    net, (x, y) = _model(), _batch(1)
    brain = (x != 0).any(1, keepdim=True)
    assert torch.equal(attacks.ifgsm(net, x, y, 0.2, 0.0, 3, mask=brain), x)
    hook = defenses.AdversarialAugmenter("ifgsm", eps_range=(0.2, 0.2), mix=1.0, alpha_frac=1e-3)
    adv, _ = hook(net, x, y, torch.Generator().manual_seed(0), brain)
    assert not torch.equal(adv, x)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"eps_range": (0.1, 0.2, 0.3)}, "eps_range must be a pair"),  # was "too many values to unpack"
    ({"eps_range": 0.3}, "eps_range must be a pair"),  # was "'float' object is not iterable"
    ({"eps_range": "ab"}, "eps_range must be a pair"),
    ({"eps_range": (0.1, float("inf"))}, "eps_range must be a pair"),  # was accepted, then failed at the first batch
    ({"eps_range": (float("nan"), 0.2)}, "eps_range must be a pair"),
    ({"eps_range": (-0.1, 0.2)}, "eps_range must be a pair"),
    ({"eps_range": (0.3, 0.1)}, "eps_range must be a pair"),
    ({"eps_range": (0.1, "0.2")}, "eps_range must be a pair"),
    ({"steps": "3"}, "steps must be an int >= 1"),  # was a TypeError
    ({"steps": 2.5}, "steps must be an int >= 1"),  # was silently cut to 2
    ({"steps": 0}, "steps must be an int >= 1"),
    ({"steps": True}, "steps must be an int >= 1"),
    ({"mix": float("nan")}, "mix must be"),
    ({"mix": "0.5"}, "mix must be"),
    ({"mix": 1.5}, "mix must be"),
])
def test_adversarial_augmenter_refuses_bad_arguments_naming_them(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}"):
        defenses.AdversarialAugmenter("ifgsm", **kwargs)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"eps_range": (0.1, 0.2, 0.3)}, "eps_range must be a pair"),
    ({"eps_range": 0.3}, "eps_range must be a pair"),
    ({"eps_range": (0.1, float("inf"))}, "eps_range must be a pair"),  # was drawn, then refused by the attack
    ({"steps": 2.5}, "steps must be an int >= 1"),  # fgsm ignores steps: it was never checked
    ({"steps": "3"}, "steps must be an int >= 1"),
    ({"seed": -1}, "seed must be a non-negative int"),
])
def test_static_adversarial_set_refuses_bad_arguments_up_front(kwargs: dict, message: str) -> None:
    x, y = _tiny_batch(2)
    with pytest.raises(ValueError, match=f"^{message}"):
        defenses.make_static_adversarial_set(_MustNotRun(), x, y, attack="fgsm", **kwargs)


def test_one_eps_range_rule_accepts_pairs_of_any_kind_as_plain_floats() -> None:
    import numpy as np

    for pair in ((0.1, 0.3), [0, 1], np.array([0.05, 0.3]), (np.float32(0.25), np.int64(1)), (0.2, 0.2)):
        hook = defenses.AdversarialAugmenter(eps_range=pair)
        assert hook.eps_range == (float(pair[0]), float(pair[1])) and all(type(v) is float for v in hook.eps_range)
    net, (x, y) = _tiny_net(), _tiny_batch(2)
    _, _, eps = defenses.make_static_adversarial_set(net, x, y, eps_range=np.array([0.2, 0.2]))
    assert eps.tolist() == [0.2, 0.2]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, True])
def test_nan_weights_are_refused_not_read_as_zero(bad: float) -> None:
    """``NaN > 0`` is False, so a NaN hard_weight or dice_weight used to drop its term silently."""
    teacher = torch.nn.Conv3d(4, 4, 1)
    for name in ("hard_weight", "dice_weight"):
        with pytest.raises(ValueError, match=f"^{name} must be a finite number >= 0"):
            defenses.DistillationObjective(teacher, 2.0, **{name: bad})
    a = _logits([1.0, 2.0])
    with pytest.raises(ValueError, match="^hard_weight must be a finite number >= 0"):
        defenses.distillation_loss(a, a, 2.0, hard_weight=bad, hard_labels=torch.zeros(1, 1, 1, 1, dtype=torch.long))
    for T in (float("nan"), float("inf"), 0.0):
        with pytest.raises(ValueError, match="^temperature must be a finite number > 0"):
            defenses.DistillationObjective(teacher, T)


def test_train_moves_the_teacher_to_the_training_device_and_leaves_it_frozen() -> None:
    """train() puts a DistillationObjective's teacher on its device (here the CPU; on a GPU machine a CPU teacher
    would otherwise meet CUDA batches): the move is asked for with the training device, and the teacher stays in
    eval mode with its weights and frozen flags as they were."""
    import copy

    from robustseg_lib.training import TrainConfig, train

    class Recorder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(3)
            self.conv = torch.nn.Conv3d(4, 4, 1)
            self.moved_to: list[torch.device] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

        def to(self, *args, **kwargs):  # type: ignore[override]
            self.moved_to.append(torch.device(args[0]) if args else kwargs["device"])
            return super().to(*args, **kwargs)

    teacher = Recorder()
    obj = defenses.DistillationObjective(teacher, 2.0, dice_weight=0.0)
    before = copy.deepcopy(teacher.state_dict())
    x, y = _tiny_batch(2)
    train(_tiny_net(), x, y, TrainConfig(epochs=1, batch_size=2, augment=False), objective=obj, device="cpu", progress=False)
    assert teacher.moved_to == [torch.device("cpu")]
    assert all(p.device == torch.device("cpu") for p in teacher.parameters())
    assert not any(m.training for m in teacher.modules()) and not any(p.requires_grad for p in teacher.parameters())
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert obj.to("cpu") is obj


def test_input_gradient_stats_refuses_inference_mode_and_inference_models_up_front() -> None:
    """Like the attacks: under torch.inference_mode() (which enable_grad cannot undo) or with a model holding inference
    tensors, input_gradient_stats refuses up front with a RuntimeError naming itself and saying what to do; inputs and
    labels made under inference mode are fine and give the same statistics."""
    torch.manual_seed(3)
    net = torch.nn.Conv3d(4, 3, 1)
    x = torch.randn(1, 4, 2, 2, 2)
    y = torch.randint(0, 3, (1, 2, 2, 2))
    with torch.inference_mode(), pytest.raises(
        RuntimeError, match=r"input_gradient_stats\(\) needs input gradients, but torch.inference_mode\(\) is active.*outside inference mode"
    ):
        defenses.input_gradient_stats(net, x, y)
    with torch.inference_mode():
        inf_net = torch.nn.Conv3d(4, 3, 1)
        xi, yi = x.clone(), y.clone()
    with pytest.raises(RuntimeError, match="model holds tensors created under torch.inference_mode.*build or load the model outside"):
        defenses.input_gradient_stats(inf_net, x, y)
    assert defenses.input_gradient_stats(net, xi, yi) == defenses.input_gradient_stats(net, x, y)
