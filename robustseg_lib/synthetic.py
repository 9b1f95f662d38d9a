"""Synthetic BraTS-like cases built on the MNI152 (ICBM 2009) templates shipped with nilearn.

The generator works in millimetres on an isotropic grid whose voxel size is chosen so the
template brain fills the requested ``shape`` (``voxel_size_for_shape``); sizes of anatomy and
tumours therefore scale with the grid, from 32³ test volumes to the BraTS 240×240×155.

Pipeline for one case (all randomness from ``np.random.default_rng(seed)``):

1. anatomy: white/grey matter probability maps and brain mask (CSF = mask − GM − WM), pulled
   through a random affine (±10° per axis, ±10 % scale and ±3 % more per axis, a few mm shift)
   and a smooth elastic field; the template's brain surface is pushed through the affine first so that the scale is
   capped and the shift chosen to keep the whole brain ≥ 1 voxel inside every face of the grid;
   the sampling grid is built on a coarse lattice and upsampled (cheap, exact for the
   affine part), and only the output box that can contain brain is sampled;
2. tumour: centre drawn ∝ WM probability at ≥ 15 mm from the brain edge; an irregular
   anisotropic ellipsoid "distance" field gives nested shells: NCR core, ET rim (incomplete in
   ~40 % of the enhancing cases, ~34 % of all), ED halo that spreads further along white matter
   and fades into the tissue;
   edema detached from every core (white matter far away passing the reach test) is removed;
   variants: non-enhancing (no ET, ~15 %) and a small satellite lesion (~15 %);
3. distractors labelled background: FLAIR-bright white-matter hyperintensities (~70 %) and
   3–9 T1c-enhancing vessels / choroid-plexus tufts (1–4 mm, as bright as ET), so no single
   threshold segments a region;
4. labels: the majority class of each brain voxel (argmax of the background, NCR, ET and ED
   fractions; edema counted before its fade into the tissue, so a faded-edema voxel is ED);
5. rendering: Σ class fraction × class mean (contrast table ``BASE_CONTRAST`` below,
   jittered ±13 % per case), partial volume via soft class boundaries (a Gaussian point-spread
   of σ = 0.5 voxel, FWHM ≈ 1.2 voxels, ``PV_SIGMA``),
   smooth texture (stronger in the tumour), multiplicative bias field (~0.1), Rician noise
   (1–5 % of WM), zero outside the brain.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from .checks import check_int

__all__ = [
    "SyntheticCase",
    "generate_case",
    "make_synthetic_case",
    "voxel_size_for_shape",
    "template_extent_mm",
    "BASE_CONTRAST",
    "PV_SIGMA",
]

# Label values written by the generator (BraTS 2018–21 convention).
_NCR, _ED, _ET = 1, 2, 4

# Relative mean intensities per tissue (rows) and modality (t1, t1ce, t2, flair); ranges are
# drawn uniformly per case, scalars are jittered ±13 %. From the project's synthetic-data brief (SYNTHETIC_BRATS.md,
# shared with the team, not in this repository), with additions and deviations listed in docs/design.md.
BASE_CONTRAST: dict[str, tuple[Any, Any, Any, Any]] = {
    "wm": (1.0, 1.0, 0.45, 0.50),
    "gm": (0.72, 0.72, 0.60, 0.62),
    "csf": (0.25, 0.25, 1.0, 0.10),
    "ncr": (0.40, 0.30, 0.90, (0.40, 0.70)),
    "net": (0.55, 0.50, 0.85, 0.85),  # core of a non-enhancing tumour (label NCR/NET)
    "ed": (0.60, 0.60, 0.80, (0.80, 1.05)),
    "et": (0.65, (1.40, 1.60), (0.65, 0.70), 0.75),
    "wmh": (0.85, 0.85, 0.72, (0.80, 0.95)),  # white-matter hyperintensity (healthy, label 0)
    "ves": (0.50, (1.35, 1.65), 0.40, 0.35),  # enhancing vessel / choroid plexus (healthy, label 0)
}
_JITTER = 0.13
_FILL = 0.92  # fraction of the grid the (unrotated) brain spans along its tightest axis
#: Partial volume: class boundaries are blurred by a Gaussian point-spread of this many voxels (FWHM ≈ 1.2 voxels,
#: about what an MR acquisition's slice profile and k-space truncation give). Soft masks are logistic functions of a
#: signed distance, ``logistic(1.7 x / σ) ≈ Φ(x / σ)``.
PV_SIGMA = 0.5
_SLOPE = 1.7 / PV_SIGMA


@dataclass(frozen=True)
class SyntheticCase:
    """One generated case.

    Attributes:
        image: float32 ``(4, *shape)`` raw-scanner-like intensities, MODALITIES order.
        label: uint8 ``shape`` with BraTS 2018–21 values {0, 1 NCR, 2 ED, 4 ET}.
        tissues: float32 healthy-tissue fractions ``{"wm", "gm", "csf"}`` (before the tumour).
        voxel_size: isotropic voxel size in mm.
        info: generation parameters (variant flags, tumour centre/radii in mm, ...).
    """

    image: np.ndarray
    label: np.ndarray
    tissues: dict[str, np.ndarray]
    voxel_size: float
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- templates
@functools.lru_cache(maxsize=1)
def _template_1mm() -> tuple[np.ndarray, np.ndarray]:
    """(wm, gm, mask) float32 at 1 mm cropped to the brain box (+2 voxels), and the box origin."""
    from nilearn import datasets  # lazy: nilearn import is slow

    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).dataobj, dtype=np.float32)
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=1).dataobj, dtype=np.float32)
    mask = np.asarray(datasets.load_mni152_brain_mask(resolution=1).dataobj) > 0
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - 2, 0)
    hi = np.minimum(idx.max(0) + 3, mask.shape)
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    stack = np.stack([wm[sl] * mask[sl], gm[sl] * mask[sl], mask[sl].astype(np.float32)])
    return np.clip(stack, 0.0, 1.0), lo


def _bbox(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) voxel bounds (hi exclusive) of a non-empty boolean volume."""
    lo, hi = [], []
    for ax in range(mask.ndim):
        nz = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != ax)))
        lo.append(nz[0])
        hi.append(nz[-1] + 1)
    return np.asarray(lo), np.asarray(hi)


