"""One training loop for the baseline and both defenses.

The loop is generic in two places, so the defenses need no second loop:

* ``objective(logits, x, y) -> loss``: the loss. Default: MONAI Dice+CE on ``logits / T``
  (``T = config.temperature``; the distillation *teacher* is trained at ``T > 1``).
  Defensive distillation passes a :class:`robustseg_lib.defenses.DistillationObjective`
  that computes the teacher's soft labels on the same augmented batch.
* ``batch_hook(net, x, y, generator, brain) -> (x, y)``: called after augmentation and before
  the forward pass; ``brain`` is the batch's brain mask ``(B, 1, d, h, w)``, taken from the
  crop before the intensity augmentation (whose shift moves the background off zero, so
  ``x != 0`` no longer finds the brain). Adversarial training passes a
  :class:`robustseg_lib.defenses.AdversarialAugmenter` that replaces volumes by adversarial
  versions made against the current network, inside that mask.

Determinism: every random choice of step ``s`` of epoch ``e`` (batch order, crops, flips,
intensity jitter, adversarial eps) derives from ``(config.seed, e, s)``; the global torch RNG
(dropout) is forked for the run, seeded from ``config.seed`` and checkpointed, so the weights
depend neither on what the caller drew before nor on interruptions: a run killed after any
epoch and resumed from ``last.pt`` ends with the same weights as an uninterrupted run (CPU),
and the caller's global RNG state is left as it was.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.losses import DiceCELoss
from monai.transforms import Compose, RandCropByPosNegLabeld, RandFlipd, RandScaleIntensityd, RandShiftIntensityd
from tqdm import tqdm  # text bars: no ipywidgets needed, and papermill keeps them readable

from .artefacts import atomic_torch_save
from .checks import check_float, check_int
from .models import INFERENCE_MODES, predict_classes, resolve_device

__all__ = ["TrainConfig", "TrainResult", "TensorBatcher", "train", "dice_ce_objective", "Objective", "BatchHook", "AUGMENT_BACKENDS"]

#: Values of ``TrainConfig.augment_backend``.
AUGMENT_BACKENDS: tuple[str, ...] = ("auto", "monai", "tensor")

Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
BatchHook = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Generator, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train` (all plain values, stored in checkpoints).

    Attributes:
        epochs: passes; an epoch is ``steps_per_epoch`` optimizer steps.
        batch_size: volumes (or crops) per step.
        steps_per_epoch: None = ``ceil(n_train / batch_size)``.
        lr: peak learning rate (AdamW; linear warm-up, then cosine decay).
        weight_decay: AdamW weight decay.
        warmup_frac: fraction of all steps spent warming up.
        crop: training crop ``(d, h, w)`` (None = whole volumes); also the
            sliding-window size at validation.
        pos_fraction: fraction of crops centred on tumour (MONAI RandCropByPosNegLabeld).
        temperature: the loss sees ``logits / temperature`` (distillation teacher: T > 1).
        augment: random flips on all three axes, intensity scale and shift (MONAI).
        augment_backend: who crops and augments: ``"monai"`` (MONAI dictionary transforms, per
            sample), ``"tensor"`` (the same recipe as tensor ops on the training data's device,
            :class:`TensorBatcher`) or ``"auto"`` (``"tensor"`` when the training data sits on a
            GPU, else ``"monai"``: CPU runs keep the MONAI pipeline and their numbers).
        seed: the single seed of every random choice.
        sw_overlap: sliding-window overlap at validation.
        inference: validation on volumes larger than ``crop``: ``"sliding"`` (windows of
            ``crop``) or ``"whole"`` (one pass), as in :func:`robustseg_lib.models.inference_roi`.
        amp: bf16 autocast when training on CUDA (ignored on the CPU).
        val_every: validate every N epochs (and always after the last).
    """

    epochs: int = 20
    batch_size: int = 2
    steps_per_epoch: int | None = None
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_frac: float = 0.1
    crop: tuple[int, int, int] | None = None
    pos_fraction: float = 0.5
    temperature: float = 1.0
    augment: bool = True
    seed: int = 0
    sw_overlap: float = 0.25
    inference: str = "sliding"
    amp: bool = True
    val_every: int = 1
    augment_backend: str = "auto"

    def __post_init__(self) -> None:
        """Check every field and store it as a plain Python value (numpy scalars become ints, floats, bools and
        strs): the config goes into ``last.pt``, which ``torch.load(weights_only=True)`` refuses to read back
        if it holds numpy objects, and an unreadable checkpoint means a resume from scratch."""
        self.epochs = check_int(self.epochs, "epochs", minimum=1)  # type: ignore[assignment]
        self.batch_size = check_int(self.batch_size, "batch_size", minimum=1)  # type: ignore[assignment]
        self.steps_per_epoch = check_int(self.steps_per_epoch, "steps_per_epoch", minimum=1, none_ok=True)
        self.seed = check_int(self.seed, "seed")  # type: ignore[assignment]
        self.val_every = check_int(self.val_every, "val_every", minimum=1)  # type: ignore[assignment]
        self.lr = check_float(self.lr, "lr", minimum=0, strict=True)
        self.weight_decay = check_float(self.weight_decay, "weight_decay", minimum=0)
        self.temperature = check_float(self.temperature, "temperature", minimum=0, strict=True)
        self.warmup_frac = check_float(self.warmup_frac, "warmup_frac", minimum=0)
        if not self.warmup_frac < 1:
            raise ValueError(f"warmup_frac must be in [0, 1), got {self.warmup_frac}")
        self.sw_overlap = check_float(self.sw_overlap, "sw_overlap", minimum=0)
        if not self.sw_overlap < 1:
            raise ValueError(f"sw_overlap must be in [0, 1), got {self.sw_overlap}")
        self.pos_fraction = check_float(self.pos_fraction, "pos_fraction", minimum=0)
        if not self.pos_fraction <= 1:
            raise ValueError(f"pos_fraction must be in [0, 1], got {self.pos_fraction}")
        for name in ("augment", "amp"):
            v = getattr(self, name)
            if not isinstance(v, (bool, np.bool_)):
                raise ValueError(f"{name} must be a bool, got {v!r}")
            setattr(self, name, bool(v))
        if not isinstance(self.augment_backend, str) or self.augment_backend not in AUGMENT_BACKENDS:
            raise ValueError(f"augment_backend must be one of {AUGMENT_BACKENDS}, got {self.augment_backend!r}")
        self.augment_backend = str(self.augment_backend)
        if not isinstance(self.inference, str) or self.inference not in INFERENCE_MODES:
            raise ValueError(f"inference must be one of {INFERENCE_MODES}, got {self.inference!r}")
        self.inference = str(self.inference)
        if self.crop is not None:
            bad = ValueError(f"crop must be three positive ints or None, got {self.crop!r}")
            try:
                crop = tuple(check_int(c, "crop", minimum=1) for c in self.crop)
            except (TypeError, ValueError):
                raise bad from None
            if len(crop) != 3:
                raise bad
            self.crop = crop  # type: ignore[assignment]


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        history: one row per epoch: epoch, loss, lr, val_WT, val_TC, val_ET, val_mean (per-case
            means, BraTS empty policy), val_score (pooled Dice averaged over regions), seconds.
        best_epoch: epoch whose weights were kept (best ``val_score``; later epochs win ties).
        best_score: that ``val_score`` (NaN without validation data).
        seconds: wall time of this call.
        resumed_from: epoch the run resumed after (0 = fresh start).
    """

    history: pd.DataFrame
    best_epoch: int
    best_score: float
    seconds: float
    resumed_from: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


#: Device types on which ``TrainConfig.amp`` turns on bf16 autocast. Only CUDA gains from it; the CPU
#: supports bf16 autocast as well, which the tests use to run the GPU's mixed-precision path here.
AMP_DEVICE_TYPES: frozenset[str] = frozenset({"cuda"})


def dice_ce_objective(temperature: float = 1.0) -> Objective:
    """MONAI Dice + cross-entropy on ``logits / temperature`` against hard class maps.

    The Dice term covers the three tumour classes only (``include_background=False``, as
    BraTS scores only tumour regions); cross-entropy covers all four. Measured on the
    teaching data: test WT Dice 0.808 vs 0.798 with the background in the Dice term.

    Args:
        temperature: softmax temperature (1 for ordinary training).

    Returns:
        ``objective(logits, x, y) -> scalar``.
    """
    loss = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, squared_pred=False, smooth_nr=1e-5, smooth_dr=1e-5)

    def objective(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return loss(logits.float() / temperature, y[:, None])

    return objective


class _warmup_cosine:
    """LR factor: linear warm-up from 0.1 to 1, then cosine decay to 0.001.

    Hand-written because ``OneCycleLR`` divides by zero for short schedules (e.g. when
    ``warmup_frac * total_steps == 1``), which the smoke profile hits. A class, not a lambda,
    so ``LambdaLR.state_dict()`` stays loadable with ``weights_only=True``.
    """

    def __init__(self, total: int, warmup_frac: float) -> None:
        self.total = max(1, int(total))
        self.warm = max(1, int(round(warmup_frac * self.total)))

    def __call__(self, step: int) -> float:
        if step < self.warm:
            return 0.1 + 0.9 * step / self.warm
        progress = min(1.0, (step - self.warm) / max(1, self.total - self.warm))
        return 0.001 + (1 - 0.001) * 0.5 * (1 + math.cos(math.pi * progress))


def _augmenter(config: TrainConfig) -> Compose | None:
    """MONAI dictionary transforms applied per sample; seeded per (seed, epoch, step, sample).

    A brain mask (key ``brain``, optional) is cropped and flipped with the image; neither
    transform draws more random numbers for an extra key, so image and label are the same
    with or without it."""
    ts: list[Any] = []
    if config.crop is not None:
        ts.append(
            RandCropByPosNegLabeld(
                keys=["image", "label", "brain"], label_key="label", spatial_size=config.crop,
                pos=config.pos_fraction, neg=1.0 - config.pos_fraction, num_samples=1,
                allow_smaller=False, allow_missing_keys=True,
            )
        )
    if config.augment:
        ts += [RandFlipd(keys=["image", "label", "brain"], prob=0.5, spatial_axis=a, allow_missing_keys=True) for a in range(3)]
        ts += [
            RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
            RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
        ]
    return Compose(ts) if ts else None


def _sample_seed(seed: int, epoch: int, step: int, i: int) -> int:
    """A 32-bit seed for one random choice; ``step``/``i`` < 0 name special streams (order, hook)."""
    return int(np.random.SeedSequence([seed, epoch, step + 8, i + 8]).generate_state(1)[0])


def _data_signature(images: torch.Tensor, labels: torch.Tensor) -> str:
    """Hash of a strided sample of the training data (at most about a million values each, so it
    stays cheap for a GPU-resident BraTS-scale set); the network's layout is :func:`_network_layout`."""
    h = hashlib.sha1()
    for t in (images, labels):
        flat = t.reshape(-1)
        step = max(1, flat.numel() // 2**20)
        h.update(f"{tuple(t.shape)}".encode())
        h.update(flat[::step].detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def _network_layout(net: torch.nn.Module) -> list[str]:
    """What makes up a network apart from its weights, one entry per line: each module's name, class and
    settings (``extra_repr``: strides, a :class:`robustseg_lib.models.LogitScale` factor...), as
    :func:`robustseg_lib.models.weights_signature` hashes them, then each state-dict key and shape."""
    mods = [f"module {name or '(top)'}: {type(m).__module__}.{type(m).__qualname__}({m.extra_repr()})"
            for name, m in net.named_modules(remove_duplicate=False)]
    return mods + [f"tensor {k}: {tuple(v.shape)}" for k, v in net.state_dict().items()]


def _layout_difference(old: Any, new: list[str]) -> str:
    """The first entry where a checkpoint's recorded layout ``old`` and ``new`` differ, in words."""
    if not isinstance(old, list):
        return f"recorded as a {type(old).__name__}, not a list"
    for i, (a, b) in enumerate(zip(old, new)):
        if a != b:
            return f"entry {i}: checkpoint {str(a)[:200]!r}, this network {b[:200]!r}"
    i = min(len(old), len(new))
    if len(old) > len(new):
        return f"entry {i}: checkpoint {str(old[i])[:200]!r}, this network has none"
    return f"entry {i}: checkpoint has none, this network {new[i][:200]!r}"


def _plain(t: Any) -> torch.Tensor:
    """A MONAI MetaTensor (or tensor) as a plain torch.Tensor."""
    t = torch.as_tensor(t)
    return t.as_subclass(torch.Tensor) if hasattr(t, "as_tensor") else t


def _batch(
    images: torch.Tensor, labels: torch.Tensor, idx: list[int], aug: Compose | None, seed: int, epoch: int, step: int,
    with_brain: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The MONAI backend's batch: ``(images, labels, brain (B, 1, d, h, w) bool or None)``.

    The brain mask costs about 3 % of a CPU training step, so it is only made when asked for
    (when a batch hook will use it)."""
    xs, ys, bs = [], [], []
    for i, j in enumerate(idx):
        x, y = images[j].float(), labels[j].long()[None]
        d = {"image": x, "label": y}
        if with_brain:
            d["brain"] = (x != 0).any(0, keepdim=True)
        if aug is not None:
            aug.set_random_state(seed=_sample_seed(seed, epoch, step, i))
            d = aug(d)
            if isinstance(d, list):  # RandCropByPosNegLabeld returns a list of samples
                d = d[0]
        xs.append(_plain(d["image"]))
        ys.append(_plain(d["label"])[0].long())
        if with_brain:
            bs.append(_plain(d["brain"]).bool())
    brain = torch.stack(bs).contiguous() if with_brain else None
    return torch.stack(xs).contiguous(), torch.stack(ys).contiguous(), brain


def _kth_absent(present: np.ndarray, k: int) -> int:
    """The ``k``-th (0-based) non-negative integer not in ``present`` (sorted, unique).

    The ``k``-th background voxel from the foreground indices alone, by binary search (no
    background index list: that would be ~95 % of a BraTS volume, per case).
    """
    lo, hi = k, k + len(present)
    while lo < hi:  # smallest v with v - #(present <= v) >= k; it is not in present
        mid = (lo + hi) // 2
        if mid - int(np.searchsorted(present, mid, side="right")) < k:
            lo = mid + 1
        else:
            hi = mid
    return lo


class TensorBatcher:
    """Training batches cut and augmented by tensor ops on the device where the training set lives.

    The recipe of :func:`_augmenter`'s MONAI pipeline (``RandCropByPosNegLabeld`` with
    ``pos_fraction``, ``RandFlipd`` on each axis, ``RandScaleIntensityd(0.1)`` and
    ``RandShiftIntensityd(0.1)``, each at p = 0.5; the scale and shift apply to the whole crop,
    background included), with every choice drawn on the CPU from the same per-sample seeds (a
    different random stream from MONAI's, so not the same crops). Hand-written because MONAI's
    dictionary transforms run one sample at a time and its pos/neg crop computes the label's
    voxel indices and moves them to the CPU for every sample
    (``monai.transforms.utils.map_binary_to_indices``): on an H100, with 2 × 4 × 128³ crops of a
    resident training set, 50 profiled steps took 45.8 ms each with them (GPU busy 57 %) and 23.2 ms
    with this class (busy 91 %), against 21 ms for a bare forward/backward/AdamW step
    (docs/benchmarks.md).
    Here each case's foreground indices are computed once, crop centres are drawn on the CPU,
    the crop is a view of the resident volume, and nothing waits for the GPU.

    Args:
        labels: ``(N, D, H, W)`` class maps of the training set (any device; read once).
        config: the :class:`TrainConfig` (``crop``, ``pos_fraction``, ``augment``).
    """

    def __init__(self, labels: torch.Tensor, config: TrainConfig) -> None:
        lab = labels.detach().to("cpu", torch.uint8).numpy()
        self.shape = tuple(int(d) for d in lab.shape[1:])
        self.n_vox = int(np.prod(self.shape))
        self.fg = [np.flatnonzero(c.reshape(-1)) for c in lab]  # sorted voxel indices of label > 0
        self.crop, self.pos, self.augment = config.crop, float(config.pos_fraction), bool(config.augment)

    def _centre(self, j: int, rng: np.random.Generator) -> tuple[int, ...]:
        fg = self.fg[j]
        n_bg = self.n_vox - len(fg)
        use_fg = rng.random() < self.pos
        if (use_fg and len(fg) == 0) or (not use_fg and n_bg == 0):  # as MONAI: fall back to the other set
            use_fg = not use_fg
        if use_fg:
            flat = int(fg[rng.integers(len(fg))])
        else:
            flat = _kth_absent(fg, int(rng.integers(n_bg)))
        return tuple(int(c) for c in np.unravel_index(flat, self.shape))

    def sample(
        self, images: torch.Tensor, labels: torch.Tensor, j: int, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One augmented ``(image (C, d, h, w) float32, label (d, h, w) int64)`` of case ``j``
        and its brain mask ``(1, d, h, w)`` (bool; from the crop before the intensity jitter).

        Returns:
            The triple, on ``images``' device.
        """
        x, y = images[j], labels[j]
        if self.crop is not None:
            c = self._centre(j, rng)
            start = [min(max(ci - k // 2, 0), d - k) for ci, k, d in zip(c, self.crop, self.shape)]
            sl = tuple(slice(a, a + k) for a, k in zip(start, self.crop))
            x, y = x[(slice(None), *sl)], y[sl]
        x, y = x.float(), y.long()
        if self.augment:
            flips = [a for a in range(3) if rng.random() < 0.5]
            if flips:
                x, y = torch.flip(x, [a + 1 for a in flips]), torch.flip(y, flips)
        brain = (x != 0).any(0, keepdim=True)
        if self.augment:
            if rng.random() < 0.5:
                x = x * (1.0 + rng.uniform(-0.1, 0.1))
            if rng.random() < 0.5:
                x = x + rng.uniform(-0.1, 0.1)
        return x, y, brain

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, idx: list[int], seed: int, epoch: int, step: int,
        with_brain: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The batch of cases ``idx`` for step ``step`` of ``epoch`` (choices seeded like :func:`_batch`).

        Returns:
            ``(images (B, C, d, h, w) float32, labels (B, d, h, w) int64, brain (B, 1, d, h, w) bool)``;
            brain is None unless ``with_brain``.
        """
        out = [self.sample(images, labels, j, np.random.default_rng(_sample_seed(seed, epoch, step, i))) for i, j in enumerate(idx)]
        x, y = (torch.stack([o[k] for o in out]).contiguous() for k in range(2))
        return x, y, (torch.stack([o[2] for o in out]).contiguous() if with_brain else None)


def _validate(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, config: TrainConfig) -> dict[str, float]:
    from .metrics import confusion_matrix, dice_from_confusion  # local import: metrics pulls pandas/MONAI metrics

    dev = next(net.parameters()).device
    roi = None if config.inference == "whole" else config.crop
    preds = predict_classes(net, images.to(dev).float(), batch_size=config.batch_size, roi_size=roi, overlap=config.sw_overlap)
    cms = [confusion_matrix(p, t) for p, t in zip(preds, labels.to(preds.device))]
    rows = [dice_from_confusion(cm) for cm in cms]
    out = {f"val_{r}": float(np.mean([row[r] for row in rows])) for r in ("WT", "TC", "ET")}
    out["val_mean"] = float(np.mean([out["val_WT"], out["val_TC"], out["val_ET"]]))
    # Checkpoint selection uses the *pooled* Dice (2ΣTP / (ΣP + ΣT) over all validation voxels, i.e.
    # of the summed confusion matrices), averaged over regions: on a handful of cases the per-case
    # mean jumps by 1/n whenever a case without ET flips between "no ET predicted" (Dice 1) and one
    # stray voxel (Dice 0).
    pooled = list(dice_from_confusion(torch.stack(cms).sum(0)).values())
    out["val_score"] = float(np.mean(pooled))
    return out


def _check_data(images: torch.Tensor, labels: torch.Tensor, name: str) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 5:
        raise ValueError(f"{name}_images must be a (N, C, D, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    if not isinstance(labels, torch.Tensor) or labels.shape != images.shape[:1] + images.shape[2:]:
        raise ValueError(f"{name}_labels must be a (N, D, H, W) tensor matching {name}_images, got {getattr(labels, 'shape', None)}")
    if labels.dtype.is_floating_point:
        raise ValueError(f"{name}_labels must be an integer class map, got {labels.dtype}")


def train(
    net: torch.nn.Module,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    config: TrainConfig,
    *,
    val_images: torch.Tensor | None = None,
    val_labels: torch.Tensor | None = None,
    objective: Objective | None = None,
    batch_hook: BatchHook | None = None,
    ckpt_dir: str | Path | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
    stop_after_epoch: int | None = None,
    desc: str = "train",
    resume_tag: str = "",
) -> TrainResult:
    """Train ``net`` in place; on return it holds the best-validation weights, in eval mode.

    Every training forward runs with ``net`` in train mode, except the submodules the caller
    left in eval mode while ``net`` itself was in train mode (a frozen BatchNorm, an embedded
    frozen teacher): those stay in eval mode at every step, also after a validation pass or a
    ``batch_hook`` that switches modes. A network handed over in eval mode (e.g. from
    :func:`robustseg_lib.models.load_model`) is trained entirely in train mode.

    Args:
        net: the network (see :func:`robustseg_lib.models.build_unet`).
        train_images: ``(N, 4, D, H, W)`` float tensor (CPU, or already on ``device``:
            a resident GPU dataset avoids per-step host-device copies).
        train_labels: ``(N, D, H, W)`` class maps 0..3.
        config: :class:`TrainConfig`.
        val_images, val_labels: validation set (whole volumes) for per-epoch Dice and
            best-checkpoint selection; without them the last epoch is kept.
        objective: ``objective(logits, x, y) -> loss``; default :func:`dice_ce_objective`
            at ``config.temperature``. One with a ``to`` method (an ``nn.Module``, or a
            :class:`robustseg_lib.defenses.DistillationObjective`, which moves its teacher) is
            moved to the training device first, in place like ``net``.
        batch_hook: ``hook(net, x, y, generator, brain) -> (x, y)`` applied to each batch
            (adversarial training); ``brain`` is the batch's brain mask, see the module docstring.
        ckpt_dir: where ``last.pt`` (full state, every epoch) and ``best.pt`` go; an
            existing ``last.pt`` is resumed only if it was written with the same config,
            ``resume_tag``, network layout (each module's class and settings, ``extra_repr``,
            such as a :class:`robustseg_lib.models.LogitScale` factor; state-dict keys and shapes)
            and training data (a sampled hash); otherwise training starts afresh, printing what
            differs (the first differing layout entry), and overwrites it. A checkpoint that
            records no layout (an earlier version's) starts afresh too.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        progress: show a tqdm bar.
        stop_after_epoch: stop (as if killed) after this epoch; used to test resuming.
        desc: label of the progress bar.
        resume_tag: anything else the result depends on that ``config`` does not hold
            (objective and hook settings, the teacher's weights...), as a string.

    Returns:
        :class:`TrainResult`.
    """
    _check_data(train_images, train_labels, "train")
    if (val_images is None) != (val_labels is None):
        raise ValueError("give both val_images and val_labels, or neither")
    if val_images is not None:
        _check_data(val_images, val_labels, "val")  # type: ignore[arg-type]
    if config.crop is not None and any(c > s for c, s in zip(config.crop, train_images.shape[2:])):
        raise ValueError(f"crop {config.crop} is larger than the volumes {tuple(train_images.shape[2:])}")
    t0 = time.perf_counter()
    # the caller's frozen submodules (see the docstring); a net handed over in eval mode freezes nothing
    frozen = [m for m in net.modules() if not m.training] if net.training else []

    def train_mode() -> None:
        net.train()
        for m in frozen:
            m.training = False  # the flag alone, as the caller left it (its descendants keep their own)

    dev = resolve_device(device)
    net.to(dev)
    objective = objective or dice_ce_objective(config.temperature)
    move = getattr(objective, "to", None)
    if callable(move):  # e.g. a DistillationObjective's teacher: it must see the batches where the student does
        move(dev)
    n = len(train_images)
    spe = config.steps_per_epoch or math.ceil(n / config.batch_size)
    total = config.epochs * spe
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _warmup_cosine(total, config.warmup_frac))
    backend = config.augment_backend
    if backend == "auto":
        backend = "tensor" if train_images.device.type == "cuda" else "monai"
    aug = _augmenter(config) if backend == "monai" else None
    batcher = TensorBatcher(train_labels, config) if backend == "tensor" else None
    use_amp = config.amp and dev.type in AMP_DEVICE_TYPES
    cfg_dict = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}

    history: list[dict[str, float]] = []
    best_score, best_epoch, best_state = -math.inf, 0, None
    start_epoch = 0
    rng_state: torch.Tensor | None = None  # the global torch RNG (dropout) at the start of the first epoch to run
    ckpt = Path(ckpt_dir) if ckpt_dir is not None else None
    signature = _data_signature(train_images, train_labels) if ckpt is not None else ""
    layout = _network_layout(net) if ckpt is not None else []
    if ckpt is not None and (ckpt / "last.pt").is_file():
        try:
            state = torch.load(ckpt / "last.pt", map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated by a kill mid-write elsewhere, or not ours: never unpickle, start afresh
            print(f"{ckpt / 'last.pt'}: unreadable checkpoint ({type(exc).__name__}); starting afresh")
            state = {}
        same = {"config": cfg_dict, "n_train": n, "resume_tag": resume_tag, "signature": signature, "layout": layout}
        if not isinstance(state, dict):
            state = {}
        if state and "layout" not in state:  # written before the layout was recorded: its signature hashed other things
            print(f"{ckpt / 'last.pt'}: written by an earlier version of train() (no network layout recorded); starting afresh")
        elif state and all(state.get(k) == v for k, v in same.items()):
            net.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            rng_state = state["torch_rng"]
            start_epoch = int(state["epoch"])
            history = list(state["history"])
            best_score, best_epoch, best_state = float(state["best_score"]), int(state["best_epoch"]), state["best_state"]
        elif state:
            what = {"config": "config", "n_train": "training-set size", "resume_tag": "resume_tag", "signature": "training data", "layout": "network layout"}
            differ = sorted({what[k] for k, v in same.items() if state.get(k) != v})
            if state["layout"] != layout:
                differ[differ.index("network layout")] += f" ({_layout_difference(state['layout'], layout)})"
            print(f"{ckpt / 'last.pt'}: written with another {', '.join(differ)}; starting afresh")

    # The global torch RNG (dropout draws from it) runs in a fork: seeded from config.seed on a fresh start, restored
    # from the checkpoint on a resume, and the caller's state put back on return, so no run depends on what the
    # caller drew before (CPU; on CUDA the device's RNG is forked and seeded too, dropout there is not bit-exact).
    fork_devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices, device_type="cuda"):
        if rng_state is None:
            rng_seed = _sample_seed(config.seed, 0, -3, 0)  # stream "-3": apart from the order's (-1) and the samples'
            torch.default_generator.manual_seed(rng_seed)
            for d in fork_devices:
                with torch.cuda.device(d):
                    torch.cuda.manual_seed(rng_seed)
        else:
            torch.set_rng_state(rng_state)
        bar = tqdm(total=total, initial=start_epoch * spe, desc=desc, disable=not progress, leave=False)
        for epoch in range(start_epoch + 1, config.epochs + 1):
            train_mode()
            te = time.perf_counter()
            perm_gen = torch.Generator().manual_seed(_sample_seed(config.seed, epoch, -1, 0))
            order: list[int] = []
            while len(order) < spe * config.batch_size:
                order += torch.randperm(n, generator=perm_gen).tolist()
            losses = []
            for step in range(spe):
                idx = order[step * config.batch_size : (step + 1) * config.batch_size]
                if batcher is not None:
                    x, y, brain = batcher(train_images, train_labels, idx, config.seed, epoch, step, with_brain=batch_hook is not None)
                else:
                    x, y, brain = _batch(train_images, train_labels, idx, aug, config.seed, epoch, step, with_brain=batch_hook is not None)
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                if batch_hook is not None:
                    hook_gen = torch.Generator().manual_seed(_sample_seed(config.seed, epoch, step, -2))
                    x, y = batch_hook(net, x, y, hook_gen, brain.to(dev, non_blocking=True))  # type: ignore[union-attr]
                    train_mode()
                opt.zero_grad(set_to_none=True)
                with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
                    logits = net(x)
                loss = objective(logits, x, y)
                loss.backward()
                opt.step()
                sched.step()
                # kept on the device and read once per epoch: a float() here would make the CPU wait for
                # every step, leaving the GPU idle while the next step is launched
                losses.append(loss.detach())
                bar.update(1)
                if step % 25 == 0 or step == spe - 1:
                    bar.set_postfix(epoch=epoch, loss=f"{float(losses[-1]):.3f}")
            loss_values = torch.stack(losses).float().cpu().tolist()
            row: dict[str, float] = {"epoch": epoch, "loss": float(np.mean(loss_values)), "lr": float(sched.get_last_lr()[0])}
            if val_images is not None and (epoch % config.val_every == 0 or epoch == config.epochs):
                row.update(_validate(net, val_images, val_labels, config))  # type: ignore[arg-type]
                score = row["val_score"]
            else:
                score = -math.inf if val_images is not None else float(epoch)
            row["seconds"] = time.perf_counter() - te
            history.append(row)
            if score >= best_score:
                best_score, best_epoch = score, epoch
                best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
            if ckpt is not None:
                atomic_torch_save(
                    {
                        "model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "torch_rng": torch.get_rng_state(), "epoch": epoch, "history": history, "config": cfg_dict,
                        "n_train": n, "resume_tag": resume_tag, "signature": signature, "layout": layout, "best_score": best_score, "best_epoch": best_epoch, "best_state": best_state,
                    },
                    ckpt / "last.pt",
                )
            if stop_after_epoch is not None and epoch >= stop_after_epoch and epoch < config.epochs:
                bar.close()
                return TrainResult(pd.DataFrame(history), best_epoch, best_score, time.perf_counter() - t0, start_epoch, {"stopped": True})
        bar.close()
        if best_state is not None:
            net.load_state_dict(best_state)
            if ckpt is not None:
                atomic_torch_save(best_state, ckpt / "best.pt")
    net.eval()
    score_out = best_score if val_images is not None else float("nan")
    return TrainResult(pd.DataFrame(history), best_epoch, score_out, time.perf_counter() - t0, start_epoch)
