"""Gradient-sign attacks on 3D segmentation networks (Liu et al., 2021).

Attacks (all L∞, budgets in z-score units, see ``docs/design.md``):

* :func:`fgsm` — ``x' = x + eps·sign(∇ₓ L(f(x), y))`` (Goodfellow et al., 2015);
* :func:`ifgsm` — iterative FGSM / BIM, optionally from a random start (PGD):
  ``x_{k+1} = Π(x_k + alpha·sign(∇ L(f(x_k), y)))``;
* :func:`tifgsm` — *targeted* iterative FGSM: ``x_{k+1} = Π(x_k − alpha·sign(∇ L(f(x_k), t)))``
  towards a target class map ``t`` built by :func:`make_target`
  (this is not torchattacks' translation-invariant ``TIFGSM``).

``Π`` is the projection onto the feasible set: the L∞ ball of radius ``eps`` (per channel
and/or per sample, see :func:`fgsm`) around the clean ``x``, intersected with the ``clip`` range and restricted to ``mask``.

Conventions shared by every attack:

* **Eval mode.** The model runs in eval mode during the attack (deterministic
  normalisation/dropout: the attacker targets the deployed network) and every submodule's
  ``training`` flag is restored afterwards, whatever it was.
* **Parameters untouched.** Gradients are taken with ``torch.autograd.grad`` w.r.t. the
  input only, so parameters' ``.grad`` (None or tensors) and ``requires_grad`` flags are
  never modified (and no weight gradients are computed). Attacks run under
  ``torch.enable_grad()``, so they also work when called inside ``torch.no_grad()``; not inside
  ``torch.inference_mode()``, which that cannot undo, nor with a model whose parameters or buffers
  are inference tensors: both are refused up front with a RuntimeError saying so. Images, clip
  bounds and label maps made under inference mode are fine (label maps are copied).
* **Loss.** ``loss_fn(logits, labels) -> scalar``; default mean voxel-wise cross-entropy
  against ``y`` (untargeted: ascended) or against the target map (targeted: descended).
  Only its gradient's sign is used, so the reduction (mean/sum) does not matter, and in
  eval mode the cases of a batch do not interact: a batch attack equals per-case attacks,
  up to float32 underflow. The mean over all ``n`` voxels of the batch scales each logit
  gradient by ``1/n``: a voxel whose logit gap exceeds about ``104 − ln n`` (89 for a
  144×176×144 volume) gives exactly zero gradient, where a sum would still give some, and
  ``n`` grows with the batch. This only touches saturated (distilled) networks, whose
  input gradients the unsaturated voxels dominate anyway (see
  :func:`robustseg_lib.defenses.input_gradient_stats`).
* **Feasible set.** The attack maintains ``delta = x' − x`` and projects it with one
  ``clamp_`` against bounds computed once: ``[-eps, eps]`` ∩ ``[lo − x, hi − x]``, and
  ``0`` outside ``mask``. A voxel already outside ``clip`` may stay where it is (0 is always
  feasible) but is never pushed further out. ``clip=None`` (the default) means no
  intensity clipping; the notebooks pass each case's per-modality brain range
  (``prepared.npz`` ``lo``/``hi``) as ``(N, C, 1, 1, 1)`` tensors and the brain mask.
* **Guarantees on the output** (tested): detached, same dtype/device as ``x``;
  ``|x' − x| ≤ eps`` per channel *as computed in x's dtype* (the budget is rounded down
  to x's dtype and a final one-ulp correction removes float rounding of ``x + delta``);
  inside ``clip`` wherever ``x`` was; bit-identical to ``x`` where ``mask`` is False or the
  channel's eps is 0; ``eps = 0`` returns a copy of ``x`` without running the model.
* **Determinism.** No randomness except ``random_start`` (drawn from the given
  ``torch.Generator``): same inputs → bit-identical outputs on CPU.

:class:`SlidingWindowModel` makes whole-volume attacks use exactly the sliding-window
forward pass of prediction; :func:`attack_sweep` runs an attack over an eps grid and
returns the tidy per-case tables of ``docs/design.md``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from torch import nn

from .checks import check_float, check_int

__all__ = [
    "fgsm",
    "ifgsm",
    "tifgsm",
    "ATTACKS",
    "TARGET_POLICIES",
    "make_target",
    "target_region",
    "SlidingWindowModel",
    "attack_sweep",
]

Budget = Union[float, Sequence[float], np.ndarray, torch.Tensor]
Bound = Union[float, Sequence[float], np.ndarray, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[int, torch.Tensor], None]

ATTACKS = ("fgsm", "ifgsm", "tifgsm")

# --------------------------------------------------------------------------------------
# Target policies (ti-FGSM)
# --------------------------------------------------------------------------------------

TARGET_POLICIES: dict[str, str] = {
    "erase": "all tumour voxels (NCR, ED, ET) -> background: hide the tumour (missed or delayed diagnosis)",
    "et_to_ncr": "enhancing tumour -> necrosis: suppress apparent enhancement (changes grading and response assessment)",
    "ed_to_et": "edema -> enhancing tumour: fabricate enhancing tumour (inflates the ET/TC target volume)",
}

# class-map value -> target value, per policy (classes 0 bg, 1 NCR, 2 ED, 3 ET)
_POLICY_MAPS: dict[str, dict[int, int]] = {
    "erase": {1: 0, 2: 0, 3: 0},
    "et_to_ncr": {3: 1},
    "ed_to_et": {2: 3},
}


def _check_policy(policy: str) -> dict[int, int]:
    if policy not in _POLICY_MAPS:
        raise ValueError(f"policy must be one of {sorted(_POLICY_MAPS)}, got {policy!r}")
    return _POLICY_MAPS[policy]


def make_target(y: torch.Tensor | np.ndarray, policy: str) -> torch.Tensor | np.ndarray:
    """Target class map for ti-FGSM.

    Args:
        y: class map(s) (values 0..3), tensor or ndarray of any shape.
        policy: a key of :data:`TARGET_POLICIES`.

    Returns:
        A new map of the same type, dtype and shape with the policy's relabelling applied.
    """
    mapping = _check_policy(policy)
    out = y.clone() if isinstance(y, torch.Tensor) else np.array(y, copy=True)
    for src, dst in mapping.items():
        out[y == src] = dst
    return out


def target_region(y: torch.Tensor | np.ndarray, policy: str) -> torch.Tensor | np.ndarray:
    """Bool mask of the voxels whose label the policy changes (same type/shape as ``y``).

    Args:
        y: class map(s).
        policy: a key of :data:`TARGET_POLICIES`.
    """
    mapping = _check_policy(policy)
    if isinstance(y, torch.Tensor):
        region = torch.zeros(y.shape, dtype=torch.bool, device=y.device)
    else:
        region = np.zeros(np.shape(y), dtype=bool)
    for src in mapping:
        region |= y == src
    return region


# --------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------


def _check_model(model: Callable[[torch.Tensor], torch.Tensor]) -> None:
    if not callable(model):
        raise ValueError(f"model must be callable (an nn.Module), got {type(model).__name__}")


def _check_autograd(model: Any, caller: str = "") -> None:
    """Refuse what autograd cannot differentiate: inference mode, or a model holding inference tensors.

    ``caller``: the function's name for the message (e.g. ``"input_gradient_stats"``); empty for the attacks."""
    if torch.is_inference_mode_enabled():
        need, call, own = (
            (f"{caller}() needs", f"call {caller}()", f"{caller}() re-enables gradients itself") if caller
            else ("attacks need", "call the attack", "attacks re-enable gradients themselves")
        )
        raise RuntimeError(
            f"{need} input gradients, but torch.inference_mode() is active (torch.enable_grad() cannot undo it): "
            f"{call} outside inference mode; wrap the surrounding code in torch.no_grad() instead if needed "
            f"({own})"
        )
    if isinstance(model, nn.Module):
        bad = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_inference()]
        if bad:
            raise RuntimeError(
                f"model holds tensors created under torch.inference_mode() ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}), "
                "which autograd cannot use: build or load the model outside inference mode (torch.no_grad() is fine)"
            )