@functools.lru_cache(maxsize=1)
def _template_box() -> tuple[np.ndarray, np.ndarray]:
    return _bbox(_template_1mm()[0][2] > 0.5)


def template_extent_mm() -> np.ndarray:
    """Extent (mm) of the template brain along x, y, z (about 145, 181, 155)."""
    lo, hi = _template_box()
    return (hi - lo).astype(np.float64)


@functools.lru_cache(maxsize=4)
def _template_level(level: int) -> torch.Tensor:
    """Template stack block-averaged to ``level`` mm, as a (3, 1, X, Y, Z) batch for grid_sample."""
    stack = _template_1mm()[0]
    if level > 1:
        pad = [(0, 0)] + [(0, (-n) % level) for n in stack.shape[1:]]
        s = np.pad(stack, pad)
        c, x, y, z = s.shape
        s = s.reshape(c, x // level, level, y // level, level, z // level, level).mean(axis=(2, 4, 6))
        stack = s
    return torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))[:, None]


@functools.lru_cache(maxsize=1)
def _surface_2mm() -> np.ndarray:
    """Template mm coordinates (n, 3) of the brain-surface voxels of the 2 mm level, relative to the brain centre."""
    from scipy.ndimage import binary_erosion

    mask = _template_level(2)[2, 0].numpy() > 0.5
    surf = np.argwhere(mask & ~binary_erosion(mask))
    return surf * 2.0 + 0.5 - _brain_centre_mm()  # voxel i of level 2 covers 1 mm voxels 2i, 2i + 1


@functools.lru_cache(maxsize=1)
def _edt_2mm() -> torch.Tensor:
    """Distance (mm) to the brain edge on the 2 mm level, (1, 1, X, Y, Z)."""
    mask = _template_level(2)[2, 0].numpy() > 0.5
    edt = ndi.distance_transform_edt(mask).astype(np.float32) * 2.0
    return torch.from_numpy(edt)[None, None]


def _brain_centre_mm() -> np.ndarray:
    lo, hi = _template_box()
    return (lo + hi - 1) / 2.0


