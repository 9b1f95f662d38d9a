"""Data: label conventions, synthetic and real BraTS/MSD datasets, preprocessing, the prepared cache.

One internal convention (docs/design.md): images are ``(4, X, Y, Z)`` in ``MODALITIES``
order; raw labels use BraTS 2018–21 values {0, 1 NCR, 2 ED, 4 ET}; training uses contiguous
class maps {0 bg, 1 NCR, 2 ED, 3 ET}. Every other convention is converted explicitly on
reading (``msd_to_brats``, ``brats2023_to_brats``, ``brats2024_to_brats``) and writing
(``brats_to_msd``, ``brats_to_brats2023``).

Supported layouts (``list_cases`` detects them; ``.nii`` or ``.nii.gz``):

- ``"brats2021"``: ``<root>/<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz`` (BraTS 2018–2021;
  the 2018/2019 ``HGG/``, ``LGG/`` sub-folders are searched when ``<root>`` holds no case);
- ``"brats2023"``: ``<root>/<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz`` (BraTS 2023 and 2024
  GLI; labels 1, 2, 3 = ET; in BraTS-GLI cases 4 = the BraTS 2024 resection cavity, read as
  background);
- ``"msd"``: Medical Segmentation Decathlon Task01, ``imagesTr/BRATS_001.nii.gz`` 4-D with
  channels FLAIR, T1w, T1gd, T2w, ``labelsTr/`` with 1 edema, 2 non-enhancing, 3 enhancing,
  and ``dataset.json``.

Every volume read from disk is reoriented to the closest canonical (RAS+) voxel order
(``_load_nifti``), so BraTS files (LPS headers) and MSD files give arrays in the same
orientation. A volume already in RAS+ order (the synthetic writers' grids) is returned as stored.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import shutil
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm  # text bars: no ipywidgets needed, and papermill keeps them readable

from .artefacts import atomic_path, atomic_save_npz, atomic_write_json, read_json_object
from .checks import check_int
from .runtime import cpu_budget
from .synthetic import _check_shape, generate_case, make_synthetic_case, voxel_size_for_shape

__all__ = [
    "MODALITIES",
    "REGIONS",
    "CLASS_NAMES",
    "LAYOUTS",
    "PREPARED_KEYS",
    "Case",
    "PreparedData",
    "make_synthetic_case",
    "generate_case",
    "make_synthetic_dataset",
    "case_seed",
    "synthetic_case_seeds",
    "case_ids_for",
    "write_case",
    "write_msd_dataset_json",
    "list_cases",
    "load_case",
    "to_classes",
    "from_classes",
    "regions",
    "msd_to_brats",
    "brats_to_msd",
    "brats2023_to_brats",
    "brats_to_brats2023",
    "brats2024_to_brats",
    "preprocess_case",
    "patient_id",
    "split_cases",
    "BOOT_SEP",
    "bootstrap_cases",
    "original_case_id",
    "prepare_dataset",
    "prepare_synthetic",
    "load_prepared",
    "npz_member_memmap",
    "threshold_baseline",
    "region_volumes",
]

MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
REGIONS: tuple[str, ...] = ("WT", "TC", "ET")
CLASS_NAMES: tuple[str, ...] = ("background", "NCR", "ED", "ET")
LAYOUTS: tuple[str, ...] = ("brats2021", "brats2023", "msd")
SPLITS: tuple[str, ...] = ("train", "val", "test")
PREPARED_KEYS: tuple[str, ...] = ("images", "labels", "brain", "case_ids", "split", "lo", "hi", "mean", "std")

# file suffix of each modality (and the seg) per BraTS layout, in MODALITIES order + seg
_BRATS_FILES: dict[str, dict[str, str]] = {
    "brats2021": {"t1": "_t1", "t1ce": "_t1ce", "t2": "_t2", "flair": "_flair", "seg": "_seg"},
    "brats2023": {"t1": "-t1n", "t1ce": "-t1c", "t2": "-t2w", "flair": "-t2f", "seg": "-seg"},
}
# MSD Task01 channel order and the names its dataset.json uses
_MSD_CHANNELS: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")
_MSD_MODALITY_NAMES: dict[str, str] = {"flair": "FLAIR", "t1": "T1w", "t1ce": "t1gd", "t2": "T2w"}
_MSD_NAME_TO_MOD: dict[str, str] = {
    "flair": "flair", "t2f": "flair", "t1w": "t1", "t1": "t1", "t1n": "t1",
    "t1gd": "t1ce", "t1ce": "t1ce", "t1c": "t1ce", "t2w": "t2", "t2": "t2",
}
# label value sets per convention ("brats2024": BraTS 2024 GLI, 2023's values plus 4 = resection cavity;
# used for the BraTS-GLI cases of the "brats2023" layout, where it reads 2023 labels unchanged)
_LABEL_VALUES: dict[str, tuple[int, ...]] = {"brats2021": (0, 1, 2, 4), "brats2023": (0, 1, 2, 3),
                                             "brats2024": (0, 1, 2, 3, 4), "msd": (0, 1, 2, 3)}
# prefix of the BraTS adult-glioma (GLI) case ids, the only "brats2023"-layout data whose labels are checked here
_GLI_PREFIX = "BraTS-GLI-"
_RC_WARNING = ("BraTS 2024 GLI label 4 (resection cavity, RC) is read as background: RC lies outside WT, TC and ET "
               "in BraTS 2024's evaluation and the model has no RC class (data/README.md)")
#: prepare_dataset refuses a set in which at least this many BraTS-GLI cases have label 4 and no case has label 3 (ET):
#: BraTS 2018-21 labels under 2023/2024 names. Genuine BraTS 2024 post-treatment cases with a cavity and no ET exist,
#: so a few such cases only get the per-case warning (_label_to_uint); this many, with not one enhancing case in the
#: set, is taken for unconverted labels.
_MIN_CASES_LABEL_4_ONLY = 10
#: Set around :func:`load_case` by :func:`prepare_dataset`'s workers: ``_label_to_uint`` appends the label values
#: present in the seg file it reads (its own convention), the only place where BraTS 2024's label 4 is still seen.
_SEG_VALUES: contextvars.ContextVar[list[tuple[int, ...]] | None] = contextvars.ContextVar("_SEG_VALUES", default=None)
_RAS = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)  # nibabel orientation of an array already in RAS+ order


# =========================================================================== label conventions
def _as_numpy(x: Any, name: str) -> tuple[np.ndarray, Any]:
    """Return ``(numpy array, torch device or None)``."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy(), x.device
    if isinstance(x, np.ndarray):
        return x, None
    if isinstance(x, (list, tuple)):
        return np.asarray(x), None
    raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")


def _back(a: np.ndarray, device: Any) -> Any:
    return a if device is None else torch.from_numpy(a).to(device)


def _remap(label: Any, table: Mapping[int, int], name: str, convention: str) -> Any:
    """Map integer label values through ``table``; any value not in the table raises ValueError."""
    arr, dev = _as_numpy(label, name)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must hold integer label values, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{name} has non-integer values; expected {convention} labels {sorted(table)}")
    if arr.size == 0:
        return _back(arr.astype(np.uint8), dev)
    lo, hi = arr.min(), arr.max()
    if lo < 0 or hi > 255:
        raise ValueError(f"{name} has values outside {sorted(table)} ({convention}): min {lo}, max {hi}")
    a = arr.astype(np.uint8, copy=False)
    present = np.flatnonzero(np.bincount(a.ravel(), minlength=256))
    bad = [int(v) for v in present if int(v) not in table]
    if bad:
        raise ValueError(f"{name} has values {bad} outside the {convention} convention {sorted(table)}")
    lut = np.zeros(256, np.uint8)
    for k, v in table.items():
        lut[k] = v
    return _back(lut[a], dev)


def to_classes(label: Any) -> Any:
    """BraTS 2018–21 label values {0, 1 NCR, 2 ED, 4 ET} → class map {0, 1 NCR, 2 ED, 3 ET}.

    Args:
        label: integer array or tensor of BraTS values.

    Returns:
        uint8 class map of the same shape (same container type; tensors keep their device).

    Raises:
        ValueError: on any value outside {0, 1, 2, 4}.
    """
    return _remap(label, {0: 0, 1: 1, 2: 2, 4: 3}, "label", "BraTS 2018-21")


def from_classes(classes: Any) -> Any:
    """Class map {0, 1, 2, 3} → BraTS 2018–21 label values {0, 1, 2, 4} (inverse of ``to_classes``).

    Args:
        classes: integer array or tensor of class indices.

    Returns:
        uint8 label array of the same shape.
    """
    return _remap(classes, {0: 0, 1: 1, 2: 2, 3: 4}, "classes", "class-map")


def msd_to_brats(label: Any) -> Any:
    """MSD Task01 labels (1 edema, 2 non-enhancing, 3 enhancing) → BraTS 2018–21 (1→2, 2→1, 3→4).

    Args:
        label: integer array or tensor with values in {0, 1, 2, 3}.

    Returns:
        uint8 array with values in {0, 1, 2, 4}.
    """
    return _remap(label, {0: 0, 1: 2, 2: 1, 3: 4}, "label", "MSD Task01")


def brats_to_msd(label: Any) -> Any:
    """BraTS 2018–21 labels → MSD Task01 labels (2→1, 1→2, 4→3); inverse of ``msd_to_brats``."""
    return _remap(label, {0: 0, 1: 2, 2: 1, 4: 3}, "label", "BraTS 2018-21")


def brats2023_to_brats(label: Any) -> Any:
    """BraTS 2023+ labels (1 NCR, 2 ED/SNFH, 3 ET) → BraTS 2018–21 (3→4).

    Args:
        label: integer array or tensor with values in {0, 1, 2, 3}.

    Returns:
        uint8 array with values in {0, 1, 2, 4}.
    """
    return _remap(label, {0: 0, 1: 1, 2: 2, 3: 4}, "label", "BraTS 2023")


def brats_to_brats2023(label: Any) -> Any:
    """BraTS 2018–21 labels → BraTS 2023+ (4→3); inverse of ``brats2023_to_brats``."""
    return _remap(label, {0: 0, 1: 1, 2: 2, 4: 3}, "label", "BraTS 2018-21")


def brats2024_to_brats(label: Any) -> Any:
    """BraTS 2024 GLI (post-treatment) labels → BraTS 2018–21, with the resection cavity as background.

    BraTS 2024 GLI labels are 1 NETC (non-enhancing tumour core), 2 SNFH (surrounding FLAIR
    hyperintensity), 3 ET and 4 RC (resection cavity). BraTS 2024 evaluates WT = NETC ∪ SNFH ∪ ET,
    TC = NETC ∪ ET and ET, with RC scored on its own, outside all three; the 4-class model here
    has no RC class, so RC is mapped to background (0). Not invertible (RC is lost).

    Args:
        label: integer array or tensor with values in {0, 1, 2, 3, 4}.

    Returns:
        uint8 array with values in {0, 1, 2, 4} (1→1, 2→2, 3→4, 4→0).

    Raises:
        ValueError: on any value outside {0, 1, 2, 3, 4}.
    """
    return _remap(label, {0: 0, 1: 1, 2: 2, 3: 4, 4: 0}, "label", "BraTS 2024 GLI")


def regions(classes: Any) -> dict[str, Any]:
    """Boolean evaluation regions of a class map.

    Args:
        classes: class map {0, 1 NCR, 2 ED, 3 ET} (numpy array or torch tensor, any shape).

    Returns:
        ``{"WT": classes in {1,2,3}, "TC": classes in {1,3}, "ET": classes == 3}``, same type.

    Raises:
        ValueError: on values outside 0..3 (e.g. BraTS label value 4: use ``to_classes`` first).
    """
    if not isinstance(classes, (np.ndarray, torch.Tensor)):
        raise TypeError(f"classes must be a numpy array or torch tensor, got {type(classes).__name__}")
    if classes.dtype in (torch.bool, np.bool_) or classes.dtype == bool:
        raise ValueError("classes must be an integer class map, got a boolean array")
    if classes.numel() if isinstance(classes, torch.Tensor) else classes.size:
        lo, hi = float(classes.min()), float(classes.max())
        if lo < 0 or hi > 3:
            raise ValueError(f"classes must be in 0..3 (got min {lo:g}, max {hi:g}); convert BraTS labels with to_classes")
    return {"WT": classes > 0, "TC": (classes == 1) | (classes == 3), "ET": classes == 3}


