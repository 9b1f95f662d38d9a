"""Defenses: defensive distillation and adversarial training, plus gradient-masking diagnostics.

Both defenses plug into the one training loop (:func:`robustseg_lib.training.train`):
distillation through its ``objective`` argument, adversarial training through ``batch_hook``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .checks import check_float, check_int
from .models import LogitScale
from .training import dice_ce_objective

__all__ = [
    "distillation_loss",
    "DistillationObjective",
    "AdversarialAugmenter",
    "make_static_adversarial_set",
    "LogitScale",
    "input_gradient_stats",
]


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    *,
    hard_labels: torch.Tensor | None = None,
    hard_weight: float = 0.0,
    scale_by_t2: bool = True,
) -> torch.Tensor:
    """Soft-label cross-entropy at temperature T, per voxel (Papernot et al., 2016; Hinton et al., 2015).

    ``L = T² · mean_voxels( − Σ_c p_c log q_c ) + w · CE(student_logits, hard_labels)`` with
    ``p = softmax(teacher_logits / T)`` (the teacher's soft labels, no gradient) and
    ``q = softmax(student_logits / T)``. This is the soft cross-entropy Papernot's student
    minimises; it differs from KL(p‖q) by the teacher entropy, a constant, so both have
    the same gradient and the same minimiser (q = p). The T² factor (Hinton) keeps the
    gradient magnitude independent of T; ``scale_by_t2=False`` drops it. The optional
    hard-label term is ``CE(student_logits, hard_labels)`` at T = 1 with the T² factor
    (Hinton's recipe), and ``CE(student_logits / T, hard_labels)`` without it. Then both
    terms see the same ``student_logits / T`` (for an output-scaled student, logits ``T·f``,
    that is ``f`` itself, whereas on the raw logits the hard term's gradient w.r.t. ``f``
    would carry an extra factor T), so ``hard_weight`` means the same at every T. With
    T = 1, no T² and no hard term, this is exactly ``F.cross_entropy(student_logits, p)``.

    Args:
        student_logits: ``(N, C, ...)`` raw student logits.
        teacher_logits: same shape; detached inside.
        temperature: T > 0.
        hard_labels: ``(N, ...)`` int class maps for the optional hard term.
        hard_weight: weight w ≥ 0 of the hard term (0 = pure soft labels, Papernot); finite (NaN is refused,
            not read as 0).
        scale_by_t2: multiply the soft term by T² (and take the hard term at T = 1);
            False: no T², hard term on ``student_logits / T``.

    Returns:
        Scalar loss.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student_logits {tuple(student_logits.shape)} and teacher_logits {tuple(teacher_logits.shape)} differ")
    if student_logits.ndim < 2:
        raise ValueError("logits must be (N, C, ...)")
    temperature = check_float(temperature, "temperature", minimum=0, strict=True)
    hard_weight = check_float(hard_weight, "hard_weight", minimum=0)
    if hard_weight > 0 and hard_labels is None:
        raise ValueError("hard_weight > 0 needs hard_labels")
    p = F.softmax(teacher_logits.detach().float() / temperature, dim=1)
    log_q = F.log_softmax(student_logits.float() / temperature, dim=1)
    soft = -(p * log_q).sum(dim=1).mean()
    if scale_by_t2:
        soft = soft * temperature**2
    if hard_weight > 0:
        hard_logits = student_logits.float() if scale_by_t2 else student_logits.float() / temperature
        soft = soft + hard_weight * F.cross_entropy(hard_logits, hard_labels.long())  # type: ignore[union-attr]
    return soft


class DistillationObjective:
    """Training objective of the distilled student: the teacher's soft labels at T.

    The teacher's logits are computed on the very batch the student sees (after
    augmentation), in eval mode and without gradient: the same soft labels as
    pre-computing them over the training set, without storing a 4-channel float
    volume per case.

    The loss is :func:`distillation_loss` (soft cross-entropy at T, × T²) plus, with weight
    ``dice_weight``, MONAI's soft-label Dice loss between the student's and the teacher's softmax
    at T (``DiceLoss(soft_label=True)``, the Dice semimetric loss of Wang et al. 2023, which is
    zero exactly when the two agree). The second term mirrors the baseline's Dice + CE: with
    cross-entropy alone, a segmentation student under-segments the small classes (on the
    teaching data the T = 1 student's validation Dice went from about 0.5 without this term to
    about 0.74 with it, the baseline's level), which
    would make distillation look worse for a reason unrelated to robustness.

    The optional hard-label term is Dice + CE against the true class maps, on the student's
    logits at T = 1 with ``scale_by_t2=True`` (Hinton's recipe for a plain student) and on
    ``logits / T`` with ``scale_by_t2=False``. The latter is the output-scaled student's
    inner logits ``f`` (logits ``T·f``), which the soft terms also see. On the raw logits the
    hard term's gradient w.r.t. ``f`` would carry a factor T that the soft terms' do not, so
    the same ``hard_weight`` would weigh it T times more (20 times at T = 20); on
    ``logits / T`` ``hard_weight`` means the same at every T.

    The teacher is frozen **in place**: the constructor puts the caller's module in eval mode and
    sets ``requires_grad=False`` on all its parameters (and so on any network it wraps, e.g. the
    baseline inside ``LogitScale(baseline, T)``). Call ``.train()`` and ``requires_grad_(True)``
    on it again before fine-tuning it later.

    :func:`robustseg_lib.training.train` calls :meth:`to` with its training device, so the teacher
    runs where the student's batches are (moved in place, like the student; still frozen). Outside
    ``train``, put the teacher on the batches' device yourself, or call :meth:`to`.

    Args:
        teacher: the teacher network (trained at temperature T); frozen in place, see above.
        temperature: T used for both teacher soft labels and student training.
        hard_weight: weight of an additional Dice+CE term on the hard labels (0 = Papernot);
            on ``logits / T`` when ``scale_by_t2`` is False, see above.
        dice_weight: weight of the soft Dice term (0 = soft cross-entropy only).
        scale_by_t2: multiply the soft cross-entropy by T² (Hinton). Right for a plain student,
            whose gradient w.r.t. its logits carries a 1/T; wrong for a student trained through
            :func:`robustseg_lib.models.LogitScale` ``(net, T)`` (the output-scaled
            parametrisation), whose inner logits see no 1/T: there it would only inflate the
            cross-entropy T²-fold against the Dice term. Also selects the hard term's input
            (see above).
    """

    def __init__(
        self, teacher: torch.nn.Module, temperature: float, hard_weight: float = 0.0, dice_weight: float = 1.0, scale_by_t2: bool = True
    ) -> None:
        from monai.losses import DiceLoss

        self.temperature = check_float(temperature, "temperature", minimum=0, strict=True)
        self.hard_weight = check_float(hard_weight, "hard_weight", minimum=0)  # NaN refused: `NaN > 0` would silently drop the term
        self.dice_weight = check_float(dice_weight, "dice_weight", minimum=0)
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.scale_by_t2 = bool(scale_by_t2)
        self._hard = dice_ce_objective(1.0)
        self._dice = DiceLoss(softmax=False, soft_label=True, smooth_nr=1e-5, smooth_dr=1e-5)

    def to(self, device: str | torch.device) -> DistillationObjective:
        """Move the teacher to ``device`` in place (it stays in eval mode with its parameters frozen).

        Args:
            device: where the training batches are, e.g. ``torch.device("cuda")``.

        Returns:
            This objective.
        """
        self.teacher.to(device)
        return self

    def __call__(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        loss = distillation_loss(logits, teacher_logits, self.temperature, scale_by_t2=self.scale_by_t2)
        if self.dice_weight > 0:
            q = F.softmax(logits.float() / self.temperature, dim=1)
            p = F.softmax(teacher_logits.float() / self.temperature, dim=1)
            loss = loss + self.dice_weight * self._dice(q, p)
        if self.hard_weight > 0:
            hard_logits = logits if self.scale_by_t2 else logits.float() / self.temperature
            loss = loss + self.hard_weight * self._hard(hard_logits, x, y)
        return loss


LABEL_SOURCES = ("truth", "predicted")
ADV_ATTACKS = ("fgsm", "ifgsm", "mixed")  # how AdversarialAugmenter makes its training examples


def _check_label_source(label_source: Any) -> str:
    """``label_source`` itself, or a ValueError naming the parameter."""
    if not isinstance(label_source, str) or label_source not in LABEL_SOURCES:
        raise ValueError(f"label_source must be 'truth' or 'predicted', got {label_source!r}")
    return label_source


def _check_eps_range(eps_range: Any) -> tuple[float, float]:
    """``eps_range`` as ``(lo, hi)`` plain floats, or a ValueError naming the parameter.

    A pair (not a string) of finite reals, bools refused, with ``0 <= lo <= hi``."""
    bad = ValueError(f"eps_range must be a pair (lo, hi) of finite numbers with 0 <= lo <= hi, got {eps_range!r}")
    try:
        values = [] if isinstance(eps_range, (str, bytes)) else list(eps_range)  # a float is not iterable: TypeError
        if len(values) != 2:
            raise bad
        lo, hi = (check_float(v, "eps_range", minimum=0) for v in values)
    except (TypeError, ValueError):
        raise bad from None
    if lo > hi:
        raise bad
    return lo, hi


def _attack_labels(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, label_source: str) -> torch.Tensor:
    """The class maps the attack ascends: ``y`` itself (``"truth"``) or the model's prediction on ``x``.

    ``"predicted"``: ``argmax`` of ``model(x)`` in eval mode, without gradient, through the
    same ``model`` (network or sliding-window wrapper) the attack is run on; every submodule's
    ``training`` flag is restored afterwards.
    """
    if label_source == "truth":
        return y
    from .attacks import _eval_mode

    with torch.no_grad(), _eval_mode(model):
        return model(x).argmax(1)


def _batch_clip(x: torch.Tensor, brain: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-case, per-modality brain range and brain mask of a z-scored batch.

    ``brain`` ``(B, 1, ...)`` is the mask; None takes the voxels where some modality is non-zero
    (right for prepared volumes, wrong after an intensity shift of the whole crop)."""
    brain = (x != 0).any(dim=1, keepdim=True) if brain is None else brain.to(x.device, torch.bool)
    big = torch.finfo(x.dtype).max
    lo = torch.where(brain, x, torch.full_like(x, big)).amin(dim=(2, 3, 4), keepdim=True)
    hi = torch.where(brain, x, torch.full_like(x, -big)).amax(dim=(2, 3, 4), keepdim=True)
    empty = ~brain.flatten(1).any(1)
    if empty.any():  # all-zero crop: nothing to perturb; keep clip finite
        lo[empty] = 0
        hi[empty] = 0
    return lo, hi, brain


class AdversarialAugmenter:
    """Batch hook for adversarial training by data augmentation (on the fly).

    For each batch, a fraction ``mix`` of its volumes (at least one) is attacked against
    the *current* network with FGSM or i-FGSM at an eps drawn uniformly from
    ``eps_range`` (one eps per volume), restricted to the brain and clipped to each
    volume's per-modality range (both over the brain mask the training loop passes, taken
    before the intensity augmentation); those volumes are *replaced* by their adversarial versions,
    true labels kept, so every batch mixes clean and adversarial examples at a fixed size
    (Goodfellow et al., 2015; Kurakin et al., 2017b). ``last_index`` and ``last_eps`` record
    which volumes were replaced and with which eps.

    The clip range is each *crop's* brain range (per modality), slightly tighter than the
    whole case's range that test-time attacks clip to. By default the examples are made from
    the true labels, as in the paper; Kurakin et al. (2017b, on label leaking) recommend the model's
    predicted labels instead, against "label leaking" with one-step attacks:
    ``label_source="predicted"`` attacks each volume against the argmax of the current
    network's prediction on it (eval mode, no gradient, the network the attack runs on). Only
    the attack's labels change: the training target returned is the true label either way.
    Both attacks here are untargeted; a targeted one (ti-FGSM) would build its target map
    from the same label source (``make_target`` of the prediction), so that the target does
    not carry the true label into the example either.

    Args:
        attack: ``"fgsm"``, ``"ifgsm"`` or ``"mixed"`` (each adversarial volume picks one at random).
        eps_range: ``(lo, hi)`` in z-score units, finite, ``0 <= lo <= hi``.
        mix: fraction of the batch that gets an adversarial copy, in (0, 1].
        steps: i-FGSM iterations, an int >= 1.
        alpha_frac: i-FGSM step size as a fraction of eps, finite and > 0 (checked whatever the
            attack, as :func:`robustseg_lib.attacks.attack_sweep` does).
        label_source: ``"truth"`` (the paper) or ``"predicted"`` (Kurakin et al., 2017b): the labels
            the attack ascends.
    """

    def __init__(
        self,
        attack: str = "fgsm",
        eps_range: Sequence[float] = (0.05, 0.3),
        mix: float = 0.5,
        steps: int = 3,
        alpha_frac: float = 0.5,
        label_source: str = "truth",
    ) -> None:
        self.label_source = _check_label_source(label_source)
        if attack not in ADV_ATTACKS:
            raise ValueError(f"attack must be 'fgsm', 'ifgsm' or 'mixed', got {attack!r}")
        self.eps_range = _check_eps_range(eps_range)
        self.mix = check_float(mix, "mix", minimum=0, strict=True)
        if self.mix > 1:
            raise ValueError(f"mix must be in (0, 1], got {mix}")
        self.steps = check_int(steps, "steps", minimum=1)
        # alpha_frac = 0 would make every i-FGSM example the clean volume: adversarial training silently clean
        self.alpha_frac = check_float(alpha_frac, "alpha_frac", minimum=0, strict=True)
        self.attack = attack
        self.last_eps: list[float] = []
        self.last_index: list[int] = []

    def __call__(
        self, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, brain: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Replace a seeded choice of volumes by adversarial versions.

        Args:
            net: the network being trained (attacked as it is now).
            x, y: the augmented batch ``(B, 4, d, h, w)`` and its class maps.
            generator: seeds the choice of volumes, eps and attack (``label_source`` draws
                nothing, so both sources pick the same volumes and eps).
            brain: ``(B, 1, d, h, w)`` brain mask; None: where ``x`` is non-zero.

        Returns:
            ``(x', y)``, ``y`` the true class maps whatever the label source.
        """
        from .attacks import fgsm, ifgsm

        if brain is not None and (brain.shape[0] != x.shape[0] or brain.shape[2:] != x.shape[2:]):
            raise ValueError(f"brain mask {tuple(brain.shape)} does not match the batch {tuple(x.shape)}")

        n_adv = max(1, int(round(self.mix * len(x))))
        pick = torch.randperm(len(x), generator=generator)[:n_adv]
        u = torch.rand(n_adv, generator=generator, dtype=torch.float64)
        kinds = torch.rand(n_adv, generator=generator)
        out = x.clone()
        self.last_eps, self.last_index = [], pick.tolist()
        for i, j in enumerate(pick.tolist()):
            eps = float(self.eps_range[0] + (self.eps_range[1] - self.eps_range[0]) * u[i])
            xj, yj = x[j : j + 1], y[j : j + 1]
            lo, hi, bj = _batch_clip(xj, None if brain is None else brain[j : j + 1])
            kind = self.attack if self.attack != "mixed" else ("fgsm" if kinds[i] < 0.5 else "ifgsm")
            yj = _attack_labels(net, xj, yj, self.label_source)
            if kind == "fgsm":
                adv = fgsm(net, xj, yj, eps, clip=(lo, hi), mask=bj)
            else:
                adv = ifgsm(net, xj, yj, eps, self.alpha_frac * eps, self.steps, clip=(lo, hi), mask=bj)
            out[j : j + 1] = adv
            self.last_eps.append(eps)
        return out, y


def make_static_adversarial_set(
    net: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    attack: str = "fgsm",
    eps_range: Sequence[float] = (0.05, 0.3),
    steps: int = 3,
    alpha_frac: float = 0.5,
    seed: int = 0,
    spec: dict[str, Any] | None = None,
    roi_size: tuple[int, int, int] | None = None,
    label_source: str = "truth",
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Pre-generate adversarial copies of a training set from a fixed (baseline) model.

    The static variant of adversarial training: the examples are made once against the
    undefended baseline and added to the training set (one copy per volume, one attack call
    per volume since each volume has its own eps). The network is attacked as it predicts:
    through :func:`robustseg_lib.evaluation.wrap_model` (one pass, or a sliding window with
    the spec's overlap). Each volume is clipped to its own per-modality brain range and
    perturbed only inside its brain (the voxels where some modality is non-zero). By default
    the examples are made from the true labels, as in the paper; ``label_source="predicted"``
    makes each from the source model's prediction on its clean volume instead (argmax through
    the same wrapped model, eval mode, no gradient; see :class:`AdversarialAugmenter` on
    label leaking). The labels returned are the true ones either way.

    Args:
        net: the fixed source model.
        images: ``(N, 4, D, H, W)`` z-scored volumes (zero outside the brain).
        labels: ``(N, D, H, W)`` class maps.
        attack: ``"fgsm"`` or ``"ifgsm"``.
        eps_range: ``(lo, hi)``, eps drawn uniformly per volume; finite, ``0 <= lo <= hi``.
        steps, alpha_frac: i-FGSM settings (an int >= 1; a finite number > 0, checked whatever the attack).
        seed: seed of the eps draws.
        spec: the model spec (``crop``, ``overlap``, ``inference``), as for prediction.
        roi_size: without ``spec``, the sliding-window size (``wrap_model``'s default overlap
            0.25); prefer ``spec``. Neither: one pass over the whole volume.
        label_source: ``"truth"`` or ``"predicted"``: the labels the attack ascends.

    Returns:
        ``(adv_images, labels, eps_per_volume)``, ``labels`` a copy of the true ``labels``.
    """
    from .attacks import fgsm, ifgsm
    from .evaluation import wrap_model

    if attack not in ("fgsm", "ifgsm"):
        raise ValueError(f"attack must be 'fgsm' or 'ifgsm', got {attack!r}")
    _check_label_source(label_source)
    if not isinstance(images, torch.Tensor) or images.ndim != 5:
        raise ValueError(f"images must be a (N, C, D, H, W) tensor, got {getattr(images, 'shape', type(images).__name__)}")
    if not isinstance(labels, torch.Tensor) or tuple(labels.shape) != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"labels must be a (N, D, H, W) tensor matching images {tuple(images.shape)}, got {getattr(labels, 'shape', type(labels).__name__)}")
    lo_e, hi_e = _check_eps_range(eps_range)
    steps = check_int(steps, "steps", minimum=1)
    alpha_frac = check_float(alpha_frac, "alpha_frac", minimum=0, strict=True)
    seed = check_int(seed, "seed")
    if spec is not None and roi_size is not None:
        raise ValueError("give spec or roi_size, not both (spec carries the crop and the overlap)")
    if spec is None:
        spec = {"crop": None if roi_size is None else tuple(int(r) for r in roi_size), "inference": "sliding"}
    rng = np.random.default_rng(seed)
    eps_all = rng.uniform(lo_e, hi_e, size=len(images))
    model = wrap_model(net, spec, images.shape[2:])
    dev = next(net.parameters()).device
    out = []
    for i in range(len(images)):  # one eps per volume
        x = images[i : i + 1].to(dev).float()
        y = _attack_labels(model, x, labels[i : i + 1].to(dev).long(), label_source)
        lo, hi, brain = _batch_clip(x)
        eps = float(eps_all[i])
        if attack == "fgsm":
            adv = fgsm(model, x, y, eps, clip=(lo, hi), mask=brain)
        else:
            adv = ifgsm(model, x, y, eps, alpha_frac * eps, steps, clip=(lo, hi), mask=brain)
        out.append(adv.to(images.device))
    return torch.cat(out), labels.clone(), eps_all


def input_gradient_stats(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    threshold: float = 1e-10,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """How much gradient an attacker gets: the gradient-masking diagnostic.

    Computes the attack loss (mean cross-entropy by default, as the attacks use) and its
    gradients w.r.t. the input and w.r.t. the logits, and reports two kinds of statistics.

    *Input gradients*, over the input voxels in ``mask`` (every channel): the fraction with
    ``|g| ≤ threshold`` (``frac_near_zero``, exact zeros included), the fraction exactly zero
    (``frac_zero``), and the median and max of ``|g|``. In a dense predictor such as a UNet
    these hardly ever vanish, even when the softmax saturates: each input voxel collects
    gradient from every output voxel in its receptive field, and a few unsaturated ones
    (boundaries, errors) are enough. So they do not detect saturation there.

    *Output saturation*, over the output voxels in ``mask`` (a voxel counts if any channel
    of the mask is set there): ``frac_saturated_voxels``, the fraction whose float32 softmax
    probability of the label ``y`` is exactly 1.0 (predicted class = label, every other class
    below float32 resolution: the voxel's cross-entropy is exactly 0, so is the label
    component ``p_y − 1`` of its logit gradient, and the others are below 2⁻²⁴/n_voxels, so it
    gives the attacker next to nothing); and ``frac_zero_logit_grad``, the stricter fraction
    whose gradient of the loss w.r.t. the logits is exactly 0 in every class (with
    cross-entropy the other classes'
    ``exp(z_c − z_y) / n_voxels`` must underflow too: logit gaps beyond about 104 − ln n_voxels, the
    mean's 1/n_voxels bringing the underflow *closer*, e.g. 89 on a 144×176×144 volume).
    Both rise with the logit scale; the first already at the scales defensive distillation
    produces (T ≈ 20).

    Args:
        model: the network, called on ``x`` in eval mode (every submodule's ``training`` flag
            is restored afterwards); the output must be logits ``(N, K, D, H, W)``.
        x: ``(N, C, D, H, W)`` floating-point input.
        y: ``(N, D, H, W)`` integer class maps (the labels of the loss and of the saturation).
        mask: bool mask, ``(N, D, H, W)`` or broadcastable to ``x`` (as the attacks take it);
            None: every voxel.
        threshold: what counts as "near zero", ≥ 0.
        loss_fn: ``loss_fn(logits, y) -> scalar``; default mean cross-entropy. Works under
            ``torch.no_grad()`` too (gradients are enabled inside), but not under
            ``torch.inference_mode()`` nor with a model holding inference tensors: both are
            refused up front with a RuntimeError, as the attacks do.

    Returns:
        ``{"frac_near_zero", "frac_zero", "median_abs", "max_abs", "frac_saturated_voxels",
        "frac_zero_logit_grad"}``.
    """
    from .attacks import _check_autograd, _check_labels, _check_mask, _check_model, _check_x, _eval_mode

    _check_model(model)
    _check_autograd(model, "input_gradient_stats")
    _check_x(x)
    if x.ndim != 5:
        raise ValueError(f"x must be (N, C, D, H, W), got {tuple(x.shape)}")
    y = _check_labels(y, x, "y")
    m = _check_mask(mask, x)
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not threshold >= 0:
        raise ValueError(f"threshold must be a number >= 0, got {threshold!r}")
    if loss_fn is not None and not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable or None, got {type(loss_fn).__name__}")
    in_mask = None if m is None else m.expand(x.shape)
    if in_mask is not None and not in_mask.any():
        raise ValueError("mask selects no voxels")
    loss_f = loss_fn or (lambda lg, t: F.cross_entropy(lg.float(), t))
    with torch.enable_grad(), _eval_mode(model):
        xr = x.detach().clone().requires_grad_(True)
        logits = model(xr)
        if logits.ndim != 5 or logits.shape[0] != x.shape[0] or logits.shape[2:] != x.shape[2:]:
            raise ValueError(f"model must return logits (N, K, D, H, W) = ({x.shape[0]}, K, {', '.join(map(str, x.shape[2:]))}), got {tuple(logits.shape)}")
        loss = loss_f(logits, y)
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            raise ValueError("loss_fn must return a scalar tensor")
        g, g_logits = torch.autograd.grad(loss, [xr, logits], allow_unused=True)
    g = torch.zeros_like(xr) if g is None else g
    g_logits = torch.zeros_like(logits) if g_logits is None else g_logits
    with torch.no_grad():
        p_label = torch.softmax(logits.detach().float(), dim=1).gather(1, y[:, None])[:, 0]
        saturated = p_label == 1.0
        zero_logit_grad = (g_logits == 0).all(dim=1)
        a = g.abs()
        if in_mask is not None:
            a = a[in_mask]
            out_mask = in_mask.any(dim=1)
            saturated, zero_logit_grad = saturated[out_mask], zero_logit_grad[out_mask]
        a = a.flatten().double()
        return {
            "frac_near_zero": float((a <= threshold).double().mean()),
            "frac_zero": float((a == 0).double().mean()),
            "median_abs": float(a.median()),
            "max_abs": float(a.max()),
            "frac_saturated_voxels": float(saturated.double().mean()),
            "frac_zero_logit_grad": float(zero_logit_grad.double().mean()),
        }