def voxel_size_for_shape(shape: tuple[int, int, int]) -> float:
    """Isotropic voxel size (mm) at which the template brain fills ``shape``.

    Args:
        shape: output grid (X, Y, Z).

    Returns:
        ``max(extent / shape) / 0.92`` (about 1.09 mm for 240×240×155, 2.05 mm for 96³).
    """
    shape = _check_shape(shape)
    return float(np.max(template_extent_mm() / np.asarray(shape, dtype=np.float64)) / _FILL)


# --------------------------------------------------------------------------- helpers
#: Smallest grid side: below it a brain holds too few voxels for the tumour's shells (at 4³ the tumour filled
#: all 11 brain voxels; at (64, 64, 2) the brain had 3 voxels).
MIN_SIDE = 16


def _check_shape(shape: Any, min_side: int = MIN_SIDE, name: str = "shape") -> tuple[int, int, int]:
    """``shape`` as 3 ints, or a ValueError naming ``name`` unless it is 3 integers (not bools) ``>= min_side``."""
    try:
        ok = len(shape) == 3 and all(
            isinstance(s, (int, np.integer)) and not isinstance(s, (bool, np.bool_)) and s >= min_side for s in shape
        )
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"{name} must be 3 integers >= {min_side}, got {shape!r}")
    return tuple(int(s) for s in shape)  # type: ignore[return-value]


def _to_norm(p_mm: np.ndarray, level: int, level_shape: tuple[int, ...]) -> torch.Tensor:
    """Template mm coordinates (..., 3: x, y, z) → grid_sample coordinates (..., 3: z, y, x)."""
    n = np.asarray(level_shape, dtype=np.float64)
    norm = 2.0 * ((p_mm - (level - 1) / 2.0) / level) / (n - 1) - 1.0
    return torch.from_numpy(np.ascontiguousarray(norm[..., ::-1], dtype=np.float32))


