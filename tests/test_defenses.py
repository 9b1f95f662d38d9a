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