# =========================================================================== NIfTI I/O
def _grid_affine(shape: Sequence[int], voxel_size: float) -> np.ndarray:
    """RAS affine with isotropic ``voxel_size`` mm, grid centre at the world origin."""
    aff = np.diag([voxel_size, voxel_size, voxel_size, 1.0])
    aff[:3, 3] = -(np.asarray(shape, float) - 1) / 2.0 * voxel_size
    return aff


def _save_nifti(target: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(data.dtype)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_path(target) as tmp:
        nib.save(img, tmp)
    return target


def _load_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI file as float32 (scaling applied) in closest-canonical (RAS+) voxel order.

    The first three axes are flipped/permuted as ``nibabel.as_closest_canonical`` would (BraTS
    headers are LPS: x and y are flipped); the affine is updated to match, so every voxel keeps
    its world position. An array already in RAS+ order (e.g. the synthetic writers' grids) is
    returned exactly as stored.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file (3-D, or 4-D with channels last).

    Returns:
        ``(data, affine)``: float32 array and its 4×4 float64 voxel-to-world matrix.

    Raises:
        FileNotFoundError / ValueError naming the file: missing, unreadable, NaN/Inf values, or
        an affine with no orientation (a zero or degenerate axis).
    """
    path = Path(path)
    _refuse_broken_link(path, "file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        img = nib.load(str(path))
        data = img.get_fdata(dtype=np.float32)
        affine = np.asarray(img.affine, dtype=np.float64)
        ornt = nib.orientations.io_orientation(affine)
    except Exception as exc:  # nibabel raises many types on corrupt/truncated files
        raise ValueError(f"{path}: cannot read NIfTI file ({type(exc).__name__}: {exc})") from exc
    if not np.all(np.isfinite(data)):
        n = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise ValueError(f"{path}: {n} NaN/Inf voxel values")
    if not np.all(np.isfinite(ornt)):
        raise ValueError(f"{path}: the affine has a degenerate axis, so the voxel orientation is undefined:\n{affine}")
    if data.ndim >= 3 and not np.array_equal(ornt, _RAS):
        shape = data.shape
        data = np.ascontiguousarray(nib.orientations.apply_orientation(data, ornt))
        affine = affine @ nib.orientations.inv_ornt_aff(ornt, shape[:3])
    return data, affine


def _check_ndim(path: Path, data: np.ndarray, ndim: int, what: str) -> None:
    if data.ndim != ndim:
        raise ValueError(f"{path}: expected a {ndim}-D {what}, got shape {data.shape} ({data.ndim}-D)")


def _label_to_uint(path: Path, data: np.ndarray, convention: str) -> np.ndarray:
    """Check the label values of a seg file against ``convention`` and convert them to BraTS 2018–21 values.

    In the ``"brats2024"`` convention a file with label 4 and no label 3 gets a warning naming it: BraTS 2018–21
    labels under BraTS 2023/2024 file names (renamed without converting) look so, and their ET (4) would be read as
    the resection cavity, i.e. lost. The values present in the file are appended to ``_SEG_VALUES``'s list when it
    holds one (:func:`prepare_dataset`'s check of a whole set).

    Args:
        path: the file (named in errors).
        data: its voxel values (float, as read).
        convention: a key of ``_LABEL_VALUES``.

    Returns:
        uint8 label in BraTS 2018–21 values {0, 1, 2, 4}.

    Raises:
        ValueError naming the file: non-integer values or values outside the convention.
    """
    allowed = _LABEL_VALUES[convention]
    if np.any(data != np.round(data)):
        raise ValueError(f"{path}: label file has non-integer values; expected {convention} labels {list(allowed)}")
    lo, hi = float(data.min()), float(data.max())
    if lo < 0 or hi > 255:
        raise ValueError(f"{path}: label values outside the {convention} convention {list(allowed)} (min {lo:g}, max {hi:g})")
    a = data.astype(np.uint8)
    present = np.flatnonzero(np.bincount(a.ravel(), minlength=256))
    bad = [int(v) for v in present if int(v) not in allowed]
    if bad:
        hint = ""
        if convention == "brats2023" and 4 in bad:
            hint = (f" (4 is read as the BraTS 2024 resection cavity only in {_GLI_PREFIX}* cases; the labels of other "
                    "BraTS sub-challenges are not checked here)")
        raise ValueError(f"{path}: label values {bad} outside the {convention} convention {list(allowed)}{hint}")
    values = tuple(int(v) for v in present)
    record = _SEG_VALUES.get()
    if record is not None:
        record.append(values)
    if convention == "brats2024":
        if 4 in values and 3 not in values:  # one text per file: shown for every case
            warnings.warn(f"{path}: label 4 and no label 3 in a seg file named as in BraTS 2023/2024, so 4 is read "
                          "as the BraTS 2024 resection cavity, i.e. background. If these are BraTS 2018-21 labels "
                          "(4 = ET) under BraTS 2023/2024 file names, this case's ET is being lost: convert its seg "
                          "file with brats_to_brats2023 (4 -> 3), or keep the BraTS 2018-21 file names "
                          "(<case>_{t1,t1ce,t2,flair,seg}) (data/README.md)", stacklevel=3)
        elif 4 in values:
            warnings.warn(_RC_WARNING, stacklevel=3)  # one fixed text: shown once per process, not once per case
        return brats2024_to_brats(a)
    if convention == "msd":
        return msd_to_brats(a)
    if convention == "brats2023":
        return brats2023_to_brats(a)
    return a


# =========================================================================== cases
@dataclass(frozen=True)
class Case:
    """One case of a dataset on disk.

    Attributes:
        case_id: e.g. ``BraTS2021_00000``, ``BraTS-GLI-00000-000`` or ``BRATS_001``.
        layout: one of ``LAYOUTS``.
        paths: BraTS layouts: ``{"t1", "t1ce", "t2", "flair"[, "seg"]}``; MSD: ``{"image"[, "label"]}``.
        channels: MSD only: the 4-D file's channel index of each of ``MODALITIES``.
    """

    case_id: str
    layout: str
    paths: dict[str, Path] = field(compare=True)
    channels: tuple[int, ...] | None = None


def _check_case_args(n_cases: Any, shape: Any, seed: Any, layout: Any) -> tuple[int, int, int]:
    check_int(n_cases, "n_cases", minimum=1)
    check_int(seed, "seed")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return _check_shape(shape)  # the generator's own rule: 3 integers >= MIN_SIDE


def case_seed(seed: int, index: int) -> int:
    """Seed of synthetic case ``index`` of a dataset generated with ``seed`` (layout-independent)."""
    return int(seed) * 100003 + int(index)


def _case_seeds(case_seeds: Any, n_cases: int, seed: int) -> list[int]:
    """The writers' ``case_seeds`` checked, or ``case_seed(seed, i)`` for each case when it is None."""
    if case_seeds is None:
        return [case_seed(seed, i) for i in range(n_cases)]
    seeds = list(case_seeds)
    if len(seeds) != n_cases or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0 for s in seeds):
        raise ValueError(f"case_seeds must be {n_cases} non-negative ints (one per case), got {_few(seeds)}")
    return [int(s) for s in seeds]


def synthetic_case_seeds(
    ids: Sequence[str], seed: int, *, train_seed: int | None = None, fractions: Sequence[float] = (0.6, 0.15, 0.25)
) -> list[int]:
    """The generator seed of every case of a synthetic set, in ``ids`` order.

    Case ``i`` uses ``case_seed(seed, i)``. With ``train_seed``, the cases that :func:`split_cases` (``fractions``,
    ``seed``) puts in training or validation use ``case_seed(train_seed, i)`` instead, while the test cases stay
    ``seed``'s: a replicate on the same test set with other training cases.

    Args:
        ids: the set's case ids (``case_ids_for``).
        seed: dataset seed (>= 0), which also draws the split.
        train_seed: seed of the cases outside the test set (>= 0), or None for ``seed``.
        fractions: (train, val, test) fractions of the split (only read with ``train_seed``).

    Returns:
        One seed per case.

    Raises:
        ValueError: ``seed`` or ``train_seed`` not a non-negative int (``seed=1.5`` is not seed 1).
    """
    check_int(seed, "seed")
    check_int(train_seed, "train_seed", none_ok=True)
    if train_seed is None or train_seed == seed:
        return [case_seed(seed, i) for i in range(len(ids))]
    split = split_cases(ids, fractions, seed)
    return [case_seed(seed if split[cid] == "test" else train_seed, i) for i, cid in enumerate(ids)]


def case_ids_for(layout: str, n_cases: int) -> list[str]:
    """Case identifiers the writers use for ``n_cases`` cases in ``layout``."""
    if layout == "brats2021":
        return [f"BraTS2021_{i:05d}" for i in range(n_cases)]
    if layout == "brats2023":
        return [f"BraTS-GLI-{i:05d}-000" for i in range(n_cases)]
    if layout == "msd":
        return [f"BRATS_{i + 1:03d}" for i in range(n_cases)]
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def write_case(root: str | Path, case_id: str, image: np.ndarray, label: np.ndarray | None, affine: np.ndarray,
               layout: str) -> Path:
    """Write one case (image in MODALITIES order, BraTS 2018–21 label) in ``layout``.

    Args:
        root: dataset folder.
        case_id: case identifier (file names derive from it).
        image: float ``(4, X, Y, Z)`` in MODALITIES order.
        label: uint8 ``(X, Y, Z)`` in BraTS 2018–21 values, or None (no seg file).
        affine: 4×4 voxel-to-world matrix.
        layout: one of ``LAYOUTS``.

    Returns:
        The case folder (BraTS layouts) or the image file (MSD). MSD's dataset.json is
        written by ``make_synthetic_dataset`` (or ``write_msd_dataset_json``).

    Raises:
        ValueError: an unknown layout, an image not ``(4, X, Y, Z)``, or a label of another shape or with values
            outside {0, 1, 2, 4} (named with the case), all checked before any file is written.
    """
    root = Path(root)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 4 or image.shape[0] != len(MODALITIES):
        raise ValueError(f"image must be (4, X, Y, Z), got {image.shape}")
    lab = None
    if label is not None:
        label = np.asarray(label)
        if label.shape != image.shape[1:]:
            raise ValueError(f"label shape {label.shape} differs from image {image.shape[1:]}")
        # the layout's own values, converted (and so checked) before anything is written: no half-written case
        convert = {"brats2021": lambda a: _remap(a, {0: 0, 1: 1, 2: 2, 4: 4}, "label", "BraTS 2018-21"),
                   "brats2023": brats_to_brats2023, "msd": brats_to_msd}[layout]
        try:
            lab = convert(label)
        except ValueError as exc:
            raise ValueError(f"case {case_id}: {exc} (write_case takes BraTS 2018-21 labels; nothing written)") from exc
    if layout in _BRATS_FILES:
        files = _BRATS_FILES[layout]
        folder = root / case_id
        for c, mod in enumerate(MODALITIES):
            _save_nifti(folder / f"{case_id}{files[mod]}.nii.gz", image[c], affine)
        if lab is not None:
            _save_nifti(folder / f"{case_id}{files['seg']}.nii.gz", lab, affine)
        return folder
    order = [MODALITIES.index(m) for m in _MSD_CHANNELS]
    data4 = np.ascontiguousarray(np.moveaxis(image[order], 0, -1))
    img_path = root / "imagesTr" / f"{case_id}.nii.gz"
    _save_nifti(img_path, data4, affine)
    if lab is not None:
        _save_nifti(root / "labelsTr" / f"{case_id}.nii.gz", lab, affine)
    return img_path


def write_msd_dataset_json(root: str | Path, case_ids: Sequence[str], *, labelled: bool = True) -> Path:
    """Write an MSD Task01-style ``dataset.json`` (read by MONAI's ``load_decathlon_datalist``).

    Args:
        root: the MSD folder (holding ``imagesTr``/``labelsTr``).
        case_ids: training case ids (file stems).
        labelled: whether ``labelsTr`` files exist.

    Returns:
        Path of dataset.json.
    """
    training = []
    for cid in case_ids:
        entry = {"image": f"./imagesTr/{cid}.nii.gz"}
        if labelled:
            entry["label"] = f"./labelsTr/{cid}.nii.gz"
        training.append(entry)
    meta = {
        "name": "BRATS",
        "description": "Synthetic gliomas in MSD Task01_BrainTumour layout (robustseg generator)",
        "reference": "robustseg synthetic generator (not real patient data)",
        "licence": "CC-BY-SA 4.0",
        "release": "synthetic",
        "tensorImageSize": "4D",
        "modality": {str(i): _MSD_MODALITY_NAMES[m] for i, m in enumerate(_MSD_CHANNELS)},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
        "numTraining": len(training),
        "numTest": 0,
        "training": training,
        "test": [],
    }
    return atomic_write_json(Path(root) / "dataset.json", meta)


def _one_thread() -> None:
    """Worker-process initialiser: one torch thread per process (the processes are the parallelism)."""
    torch.set_num_threads(1)


class _RecordWarnings:
    """``fn`` for a worker process: ``job -> (fn(job), warnings it raised)``, each warning as
    ``(category, text, filename, lineno)``, for :func:`_reemit` in the parent (a class, so it pickles)."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __call__(self, job: Any) -> tuple[Any, list[tuple[type[Warning], str, str, int]]]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # every one: the parent's filters decide what is shown
            try:
                out = self.fn(job)
            except Exception as e:
                # the warnings raised before the failure travel with the exception (pickled with its __dict__)
                with contextlib.suppress(AttributeError):  # an exception class without a __dict__ cannot carry them
                    e._worker_warnings = _records(caught)  # type: ignore[attr-defined]
                raise
        return out, _records(caught)


def _records(caught: list[warnings.WarningMessage]) -> list[tuple[type[Warning], str, str, int]]:
    """Recorded warnings as picklable ``(category, text, filename, lineno)`` tuples."""
    return [(_picklable_category(w.category), str(w.message), w.filename, w.lineno) for w in caught]


def _picklable_category(category: type[Warning]) -> type[Warning]:
    """``category``, or UserWarning if the class cannot travel to the parent (defined in a local scope)."""
    import pickle

    try:
        pickle.dumps(category)
    except Exception:
        return UserWarning
    return category


def _reemit(category: type[Warning], text: str, filename: str, lineno: int) -> None:
    """Issue a warning recorded in a worker here, at its original location and, when that file is a loaded
    module, with the module's name and ``__warningregistry__``, so filters and once-per-location apply as if it
    had been raised in this process."""
    path = os.path.realpath(filename)
    for mod in list(sys.modules.values()):
        f = getattr(mod, "__file__", None)
        if isinstance(f, str) and os.path.realpath(f) == path:
            registry = mod.__dict__.setdefault("__warningregistry__", {})
            warnings.warn_explicit(text, category, filename, lineno, module=mod.__name__, registry=registry)
            return
    warnings.warn_explicit(text, category, filename, lineno, registry=_FOREIGN_WARNINGS.setdefault(path, {}))


#: ``__warningregistry__`` stand-ins for worker warnings from files no loaded module holds (keyed by real path).
_FOREIGN_WARNINGS: dict[str, dict] = {}


def _map_cases(fn: Callable[[Any], Any], jobs: list, workers: int, desc: str, progress: bool) -> Iterator[Any]:
    """Yield ``fn(job)`` for each job, in order, computed here or in ``workers`` spawned
    processes, with a tqdm bar (callers validate ``workers``). More processes than the CPU budget
    (affinity mask and cgroup quota, :func:`runtime.cpu_budget`) or than jobs only add overhead, so
    ``workers`` is capped there; each worker runs torch on one thread. The output does not depend on
    the number of processes, nor do the warnings: those raised in a worker while it runs ``fn(job)``
    are re-issued here (same category, text and location) just before that job's result is yielded, or before its
    exception is raised when the job failed."""
    workers = max(1, min(workers, cpu_budget(), len(jobs)))
    if workers == 1:
        yield from tqdm(map(fn, jobs), total=len(jobs), desc=desc, disable=not progress)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the parent may hold torch/OpenMP thread pools
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_one_thread) as ex:
        results = ex.map(_RecordWarnings(fn), jobs)
        yield from _reemit_results(tqdm(results, total=len(jobs), desc=desc, disable=not progress))


def _reemit_results(results: Iterable[tuple[Any, list]]) -> Iterator[Any]:
    """Yield each worker result after re-issuing its warnings here; when a job failed, re-issue the warnings it
    raised before failing (carried by the exception, see :class:`_RecordWarnings`) and re-raise."""
    it = iter(results)
    while True:
        try:
            out, caught = next(it)
        except StopIteration:
            return
        except Exception as e:
            for w in getattr(e, "_worker_warnings", ()):
                _reemit(*w)
            raise
        for w in caught:
            _reemit(*w)
        yield out


def _generate_and_write(job: tuple) -> Path:
    """One case of :func:`make_synthetic_dataset` (a top-level function so processes can run it)."""
    root, cid, case_seed_, shape, affine, layout = job
    image, label = make_synthetic_case(case_seed_, shape)
    return write_case(root, cid, image, label, affine, layout)


def make_synthetic_dataset(
    root: str | Path,
    n_cases: int,
    *,
    shape: tuple[int, int, int] = (96, 96, 96),
    seed: int = 0,
    layout: str = "brats2021",
    workers: int = 1,
    progress: bool = True,
    case_seeds: Sequence[int] | None = None,
) -> list[Path]:
    """Generate ``n_cases`` synthetic cases and write them as NIfTI in a real dataset layout.

    Case ``i`` uses seed ``case_seed(seed, i)`` whatever the layout, so the same ``seed`` gives
    the same arrays in every layout (unless ``case_seeds`` says otherwise). Files are written
    atomically.

    ``root`` holds exactly this set afterwards: a hidden marker file, ``.robustseg_synthetic.json`` (layout, shape,
    seed, n_cases, case_seeds and whether the set is complete; ``list_cases`` ignores it), is written first, and a
    folder holding that marker is emptied before writing, so a rerun with fewer cases, another seed or another layout
    leaves no stale case behind. A non-empty folder without the marker is not ours and is refused, untouched.

    Args:
        root: output folder (created): new, empty, or a set written here before.
        n_cases: number of cases (>= 1).
        shape: grid (X, Y, Z); voxel size ``voxel_size_for_shape(shape)`` mm.
        seed: dataset seed (>= 0).
        layout: ``"brats2021"``, ``"brats2023"`` or ``"msd"``.
        workers: processes generating cases in parallel (BraTS-scale sets on many-core
            machines; capped at :func:`runtime.cpu_budget`); every case has its own seed, so the
            result does not depend on it.
        progress: show a tqdm bar.
        case_seeds: the generator seed of each case in place of ``case_seed(seed, i)``, e.g.
            :func:`synthetic_case_seeds` of this set's ids (other training cases, the same test cases). The first
            ``n_cases`` seeds of a larger set are not a smaller copy of its split: a set of ``n_cases`` cases is split
            with its own permutation (:func:`split_cases`), so its test cases are not the larger set's.

    Returns:
        Case folders (BraTS layouts) or image files (MSD), in case order.

    Raises:
        ValueError: bad arguments (named), ``root`` not a folder, or ``root`` holding files without the marker
            (named; nothing is deleted or written).
    """
    shape = _check_case_args(n_cases, shape, seed, layout)
    check_int(workers, "workers", minimum=1)
    ids = case_ids_for(layout, int(n_cases))
    seeds = _case_seeds(case_seeds, len(ids), seed)
    root = Path(root)
    _clear_synthetic_root(root)
    root.mkdir(parents=True, exist_ok=True)
    record = {"writer": "robustseg_lib.data.make_synthetic_dataset", "layout": layout, "shape": list(shape),
              "seed": int(seed), "n_cases": len(ids), "case_seeds": seeds}
    marker = root / _SYNTHETIC_MARKER
    atomic_write_json(marker, {**record, "complete": False})  # first: a killed run leaves a folder we may clear
    affine = _grid_affine(shape, voxel_size_for_shape(shape))
    jobs = [(str(root), cid, s, shape, affine, layout) for cid, s in zip(ids, seeds)]
    out = list(_map_cases(_generate_and_write, jobs, workers, "generate", progress))
    if layout == "msd":
        write_msd_dataset_json(root, ids)
    atomic_write_json(marker, {**record, "complete": True})
    return out


#: The marker make_synthetic_dataset writes into its root: the set's parameters, and the sign that the folder's
#: contents are its own to replace.
_SYNTHETIC_MARKER = ".robustseg_synthetic.json"


def _clear_synthetic_root(root: Path) -> None:
    """Empty ``root`` for a new synthetic set when it holds a set written by :func:`make_synthetic_dataset` (its
    marker); leave a missing or empty folder alone; refuse, deleting nothing, a folder holding anything else.

    The marker is not deleted (the new set's marker replaces it), so a run killed while clearing can be cleared again.
    """
    if not root.exists():
        return
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder (make_synthetic_dataset writes a dataset folder there)")
    contents = sorted(root.iterdir())
    if not contents:
        return
    marker = root / _SYNTHETIC_MARKER
    if not marker.is_file():
        raise ValueError(
            f"{root}: the folder is not empty ({_few([p.name for p in contents], 3)}) and holds no "
            f"{_SYNTHETIC_MARKER}, so make_synthetic_dataset did not write it: refusing to write synthetic cases "
            "there or to delete anything. Pass a new or empty folder (a set written before this marker existed: "
            "delete it by hand)")
    for p in contents:
        if p == marker:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


_NII = re.compile(r"^(?P<stem>.+)\.nii(\.gz)?$")


def _broken_link(path: Path) -> bool:
    """Whether ``path`` is a symbolic link whose target is not there (dangling, or a loop of links)."""
    return os.path.islink(path) and not os.path.exists(path)


def _refuse_broken_link(path: Path, what: str) -> None:
    """A FileNotFoundError naming ``path`` and its target when it is a broken symbolic link: ``is_file()`` and
    ``is_dir()`` are False for it, so it would otherwise pass for an absent file (a case without a seg, an
    unlabelled MSD set) or be dropped from the listing unnoticed."""
    if _broken_link(path):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        raise FileNotFoundError(f"{path}: {what} is a broken symbolic link (to {target}, which does not exist or is a "
                                "loop of links): restore its target (an unmounted or moved disk?) or remove the link")


def _nii_all(folder: Path) -> dict[str, list[Path]]:
    """Visible NIfTI files of a folder by stem, every file of a stem (``X.nii`` and ``X.nii.gz``) in name order
    (macOS ``._*`` resource forks skipped). A NIfTI-named broken symbolic link is refused, naming it."""
    out: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        m = _NII.match(p.name)
        if m and not p.name.startswith("."):
            _refuse_broken_link(p, f"NIfTI file of {folder.name}/")
            if p.is_file():
                out.setdefault(m.group("stem"), []).append(p)
    return out


def _nii_files(folder: Path) -> dict[str, Path]:
    """Visible NIfTI files of a folder by stem (macOS ``._*`` resource forks skipped); where a stem has both a
    ``.nii`` and a ``.nii.gz`` file, the ``.nii.gz`` (readers of a case refuse that: :func:`_refuse_twins`)."""
    return {stem: paths[-1] for stem, paths in _nii_all(folder).items()}


def _refuse_twins(folder: Path, stems: Sequence[str], what: str) -> None:
    """A ValueError naming the files when one of ``stems`` has both a ``.nii`` and a ``.nii.gz`` file in ``folder``:
    which of the two is the data is unknown (a ``gunzip -k`` copy, or a corrected file next to the old one)."""
    every = _nii_all(folder)
    twins = [p.name for s in stems for p in every.get(s, []) if len(every[s]) > 1]
    if twins:
        raise ValueError(f"{folder}: {what} has the same file twice, as .nii and .nii.gz ({_few(twins)}), so which one "
                         "to read is unclear: remove one of each pair")


def _nii_ext(path: Path) -> str:
    """The NIfTI extension of ``path``: ``".nii.gz"`` or ``".nii"``."""
    return ".nii.gz" if path.name.endswith(".gz") else ".nii"


def _few(items: Sequence[Any], k: int = 5) -> str:
    """The first ``k`` of ``items``, comma-separated, and how many there are in all when there are more."""
    names = [str(x) for x in items]
    return ", ".join(names[:k]) + (f", ... ({len(names)} in all)" if len(names) > k else "")


def _detect_brats_layout(folder: Path) -> str | None:
    """The BraTS layout of a case folder: the first layout one of whose modality suffixes ends the name
    of a NIfTI file there (a folder missing some modalities is still detected, so that listing it names
    the missing files); None when no file is named like a modality."""
    stems = _nii_files(folder)
    for layout, files in _BRATS_FILES.items():
        if any(stem.endswith(files[m]) for stem in stems for m in MODALITIES):
            return layout
    return None


def _seg_stand_in_refusal(name: str) -> str | None:
    """Why a case folder's lone extra NIfTI file ``name`` may not stand in for its missing seg file, or None when it
    may: its name must say it is a segmentation ("seg", any case: ``W39_1998.09.19_Segm.nii``, BraTS 2020 case 355)
    and not that it is a prediction ("pred"). A brain mask, a registration output or a model's prediction saved in
    the folder of an unlabelled case would otherwise become its ground truth."""
    low = name.lower()
    if "seg" not in low:
        return "its name does not say it is a segmentation (no 'seg' in it)"
    if "pred" in low:
        return "its name says it is a prediction ('pred' in it), not the ground truth"
    return None


def _brats_case(folder: Path, layout: str) -> Case:
    """The case of one BraTS case folder, ``<case>/<case><suffix>.nii[.gz]``.

    A missing modality raises. When ``<case><seg suffix>`` is missing and the folder holds exactly
    one other NIfTI file whose name says it is a segmentation (:func:`_seg_stand_in_refusal`), that file
    is the seg, with a warning (BraTS 2020's ``BraTS20_Training_355`` ships its seg as
    ``W39_1998.09.19_Segm.nii``; ``load_case`` still checks its shape, affine and values). Any other
    lone file (a brain mask, a saved prediction) is not taken: the case has no label, with a warning
    naming the file and why. With no other NIfTI file (validation data) the case has no label.
    """
    cid = folder.name
    files = _BRATS_FILES[layout]
    stems = _nii_files(folder)
    mod_stems = [f"{cid}{files[m]}" for m in MODALITIES]
    siblings = [stems[s] for s in mod_stems if s in stems] or list(stems.values())
    ext = _nii_ext(siblings[0]) if siblings else ".nii.gz"  # name missing files as the case's files are named
    paths: dict[str, Path] = {}
    for key, stem in zip(MODALITIES, mod_stems):
        if stem not in stems:
            raise FileNotFoundError(
                f"{folder / (stem + ext)}: missing {key} file of case {cid} ({layout} layout expects "
                f"{', '.join(s + ext for s in mod_stems)}, and {cid}{files['seg']}{ext} for labels)"
            )
        paths[key] = stems[stem]
    seg = f"{cid}{files['seg']}"
    others = [p for s, p in stems.items() if s not in mod_stems]
    refusal = _seg_stand_in_refusal(others[0].name) if len(others) == 1 else None
    stand_in = len(others) == 1 and refusal is None
    read = [seg] if seg in stems else [s for s in stems if s not in mod_stems] if stand_in else []
    _refuse_twins(folder, [*mod_stems, *read], f"case {cid}")  # the files this case reads, each once
    if seg in stems:
        paths["seg"] = stems[seg]
    else:
        if stand_in:
            warnings.warn(f"case {cid}: no {seg}{ext}; using {others[0].name}, the only other NIfTI file in {folder}, "
                          "as its seg (its name says it is a segmentation; its shape, affine and label values are "
                          "checked when it is loaded)", stacklevel=2)
            paths["seg"] = others[0]
        elif len(others) == 1:
            warnings.warn(f"case {cid}: no {seg}{ext}, and the only other NIfTI file in {folder}, {others[0].name}, is "
                          f"not taken as its seg: {refusal}. The case is listed without a label (if that file is the "
                          f"ground truth, rename it {seg}{ext})", stacklevel=2)
        elif others:
            warnings.warn(f"case {cid}: no {seg}{ext}, and {len(others)} other NIfTI files in {folder} "
                          f"({_few([p.name for p in others])}): the case is listed without a label", stacklevel=2)
    return Case(cid, layout, paths)


def _msd_channels(meta_path: Path, modality: Any) -> tuple[int, ...]:
    """The 4-D image's channel index of each of ``MODALITIES``, from dataset.json's ``"modality"``.

    Raises:
        ValueError naming the file: not an object, keys that are not integers, names other than the four
        modalities, or channel indices other than exactly 0..3.
    """
    if not isinstance(modality, dict):
        raise ValueError(f"{meta_path}: 'modality' must be an object {{channel index: name}}, got {modality!r}")
    names: dict[int, str] = {}
    for k, v in modality.items():
        try:
            names[int(k)] = str(v).strip().lower()
        except ValueError:
            raise ValueError(f"{meta_path}: 'modality' keys must be channel indices 0..3, got {k!r} in "
                             f"{modality}") from None
    mods = {_MSD_NAME_TO_MOD.get(n): k for k, n in names.items()}
    if set(MODALITIES) - set(mods) or len(names) != 4 or len(modality) != 4:
        raise ValueError(f"{meta_path}: 'modality' {modality} does not name FLAIR, T1w, T1gd and T2w")
    if sorted(names) != [0, 1, 2, 3]:
        raise ValueError(f"{meta_path}: 'modality' channel indices must be exactly 0..3 (the 4-D image's channels, "
                         f"0-based), got {sorted(names)} in {modality}")
    return tuple(mods[m] for m in MODALITIES)


#: What MSD Task01's dataset.json "labels" name each label value (1 edema, 2 non-enhancing tumour, 3 enhancing), as
#: the region its name describes; the reader reads every MSD folder with this table (``msd_to_brats``).
_MSD_LABEL_MEANING: dict[int, str] = {1: "ED", 2: "NCR", 3: "ET"}


def _label_meaning(name: str) -> str | None:
    """The region a dataset.json label name describes (``"ED"``, ``"NCR"`` or ``"ET"``), or None when it is not
    recognised. Edema first (BraTS 2023's SNFH, "surrounding non-enhancing FLAIR hyperintensity", is edema), then the
    non-enhancing / necrotic core, then enhancing tumour."""
    low = name.lower()
    words = set(re.findall(r"[a-z]+", low))
    if "edema" in low or "oedema" in low or "hyperintens" in low or words & {"ed", "snfh"}:
        return "ED"
    if "necro" in low or "nonenhanc" in low.replace("-", "").replace(" ", "") or words & {"ncr", "net", "netc"}:
        return "NCR"
    if "enhanc" in low or "et" in words:
        return "ET"
    return None


def _check_msd_labels(meta_path: Path, labels: Any) -> None:
    """Refuse a dataset.json whose ``"labels"`` say that a value means something other than MSD Task01's (1 edema,
    2 non-enhancing tumour, 3 enhancing tumour), e.g. a BraTS set converted to the MSD 4-D layout that kept BraTS 2023's
    labels (1 NCR, 2 ED, 3 ET): read with MSD's table, its NCR would become edema and its edema the core. Names this
    cannot interpret are let through (the values are still checked against {0, 1, 2, 3} on loading).

    Raises:
        ValueError naming the file: ``"labels"`` not an object, or a value whose name contradicts MSD's meaning.
    """
    if not isinstance(labels, dict):
        raise ValueError(f"{meta_path}: 'labels' must be an object {{label value: name}}, got {labels!r}")
    wrong = []
    for k, v in labels.items():
        try:
            value = int(k)
        except ValueError:
            raise ValueError(f"{meta_path}: 'labels' keys must be label values, got {k!r} in {labels}") from None
        if value == 0:
            continue
        meaning = _label_meaning(str(v))
        expected = _MSD_LABEL_MEANING.get(value)
        if expected is None or (meaning is not None and meaning != expected):
            wrong.append(f"{k}: {v!r}")
    if wrong:
        raise ValueError(
            f"{meta_path}: 'labels' ({', '.join(wrong)}) contradict the MSD Task01 convention this layout is read with "
            "(1 edema, 2 non-enhancing tumour, 3 enhancing tumour); convert the label files to it (e.g. BraTS 2023 "
            "labels with brats2023_to_brats then brats_to_msd) or keep the data in its BraTS layout")


def _msd_entry_path(meta_path: Path, key: str, value: Any, entry: Any) -> Path:
    """``root / value`` for an ``image``/``label`` path of dataset.json, or a ValueError naming the file and entry."""
    if not isinstance(value, str) or not _NII.match(Path(value).name):
        raise ValueError(f"{meta_path}: '{key}' must name a .nii or .nii.gz file, got {value!r} in {entry!r}")
    return meta_path.parent / value


def _msd_json_entries(meta_path: Path) -> tuple[tuple[int, ...] | None, list[tuple[Path, Path | None]]]:
    """The channel order (None: not given) and the ``(image, label or None)`` entries of an MSD ``dataset.json``.

    Raises:
        ValueError naming the file: not JSON, or not the shape of MSD's dataset.json.
    """
    channels = None
    entries: list[tuple[Path, Path | None]] = []
    meta = read_json_object(meta_path, "a JSON object (MSD dataset.json)")
    if "modality" in meta:
        channels = _msd_channels(meta_path, meta["modality"])
    if "labels" in meta:
        _check_msd_labels(meta_path, meta["labels"])
    for key in ("training", "test"):
        if not isinstance(meta.get(key, []), list):
            raise ValueError(f"{meta_path}: '{key}' must be a list, got {type(meta[key]).__name__}")
    for e in meta.get("training", []):
        if not isinstance(e, dict) or "image" not in e:
            raise ValueError(f"{meta_path}: 'training' entries need an 'image' key, got {e!r}")
        lab = _msd_entry_path(meta_path, "label", e["label"], e) if e.get("label") else None
        entries.append((_msd_entry_path(meta_path, "image", e["image"], e), lab))
    for e in meta.get("test", []):
        if isinstance(e, dict) and "image" not in e:
            raise ValueError(f"{meta_path}: 'test' entries are image paths or objects with an 'image' key, got {e!r}")
        entries.append((_msd_entry_path(meta_path, "image", e["image"] if isinstance(e, dict) else e, e), None))
    if not entries:
        raise ValueError(f"{meta_path}: no 'training' or 'test' entries")
    stems = Counter(_NII.match(img.name).group("stem") for img, _ in entries)  # type: ignore[union-attr]
    repeated = sorted(c for c, k in stems.items() if k > 1)
    if repeated:
        raise ValueError(f"{meta_path}: case(s) listed more than once in 'training'/'test': {_few(repeated)}")
    return channels, entries


def _msd_on_disk(path: Path) -> Path:
    """A path named in dataset.json, or the same file with the other NIfTI extension when only that one is on disk
    (``gunzip -r`` turns the ``.nii.gz`` files dataset.json names into ``.nii``; the BraTS layouts accept either)."""
    path = Path(os.path.normpath(path))
    if os.path.lexists(path):
        return path
    stem = _NII.match(path.name).group("stem")  # type: ignore[union-attr]
    other = path.with_name(stem + (".nii" if path.name.endswith(".gz") else ".nii.gz"))
    return other if os.path.lexists(other) else path


def _msd_cases(root: Path) -> list[Case]:
    meta_path = root / "dataset.json"
    channels = tuple(_MSD_CHANNELS.index(m) for m in MODALITIES)
    entries: list[tuple[Path, Path | None]] = []
    if meta_path.is_file():
        try:
            given, entries = _msd_json_entries(meta_path)
        except ValueError as exc:  # e.g. a MONAI datalist (lists of image paths) named dataset.json
            raise ValueError(f"{exc} (the folder is read as an MSD Task01 folder because it holds dataset.json; "
                             "a dataset.json of another kind, e.g. a MONAI datalist, does not belong there)") from exc
        channels = given or channels
    else:
        images = root / "imagesTr"
        labels = _nii_files(root / "labelsTr") if (root / "labelsTr").is_dir() else {}
        image_files = _nii_files(images)
        _refuse_twins(images, list(image_files), "imagesTr")
        if labels:
            _refuse_twins(root / "labelsTr", [s for s in image_files if s in labels], "labelsTr")
        for stem, p in image_files.items():
            entries.append((p, labels.get(stem)))
        if not entries:
            raise ValueError(f"{images}: no NIfTI images (MSD layout)")
    cases = []
    absent: list[Path] = []  # unlabelled (test) images listed in dataset.json but not on disk
    for img, lab in entries:
        img = _msd_on_disk(img)
        _refuse_broken_link(img, f"image listed in {meta_path.name}")
        if not img.is_file():
            if lab is None:  # training needs none of them: users often keep imagesTr/labelsTr only
                absent.append(img)
                continue
            raise FileNotFoundError(f"{img}: image file listed in {meta_path.name} does not exist")
        paths = {"image": img}
        if lab is not None:
            lab = _msd_on_disk(lab)
            _refuse_broken_link(lab, f"label listed in {meta_path.name}")
            if not lab.is_file():
                raise FileNotFoundError(f"{lab}: label file listed in {meta_path.name} does not exist")
            paths["label"] = lab
        cid = _NII.match(img.name).group("stem")  # type: ignore[union-attr]
        cases.append(Case(cid, "msd", paths, channels))
    if absent:
        rel = [os.path.relpath(p, root) for p in absent]
        if not cases:
            raise FileNotFoundError(f"{meta_path}: none of the {len(absent)} images listed there exists ({_few(rel)})")
        warnings.warn(f"{meta_path}: skipping {len(absent)} unlabelled (test) image(s) listed there but not on disk: "
                      f"{_few(rel)}", stacklevel=3)
    return cases


def _visible_dirs(folder: Path) -> list[Path]:
    """The sub-folders of ``folder`` not hidden (links to folders included), sorted; a visible broken symbolic link
    there (a case folder on a disk that is not mounted, say) is refused, naming it, rather than skipped."""
    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        _refuse_broken_link(p, f"entry of the dataset folder {folder}")
        if p.is_dir():
            out.append(p)
    return out


def _scan_case_folders(folder: Path) -> tuple[list[Case], list[Path]]:
    """BraTS case folders directly under ``folder``, and the sub-folders that hold NIfTI files none of
    which is named like a modality (not recognised as cases)."""
    cases, unrecognised = [], []
    for sub in _visible_dirs(folder):
        layout = _detect_brats_layout(sub)
        if layout is not None:
            cases.append(_brats_case(sub, layout))
        elif _nii_files(sub):
            unrecognised.append(sub)
    return cases, unrecognised


#: The sub-folders of an MSD Task01 folder (not searched for BraTS case folders beside it).
_MSD_DIRS: tuple[str, ...] = ("imagesTr", "labelsTr", "imagesTs")


def _msd_marker(root: Path) -> str:
    """What made ``root`` an MSD folder for :func:`list_cases`: ``"dataset.json"`` and/or ``"imagesTr/"``."""
    found = [n for n, ok in (("dataset.json", (root / "dataset.json").is_file()),
                             ("imagesTr/", (root / "imagesTr").is_dir())) if ok]
    return " and ".join(found)


def _refuse_brats_beside_msd(root: Path) -> None:
    """A ValueError naming both when an MSD folder (``dataset.json`` or ``imagesTr/``) also holds BraTS case folders,
    directly or, when there are none there, one level down: only one of the two sets would be listed, and which one
    was meant is unclear (as with BraTS 2018-21 and 2023 cases in one folder)."""
    subs = [p for p in _visible_dirs(root) if p.name not in _MSD_DIRS]
    brats = [p for p in subs if _detect_brats_layout(p) is not None]
    if not brats:
        brats = [q for p in subs for q in _visible_dirs(p) if _detect_brats_layout(q) is not None]
    if brats:
        marker = _msd_marker(root)
        hint = (" (a dataset.json of another kind, e.g. a MONAI datalist, makes a BraTS folder look like MSD: move "
                "it out)") if "dataset.json" in marker else ""
        raise ValueError(
            f"{root}: mixed layouts: an MSD Task01 folder ({marker}) and BraTS case folders "
            f"({_few([os.path.relpath(p, root) for p in brats], 3)}); only one of the two would be read. Pass a folder "
            f"holding one dataset{hint}")


def list_cases(root: str | Path) -> list[Case]:
    """List the cases of a dataset folder, detecting its layout.

    BraTS case folders are looked for directly under ``root``; when there are none, one level
    further down, in every sub-folder together (case folders at both levels are an error): the
    BraTS 2018/2019 training data hold them under ``HGG/`` and ``LGG/``, the BraTS 2024 GLI release
    under ``training_data*/``, the Kaggle BraTS 2020 copy under an outer folder. Warnings name the
    folders holding NIfTI files named like no modality (skipped), cases whose seg file is found
    under another name (or whose lone extra file is not taken as the seg: its name does not say
    "seg"), and ``brats2023``-layout cases that are not BraTS-GLI (their labels are read as GLI
    labels, checked only for GLI). MSD files that dataset.json names ``.nii.gz`` are read as ``.nii``
    when only that is on disk (``gunzip -r``).

    Args:
        root: a BraTS 2018–21 or 2023/2024 folder (one sub-folder per case, possibly grouped one
            level down) or an MSD Task01 folder (``dataset.json`` and/or ``imagesTr/``).

    Returns:
        Cases sorted by id (MSD: in dataset.json order). Unlabelled MSD entries of dataset.json
        whose image is not on disk are skipped with a warning.

    Raises:
        TypeError: ``root`` is not a path.
        FileNotFoundError: missing folder, a missing modality file (named), or a broken symbolic link where the
            loader looks (a case folder, a case's NIfTI file, MSD's dataset.json/imagesTr/labelsTr or a file
            dataset.json lists; named with its target).
        ValueError: empty/unrecognised folder (naming the sub-folders searched), a case id found
            twice (naming both folders), mixed layouts (BraTS 2018-21 and 2023 case folders, or BraTS case
            folders in an MSD folder: naming both), case folders both directly under ``root`` and one
            level down (ambiguous: naming a few of each), or a dataset.json that is not MSD's (the error says
            that the folder was read as MSD because of it).
    """
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a dataset folder (str or Path), got {type(root).__name__}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder does not exist")
    for name in ("dataset.json", "imagesTr", "labelsTr"):
        _refuse_broken_link(root / name, "MSD " + name)  # else read as a folder without it (no labels, say)
    if (root / "dataset.json").is_file() or (root / "imagesTr").is_dir():
        _refuse_brats_beside_msd(root)
        return _msd_cases(root)
    cases, unrecognised = _scan_case_folders(root)
    if cases:  # case folders here and others one level down (HGG/ next to cases): which set was meant is unclear
        direct = {c.paths[MODALITIES[0]].parent for c in cases}
        nested = [case for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                                         and p not in direct)
                  for case in sorted(q for q in sub.iterdir() if q.is_dir() and not q.name.startswith("."))
                  if _detect_brats_layout(case) is not None]
        if nested:
            raise ValueError(
                f"{root}: ambiguous: it holds case folders ({_few(sorted(p.name for p in direct), 3)}) and sub-folders "
                f"holding case folders one level down ({_few([os.path.relpath(p, root) for p in nested], 3)}); "
                "pass a folder whose cases are all at one level (move them, or pass the sub-folder meant)")
    searched: list[Path] = []
    if not cases:  # HGG/ + LGG/, training_data*/ or an outer folder: one level down, all sub-folders together
        searched = _visible_dirs(root)
        for sub in searched:
            found, unrec = _scan_case_folders(sub)
            cases += found
            unrecognised += unrec
        cases.sort(key=lambda c: c.case_id)
    if unrecognised:
        warnings.warn(f"{root}: skipping {len(unrecognised)} folder(s) holding NIfTI files none of which is named like a "
                      f"modality (<case>_{{t1,t1ce,t2,flair}} or <case>-{{t1n,t1c,t2w,t2f}}): "
                      f"{_few([os.path.relpath(p, root) for p in unrecognised])}", stacklevel=2)
    if not cases:
        where = f" (nor one level down, in {_few([p.name + '/' for p in searched])})" if searched else ""
        if _detect_brats_layout(root) is not None:
            where += "; it looks like a case folder itself: pass the folder that holds the case folders"
        raise ValueError(
            f"{root}: no cases found{where}; expected <case>/<case>_{{t1,t1ce,t2,flair,seg}}.nii.gz (BraTS 2018-21), "
            f"<case>/<case>-{{t1n,t1c,t2w,t2f,seg}}.nii.gz (BraTS 2023) or an MSD folder with dataset.json/imagesTr"
        )
    first: dict[str, Path] = {}
    for c in cases:
        folder = c.paths[MODALITIES[0]].parent
        if c.case_id in first:
            raise ValueError(f"{root}: case id {c.case_id} occurs twice, in {first[c.case_id]} and {folder}")
        first[c.case_id] = folder
    layouts = {c.layout for c in cases}
    if len(layouts) > 1:
        raise ValueError(f"{root}: mixed layouts {sorted(layouts)}")
    other = [c.case_id for c in cases if c.layout == "brats2023" and not c.case_id.startswith(_GLI_PREFIX)]
    if other:
        warnings.warn(f"{root}: {len(other)} case(s) are not BraTS-GLI (adult glioma): {_few(other, 3)}. Their seg files "
                      "are read with the BraTS 2023 GLI labels (1 NCR, 2 ED, 3 ET); label meanings are verified here for "
                      "BraTS-GLI only, and other BraTS sub-challenges (MEN, MET, PED, SSA, ...) may define them "
                      "differently: check the sub-challenge's label description", stacklevel=2)
    return cases


def load_case(case: Case) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Load one case in the internal convention.

    Args:
        case: from ``list_cases``.

    Every file is read in closest-canonical (RAS+) voxel order (``_load_nifti``): BraTS's LPS
    files come back flipped along x and y, with the affine to match. Labels are converted from the
    layout's convention; in ``brats2023``-layout cases whose id starts with ``BraTS-GLI-``, label 4
    (the BraTS 2024 post-treatment resection cavity) is read as background (``brats2024_to_brats``,
    with a warning), in other ``brats2023`` cases it is an error.

    Returns:
        ``(image, label, affine)``: float32 ``(4, X, Y, Z)`` in MODALITIES order; uint8 label in
        BraTS 2018–21 values (None when the case has no seg file); 4×4 float64 affine (RAS+).

    Raises:
        FileNotFoundError / ValueError naming the file: missing or unreadable files, wrong
        dimensionality, mismatched shapes/affines, NaN/Inf, label values outside the layout's convention.
    """
    if not isinstance(case, Case):
        raise TypeError(f"case must be a Case (from list_cases), got {type(case).__name__}")
    if case.layout in _BRATS_FILES:
        chans, affine, ref = [], None, None
        for mod in MODALITIES:
            if mod not in case.paths:
                raise FileNotFoundError(f"case {case.case_id}: no {mod} file")
            path = case.paths[mod]
            data, aff = _load_nifti(path)
            _check_ndim(path, data, 3, "modality volume")
            if ref is None:
                affine, ref = aff, path
            else:
                if data.shape != chans[0].shape:
                    raise ValueError(f"{path}: shape {data.shape} differs from {ref.name} {chans[0].shape}")
                if not np.allclose(aff, affine, atol=1e-3):
                    raise ValueError(f"{path}: affine differs from {ref.name}")
            chans.append(data)
        image = np.stack(chans)
        label = None
        if "seg" in case.paths:
            path = case.paths["seg"]
            data, aff = _load_nifti(path)
            _check_ndim(path, data, 3, "label volume")
            if data.shape != image.shape[1:]:
                raise ValueError(f"{path}: label shape {data.shape} differs from the images {image.shape[1:]}")
            if not np.allclose(aff, affine, atol=1e-3):
                raise ValueError(f"{path}: label affine differs from {ref.name}")
            convention = "brats2024" if case.layout == "brats2023" and case.case_id.startswith(_GLI_PREFIX) else case.layout
            label = _label_to_uint(path, data, convention)
        return image, label, affine  # type: ignore[return-value]
    if case.layout == "msd":
        path = case.paths["image"]
        data, affine = _load_nifti(path)
        _check_ndim(path, data, 4, "MSD image (X, Y, Z, 4)")
        if data.shape[-1] != 4:
            raise ValueError(f"{path}: expected 4 channels in the last axis, got shape {data.shape}")
        channels = case.channels or tuple(_MSD_CHANNELS.index(m) for m in MODALITIES)
        image = np.ascontiguousarray(np.moveaxis(data, -1, 0)[list(channels)])
        label = None
        if "label" in case.paths:
            lpath = case.paths["label"]
            ldata, laff = _load_nifti(lpath)
            _check_ndim(lpath, ldata, 3, "MSD label volume")
            if ldata.shape != image.shape[1:]:
                raise ValueError(f"{lpath}: label shape {ldata.shape} differs from the image {image.shape[1:]}")
            if not np.allclose(laff, affine, atol=1e-3):
                raise ValueError(f"{lpath}: label affine differs from {path.name}")
            label = _label_to_uint(lpath, ldata, "msd")
        return image, label, affine
    raise ValueError(f"case {case.case_id}: unknown layout {case.layout!r}")


# =========================================================================== preprocessing
def preprocess_case(image: np.ndarray, label: np.ndarray | None, shape: tuple[int, int, int]) -> dict[str, Any]:
    """Crop to the brain, z-score each modality over the brain, and fit to the working grid.

    Steps: brain = any modality > 0; crop to its bounding box; z-score each modality over brain
    voxels (statistics kept); zero outside the brain; centre pad/crop to ``shape`` (MONAI
    ``ResizeWithPadOrCrop``) — if the box is larger than ``shape`` along any axis it is first
    resized (MONAI ``Resize``, aspect kept; ``area`` for the image, nearest for labels/brain).

    Args:
        image: float ``(4, X, Y, Z)`` raw intensities in MODALITIES order.
        label: BraTS 2018–21 label ``(X, Y, Z)`` or None (classes all zero).
        shape: working grid.

    Returns:
        dict with ``image`` float32 (4, *shape), ``classes`` uint8 (*shape), ``brain`` bool (*shape),
        ``mean``/``std`` float32 (4,) raw statistics over the brain, ``lo``/``hi`` float32 (4,)
        min/max of the z-scored image over the brain, ``bbox`` int (2, 3) crop box, ``resized`` bool,
        ``label_outside_brain`` int: tumour voxels (label > 0) where every modality is <= 0, on the input grid
        (those outside the brain's box are cropped away; :func:`prepare_dataset` warns naming such cases).
    """
    from monai.transforms import Resize, ResizeWithPadOrCrop
    from monai.transforms.utils import generate_spatial_bounding_box

    image = np.asarray(image)
    if image.ndim != 4 or image.shape[0] != len(MODALITIES):
        raise ValueError(f"image must be (4, X, Y, Z) in MODALITIES order, got shape {image.shape}")
    if not np.all(np.isfinite(image)):
        raise ValueError("image has NaN/Inf values")
    shape = _check_shape(shape, 1, "shape")  # 3 integers >= 1: 47.5 or True is refused, not truncated
    classes = np.zeros(image.shape[1:], np.uint8) if label is None else to_classes(np.asarray(label))
    if classes.shape != image.shape[1:]:
        raise ValueError(f"label shape {classes.shape} differs from image {image.shape[1:]}")
    image = image.astype(np.float32, copy=False)
    brain = np.any(image > 0, axis=0)
    if not brain.any():
        raise ValueError("image has no brain voxels (no modality > 0)")
    label_outside = int(np.count_nonzero(classes[~brain]))
    start, end = generate_spatial_bounding_box(brain[None])
    sl = tuple(slice(int(a), int(b)) for a, b in zip(start, end))
    img = image[(slice(None), *sl)]
    br = brain[sl]
    cls = classes[sl]
    vals = img[:, br]
    mean = vals.mean(axis=1).astype(np.float32)
    std = vals.std(axis=1).astype(np.float32)
    std = np.maximum(std, np.float32(1e-6) * np.maximum(np.abs(mean), 1.0))
    z = ((img - mean[:, None, None, None]) / std[:, None, None, None]) * br[None]
    box = np.asarray(br.shape)
    resized = bool(np.any(box > np.asarray(shape)))
    if resized:
        f = float(np.min(np.asarray(shape) / box))
        new = tuple(int(max(1, min(s, np.floor(b * f)))) for b, s in zip(box, shape))
        z = np.asarray(Resize(new, mode="area")(z).numpy())
        cls = np.asarray(Resize(new, mode="nearest-exact")(cls[None].astype(np.float32)).numpy())[0].round().astype(np.uint8)
        br = np.asarray(Resize(new, mode="nearest-exact")(br[None].astype(np.float32)).numpy())[0] > 0.5
        z = z * br[None]
    pad = ResizeWithPadOrCrop(shape, mode="constant")
    z = np.asarray(pad(z).numpy(), dtype=np.float32)
    cls = np.asarray(pad(cls[None]).numpy())[0].astype(np.uint8)
    br = np.asarray(pad(br[None].astype(np.uint8)).numpy())[0] > 0
    z[:, ~br] = 0.0
    inside = z[:, br]
    lo = inside.min(axis=1).astype(np.float32) if inside.size else np.zeros(4, np.float32)
    hi = inside.max(axis=1).astype(np.float32) if inside.size else np.zeros(4, np.float32)
    return {
        "image": z,
        "classes": cls,
        "brain": br,
        "mean": mean,
        "std": std,
        "lo": lo,
        "hi": hi,
        "bbox": np.asarray([start, end], dtype=np.int64),
        "resized": resized,
        "label_outside_brain": label_outside,
    }


#: A BraTS 2023/2024 case id, ``BraTS-<sub-challenge>-<subject>-<timepoint>``: group 1 is the patient.
_BRATS_PATIENT = re.compile(r"^(BraTS-[A-Za-z]+-\d+)-\d+$")


def patient_id(case_id: str) -> str:
    """The patient a case belongs to, for splitting by patient.

    BraTS 2023/2024 ids are ``BraTS-<SUB>-<5-digit subject>-<3-digit timepoint>`` (GLI, MEN, MET, SSA, PED, ...):
    ``BraTS-GLI-02073-100`` and ``BraTS-GLI-02073-101`` are two scans of patient ``BraTS-GLI-02073``. Every other
    id (BraTS 2018-2021, MSD, the synthetic writers') names one patient, so it is its own patient. A bootstrap
    copy's id (``<id>~2``) is its own patient too: pass it through :func:`original_case_id` first.

    Args:
        case_id: a case id.

    Returns:
        ``BraTS-<SUB>-<subject>`` for a BraTS 2023/2024 id, else ``case_id`` itself.
    """
    cid = str(case_id)
    m = _BRATS_PATIENT.match(cid)
    return m.group(1) if m else cid


def _check_fractions(fractions: Any) -> np.ndarray:
    """(train, val, test) fractions as a float64 array of 3, or a ValueError naming them."""
    try:
        fr = np.asarray(fractions, dtype=np.float64)
    except (TypeError, ValueError):
        fr = np.full(1, np.nan)
    if fr.shape != (3,) or not np.all(np.isfinite(fr)) or np.any(fr < 0) or not np.isclose(fr.sum(), 1.0, atol=1e-6) \
            or fr[0] <= 0:
        raise ValueError(f"fractions must be 3 non-negative numbers (train > 0) summing to 1, got {fractions!r}")
    return fr


def split_cases(case_ids: Sequence[str], fractions: Sequence[float] = (0.6, 0.15, 0.25), seed: int = 0) -> dict[str, str]:
    """Deterministic train/val/test split by patient: all cases of one patient (:func:`patient_id`) share a part.

    The patients are ordered by their smallest case id and permuted with ``np.random.default_rng(seed)``; the first
    ``n_test`` of the permutation are test patients, the next ``n_val`` validation, the rest training. When every
    patient has one case (BraTS 2018-2021, MSD, the synthetic sets) this is the per-case split of earlier versions,
    case for case.

    Args:
        case_ids: unique case ids (order does not matter: they are sorted first).
        fractions: (train, val, test) fractions of the patients, non-negative, summing to 1.
        seed: permutation seed (>= 0).

    Returns:
        ``{case_id: "train" | "val" | "test"}``; with n >= 3 patients every split whose fraction
        is > 0 gets at least one patient (train always does).

    Raises:
        ValueError: empty or repeated ids (named), bad fractions, or a seed that is not a non-negative int.
    """
    ids = [str(c) for c in case_ids]
    if not ids:
        raise ValueError("case_ids must not be empty")
    if len(set(ids)) != len(ids):
        repeats = sorted(c for c, k in Counter(ids).items() if k > 1)
        raise ValueError(f"case_ids must be unique, got repeats {_few(repeats)}")
    fr = _check_fractions(fractions)
    check_int(seed, "seed")
    srt = sorted(ids)
    patient = {c: patient_id(c) for c in srt}
    patients = list(dict.fromkeys(patient[c] for c in srt))  # ordered by their smallest case id
    n = len(patients)
    n_val, n_test = int(round(fr[1] * n)), int(round(fr[2] * n))
    if n >= 3:
        n_val = max(n_val, 1) if fr[1] > 0 else 0
        n_test = max(n_test, 1) if fr[2] > 0 else 0
    while n - n_val - n_test < 1:
        if n_val >= n_test and n_val > 0:
            n_val -= 1
        else:
            n_test -= 1
    order = np.random.default_rng(int(seed)).permutation(n)
    part = {}
    for rank, k in enumerate(order):
        part[patients[k]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return {cid: part[patient[cid]] for cid in ids}


def _load_and_preprocess(job: tuple[Case, tuple[int, int, int]]) -> dict[str, np.ndarray]:
    """One case of :func:`prepare_dataset` (top level so worker processes can run it)."""
    case, shape = job
    values: list[tuple[int, ...]] = []
    token = _SEG_VALUES.set(values)
    try:
        img, lab, _ = load_case(case)
    finally:
        _SEG_VALUES.reset(token)
    return {**preprocess_case(img, lab, shape), "label_values": values[0] if values else ()}


#: Separator of a bootstrap copy's number in its case id: ``BraTS2021_00007~2`` is the second copy of that case.
BOOT_SEP = "~"


def original_case_id(case_id: str) -> str:
    """The case id without a bootstrap copy's number (:data:`BOOT_SEP`): ``"BraTS2021_00007~2"`` -> ``"BraTS2021_00007"``."""
    return str(case_id).split(BOOT_SEP, 1)[0]


def bootstrap_cases(case_ids: Sequence[str], split: dict[str, str], seed: int) -> list[tuple[int, str]]:
    """A bootstrap of a set's training and validation cases, the test cases kept: the real-data analogue of drawing
    other training cases (notebook 01's ``train_seed``).

    Position ``i`` keeps its part of the split. A test position keeps its own case; the training positions draw their
    cases with replacement from the training cases, the validation positions from the validation cases, so no case
    moves between parts and none leaks into the test set; with :func:`split_cases`'s parts, which keep a patient's
    cases together, no patient does either. A case drawn more than once gets its copy number in its id
    (``<id>~2``, ``<id>~3``; :data:`BOOT_SEP`), so ids stay unique.

    Args:
        case_ids: the set's unique case ids, in row order (none may contain ``~``).
        split: ``{case_id: "train" | "val" | "test"}`` (:func:`split_cases`).
        seed: bootstrap seed (>= 0).

    Returns:
        ``[(source position, new case id), ...]``, one per position, in ``case_ids`` order.

    Raises:
        ValueError: a bad seed, a repeated id or one with ``~`` (named), or an id missing from ``split`` (named).
    """
    check_int(seed, "seed")
    ids = [str(c) for c in case_ids]
    if len(set(ids)) != len(ids):
        raise ValueError(f"case_ids must be unique, got repeats {_few(sorted({c for c in ids if ids.count(c) > 1}))}")
    bad = [c for c in ids if BOOT_SEP in c]
    if bad:
        raise ValueError(f"case ids may not contain {BOOT_SEP!r} (it marks bootstrap copies): {_few(bad)}")
    missing = [c for c in ids if split.get(c) not in ("train", "val", "test")]
    if missing:
        raise ValueError(f"split has no part (train, val, test) for cases {_few(missing)}")
    rng = np.random.default_rng(int(seed))
    source = list(range(len(ids)))
    for part in ("train", "val"):  # train first, then val: the draws of one seed are fixed in this order
        pos = [i for i, c in enumerate(ids) if split[c] == part]
        if pos:
            for i, j in zip(pos, sorted(rng.choice(pos, size=len(pos), replace=True).tolist())):
                source[i] = j
    seen: dict[int, int] = {}
    out = []
    for j in source:
        seen[j] = seen.get(j, 0) + 1
        out.append((j, ids[j] if seen[j] == 1 else f"{ids[j]}{BOOT_SEP}{seen[j]}"))
    return out


def prepare_dataset(
    root_or_cases: str | Path | Sequence[Case],
    out_file: str | Path,
    shape: tuple[int, int, int],
    *,
    fractions: Sequence[float] = (0.6, 0.15, 0.25),
    seed: int = 0,
    workers: int = 1,
    progress: bool = True,
    train_seed: int | None = None,
) -> Path:
    """Load, preprocess and split every labelled case; write ``prepared.npz`` atomically.

    Args:
        root_or_cases: dataset folder (any layout) or a list of ``Case``.
        out_file: target ``.npz`` (keys ``PREPARED_KEYS``, see docs/design.md).
        shape: working grid.
        fractions: (train, val, test) fractions for ``split_cases``.
        seed: split seed.
        train_seed: with a seed other than ``seed``, the training and validation cases are a bootstrap of themselves
            (:func:`bootstrap_cases`; the test cases and the split stay ``seed``'s): other training data for a real
            set, which cannot draw new patients. A case drawn more than once is loaded and preprocessed once and its
            arrays copied to each of its rows. None (or ``seed``): every case once.
        workers: processes loading and preprocessing cases in parallel (BraTS scale: about
            2 s per case on one core; capped at :func:`runtime.cpu_budget`); the output does not
            depend on it, nor do the warnings (a worker's are re-issued in the caller, at their location).
        progress: show a tqdm progress bar.

    Returns:
        ``Path(out_file)``. Cases without a label file are skipped with a warning naming them.

    Raises:
        ValueError: bad ``fractions``, ``seed``, ``train_seed``, ``workers`` or ``shape`` (named), or a case id
            repeated in a ``Case`` list (named), all checked before any case is loaded; no labelled case; after
            loading, before writing: 10 or more BraTS-GLI cases with label 4 and no case with label 3 (BraTS
            2018–21 labels under 2023/2024 file names, whose ET would be read as resection cavity; named).
    """
    fractions = tuple(_check_fractions(fractions))  # split_cases's rule, checked before hours of loading
    check_int(seed, "seed")
    if isinstance(root_or_cases, (str, os.PathLike)):
        cases = list_cases(root_or_cases)
    else:
        cases = list(root_or_cases)
        if not cases or not all(isinstance(c, Case) for c in cases):
            raise ValueError("root_or_cases must be a dataset folder or a non-empty list of Case")
    shape = _check_shape(shape, 1, "shape")
    check_int(workers, "workers", minimum=1)
    check_int(train_seed, "train_seed", none_ok=True)
    labelled = [c for c in cases if ("seg" in c.paths or "label" in c.paths)]
    if len(labelled) < len(cases):
        unlabelled = [c.case_id for c in cases if not ("seg" in c.paths or "label" in c.paths)]
        warnings.warn(f"prepare_dataset: skipping {len(unlabelled)} case(s) without labels: {_few(unlabelled)}",
                      stacklevel=2)
    if not labelled:
        raise ValueError("prepare_dataset: no labelled cases")
    ids = [c.case_id for c in labelled]
    split_cases(ids, fractions, seed)  # repeated case ids (a hand-made Case list) refused before hours of loading
    parts, fill = None, None
    if train_seed is not None and train_seed != seed:
        split = split_cases(ids, fractions, seed)
        rows = bootstrap_cases(ids, split, train_seed)
        parts = [split[c] for c in ids]
        # each source case once (about a third of a bootstrap's training rows repeat one), copied to all its rows
        rows_of: dict[int, list[int]] = {}
        for i, (j, _) in enumerate(rows):
            rows_of.setdefault(j, []).append(i)
        labelled, ids, fill = [labelled[j] for j in rows_of], [cid for _, cid in rows], list(rows_of.values())
    outside: list[str] = []
    with_rc: list[str] = []  # BraTS-GLI cases (2023/2024 names) with label 4, read as the resection cavity
    n_gli, with_et = 0, 0  # BraTS-GLI cases, and those with label 3 (ET)

    def noted(results: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        nonlocal n_gli, with_et
        for case, out in zip(labelled, results):
            if out["label_outside_brain"]:
                outside.append(f"{case.case_id} ({out['label_outside_brain']})")
            if case.layout == "brats2023" and case.case_id.startswith(_GLI_PREFIX):
                n_gli += 1
                with_et += 3 in out["label_values"]
                if 4 in out["label_values"]:
                    with_rc.append(case.case_id)
            yield out
        # the last case is in: refuse before anything is written
        if len(with_rc) >= _MIN_CASES_LABEL_4_ONLY and not with_et:
            raise ValueError(
                f"prepare_dataset: {len(with_rc)} BraTS-GLI case(s) have label 4 and none of the {n_gli} BraTS-GLI "
                f"cases has label 3 ({_few(with_rc)}): these are almost certainly BraTS 2018-21 labels "
                "(4 = ET) under BraTS 2023/2024 file names, and reading 4 as the BraTS 2024 resection cavity would "
                "drop every ET voxel. Convert the seg files with brats_to_brats2023 (4 -> 3), or keep the BraTS "
                "2018-21 file names (<case>_{t1,t1ce,t2,flair,seg}); nothing was written (data/README.md)")

    outs = _map_cases(_load_and_preprocess, [(case, shape) for case in labelled], workers, "prepare", progress)
    path = _save_prepared(out_file, ids, noted(outs), shape, fractions, seed, parts, fill)
    if outside:  # the images are zero there: a misregistered seg, or a brain mask cut by intensities <= 0
        warnings.warn(f"prepare_dataset: {len(outside)} case(s) have tumour voxels outside the brain (every modality "
                      f"<= 0 there; those outside the brain's box are cropped away): {_few(outside)} (voxel counts)",
                      stacklevel=2)
    return path


def _save_prepared(out_file: str | Path, ids: list[str], outs: Iterator[dict[str, Any]], shape: tuple[int, ...],
                   fractions: Sequence[float], seed: int, parts: list[str] | None = None,
                   fill: list[list[int]] | None = None) -> Path:
    """Stack the preprocessed cases ``outs`` (in ``ids`` order, or output ``k`` into rows ``fill[k]``), split them
    (``parts``: the split, one part per row, instead of :func:`split_cases`), write the npz atomically."""
    n = len(ids)
    images = np.zeros((n, 4, *shape), np.float32)
    labels = np.zeros((n, *shape), np.uint8)
    brain = np.zeros((n, *shape), bool)
    stats = {k: np.zeros((n, 4), np.float32) for k in ("lo", "hi", "mean", "std")}
    for k, out in enumerate(outs):
        for i in fill[k] if fill is not None else [k]:
            images[i], labels[i], brain[i] = out["image"], out["classes"], out["brain"]
            for key in stats:
                stats[key][i] = out[key]
    if parts is None:
        split = split_cases(ids, fractions, seed)
        parts = [split[c] for c in ids]
    return atomic_save_npz(
        out_file,
        images=images,
        labels=labels,
        brain=brain,
        case_ids=np.asarray(ids, dtype=str),
        split=np.asarray(parts, dtype=str),
        **stats,
    )


def _generate_and_preprocess(job: tuple) -> dict[str, np.ndarray]:
    """One case of :func:`prepare_synthetic` (top level so worker processes can run it)."""
    case_seed_, shape, work_shape = job
    image, label = make_synthetic_case(case_seed_, shape)
    return preprocess_case(image, label, work_shape)


def prepare_synthetic(
    out_file: str | Path,
    n_cases: int,
    *,
    shape: tuple[int, int, int] = (96, 96, 96),
    work_shape: tuple[int, int, int] = (96, 96, 96),
    seed: int = 0,
    layout: str = "brats2021",
    fractions: Sequence[float] = (0.6, 0.15, 0.25),
    workers: int = 1,
    progress: bool = True,
    case_seeds: Sequence[int] | None = None,
) -> Path:
    """Generate synthetic cases and preprocess them in one pass, without writing NIfTI.

    The result is identical, array for array, to ``make_synthetic_dataset(root, n_cases,
    shape=shape, seed=seed, layout=layout)`` followed by ``prepare_dataset(root, out_file,
    work_shape, fractions=fractions, seed=seed)`` (NIfTI stores the float32 images and integer
    labels exactly), but skips writing, compressing and re-reading every volume: at BraTS scale
    (240×240×155) that is about half of the per-case cost (docs/benchmarks.md).

    Args:
        out_file: target ``prepared.npz``.
        n_cases: number of cases (>= 1).
        shape: generated grid; voxel size ``voxel_size_for_shape(shape)`` mm.
        work_shape: working grid of :func:`preprocess_case`.
        seed: dataset seed (case ``i`` uses ``case_seed(seed, i)``) and split seed.
        layout: the layout whose case ids are used (``case_ids_for``).
        fractions: (train, val, test) fractions for ``split_cases``.
        workers: processes generating and preprocessing cases in parallel (capped at
            :func:`runtime.cpu_budget`); the output does not depend on it.
        progress: show a tqdm progress bar.
        case_seeds: the generator seed of each case in place of ``case_seed(seed, i)``
            (:func:`synthetic_case_seeds`); the same with ``make_synthetic_dataset`` as above.

    Returns:
        ``Path(out_file)``.
    """
    shape = _check_case_args(n_cases, shape, seed, layout)
    work = _check_shape(work_shape, 1, "work_shape")  # the working grid only resamples: any positive size
    check_int(workers, "workers", minimum=1)
    ids = case_ids_for(layout, int(n_cases))
    split_cases(ids, fractions, seed)  # validate the fractions before hours of work
    seeds = _case_seeds(case_seeds, len(ids), seed)
    jobs = [(s, shape, work) for s in seeds]
    outs = _map_cases(_generate_and_preprocess, jobs, workers, "generate + prepare", progress)
    return _save_prepared(out_file, ids, outs, work, fractions, seed)


def npz_member_memmap(path: str | Path, key: str) -> np.memmap | None:
    """A read-only memory map of array ``key`` of an uncompressed ``.npz``.

    Hand-written because numpy memory-maps ``.npy`` files but not the members of an ``.npz``
    (``np.load`` ignores ``mmap_mode`` for archives). A member stored without compression (what
    ``np.savez`` and ``artefacts.atomic_save_npz`` write) is a plain ``.npy`` at a fixed offset;
    the zip's local header gives that offset and numpy's own header reader the layout.

    Args:
        path: an ``.npz`` file.
        key: the array's name.

    Returns:
        ``np.memmap`` (mode ``"r"``), or None when the member is absent, compressed, empty,
        holds Python objects or uses ``.npy`` format 3.0 (read it with ``np.load`` instead).
    """
    import struct
    import zipfile

    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        try:
            info = zf.getinfo(f"{key}.npy")
        except KeyError:
            return None
        if info.compress_type != zipfile.ZIP_STORED:
            return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        head = f.read(30)
        if len(head) < 30 or head[:4] != b"PK\x03\x04":
            raise ValueError(f"{path}: bad zip local header for {key}.npy")
        n_name, n_extra = struct.unpack("<HH", head[26:30])
        f.seek(info.header_offset + 30 + n_name + n_extra)
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):  # 3.0: utf-8 field names; leave those to np.load
            return None
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)  # numpy's own size limit on the header applies
        offset = f.tell()
    if dtype.hasobject or int(np.prod(shape)) == 0:
        return None
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C", offset=offset)


def load_prepared(path: str | Path, *, mmap_images: bool = False) -> dict[str, np.ndarray]:
    """Read and validate a ``prepared.npz``.

    Args:
        path: file written by ``prepare_dataset``.
        mmap_images: return ``images`` as a read-only memory map (:func:`npz_member_memmap`)
            instead of reading it: selecting a split then reads only that split's cases. At the
            ``paper`` profile's 380 cases the images are 22 GB; the other keys are small.

    Returns:
        dict with exactly ``PREPARED_KEYS`` (arrays in memory; ``images`` mapped if asked).

    Raises:
        FileNotFoundError / ValueError naming the file on a missing/corrupt file, missing
        keys, or inconsistent shapes/dtypes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prepared dataset not found (run the data notebook first)")
    try:
        mapped = npz_member_memmap(path, "images") if mmap_images else None
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files if not (k == "images" and mapped is not None)}
        if mapped is not None:
            data["images"] = mapped
    except Exception as exc:
        raise ValueError(f"{path}: cannot read prepared npz ({type(exc).__name__}: {exc})") from exc
    missing = [k for k in PREPARED_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path}: missing keys {missing} (expected {list(PREPARED_KEYS)})")
    extra = sorted(set(data) - set(PREPARED_KEYS))
    if extra:
        raise ValueError(f"{path}: unexpected keys {extra}")
    im = data["images"]
    if im.ndim != 5 or im.shape[1] != 4:
        raise ValueError(f"{path}: 'images' must be (N, 4, X, Y, Z), got {im.shape}")
    n, sp = im.shape[0], im.shape[2:]
    expect = {"labels": (n, *sp), "brain": (n, *sp), "case_ids": (n,), "split": (n,),
              "lo": (n, 4), "hi": (n, 4), "mean": (n, 4), "std": (n, 4)}
    for k, shp in expect.items():
        if data[k].shape != shp:
            raise ValueError(f"{path}: '{k}' has shape {data[k].shape}, expected {shp}")
    if im.dtype != np.float32 or data["labels"].dtype != np.uint8 or data["brain"].dtype != bool:
        raise ValueError(f"{path}: dtypes images {im.dtype}, labels {data['labels'].dtype}, brain {data['brain'].dtype}; "
                         "expected float32, uint8, bool")
    if data["labels"].size and data["labels"].max() > 3:
        raise ValueError(f"{path}: 'labels' must be class maps 0..3, max is {data['labels'].max()}")
    bad = sorted(set(data["split"].tolist()) - set(SPLITS))
    if bad:
        raise ValueError(f"{path}: 'split' has values {bad} outside {SPLITS}")
    return data


@dataclass
class PreparedData:
    """The prepared arrays with convenience accessors (``PreparedData.load(path).subset("train")``)."""

    images: np.ndarray
    labels: np.ndarray
    brain: np.ndarray
    case_ids: np.ndarray
    split: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def load(cls, path: str | Path) -> "PreparedData":
        """Read ``prepared.npz`` (validated by ``load_prepared``)."""
        return cls(**load_prepared(path))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, split: str) -> "PreparedData":
        """Cases of one split (``"train"``, ``"val"`` or ``"test"``)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        m = self.split == split
        return PreparedData(**{k: getattr(self, k)[m] for k in PREPARED_KEYS})

    def as_dict(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in PREPARED_KEYS}


# =========================================================================== analysis
def _dice_counts(tp: np.ndarray, n_pred: np.ndarray, n_true: int) -> np.ndarray:
    """Dice from counts with the BraTS empty policy (both empty → 1, empty truth only → 0)."""
    denom = n_pred + n_true
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 1.0)
    return d


def threshold_baseline(images: np.ndarray, classes: np.ndarray, brain: np.ndarray, *, n_thresholds: int = 256,
                       max_cases: int | None = None) -> pd.DataFrame:
    """Best single-modality, single-threshold segmentation of each region (an "is it too easy?" check).

    For each region, every modality and direction (``>`` t or ``<`` t, inside the brain) is tried
    with thresholds at quantiles of the pooled brain values (dense in the tails); the threshold is
    fit on the same cases it is scored on, so the Dice is an optimistic upper bound.

    Args:
        images: float ``(N, 4, X, Y, Z)`` (e.g. prepared z-scored images).
        classes: class maps ``(N, X, Y, Z)`` in 0..3.
        brain: bool ``(N, X, Y, Z)``.
        n_thresholds: number of candidate quantiles per modality (an int >= 4): half spread evenly over 0..1, a
            quarter in each tail (geometric from 1e-4 to 0.5), so 4 is the least that puts one in each part.
        max_cases: fit and score on at most this many cases, a seeded sample
            (``np.sort(np.random.default_rng(0).choice(N, max_cases, replace=False))``);
            None uses all. The search costs about 0.3 s per 144×176×144 case on one core, so
            at BraTS scale (hundreds of cases) a sample keeps the check to seconds.

    Returns:
        DataFrame with one row per region: ``region, modality, direction, threshold, dice_mean,
        dice_std, n_cases``.
    """
    images, classes, brain = np.asarray(images), np.asarray(classes), np.asarray(brain, bool)
    if images.ndim != 5 or images.shape[1] != len(MODALITIES):
        raise ValueError(f"images must be (N, 4, X, Y, Z), got {images.shape}")
    if classes.shape != (images.shape[0], *images.shape[2:]) or brain.shape != classes.shape:
        raise ValueError(f"classes {classes.shape} and brain {brain.shape} must be (N, X, Y, Z) matching images {images.shape}")
    check_int(n_thresholds, "n_thresholds", minimum=4)
    check_int(max_cases, "max_cases", minimum=1, none_ok=True)
    if max_cases is not None and images.shape[0] > max_cases:
        keep = np.sort(np.random.default_rng(0).choice(images.shape[0], int(max_cases), replace=False))
        images, classes, brain = images[keep], classes[keep], brain[keep]
    n = images.shape[0]
    regs = [regions(classes[i]) for i in range(n)]
    q = np.unique(np.concatenate([np.linspace(0, 1, n_thresholds // 2), np.geomspace(1e-4, 0.5, n_thresholds // 4),
                                  1 - np.geomspace(1e-4, 0.5, n_thresholds // 4)]))
    rng = np.random.default_rng(0)
    rows = []
    sorted_vals = [[np.sort(images[i, m][brain[i]]) for m in range(4)] for i in range(n)]
    for m in range(4):
        pooled = np.concatenate([sorted_vals[i][m] for i in range(n)])
        if pooled.size > 2_000_000:
            pooled = rng.choice(pooled, 2_000_000, replace=False)
        thr = np.unique(np.quantile(pooled, q)) if pooled.size else np.zeros(1)
        thr_mid = np.concatenate([thr, (thr[1:] + thr[:-1]) / 2])
        for region in REGIONS:
            dice = {">": np.zeros((n, thr_mid.size)), "<": np.zeros((n, thr_mid.size))}
            for i in range(n):
                allv = sorted_vals[i][m]
                tv = np.sort(images[i, m][regs[i][region] & brain[i]])
                nt = tv.size
                gt_all = allv.size - np.searchsorted(allv, thr_mid, side="right")
                gt_tp = nt - np.searchsorted(tv, thr_mid, side="right")
                lt_all = np.searchsorted(allv, thr_mid, side="left")
                lt_tp = np.searchsorted(tv, thr_mid, side="left")
                dice[">"][i] = _dice_counts(gt_tp, gt_all, nt)
                dice["<"][i] = _dice_counts(lt_tp, lt_all, nt)
            for direction, d in dice.items():
                mean = d.mean(axis=0)
                k = int(np.argmax(mean))
                rows.append({"region": region, "modality": MODALITIES[m], "direction": direction,
                             "threshold": float(thr_mid[k]), "dice_mean": float(mean[k]),
                             "dice_std": float(d[:, k].std()), "n_cases": n})
    df = pd.DataFrame(rows)
    best = df.loc[df.groupby("region", sort=False)["dice_mean"].idxmax()]
    return best.set_index("region").loc[list(REGIONS)].reset_index()


def region_volumes(
    classes_or_labels: np.ndarray,
    *,
    case_ids: Sequence[str] | None = None,
    voxel_volume_ml: float | None = None,
    convention: str = "auto",
) -> pd.DataFrame:
    """Per-case volumes of the classes (NCR, ED, ET) and regions (WT, TC).

    Args:
        classes_or_labels: ``(N, X, Y, Z)`` or one ``(X, Y, Z)`` volume: class maps (0..3) or
            BraTS 2018–21 labels ({0,1,2,4}).
        case_ids: names of the N cases (default ``case_0`` ...).
        voxel_volume_ml: volume of a voxel in ml (e.g. 0.001 at 1 mm); None → voxel counts.
        convention: ``"classes"``, ``"brats"`` or ``"auto"`` (a 4 means BraTS, a 3 means classes).

    Returns:
        DataFrame ``case_id, NCR, ED, ET, WT, TC, unit``.
    """
    arr, _ = _as_numpy(classes_or_labels, "classes_or_labels")
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"classes_or_labels must be (N, X, Y, Z) or (X, Y, Z), got {arr.shape}")
    if convention not in ("auto", "classes", "brats"):
        raise ValueError(f"convention must be 'auto', 'classes' or 'brats', got {convention!r}")
    if convention == "auto":
        has4, has3 = bool(np.any(arr == 4)), bool(np.any(arr == 3))
        if has3 and has4:
            raise ValueError("classes_or_labels holds both 3 and 4: neither class maps nor BraTS labels")
        convention = "brats" if has4 else "classes"
    cls = to_classes(arr) if convention == "brats" else _remap(arr, {0: 0, 1: 1, 2: 2, 3: 3}, "classes", "class-map")
    if case_ids is None:
        case_ids = [f"case_{i}" for i in range(cls.shape[0])]
    if len(case_ids) != cls.shape[0]:
        raise ValueError(f"case_ids has {len(case_ids)} names for {cls.shape[0]} cases")
    if voxel_volume_ml is not None and not voxel_volume_ml > 0:
        raise ValueError(f"voxel_volume_ml must be > 0, got {voxel_volume_ml}")
    scale = 1.0 if voxel_volume_ml is None else float(voxel_volume_ml)
    rows = []
    for cid, c in zip(case_ids, cls):
        cnt = np.bincount(c.ravel(), minlength=4)
        rows.append({"case_id": str(cid), "NCR": cnt[1] * scale, "ED": cnt[2] * scale, "ET": cnt[3] * scale,
                     "WT": (cnt[1] + cnt[2] + cnt[3]) * scale, "TC": (cnt[1] + cnt[3]) * scale,
                     "unit": "voxels" if voxel_volume_ml is None else "ml"})
    return pd.DataFrame(rows)