def _upsample(t: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """Trilinear upsampling with aligned corners of a (N, C, a, b, c) tensor."""
    if tuple(t.shape[2:]) == tuple(size):
        return t
    return F.interpolate(t, size=size, mode="trilinear", align_corners=True)


def _smooth_noise(rng: np.random.Generator, n: int, size: tuple[int, int, int], spacing: float) -> np.ndarray:
    """``n`` smooth unit-variance random fields over ``size`` with correlation length ``spacing`` voxels."""
    coarse = tuple(max(2, int(np.ceil(s / max(spacing, 1e-3))) + 1) for s in size)
    w = rng.standard_normal((n, *coarse)).astype(np.float32)
    w = ndi.gaussian_filter(w, sigma=(0, 0.7, 0.7, 0.7), mode="nearest")
    w -= w.mean(axis=(1, 2, 3), keepdims=True)
    w /= w.std(axis=(1, 2, 3), keepdims=True) + 1e-6
    return _upsample(torch.from_numpy(w)[None], size)[0].numpy()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    a, b, c = np.deg2rad(rng.uniform(-max_deg, max_deg, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _draw_contrast(rng: np.random.Generator) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for tissue, row in BASE_CONTRAST.items():
        vals = []
        for v in row:
            if isinstance(v, tuple):
                vals.append(rng.uniform(*v))
            else:
                vals.append(v * rng.uniform(1 - _JITTER, 1 + _JITTER))
        out[tissue] = np.asarray(vals, dtype=np.float32)
    return out


# --------------------------------------------------------------------------- tumour
def _lesion_sd(
    grids: tuple[np.ndarray, np.ndarray, np.ndarray],
    centre: np.ndarray,
    r_ncr: float,
    t_et: float,
    l_ed: float,
    wm_s: np.ndarray,
    csf_s: np.ndarray,
    noise: np.ndarray,
    rng: np.random.Generator,
    enhancing: bool,
) -> dict[str, np.ndarray]:
    """Signed distances (mm, > 0 inside) of the NCR, TC and WT shells of one lesion."""
    rot = _rotation(rng, 180.0)
    axes = rng.uniform(0.75, 1.3, 3)
    axes /= np.prod(axes) ** (1 / 3)
    d = [g - c for g, c in zip(grids, centre)]
    u = [rot[i, 0] * d[0] + rot[i, 1] * d[1] + rot[i, 2] * d[2] for i in range(3)]
    r = np.sqrt((u[0] / axes[0]) ** 2 + (u[1] / axes[1]) ** 2 + (u[2] / axes[2]) ** 2)
    r = (r * (1.0 + 0.15 * np.clip(noise[0], -1.5, 1.5))).astype(np.float32)
    r_tc = r_ncr + t_et
    sd_tc = r_tc - r
    sd_ncr = sd_tc.copy() if not enhancing else (r_ncr - r)
    # edema: longer reach along white matter, little into CSF, irregular
    reach = l_ed * (0.3 + 0.9 * wm_s) * (1.0 - 0.8 * csf_s) * (1.0 + 0.3 * np.clip(noise[1], -1.5, 1.5))
    reach = np.maximum(reach, 0.0).astype(np.float32)
    sd_wt = sd_tc + reach
    fade = np.clip((r - r_tc) / np.maximum(reach, 1e-3), 0.0, 1.0)
    # direction of the rim gap (used by the caller), cos of angle to a random direction
    dirn = rng.standard_normal(3)
    dirn /= np.linalg.norm(dirn)
    norm = np.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2) + 1e-3
    cos = (dirn[0] * d[0] + dirn[1] * d[1] + dirn[2] * d[2]) / norm
    return {"ncr": sd_ncr, "tc": sd_tc, "wt": sd_wt, "fade": fade, "cos": cos.astype(np.float32), "r_tc": r_tc}


def _box(centre_vox: np.ndarray, radius_vox: float, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, ...]:
    a = np.maximum(np.floor(centre_vox - radius_vox).astype(int), lo)
    b = np.minimum(np.ceil(centre_vox + radius_vox).astype(int) + 1, hi)
    b = np.maximum(b, a + 1)
    return tuple(slice(int(x), int(y)) for x, y in zip(a, b))


# --------------------------------------------------------------------------- main
def generate_case(seed: int, shape: tuple[int, int, int] = (96, 96, 96), *, distractors: bool = True) -> SyntheticCase:
    """Generate one synthetic BraTS-like case with its tissue maps and parameters.

    Args:
        seed: seed of ``np.random.default_rng`` (the only source of randomness).
        shape: output grid (X, Y, Z), e.g. (96, 96, 96) or (240, 240, 155).
        distractors: paint the background-labelled look-alikes (FLAIR-bright white-matter
            hyperintensities, T1c-enhancing vessels). ``False`` draws the same random numbers and
            leaves them out, so the case differs only there (to see what they cost a threshold).

    Returns:
        A :class:`SyntheticCase`; same seed, shape and ``distractors`` give identical arrays.
    """
    check_int(seed, "seed")
    if not isinstance(distractors, (bool, np.bool_)):
        raise ValueError(f"distractors must be a bool, got {distractors!r}")
    shape = _check_shape(shape)
    rng = np.random.default_rng(int(seed))
    v = voxel_size_for_shape(shape)
    S = np.asarray(shape)
    half = (S - 1) / 2.0

    # ---- anatomy: random affine + elastic on a coarse lattice (~10 mm), upsampled
    level = 4 if v >= 4 * 0.95 else 2 if v >= 2 * 0.95 else 1
    tmpl = _template_level(level)  # (3, 1, X, Y, Z)
    lshape = tuple(tmpl.shape[2:])
    rot = _rotation(rng, 10.0)
    scale = rng.uniform(0.9, 1.1) * rng.uniform(0.97, 1.03, 3)  # brain size factor per axis
    shift_u = rng.uniform(-1.0, 1.0, 3)  # where the brain centre sits, within ±4 mm and the room left
    G = np.maximum(np.round(S * v / 10.0).astype(int), 3) + 1
    elastic_amp = rng.uniform(1.5, 3.5)
    el = rng.standard_normal((3, *G)) * elastic_amp
    el = ndi.gaussian_filter(el, sigma=(0, 0.8, 0.8, 0.8), mode="nearest")
    # field of view: push the template's brain surface through the affine (output voxel offsets from the brain
    # centre are diag(scale) · rotᵀ · p / v), then cap the scale and bound the shift so the whole brain stays
    # ≥ 1 voxel inside every face. The margin covers the elastic field (its largest length bounds its shift along
    # any output axis), the true surface lying up to 2 mm beyond the 2 mm level's surface-voxel centres, and the
    # sampled level's own blockiness (level / 2).
    surf_rot = _surface_2mm() @ rot  # rows: rotᵀ · p, unscaled output mm
    s_lo, s_hi = surf_rot.min(0), surf_rot.max(0)
    m_vox = 0.5 + (float(np.sqrt((el**2).sum(0)).max()) * float(scale.max()) + 2.0 + level / 2.0) / v
    room = (S - 1.0 - 2.0 * m_vox) * v
    fit = float(min(1.0, np.min(room / (scale * (s_hi - s_lo)))))
    scale = scale * fit
    e_lo, e_hi = scale * s_lo / v, scale * s_hi / v  # brain extent around its centre, output voxels
    t_lo, t_hi = m_vox - half - e_lo, S - 1.0 - m_vox - half - e_hi  # centre offsets that keep it inside
    a, b = np.maximum(t_lo, -4.0 / v), np.minimum(t_hi, 4.0 / v)
    t_vox = np.where(a <= b, a + (shift_u + 1.0) / 2.0 * (b - a), np.clip(0.0, t_lo, t_hi))
    mat = (rot / scale[None, :]).astype(np.float64)  # output mm → template mm
    c_t = _brain_centre_mm()

    def lattice(n_pts: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        axes = [np.linspace(a, b, int(k)) for a, b, k in zip(lo, hi, n_pts)]
        return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)  # (..., 3) voxel indices

    coarse_idx = lattice(G, np.zeros(3), S - 1.0)
    p_coarse = (coarse_idx - half - t_vox) * v @ mat.T + c_t + np.moveaxis(el, 0, -1)

    # output box that can hold brain: coarse points inside the template box, grown by one cell
    inside = np.all((p_coarse >= -1) & (p_coarse <= np.asarray(_template_1mm()[0].shape[1:]) + 1), axis=-1)
    cell = (S - 1) / (G - 1)
    if inside.any():
        ii = np.argwhere(inside)
        blo = np.maximum(np.floor((ii.min(0) - 1) * cell).astype(int), 0)
        bhi = np.minimum(np.ceil((ii.max(0) + 1) * cell).astype(int) + 1, S)
    else:  # pragma: no cover - impossible with the bounded transform
        blo, bhi = np.zeros(3, int), S.copy()
    bshape = tuple(int(x) for x in bhi - blo)
    # sampling grid over the work box: the coarse field resampled (trilinear, exact for the
    # affine part) on a lattice spanning exactly the box, then upsampled to every box voxel
    box_lat = lattice(G, blo.astype(float), (bhi - 1).astype(float))
    coarse_pts = (box_lat / cell).reshape(-1, 3)
    p_box_lat = np.stack(
        [ndi.map_coordinates(p_coarse[..., k], coarse_pts.T, order=1, mode="nearest") for k in range(3)], axis=-1
    ).reshape(*G, 3)
    norm_lat = _to_norm(p_box_lat, level, lshape)
    grid = _upsample(norm_lat.permute(3, 0, 1, 2)[None], bshape)[0].permute(1, 2, 3, 0).contiguous()
    sampled = F.grid_sample(
        tmpl, grid[None].expand(3, -1, -1, -1, -1), mode="bilinear", padding_mode="zeros", align_corners=True
    )[:, 0].numpy()
    del grid
    wm, gm, mask = np.clip(sampled[0], 0, 1), np.clip(sampled[1], 0, 1), np.clip(sampled[2], 0, 1)
    csf = np.clip(mask - wm - gm, 0.0, 1.0)
    brain = mask >= 0.5
    if not brain.any():  # pragma: no cover
        raise RuntimeError("generated an empty brain")
    brain_lo, brain_hi = _bbox(brain)

    # ---- tumour centre ∝ WM at ≥ 15 mm from the brain edge (medium lattice, ~4 mm)
    Gm = np.maximum(np.round((bhi - blo) * v / 4.0).astype(int), 4)
    med_idx = lattice(Gm, blo.astype(float), (bhi - 1).astype(float))
    med_pts = (med_idx / cell).reshape(-1, 3)
    p_med = np.stack(
        [ndi.map_coordinates(p_coarse[..., k], med_pts.T, order=1, mode="nearest") for k in range(3)], axis=-1
    ).reshape(*Gm, 3)
    edt_t = _edt_2mm()
    g2 = _to_norm(p_med, 2, tuple(edt_t.shape[2:]))
    edt_med = F.grid_sample(edt_t, g2[None], align_corners=True)[0, 0].numpy() * float(np.mean(scale))
    wm_med = F.grid_sample(_template_level(2)[0:1], g2[None], align_corners=True)[0, 0].numpy()
    weight = (wm_med * (edt_med >= 15.0)).ravel().astype(np.float64)
    if weight.sum() <= 0:
        weight = (edt_med.ravel() >= edt_med.max() - 1e-3).astype(np.float64)
    k = rng.choice(weight.size, p=weight / weight.sum())
    step = (bhi - blo - 1) / np.maximum(Gm - 1, 1)
    centre_vox = med_idx.reshape(-1, 3)[k] - blo + rng.uniform(-0.5, 0.5, 3) * step  # box coordinates
    centre_vox = np.clip(centre_vox, brain_lo, brain_hi - 1)

    # ---- tumour parameters (mm; at least a voxel or two on coarse grids)
    enhancing = rng.random() >= 0.15
    satellite = rng.random() < 0.15
    incomplete = enhancing and rng.random() < 0.4
    r_ncr = max(rng.uniform(5.0, 15.0), 1.2 * v)
    t_et = max(rng.uniform(2.0, 6.0), 1.6 * v)
    l_ed = max(rng.uniform(5.0, 30.0), 2.0 * v)
    lesions = [(centre_vox, r_ncr, t_et, l_ed)]
    if satellite:
        for _ in range(20):
            dirn = rng.standard_normal(3)
            dirn /= np.linalg.norm(dirn)
            dist = (r_ncr + t_et + rng.uniform(8.0, 20.0)) / v
            c2 = centre_vox + dirn * dist
            ci = np.round(c2).astype(int)
            if np.all(ci >= 0) and np.all(ci < bshape) and brain[tuple(ci)]:
                lesions.append((c2, max(rng.uniform(2.0, 5.0), 1.0 * v), max(rng.uniform(2.0, 3.0), 1.4 * v),
                                max(rng.uniform(3.0, 10.0), 1.5 * v)))
                break
        else:
            satellite = False

    # one box holding every lesion (clipped to the brain box)
    los, his = [], []
    for c, rn, te, le in lesions:
        # bound of the shells' reach: the normalised radius reaches r_tc plus the edema's reach (at most
        # 1.2 × 1.45 × l_ed), divided by the radius noise (down to 0.775) and times the longest axis (up to
        # 1.3 / (0.75² · 1.3)^(1/3) < 1.45 after normalising)
        rad = 1.45 * ((rn + te) + 1.2 * 1.45 * le) / 0.775 / v + 2
        sl = _box(c, rad, brain_lo, brain_hi)
        los.append([s.start for s in sl])
        his.append([s.stop for s in sl])
    tb = tuple(slice(int(a), int(b)) for a, b in zip(np.min(los, 0), np.max(his, 0)))
    tshape = tuple(s.stop - s.start for s in tb)
    gx, gy, gz = (np.arange(s.start, s.stop, dtype=np.float32) * v for s in tb)
    grids = (gx[:, None, None], gy[None, :, None], gz[None, None, :])
    sig = 1.5 / v
    wm_s = ndi.gaussian_filter(wm[tb], sig) if sig >= 0.4 else wm[tb]
    csf_s = ndi.gaussian_filter(csf[tb], sig) if sig >= 0.4 else csf[tb]
    noise = _smooth_noise(rng, 3, tshape, 6.0 / v)
    sds = [
        _lesion_sd(grids, c * v, rn, te, le, wm_s, csf_s, noise, rng, enhancing)
        for (c, rn, te, le) in lesions
    ]
    sd_ncr = np.maximum.reduce([s["ncr"] for s in sds])
    sd_tc = np.maximum.reduce([s["tc"] for s in sds])
    sd_wt = np.maximum.reduce([s["wt"] for s in sds])
    fade = np.minimum.reduce([s["fade"] for s in sds])
    if incomplete:
        # the rim opens towards a random direction of each lesion (a voxel belongs to the lesion whose core
        # reaches furthest there)
        thr = rng.uniform(0.2, 0.75)
        own = np.argmax(np.stack([s["tc"] for s in sds]), axis=0) if len(sds) > 1 else np.zeros(tshape, int)
        cos_own = np.choose(own, [s["cos"] for s in sds])
        r_own = np.asarray([s["r_tc"] for s in sds], np.float32)[own]
        gap_sd = (cos_own - thr + 0.25 * noise[2]) * r_own
        gap = _sigmoid(_SLOPE * gap_sd / v)
    else:
        gap = np.zeros(tshape, np.float32)

    mask_t = mask[tb]
    brain_t = brain[tb]
    s_ncr = _sigmoid(_SLOPE * sd_ncr / v)
    s_tc = np.maximum(_sigmoid(_SLOPE * sd_tc / v), s_ncr)
    f_ncr = s_ncr + gap * (s_tc - s_ncr)
    f_et = (1.0 - gap) * (s_tc - s_ncr)

    def majority(s_wt: np.ndarray) -> np.ndarray:
        """Labels of the brain voxels: the class with the largest fraction (ties to background)."""
        cls = np.argmax(np.stack([1.0 - s_wt, f_ncr, f_et, s_wt - s_tc]), axis=0)
        return (np.asarray([0, _NCR, _ET, _ED], np.uint8)[cls] * brain_t).astype(np.uint8)

    s_wt = np.maximum(_sigmoid(_SLOPE * sd_wt / v), s_tc)
    lab_t = majority(s_wt)
    # edema detached from every core: white matter far from the lesion can pass the reach test while the tissue
    # between does not. Such islands are removed: near them the WT distance becomes minus the distance to the
    # kept (core-touching) components, so they fade out smoothly and image and label agree.
    comp, n_comp = ndi.label(lab_t > 0)
    if n_comp:
        has_core = np.zeros(n_comp + 1, bool)
        has_core[np.unique(comp[(lab_t == _NCR) | (lab_t == _ET)])] = True
        has_core[0] = False
        islands = (comp > 0) & ~has_core[comp]
        keep = has_core[comp]
        if islands.any() and keep.any():  # (a case whose core vanished keeps its edema rather than go empty)
            near = ndi.binary_dilation(islands, iterations=2) & ~keep
            dist_keep = ndi.distance_transform_edt(~keep).astype(np.float32) * v
            sd_wt = np.where(near, np.minimum(sd_wt, -np.maximum(dist_keep, v)), sd_wt)
            s_wt = np.maximum(_sigmoid(_SLOPE * sd_wt / v), s_tc)
            lab_t = majority(s_wt)
    phi = rng.uniform(0.3, 0.65)
    ed = s_wt - s_tc
    ed_keep = ed * (1.0 - phi * fade)
    p_ncr = f_ncr * mask_t
    p_et = f_et * mask_t
    p_ed = ed_keep * mask_t
    healthy_t = 1.0 - s_wt + ed * phi * fade  # fraction of the healthy tissue that remains
    label = np.zeros(shape, np.uint8)

    # ---- rendering in the work box
    con = _draw_contrast(rng)
    core = "ncr" if enhancing else "net"
    gain = 1000.0 * rng.uniform(0.8, 1.2, 4)
    wm_ref = con["wm"]
    box = tuple(slice(int(a), int(b)) for a, b in zip(blo, bhi))
    tb_full = tuple(slice(s.start + b.start, s.stop + b.start) for s, b in zip(tb, box))
    img = np.empty((4, *bshape), np.float32)
    tex_t = _smooth_noise(rng, 4, tshape, max(1.5, 3.0 / v))  # tumour heterogeneity
    tex_amp = rng.uniform(0.02, 0.05)
    het = rng.uniform(0.1, 0.25)  # tumour heterogeneity amplitude
    bias_amp = rng.uniform(0.05, 0.15)
    # texture (~5 mm) and bias field (~1/2.5 of the box) multiplied on the texture lattice,
    # then upsampled once
    tex_spacing = max(2.0, 5.0 / v)
    lat = tuple(max(2, int(np.ceil(s / tex_spacing)) + 1) for s in bshape)
    bias_lat = _smooth_noise(rng, 4, lat, (max(lat) - 1) / 2.5)
    tex_lat = _smooth_noise(rng, 4, lat, 1.0)
    field_lat = np.exp(bias_amp * bias_lat) * (1.0 + tex_amp * tex_lat)
    mult = _upsample(torch.from_numpy(field_lat.astype(np.float32))[None], bshape)[0].numpy()
    for m in range(4):
        h = wm * con["wm"][m] + gm * con["gm"][m] + csf * con["csf"][m]
        t = h[tb] * healthy_t + p_ncr * con[core][m] + p_ed * con["ed"][m] + p_et * con["et"][m]
        t *= 1.0 + het * (1.0 - healthy_t) * tex_t[m]
        h[tb] = t
        img[m] = h
    # distractors: white-matter hyperintensities (70 % of cases) and enhancing vessels
    wt_soft = np.zeros(bshape, np.float32)
    wt_soft[tb] = s_wt
    n_wmh = int(rng.integers(1, 7)) if rng.random() < 0.7 else 0
    n_ves = int(rng.integers(3, 10))
    cand_wm = np.flatnonzero(brain & (wm > 0.8))
    cand_csf = np.flatnonzero(brain & (csf > 0.3))
    blobs = [("wmh", cand_wm, rng.uniform(2.0, 7.0)) for _ in range(n_wmh)]
    blobs += [("ves", cand_csf if len(cand_csf) else cand_wm, rng.uniform(1.0, 4.0)) for _ in range(n_ves)]
    for kind, cand, rad_mm in blobs:
        if len(cand) == 0:
            continue
        c = np.asarray(np.unravel_index(cand[rng.integers(len(cand))], bshape)) + rng.uniform(-0.5, 0.5, 3)
        rad = max(rad_mm / v, 0.8)
        sl = _box(c, rad + 3, np.zeros(3, int), np.asarray(bshape))
        ax = [np.arange(s.start, s.stop, dtype=np.float32) - ci for s, ci in zip(sl, c)]
        dist = np.sqrt(ax[0][:, None, None] ** 2 + ax[1][None, :, None] ** 2 + ax[2][None, None, :] ** 2)
        p = _sigmoid(_SLOPE * (rad - dist)) * mask[sl] * (1.0 - wt_soft[sl])
        for m in range(4 if distractors else 0):  # without: the same draws, nothing painted
            img[m][sl] = img[m][sl] * (1.0 - p) + p * con[kind][m]
    # texture, bias, gain, Rician noise, skull strip
    img *= mult
    noise_frac = rng.uniform(0.01, 0.05)
    nb = int(brain.sum())
    for m in range(4):
        img[m] *= gain[m] / wm_ref[m]
        sigma = noise_frac * gain[m]
        vals = img[m][brain]
        n1 = rng.standard_normal(nb, dtype=np.float32) * sigma
        n2 = rng.standard_normal(nb, dtype=np.float32) * sigma
        vals = np.sqrt((vals + n1) ** 2 + n2**2)
        img[m][brain] = np.maximum(vals, 1e-3 * gain[m])
        img[m][~brain] = 0.0

    image = np.zeros((4, *shape), np.float32)
    image[(slice(None), *box)] = img
    label[tb_full] = lab_t
    tissues = {}
    for name, arr in (("wm", wm), ("gm", gm), ("csf", csf)):
        full = np.zeros(shape, np.float32)
        full[box] = arr * brain
        tissues[name] = full
    info = {
        "seed": int(seed),
        "shape": shape,
        "enhancing": bool(enhancing),
        "satellite": bool(satellite),
        "incomplete_rim": bool(incomplete),
        "centre_vox": (centre_vox + blo).tolist(),
        "r_ncr_mm": float(r_ncr),
        "t_et_mm": float(t_et),
        "l_ed_mm": float(l_ed),
        "n_wmh": n_wmh,
        "n_vessels": n_ves,
        "noise_frac": float(noise_frac),
        "bias_amp": float(bias_amp),
        "template_level_mm": level,
        "brain_scale": scale.round(4).tolist(),
        "fov_capped": bool(fit < 1.0),
    }
    return SyntheticCase(image=image, label=label, tissues=tissues, voxel_size=v, info=info)


def make_synthetic_case(seed: int, shape: tuple[int, int, int] = (96, 96, 96)) -> tuple[np.ndarray, np.ndarray]:
    """Generate one synthetic BraTS-like case.

    Args:
        seed: seed of ``np.random.default_rng`` (no global random state is used).
        shape: output grid (X, Y, Z); the isotropic voxel size is ``voxel_size_for_shape(shape)``.

    Returns:
        ``(image, label)``: float32 ``(4, *shape)`` in MODALITIES order (t1, t1ce, t2, flair),
        zero outside the brain and positive inside; uint8 ``shape`` with values {0, 1, 2, 4}.
    """
    case = generate_case(seed, shape)
    return case.image, case.label