def _check_x(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim < 3:
        raise ValueError(f"x must be (N, C, *spatial), e.g. (N, C, D, H, W); got shape {tuple(x.shape)}")


def _check_labels(y: torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer class map, got dtype {y.dtype}")
    expected = (x.shape[0], *x.shape[2:])
    if tuple(y.shape) != expected:
        raise ValueError(f"{name} must have shape (N, *spatial) = {expected}, got {tuple(y.shape)}")
    y = y.to(device=x.device, dtype=torch.long)
    # a label map made under inference mode cannot be saved for the loss's backward; a plain copy can
    return y.clone() if y.is_inference() else y


def _channel_shape(x: torch.Tensor) -> tuple[int, ...]:
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def _round_toward(t: torch.Tensor, exact: torch.Tensor, down: bool) -> torch.Tensor:
    """``t`` (``exact`` cast to a narrower dtype) moved one ulp so it does not exceed ``exact``."""
    too_far = t.double() > exact if down else t.double() < exact
    if too_far.any():
        t = torch.where(too_far, torch.nextafter(t, torch.full_like(t, -math.inf if down else math.inf)), t)
    return t


def _budget_shape_error(name: str, x: torch.Tensor, got: str) -> ValueError:
    n, c, rest = x.shape[0], x.shape[1], ", 1" * (x.ndim - 2)
    return ValueError(
        f"{name} must be a float, a 1-D sequence of {c} per-channel values, or a tensor shaped "
        f"({n} or 1, {c} or 1{rest}) (per sample and/or per channel); got {got}"
    )


def _per_channel(value: Budget, name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A non-negative budget as ``(value_in_x_dtype, value_float64)``; the x-dtype copy is rounded down
    (never above the budget).

    The shape rule (no shape is read two ways): one value (any shape) → every channel; a 1-D sequence of
    ``C`` values → per channel; a tensor with ``x.ndim`` dimensions → broadcast against x as it stands,
    so its shape must be ``(N or 1, C or 1, 1, ...)``: ``(N, 1, 1, ...)`` is per sample even when
    ``N == C``, and ``(1, C, 1, ...)`` per channel. Every other shape is refused (e.g. ``(C, 1)``, or
    ``(C, 1, 1, 1, 1)`` when ``N != C``). Returned as ``(1, C, 1, ...)``, or ``(N, C, 1, ...)`` for a
    per-sample budget.
    """
    if isinstance(value, (bool, np.bool_)) or getattr(value, "dtype", None) in (torch.bool, np.dtype(bool)):
        raise _budget_shape_error(name, x, repr(value))  # a flag is no budget (numpy's bool_ would read as 1.0)
    try:
        v = torch.as_tensor(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise _budget_shape_error(name, x, repr(value)) from e
    n, c = x.shape[0], x.shape[1]
    if v.numel() == 1:
        v = v.reshape(1, 1).expand(1, c)
    elif v.ndim == 1 and v.numel() == c:
        v = v.reshape(1, c)
    elif v.ndim == x.ndim and v.shape[0] in (1, n) and v.shape[1] in (1, c) and all(s == 1 for s in v.shape[2:]):
        v = v.reshape(v.shape[0], v.shape[1]).expand(v.shape[0], c)
    else:
        raise _budget_shape_error(name, x, f"shape {tuple(v.shape)}")
    if not torch.isfinite(v).all() or (v < 0).any():
        raise ValueError(f"{name} must be finite and >= 0, got {v.tolist() if v.shape[0] > 1 else v[0].tolist()}")
    exact = v.reshape(v.shape[0], c, *(1,) * (x.ndim - 2)).to(x.device)
    return _round_toward(exact.to(x.dtype), exact, down=True), exact


def _check_mask(mask: torch.Tensor | np.ndarray | None, x: torch.Tensor) -> torch.Tensor | None:
    """Bool mask broadcastable to x; an ``(N, *spatial)`` mask gets its channel axis added."""
    if mask is None:
        return None
    m = torch.as_tensor(mask)
    if m.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got dtype {m.dtype}")
    if m.ndim == x.ndim - 1 and tuple(m.shape) == (x.shape[0], *x.shape[2:]):
        m = m.unsqueeze(1)
    try:
        ok = torch.broadcast_shapes(m.shape, x.shape) == x.shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"mask of shape {tuple(m.shape)} is not broadcastable to x of shape {tuple(x.shape)}")
    return m.to(x.device)


def _bound(value: Bound, name: str, x: torch.Tensor, down: bool) -> torch.Tensor:
    """A clip bound as a tensor broadcastable to x (scalar, C values, or broadcastable tensor)."""
    c = x.shape[1]
    try:
        v = torch.as_tensor(value.detach() if isinstance(value, torch.Tensor) else value)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"clip {name} must be a float, {c} per-channel values or a tensor broadcastable to x") from e
    if v.dtype == torch.bool or v.is_complex():
        raise ValueError(f"clip {name} must be real-valued, got dtype {v.dtype}")
    if v.ndim == 1 and v.numel() == c:  # per-channel sequence
        v = v.reshape(_channel_shape(x))
    try:
        ok = torch.broadcast_shapes(v.shape, x.shape) == x.shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"clip {name} of shape {tuple(v.shape)} is not broadcastable to x of shape {tuple(x.shape)}")
    if torch.isnan(v).any():
        raise ValueError(f"clip {name} contains NaN")
    exact = v.to(device=x.device, dtype=torch.float64)
    # round so the bound in x's dtype lies inside the exact range (hi down, lo up)
    return _round_toward(exact.to(x.dtype), exact, down=down)


def _check_clip(clip: tuple[Bound, Bound] | None, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    if clip is None:
        return None
    if not isinstance(clip, (tuple, list)) or len(clip) != 2:
        raise ValueError(f"clip must be None or a pair (lo, hi), got {type(clip).__name__}")
    lo, hi = _bound(clip[0], "lo", x, down=False), _bound(clip[1], "hi", x, down=True)
    if (lo > hi).any():
        raise ValueError("clip lo must be <= hi everywhere")
    return lo, hi


def _check_callable(fn: Any, name: str) -> None:
    if fn is not None and not callable(fn):
        raise ValueError(f"{name} must be callable or None, got {type(fn).__name__}")


# --------------------------------------------------------------------------------------
# Core
# --------------------------------------------------------------------------------------


@contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """Run ``model`` in eval mode; restore every submodule's ``training`` flag afterwards."""
    if not isinstance(model, nn.Module):
        yield
        return
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _delta_bounds(
    x: torch.Tensor, eps: torch.Tensor, clip: tuple[torch.Tensor, torch.Tensor] | None, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Bounds ``[dlo, dhi]`` of ``delta`` (computed once): eps ball ∩ clip, 0 outside the mask.

    ``0`` is always inside the bounds, so voxels already outside ``clip`` may stay put.

    Returns:
        ``(dlo, dhi, x_inside_clip)``; the flag lets :func:`_finalize` clamp in place.
    """
    if clip is None:
        dlo, dhi = -eps, eps
        if mask is not None:
            zero = x.new_zeros(())
            dlo, dhi = torch.where(mask, dlo, zero), torch.where(mask, dhi, zero)
        return dlo, dhi, True
    lo, hi = clip
    dlo, dhi = torch.sub(lo, x), torch.sub(hi, x)  # in place from here: few full-size passes
    inside = bool(dlo.max() <= 0) and bool(dhi.min() >= 0)
    dlo.clamp_(max=0)
    dhi.clamp_(min=0)
    torch.maximum(dlo, -eps, out=dlo)
    torch.minimum(dhi, eps, out=dhi)
    if mask is not None:
        outside = ~mask
        dlo.masked_fill_(outside, 0)
        dhi.masked_fill_(outside, 0)
    return dlo, dhi, inside


def _finalize(
    x: torch.Tensor,
    delta: torch.Tensor,
    eps: torch.Tensor,
    clip: tuple[torch.Tensor, torch.Tensor] | None,
    x_inside_clip: bool = True,
) -> torch.Tensor:
    """``x + delta`` with the float rounding of the sum undone so every guarantee holds exactly."""
    x_adv = x + delta
    if clip is not None:  # rounding of x + delta may step over a bound
        lo, hi = clip
        if x_inside_clip:
            x_adv.clamp_(lo, hi)
        else:  # voxels outside the range stay feasible: clamp to [min(lo, x), max(hi, x)]
            torch.minimum(x_adv, torch.maximum(hi, x), out=x_adv)
            torch.maximum(x_adv, torch.minimum(lo, x), out=x_adv)
    for _ in range(4):  # one ulp towards x per pass; one pass is virtually always enough
        over = torch.gt(torch.sub(x_adv, x).abs_(), eps)
        if not over.any():
            break
        x_adv = torch.where(over, torch.nextafter(x_adv, x), x_adv)
    # exact identity where nothing moved (masked-out voxels, eps = 0 channels): keeps -0.0
    return torch.where(delta == 0, x, x_adv)


def _input_grad(model: Callable[[torch.Tensor], torch.Tensor], x_k: torch.Tensor, labels: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
    """∇ₓ loss_fn(model(x_k), labels), taken w.r.t. the input only (x_k must be a leaf)."""
    loss = loss_fn(model(x_k), labels)
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        raise ValueError("loss_fn must return a scalar tensor")
    (grad,) = torch.autograd.grad(loss, x_k, allow_unused=True)
    return torch.zeros_like(x_k) if grad is None else grad


def _run(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    labels: torch.Tensor,
    eps: torch.Tensor,
    step: torch.Tensor,
    steps: int,
    *,
    loss_fn: LossFn | None,
    clip: tuple[torch.Tensor, torch.Tensor] | None,
    mask: torch.Tensor | None,
    start: torch.Tensor | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """The shared iteration: ``delta ← clamp(delta + step·sign(g), dlo, dhi)``, ``steps`` times.

    ``step`` is ``(1, C, 1, ...)``: ``+alpha`` ascends the loss, ``−alpha`` descends it.
    """
    loss_fn = F.cross_entropy if loss_fn is None else loss_fn
    dlo, dhi, inside = _delta_bounds(x, eps, clip, mask)
    delta = torch.zeros_like(x) if start is None else start.clamp_(dlo, dhi)
    scalar_step = float(step.flatten()[0]) if bool((step == step.flatten()[0]).all()) else None
    with torch.enable_grad(), _eval_mode(model):
        if callback is not None:
            with torch.no_grad():
                callback(0, _finalize(x, delta, eps, clip, inside))
        for k in range(1, steps + 1):
            x_k = (x + delta).requires_grad_(True)
            g = _input_grad(model, x_k, labels, loss_fn).sign_()
            del x_k
            if scalar_step is not None:
                delta.add_(g, alpha=scalar_step)
            else:
                delta.addcmul_(g, step)
            del g
            delta.clamp_(dlo, dhi)
            if callback is not None:
                with torch.no_grad():
                    callback(k, _finalize(x, delta, eps, clip, inside))
    return _finalize(x, delta, eps, clip, inside)


def _no_attack_callbacks(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, steps: int, callback: Callback | None) -> None:
    """The callbacks of an attack with eps = 0, whose iterate never moves: ``callback(k, copy of x)`` for
    ``k = 0..steps``, as :func:`_run` calls them, under ``torch.no_grad()`` with the model in eval mode (every
    ``training`` flag restored afterwards); the model itself is not run."""
    if callback is None:
        return
    with torch.no_grad(), _eval_mode(model):
        for k in range(steps + 1):
            callback(k, x.clone())


def _prepare(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    labels: torch.Tensor,
    labels_name: str,
    eps: Budget,
    alpha: Budget | None,
    steps: int,
    loss_fn: LossFn | None,
    clip: Any,
    mask: Any,
    callback: Callback | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, Any, Any]:
    """Validate every argument up front; return x (detached), labels, eps, alpha, steps, clip, mask."""
    _check_model(model)
    _check_autograd(model)
    _check_x(x)
    y = _check_labels(labels, x, labels_name)
    eps_t, _ = _per_channel(eps, "eps", x)
    alpha_t = eps_t if alpha is None else _per_channel(alpha, "alpha", x)[0]
    steps = check_int(steps, "steps", minimum=1)
    _check_callable(loss_fn, "loss_fn")
    _check_callable(callback, "callback")
    return x.detach(), y, eps_t, alpha_t, steps, _check_clip(clip, x), _check_mask(mask, x)


def fgsm(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    eps: Budget,
    *,
    loss_fn: LossFn | None = None,
    clip: tuple[Bound, Bound] | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fast gradient sign method: ``x' = x + eps·sign(∇ₓ L(f(x), y))`` (then clip/mask).

    Args:
        model: network mapping ``(N, C, *spatial)`` to logits ``(N, K, *spatial)``.
        x: float images ``(N, C, D, H, W)``.
        y: int class maps ``(N, D, H, W)``.
        eps: L∞ budget (z-score units): a float; a 1-D sequence of C values (per channel); or a
            tensor with x's number of dimensions, shaped ``(N or 1, C or 1, 1, 1, 1)`` and broadcast
            against x as it stands: ``(N, 1, 1, 1, 1)`` is per sample even when N equals C,
            ``(1, C, 1, 1, 1)`` per channel, ``(N, C, 1, 1, 1)`` both. Any other shape (e.g.
            ``(C, 1, 1, 1, 1)`` with N != C, or ``(1, C)``) is refused rather than guessed.
        loss_fn: ``loss_fn(logits, labels) -> scalar``; default mean cross-entropy.
        clip: None or ``(lo, hi)``, each a float, C per-channel values, or a tensor
            broadcastable to x (e.g. ``(N, C, 1, 1, 1)`` per-case ranges).
        mask: bool tensor broadcastable to x (or ``(N, D, H, W)``); False = never perturbed.

    Returns:
        The adversarial images, detached, same dtype/device as x.
    """
    x, y, eps_t, _, _, clip_t, mask_t = _prepare(model, x, y, "y", eps, None, 1, loss_fn, clip, mask, None)
    if not eps_t.any():
        return x.clone()
    return _run(model, x, y, eps_t, eps_t, 1, loss_fn=loss_fn, clip=clip_t, mask=mask_t)


def ifgsm(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    eps: Budget,
    alpha: Budget,
    steps: int,
    *,
    loss_fn: LossFn | None = None,
    clip: tuple[Bound, Bound] | None = None,
    mask: torch.Tensor | None = None,
    random_start: bool = False,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Iterative FGSM (BIM; PGD with ``random_start``): ``x_{k+1} = Π(x_k + alpha·sign(∇ L(f(x_k), y)))``.

    Args:
        model, x, y, eps, loss_fn, clip, mask: as in :func:`fgsm`.
        alpha: step size, finite and >= 0, shaped as ``eps`` may be (:func:`fgsm`). A channel with
            alpha = 0 and eps > 0 never moves from its start: that is allowed on purpose, since
            with ``random_start`` it samples uniform noise in the eps ball (a random-perturbation
            control), and a per-channel alpha proportional to a per-channel eps is 0 wherever
            that eps is. Callers that derive alpha from a fraction of eps
            (:func:`attack_sweep`, the defenses) refuse a fraction <= 0 instead.
        steps: number of iterations (>= 1).
        random_start: start from a uniform point of the eps ball (then projected), drawn
            with ``generator`` (the global RNG when None) on the generator's device.
        generator: ``torch.Generator`` for the random start (deterministic).
        callback: ``callback(k, x_k)`` called with the (projected, detached) iterate for
            ``k = 0`` (the start) through ``steps``, e.g. to record Dice vs iteration; it
            runs under ``torch.no_grad()`` with the model still in eval mode (at eps = 0 too,
            where it gets ``steps + 1`` copies of ``x``).

    Returns:
        The adversarial images, detached, same dtype/device as x.
    """
    x, y, eps_t, alpha_t, steps, clip_t, mask_t = _prepare(model, x, y, "y", eps, alpha, steps, loss_fn, clip, mask, callback)
    if not isinstance(random_start, bool):
        raise ValueError(f"random_start must be a bool, got {random_start!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if not eps_t.any():
        _no_attack_callbacks(model, x, steps, callback)
        return x.clone()
    start = None
    if random_start:
        gen_device = generator.device if generator is not None else x.device
        u = torch.rand(x.shape, generator=generator, device=gen_device, dtype=x.dtype).to(x.device)
        start = u.mul_(2).sub_(1).mul_(eps_t)
    return _run(model, x, y, eps_t, alpha_t, steps, loss_fn=loss_fn, clip=clip_t, mask=mask_t, start=start, callback=callback)


def tifgsm(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    target: torch.Tensor,
    eps: Budget,
    alpha: Budget,
    steps: int,
    *,
    loss_fn: LossFn | None = None,
    clip: tuple[Bound, Bound] | None = None,
    mask: torch.Tensor | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Targeted iterative FGSM: ``x_{k+1} = Π(x_k − alpha·sign(∇ L(f(x_k), target)))``.

    Descends the loss towards the whole ``target`` map (see :func:`make_target`): voxels
    the policy changes are pushed to their new class, the others held at their label.

    Args:
        model, x, eps, loss_fn, clip, mask: as in :func:`fgsm`.
        target: int target class maps ``(N, D, H, W)``.
        alpha, steps, callback: as in :func:`ifgsm`.

    Returns:
        The adversarial images, detached, same dtype/device as x.
    """
    x, t, eps_t, alpha_t, steps, clip_t, mask_t = _prepare(model, x, target, "target", eps, alpha, steps, loss_fn, clip, mask, callback)
    if not eps_t.any():
        _no_attack_callbacks(model, x, steps, callback)
        return x.clone()
    return _run(model, x, t, eps_t, -alpha_t, steps, loss_fn=loss_fn, clip=clip_t, mask=mask_t, callback=callback)


# --------------------------------------------------------------------------------------
# Whole volumes
# --------------------------------------------------------------------------------------


class SlidingWindowModel(nn.Module):
    """A network evaluated by MONAI sliding-window inference, as one differentiable module.

    ``forward(x)`` is ``sliding_window_inference(x, roi_size, sw_batch_size, net,
    overlap=overlap, mode=mode)`` (``net(x)`` directly when x's spatial size equals
    ``roi_size``, as :func:`robustseg_lib.models.predict` does), so attacks on whole
    volumes differentiate exactly the forward pass used for prediction.

    Autograd note: MONAI multiplies each window's output *in place* by the blending
    weights (``buffer *= w_t``), which raises "modified by an inplace operation" in
    backward whenever the net's last op saved its output (softmax, ReLU, sigmoid...).
    The window outputs are therefore cloned while a graph is being recorded (a
    window-sized copy; nothing is copied under ``no_grad``).

    Args:
        net: the network (trained on ``roi_size`` crops).
        roi_size: window size ``(D, H, W)``.
        sw_batch_size: windows per forward pass.
        overlap: window overlap in [0, 1).
        mode: blending, ``"gaussian"`` or ``"constant"``.
    """

    def __init__(
        self, net: nn.Module, roi_size: Sequence[int], *, sw_batch_size: int = 1, overlap: float = 0.25, mode: str = "gaussian"
    ) -> None:
        super().__init__()
        roi = tuple(int(r) for r in roi_size)
        if not roi or any(r < 1 for r in roi):
            raise ValueError(f"roi_size must be positive ints, got {roi_size!r}")
        sw_batch_size = check_int(sw_batch_size, "sw_batch_size", minimum=1)
        if not 0 <= overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        if mode not in ("gaussian", "constant"):
            raise ValueError(f"mode must be 'gaussian' or 'constant', got {mode!r}")
        self.net = net
        self.roi_size, self.sw_batch_size, self.overlap, self.mode = roi, int(sw_batch_size), float(overlap), mode

    def _window(self, w: torch.Tensor) -> torch.Tensor:
        out = self.net(w)
        return out.clone() if out.requires_grad else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[2:]) == self.roi_size:
            return self.net(x)
        return sliding_window_inference(x, self.roi_size, self.sw_batch_size, self._window, overlap=self.overlap, mode=self.mode)

    def extra_repr(self) -> str:
        return f"roi_size={self.roi_size}, sw_batch_size={self.sw_batch_size}, overlap={self.overlap}, mode={self.mode!r}"


# --------------------------------------------------------------------------------------
# Evaluation sweep
# --------------------------------------------------------------------------------------


def _model_device(model: Any, default: torch.device) -> torch.device:
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
    return default


def _case_slice(value: Any, sl: slice, n: int, spatial_ndim: int) -> Any:
    """Slice a per-case array (leading dim N) for one batch; pass shared values through.

    ``(N, C)`` arrays are per-case per-channel values and become ``(b, C, 1, ..., 1)``.
    """
    if value is None or isinstance(value, (int, float)):
        return value
    t = torch.as_tensor(value)
    if t.ndim >= 2 and t.shape[0] == n:
        t = t[sl]
        if t.ndim == 2:
            t = t.reshape(*t.shape, *(1,) * spatial_ndim)
    return t


class _Ordered:
    """Call jobs inline (``workers = 0``) or on a bounded thread pool; :meth:`collect` returns
    their results in submission order. At most ``4 × workers`` jobs wait at a time, so a fast GPU
    cannot queue up unbounded host memory behind slower CPU metrics."""

    def __init__(self, workers: int) -> None:
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="metrics") if workers > 0 else None
        self.limit = 4 * workers
        self.items: list[Any] = []
        self.waiting: deque[Future] = deque()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if self.pool is None:
            self.items.append(fn(*args, **kwargs))
            return
        fut = self.pool.submit(fn, *args, **kwargs)
        self.items.append(fut)
        self.waiting.append(fut)
        while len(self.waiting) > self.limit:
            self.waiting.popleft().result()  # raises a job's error here, early

    def collect(self) -> list[Any]:
        try:
            return [it.result() if isinstance(it, Future) else it for it in self.items]
        finally:
            if self.pool is not None:
                self.pool.shutdown(cancel_futures=True)


def attack_sweep(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    *,
    attack: str,
    eps_grid: Sequence[float],
    alpha_frac: float = 0.25,
    steps: int = 10,
    policy: str | None = None,
    clip: tuple[Any, Any] | None = None,
    mask: torch.Tensor | np.ndarray | None = None,
    batch_size: int = 2,
    predict_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    case_ids: Sequence[str] | None = None,
    model_name: str = "baseline",
    progress: bool = True,
    loss_fn: LossFn | None = None,
    hd95: bool = True,
    keep_examples: int = 0,
    with_percept: bool = True,
    metric_workers: int | None = None,
) -> tuple[Any, Any, dict[float, dict[str, torch.Tensor]]]:
    """Attack every case at every eps and evaluate the predictions (tidy tables).

    ``eps = 0`` is the clean prediction (computed once per batch, no attack run); its rows
    carry this sweep's ``attack`` name and ``steps`` so each attack's curve starts at 0.
    Steps are 1 for FGSM; alpha is ``alpha_frac·eps`` for the iterative attacks; ti-FGSM
    targets ``make_target(labels, policy)`` (the attacker's map derived from the truth).

    Args:
        model: the attacked model (e.g. a :class:`SlidingWindowModel`); attacked and, unless
            ``predict_fn`` is given, used for prediction (eval mode, no grad).
        images: ``(N, C, D, H, W)`` float images (CPU or device; batches move to the model's device).
        labels: ``(N, D, H, W)`` int class maps.
        attack: ``"fgsm"``, ``"ifgsm"`` or ``"tifgsm"``.
        eps_grid: scalar budgets (z-score units), >= 0.
        alpha_frac: i-FGSM / ti-FGSM step as a fraction of eps, finite and > 0 (0 would return
            the clean images at every eps; checked for FGSM too).
        steps: iterations of the iterative attacks.
        policy: target policy (required for ``"tifgsm"``), see :data:`TARGET_POLICIES`.
        clip: ``(lo, hi)``: floats, per-channel values, per-case ``(N, C)`` arrays or
            ``(N, C, 1, 1, 1)`` tensors (sliced per batch).
        mask: ``(N, D, H, W)`` or ``(N, 1, D, H, W)`` bool brain masks (also used as the
            brain for the perceptibility metrics), or a mask shared by all cases.
        batch_size: cases per attack call.
        predict_fn: ``predict_fn(x) -> logits`` for prediction (default ``model``).
        case_ids: one id per case (default ``"0", "1", ...``).
        model_name: the ``model`` column.
        progress: show a tqdm bar.
        loss_fn: attack loss (default mean cross-entropy).
        hd95: compute HD95 (slow on full volumes).
        keep_examples: keep the adversarial images and predictions of the first this-many cases.
        with_percept: compute the perceptibility table (SSIM is the costly part); False returns it empty.
        metric_workers: threads computing Dice/HD95 while the next attack runs (0 = inline).
            None = inline when the model is on the CPU, else ``min(8, cpu_budget - 2)`` (:func:`runtime.cpu_budget`): on a GPU the
            CPU metrics of a 144×176×144 case (0.2 s measured) cost about as much as a 10-step
            attack (estimated from the H100 ceilings in ../shared/GPU.md). Results are
            identical and in the same order either way.

    Returns:
        ``(results, percept, examples)``: the tidy table ``case_id, model, attack, eps,
        steps, region, dice, hd95`` (+ ``target_policy, target_frac`` for ti-FGSM), the
        perceptibility table ``case_id, model, attack, eps, steps, modality, linf, l2,
        psnr, ssim`` (+ ``target_policy`` after ``steps`` for ti-FGSM), and ``{eps: {"x_adv": (k, C, ...), "pred": (k, ...)}}`` (CPU tensors,
        empty unless ``keep_examples``).
    """
    import pandas as pd
    from tqdm import tqdm  # text bars: no ipywidgets needed, and papermill keeps them readable

    from . import metrics
    from .runtime import cpu_budget

    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {ATTACKS}, got {attack!r}")
    _check_model(model)
    _check_autograd(model)
    if attack == "tifgsm":
        if policy is None:
            raise ValueError(f"policy is required for tifgsm, one of {sorted(TARGET_POLICIES)}")
        _check_policy(policy)
    elif policy is not None:
        raise ValueError(f"policy is only used by tifgsm, got policy={policy!r} for {attack}")
    grid = [float(e) for e in eps_grid]
    if not grid or any(not math.isfinite(e) or e < 0 for e in grid):
        raise ValueError(f"eps_grid must be non-empty finite values >= 0, got {list(eps_grid)}")
    alpha_frac = check_float(alpha_frac, "alpha_frac", minimum=0, strict=True)
    steps = check_int(steps, "steps", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    _check_callable(predict_fn, "predict_fn")
    images_t = torch.as_tensor(images)
    labels_t = torch.as_tensor(labels)
    _check_x(images_t)
    _check_labels(labels_t, images_t, "labels")
    n, spatial_ndim = images_t.shape[0], images_t.ndim - 2
    ids = [str(i) for i in range(n)] if case_ids is None else [str(c) for c in case_ids]
    if len(ids) != n:
        raise ValueError(f"case_ids must have {n} entries, got {len(ids)}")
    m_all = None
    if mask is not None:  # normalised to (N or 1, *spatial)
        m_all = _check_mask(mask, images_t)
        m_all = m_all.reshape((1,) * (images_t.ndim - m_all.ndim) + tuple(m_all.shape))
        if m_all.shape[1] != 1:
            raise ValueError(f"mask must be the same for all channels (no channel axis), got shape {tuple(m_all.shape)}")
        m_all = m_all[:, 0]
    if clip is not None and (not isinstance(clip, (tuple, list)) or len(clip) != 2):
        raise ValueError("clip must be None or a pair (lo, hi)")

    dev = _model_device(model, images_t.device)
    if metric_workers is None:
        metric_workers = 0 if dev.type == "cpu" else min(8, max(1, cpu_budget() - 2))
    metric_workers = check_int(metric_workers, "metric_workers")
    predict = predict_fn if predict_fn is not None else model
    attack_steps = 1 if attack == "fgsm" else steps
    results = _Ordered(int(metric_workers))
    percept: list[dict[str, Any]] = []
    examples: dict[float, dict[str, list[torch.Tensor]]] = {}
    bar = tqdm(total=len(grid) * math.ceil(n / batch_size), disable=not progress, desc=f"{model_name} {attack}")

    @torch.no_grad()
    def classes(x: torch.Tensor) -> torch.Tensor:
        with _eval_mode(model), _eval_mode(predict):
            return predict(x).argmax(1)

    for start in range(0, n, batch_size):
        sl = slice(start, min(start + batch_size, n))
        x = images_t[sl].to(dev)
        y = labels_t[sl].to(device=dev, dtype=torch.long)
        m = None if m_all is None else (m_all[sl] if m_all.shape[0] == n else m_all).to(dev)
        m_x = None if m is None else m.unsqueeze(1)
        clip_b = None if clip is None else tuple(_case_slice(c, sl, n, spatial_ndim) for c in clip)
        brain = None if m is None or not with_percept else m.expand(x.shape[0], *x.shape[2:])  # perceptibility's, on the device
        target = make_target(y, policy) if attack == "tifgsm" else None
        target_c = None if target is None else target.cpu()
        region = target_region(y, policy).cpu() if attack == "tifgsm" else None
        # host copies made once per batch; class maps as uint8 (values 0..3): an eighth of the
        # transfer and of the memory queued for the metric threads
        y_c, ids_b = y.to(torch.uint8).cpu(), ids[sl]
        clean_pred: torch.Tensor | None = None
        for eps in grid:
            if eps == 0:
                if clean_pred is None:
                    clean_pred = classes(x)
                x_adv, pred = x, clean_pred
            else:
                alpha = alpha_frac * eps
                if attack == "fgsm":
                    x_adv = fgsm(model, x, y, eps, loss_fn=loss_fn, clip=clip_b, mask=m_x)
                elif attack == "ifgsm":
                    x_adv = ifgsm(model, x, y, eps, alpha, steps, loss_fn=loss_fn, clip=clip_b, mask=m_x)
                else:
                    x_adv = tifgsm(model, x, target, eps, alpha, steps, loss_fn=loss_fn, clip=clip_b, mask=m_x)
                pred = classes(x_adv)
            pred_c = pred.to(torch.uint8).cpu()
            extra: dict[str, Any] = {}
            if attack == "tifgsm":
                extra["target_policy"] = policy
                extra["target_frac"] = [metrics.target_fraction(pred_c[i], target_c[i], region[i]) for i in range(len(ids_b))]
            results.submit(
                metrics.evaluate, pred_c, y_c, ids_b, model=model_name, attack=attack, eps=eps, steps=attack_steps, hd95=hd95, **extra
            )
            k = max(0, min(keep_examples, n) - start)
            xa = x_adv.cpu() if k > 0 else None  # no image copies unless something reads them
            # perceptibility gets the device tensors: its SSIM then runs on the GPU (the CPU's convolution
            # would cost seconds per BraTS-size case, with the GPU idle)
            for r in (metrics.perceptibility(x, x_adv, brain=brain, case_ids=ids_b) if with_percept else []):
                r.pop("case_index", None)
                percept.append({"case_id": r.pop("case_id"), "model": model_name, "attack": attack, "eps": eps, "steps": attack_steps,
                                **({"target_policy": policy} if attack == "tifgsm" else {}), **r})
            if k > 0:
                ex = examples.setdefault(eps, {"x_adv": [], "pred": []})
                ex["x_adv"].append(xa[:k].clone())
                ex["pred"].append(pred_c[:k].long())
            bar.update(1)
    bar.close()
    res = pd.concat(results.collect(), ignore_index=True)
    pcols = ["case_id", "model", "attack", "eps", "steps", *(["target_policy"] if attack == "tifgsm" else []),
             "modality", "linf", "l2", "psnr", "ssim"]
    per = pd.DataFrame(percept)
    per = per[pcols + [c for c in per.columns if c not in pcols]] if len(per) else pd.DataFrame(columns=pcols)
    out_examples = {e: {key: torch.cat(v) for key, v in d.items()} for e, d in examples.items()}
    return res, per, out_examples
