"""Figures shared by the notebooks. Every function returns a matplotlib Figure (never shows it).

Data figures: ``plot_case_planes`` (modalities × planes with a label overlay) and
``plot_intensity_distributions`` (per class, per modality).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

__all__ = ["CLASS_COLORS", "plot_case_planes", "plot_intensity_distributions"]

_MODALITIES = ("t1", "t1ce", "t2", "flair")
_CLASS_NAMES = ("background", "NCR", "ED", "ET")
# overlay colours of classes 1..3 (NCR red, ED green, ET yellow: the usual BraTS figure colours)
CLASS_COLORS: dict[str, str] = {"NCR": "#e41a1c", "ED": "#4daf4a", "ET": "#ffd92f"}
_PLANES = ("sagittal", "coronal", "axial")


def _check_class_values(classes: np.ndarray, name: str = "classes") -> None:
    """Refuse anything but integer values 0..3 (raw BraTS labels 0, 1, 2, 4 or a NaN would be drawn or pooled wrongly)."""
    if not classes.size:
        return
    if not (classes.dtype == bool or np.issubdtype(classes.dtype, np.number)):
        raise ValueError(f"{name}: expected a numeric class map, got dtype {classes.dtype}")
    ok = np.isfinite(classes).all() and (classes == np.round(classes)).all() and classes.min() >= 0 and classes.max() <= 3
    if not ok:
        raise ValueError(f"{name} must be a class map in 0..3 (convert BraTS labels with data.to_classes)")


def _check_image_classes(image: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image, classes = np.asarray(image), np.asarray(classes)
    if image.ndim != 4 or image.shape[0] != len(_MODALITIES):
        raise ValueError(f"image must be (4, X, Y, Z) in MODALITIES order, got {image.shape}")
    if classes.shape != image.shape[1:]:
        raise ValueError(f"classes shape {classes.shape} must equal the image's spatial shape {image.shape[1:]}")
    _check_class_values(classes)
    return image, classes


def plot_case_planes(image: np.ndarray, classes: np.ndarray, *, title: str | None = None, alpha: float = 0.45) -> Figure:
    """Four modalities × three planes through the tumour centroid, plus a label-overlay column.

    Args:
        image: ``(4, X, Y, Z)`` in MODALITIES order (raw or z-scored).
        classes: class map ``(X, Y, Z)`` in 0..3 (all zero: planes through the volume centre).
        title: optional figure title.
        alpha: opacity of the label overlay.

    Returns:
        A Figure with 3 rows (sagittal, coronal, axial) × 5 columns (t1, t1ce, t2, flair,
        flair + labels).
    """
    image, classes = _check_image_classes(image, classes)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    tumour = np.argwhere(classes > 0)
    centre = tumour.mean(axis=0).round().astype(int) if len(tumour) else np.asarray(classes.shape) // 2
    cmap = ListedColormap(["none", CLASS_COLORS["NCR"], CLASS_COLORS["ED"], CLASS_COLORS["ET"]])

    def plane(vol: np.ndarray, p: int) -> np.ndarray:
        sl = [slice(None)] * 3
        sl[p] = int(centre[p])
        return vol[tuple(sl)].T  # rows = second remaining axis, shown with origin lower

    fig, axes = plt.subplots(3, 5, figsize=(12.5, 7.5), squeeze=False, layout="constrained")
    for p, pname in enumerate(_PLANES):
        for m, mod in enumerate(_MODALITIES):
            vol = image[m]
            inside = vol[vol != 0]
            vmin, vmax = (np.percentile(inside, [0.5, 99.5]) if inside.size else (0.0, 1.0))
            ax = axes[p, m]
            ax.imshow(plane(vol, p), cmap="gray", origin="lower", vmin=vmin, vmax=vmax, interpolation="nearest")
            if p == 0:
                ax.set_title(mod)
            if m == 0:
                ax.set_ylabel(f"{pname} {centre[p]}")
        ax = axes[p, 4]
        vol = image[3]
        inside = vol[vol != 0]
        vmin, vmax = (np.percentile(inside, [0.5, 99.5]) if inside.size else (0.0, 1.0))
        ax.imshow(plane(vol, p), cmap="gray", origin="lower", vmin=vmin, vmax=vmax, interpolation="nearest")
        lab = np.ma.masked_equal(plane(classes, p), 0)
        ax.imshow(lab, cmap=cmap, origin="lower", vmin=0, vmax=3, alpha=alpha, interpolation="nearest")
        if p == 0:
            ax.set_title("flair + labels")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Patch(color=c, label=n) for n, c in CLASS_COLORS.items()]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False)  # its own strip (constrained)
    if title:
        fig.suptitle(title)
    return fig


def plot_intensity_distributions(
    images: np.ndarray,
    classes: np.ndarray,
    brain: np.ndarray,
    *,
    max_voxels: int = 4000,
    seed: int = 0,
    unit: str = "z-score",
) -> Figure:
    """Distribution of each modality's intensity per class (healthy brain, NCR, ED, ET).

    Args:
        images: ``(N, 4, X, Y, Z)`` or one ``(4, X, Y, Z)`` image (typically z-scored).
        classes: class maps ``(N, X, Y, Z)`` (or ``(X, Y, Z)``) in 0..3.
        brain: boolean brain masks of the same shape as ``classes``.
        max_voxels: voxels sampled per class (for speed; sampling is seeded).
        seed: sampling seed.
        unit: what the intensities are, for the y label (``"z-score"`` after preprocessing; e.g. ``"raw"``).

    Returns:
        A Figure with one violin panel per modality.
    """
    import seaborn as sns

    images, classes, brain = np.asarray(images), np.asarray(classes), np.asarray(brain)
    if images.ndim == 4:
        images, classes, brain = images[None], classes[None], brain[None]
    if images.ndim != 5 or images.shape[1] != len(_MODALITIES):
        raise ValueError(f"images must be (N, 4, X, Y, Z), got {images.shape}")
    if classes.shape != (images.shape[0], *images.shape[2:]) or brain.shape != classes.shape:
        raise ValueError(f"classes {classes.shape} and brain {brain.shape} must be (N, X, Y, Z) matching {images.shape}")
    _check_class_values(classes)
    if max_voxels < 1:
        raise ValueError(f"max_voxels must be >= 1, got {max_voxels}")
    brain = brain.astype(bool)
    rng = np.random.default_rng(seed)
    names = ("healthy brain", *_CLASS_NAMES[1:])
    frames = []
    for k, name in enumerate(names):
        mask = brain & (classes == k)
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            continue
        if idx.size > max_voxels:
            idx = rng.choice(idx, max_voxels, replace=False)
        n_i, rest = np.unravel_index(idx, (mask.shape[0], int(np.prod(mask.shape[1:]))))
        flat = images.reshape(images.shape[0], 4, -1)
        for m, mod in enumerate(_MODALITIES):
            frames.append(pd.DataFrame({"modality": mod, "class": name, "intensity": flat[n_i, m, rest]}))
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.8), sharey=True, squeeze=False)
    if not frames:
        for ax in axes[0]:
            ax.text(0.5, 0.5, "no brain voxels", ha="center", va="center", transform=ax.transAxes)
        return fig
    df = pd.concat(frames, ignore_index=True)
    palette = {"healthy brain": "#999999", **{n: CLASS_COLORS[n] for n in _CLASS_NAMES[1:]}}
    order = [n for n in names if n in set(df["class"])]
    for m, mod in enumerate(_MODALITIES):
        ax = axes[0, m]
        sub = df[df["modality"] == mod]
        sns.violinplot(data=sub, x="class", y="intensity", hue="class", order=order, hue_order=order,
                       palette=palette, cut=0, inner="quartile", linewidth=0.8, ax=ax, legend=False)
        ax.set_title(mod)
        ax.set_xlabel("")
        ax.tick_params(axis="x", rotation=30)
    axes[0, 0].set_ylabel(f"intensity ({unit})")
    fig.tight_layout()
    return fig
