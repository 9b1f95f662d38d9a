"""Figures of training, predictions and attacks. Every function returns a Figure (no plt.show)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

__all__ = ["LABEL_CMAP", "plot_history", "plot_predictions", "plot_attack_example", "plot_gallery"]

#: background transparent, NCR red, ED green, ET yellow (the BraTS colour habit).
LABEL_CMAP = ListedColormap([(0, 0, 0, 0), (0.9, 0.1, 0.1, 0.8), (0.1, 0.8, 0.2, 0.6), (1.0, 0.85, 0.0, 0.9)])
_FLAIR, _T1CE = 3, 1


def _np(a: Any) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _check_shape(a: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    """``a`` if it has ``shape``; else a ValueError naming ``name`` (checked before any figure is opened)."""
    if a.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {a.shape}")
    return a


def _check_image(a: Any, name: str) -> np.ndarray:
    """A ``(4, D, H, W)`` volume as numpy (FLAIR and T1c are read by channel index)."""
    a = _np(a)
    if a.ndim != 4 or a.shape[0] != 4:
        raise ValueError(f"{name}: expected a (4, D, H, W) volume in MODALITIES order, got shape {a.shape}")
    return a


def _tumour_slice(labels: np.ndarray) -> int:
    """Axial index with the most tumour (middle slice if none)."""
    per = (labels > 0).sum(axis=(0, 1))
    return int(per.argmax()) if per.any() else labels.shape[2] // 2


def _show(ax: plt.Axes, img: np.ndarray, lab: np.ndarray | None, title: str, cmap: str = "gray", **kw: Any) -> None:
    ax.imshow(img.T, cmap=cmap, origin="lower", **kw)
    if lab is not None:
        ax.imshow(lab.T, cmap=LABEL_CMAP, vmin=0, vmax=3, origin="lower", interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def _class_legend(fig: plt.Figure) -> None:
    """Colour key of the label overlays below the panels (NCR, ED, ET as in ``LABEL_CMAP``)."""
    handles = [Patch(color=LABEL_CMAP.colors[i], label=name) for i, name in enumerate(("NCR", "ED", "ET"), start=1)]
    # constrained layout sizes the strip to the key ("outside"), where a fixed tight_layout rect was too short for
    # small figures (one case, one model) and the key overlapped the panels' titles
    fig.set_layout_engine("constrained")
    fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False, fontsize=9)


def plot_history(history: pd.DataFrame) -> plt.Figure:
    """Training loss and validation Dice per region against epoch.

    The per-region lines are per-case means; the checkpoint is chosen on ``val_score`` (pooled Dice averaged over
    regions), drawn dashed when the history has it, with the kept epoch (its last maximum, as :func:`training.train`
    chooses) marked.

    Args:
        history: ``TrainResult.history`` (columns epoch, loss, val_WT, val_TC, val_ET, val_score...).

    Returns:
        The figure.
    """
    if "epoch" not in history or "loss" not in history:
        raise ValueError("history needs 'epoch' and 'loss' columns")
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.plot(history["epoch"], history["loss"], marker="o", ms=3)
    a.set(xlabel="epoch", ylabel="training loss", title="loss")
    for r in ("WT", "TC", "ET"):
        if f"val_{r}" in history:
            v = history[["epoch", f"val_{r}"]].dropna()  # validated every few epochs: one line through those epochs
            b.plot(v["epoch"], v[f"val_{r}"], marker="o", ms=3, label=r)
    score = history[["epoch", "val_score"]].dropna() if "val_score" in history else None
    if score is not None and len(score):
        b.plot(score["epoch"], score["val_score"], ls="--", color="0.3", label="pooled score (selects the checkpoint)")
        best = score.iloc[len(score) - 1 - int(np.argmax(score["val_score"].to_numpy()[::-1]))]  # later epochs win ties
        b.plot([best["epoch"]], [best["val_score"]], marker="*", ms=12, ls="none", color="k",
               label=f"kept: epoch {int(best['epoch'])}")
    b.set(xlabel="epoch", ylabel="validation Dice", ylim=(0, 1), title="validation Dice")
    if b.lines:
        b.legend()
    else:  # trained without validation cases
        b.text(0.5, 0.5, "no validation", ha="center", va="center", transform=b.transAxes)
    fig.tight_layout()
    return fig


def plot_predictions(
    images: torch.Tensor | np.ndarray,
    truths: torch.Tensor | np.ndarray,
    preds: dict[str, torch.Tensor | np.ndarray],
    *,
    case_ids: Sequence[str] | None = None,
) -> plt.Figure:
    """Per case: FLAIR with the ground truth, then each model's prediction (axial slice through the tumour).

    Args:
        images: ``(N, 4, D, H, W)``.
        truths: ``(N, D, H, W)`` class maps.
        preds: model name → ``(N, D, H, W)`` class maps.
        case_ids: titles.

    Returns:
        The figure.
    """
    images, truths = _np(images), _np(truths)
    if images.ndim != 5 or images.shape[1] != 4 or len(images) == 0 or truths.shape != images.shape[:1] + images.shape[2:]:
        raise ValueError(f"images must be (N, 4, D, H, W) with N >= 1 and truths (N, D, H, W), got {images.shape} and {truths.shape}")
    preds = {name: _check_shape(_np(p), truths.shape, f"preds[{name!r}]") for name, p in preds.items()}
    if case_ids is not None and len(case_ids) != len(images):
        raise ValueError(f"case_ids: expected {len(images)} ids (one per case), got {len(case_ids)}")
    n, cols = len(images), 1 + len(preds)
    fig, axes = plt.subplots(n, cols, figsize=(2.6 * cols, 2.6 * n), squeeze=False)
    for i in range(n):
        z = _tumour_slice(truths[i])
        cid = case_ids[i] if case_ids is not None else str(i)
        _show(axes[i, 0], images[i, _FLAIR, :, :, z], truths[i, :, :, z], f"{cid}: truth")
        for j, (name, p) in enumerate(preds.items(), start=1):
            _show(axes[i, j], images[i, _FLAIR, :, :, z], p[i, :, :, z], name)
    _class_legend(fig)
    return fig


def plot_attack_example(
    image: Any, adv: Any, truth: Any, pred_clean: Any, pred_adv: Any, *, title: str = "", amplify: float | None = None
) -> plt.Figure:
    """Clean and adversarial FLAIR and T1c, the amplified perturbation, and both predictions.

    Args:
        image, adv: ``(4, D, H, W)`` clean and adversarial volumes.
        truth, pred_clean, pred_adv: ``(D, H, W)`` class maps.
        title: figure title.
        amplify: display gain of the perturbation, > 0 (default: stretch to its max). The perturbation panels share
            one colour window, ± max|adv − image| over the whole volume divided by ``amplify``; the FLAIR panel's
            title gives its ends (``±0.3``; ``±0.075, ×4`` when amplified; ``none`` when adv equals image).

    Returns:
        The figure.
    """
    image = _check_image(image, "image")
    adv = _check_shape(_np(adv), image.shape, "adv")
    truth, pc, pa = (_check_shape(_np(a), image.shape[1:], name)
                     for a, name in ((truth, "truth"), (pred_clean, "pred_clean"), (pred_adv, "pred_adv")))
    if amplify is not None and not (np.isfinite(amplify) and amplify > 0):
        raise ValueError(f"amplify: expected a positive finite gain or None, got {amplify}")
    z = _tumour_slice(truth)
    delta = adv - image
    m = float(np.abs(delta).max()) or 1.0  # no perturbation at all: a unit window, titled "none"
    fig, axes = plt.subplots(2, 4, figsize=(11, 5.6))
    # one grey window per modality for the clean and the adversarial slice (imshow would stretch each panel to its
    # own range, and a changed contrast would hide or fake a visible difference)
    win = {c: dict(vmin=float(min(image[c, :, :, z].min(), adv[c, :, :, z].min())),
                   vmax=float(max(image[c, :, :, z].max(), adv[c, :, :, z].max()))) for c in (_FLAIR, _T1CE)}
    _show(axes[0, 0], image[_FLAIR, :, :, z], None, "clean FLAIR", **win[_FLAIR])
    _show(axes[0, 1], adv[_FLAIR, :, :, z], None, "adversarial FLAIR", **win[_FLAIR])
    vmax = m / amplify if amplify else m
    # the title gives the colour window's ends, the values at which the colours saturate
    scale = "none" if not np.any(delta) else f"±{vmax:.2g}" + (f", ×{amplify:g}" if amplify else "")
    _show(axes[0, 2], delta[_FLAIR, :, :, z], None, f"perturbation FLAIR ({scale})", cmap="seismic", vmin=-vmax, vmax=vmax)
    _show(axes[0, 3], delta[_T1CE, :, :, z], None, "perturbation T1c", cmap="seismic", vmin=-vmax, vmax=vmax)
    _show(axes[1, 0], image[_T1CE, :, :, z], truth[:, :, z], "truth", **win[_T1CE])
    _show(axes[1, 1], image[_T1CE, :, :, z], pc[:, :, z], "prediction, clean", **win[_T1CE])
    _show(axes[1, 2], adv[_T1CE, :, :, z], pa[:, :, z], "prediction, attacked", **win[_T1CE])
    _show(axes[1, 3], adv[_T1CE, :, :, z], None, "adversarial T1c", **win[_T1CE])
    fig.suptitle(title)
    _class_legend(fig)
    return fig


def plot_gallery(g: dict[str, Any]) -> plt.Figure:
    """Grid of predictions: one row per model, one column per condition (from ``evaluation.gallery``).

    Args:
        g: ``{"image", "truth", "case_id", "panels": {(model, condition): class map}}``.

    Returns:
        The figure.
    """
    missing = [k for k in ("image", "truth", "panels") if k not in g]
    if missing:
        raise ValueError(f"g: missing keys {missing}")
    if not g["panels"]:
        raise ValueError("gallery has no panels")
    image = _check_image(g["image"], "g['image']")
    truth = _check_shape(_np(g["truth"]), image.shape[1:], "g['truth']")
    panels = {k: _check_shape(_np(p), truth.shape, f"g['panels'][{k!r}]") for k, p in g["panels"].items()}
    models = list(dict.fromkeys(k[0] for k in panels))
    conds = list(dict.fromkeys(k[1] for k in panels))
    z = _tumour_slice(truth)
    fig, axes = plt.subplots(len(models), len(conds) + 1, figsize=(2.4 * (len(conds) + 1), 2.5 * len(models)), squeeze=False)
    for i, mname in enumerate(models):
        _show(axes[i, 0], image[_FLAIR, :, :, z], truth[:, :, z], f"{mname}\ntruth")
        for j, c in enumerate(conds, start=1):
            p = panels.get((mname, c))
            if p is None:
                axes[i, j].axis("off")
                continue
            _show(axes[i, j], image[_FLAIR, :, :, z], p[:, :, z], c)
    fig.suptitle(f"case {g.get('case_id', '')}")
    _class_legend(fig)
    return fig
