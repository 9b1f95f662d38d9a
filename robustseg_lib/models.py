"""3D UNet model zoo (MONAI networks), checkpoint save/load and whole-volume prediction."""

from __future__ import annotations

import math
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import BasicUNet, DynUNet, UNet

from .artefacts import atomic_torch_save
from .runtime import resolve_device  # defined there: runtime (imported by the data workers) must not import MONAI

__all__ = ["MODEL_NAMES", "LogitScale", "weights_signature", "build_unet", "save_model", "load_model", "predict", "predict_classes", "resolve_device", "model_spec", "INFERENCE_MODES", "spatial_divisor", "inference_roi"]

#: How a network meets volumes larger than its training crop: MONAI sliding-window inference
#: over windows of the crop, or the whole volume in one pass (the network is fully convolutional).
INFERENCE_MODES: tuple[str, ...] = ("sliding", "whole")

#: Defaults per architecture; every key can be overridden through ``build_unet(**kwargs)``.
_DEFAULTS: dict[str, dict[str, Any]] = {
    # MONAI's residual UNet (Kerfoot et al.), the paper-style encoder-decoder with skip connections.
    "unet": {"channels": (16, 32, 64, 128), "strides": (2, 2, 2), "num_res_units": 1, "norm": "instance", "dropout": 0.0},
    # The plain two-conv-per-level UNet of Ronneberger/Çiçek (3D UNet), as in MONAI's BasicUNet.
    "basicunet": {"features": (16, 16, 32, 64, 128, 16), "norm": "instance", "dropout": 0.0},
    # nnU-Net-style DynUNet (Isensee et al.).
    "dynunet": {"filters": (16, 32, 64, 128), "kernel_size": (3, 3, 3, 3), "strides": (1, 2, 2, 2), "norm_name": "instance"},
}

MODEL_NAMES: tuple[str, ...] = tuple(_DEFAULTS)


def build_unet(
    name: str = "unet", in_channels: int = 4, num_classes: int = 4, *, seed: int | None = None, **kwargs: Any
) -> torch.nn.Module:
    """Build a 3D segmentation network returning raw logits ``(N, num_classes, D, H, W)``.

    Args:
        name: one of ``MODEL_NAMES`` (``"unet"``, ``"basicunet"``, ``"dynunet"``).
        in_channels: input channels (4 MR series).
        num_classes: output classes (background, NCR, ED, ET).
        seed: if given, the weights are initialised from this seed without touching
            the global RNG state.
        **kwargs: architecture options overriding the defaults (e.g. ``channels=(8, 16, 32)``).

    Returns:
        The network (on the CPU). Inputs must have spatial sizes divisible by
        the product of the strides (8 for the defaults).
    """
    if name not in _DEFAULTS:
        raise ValueError(f"unknown model name {name!r}; known: {', '.join(MODEL_NAMES)}")
    if in_channels < 1 or num_classes < 2:
        raise ValueError(f"in_channels must be >= 1 and num_classes >= 2, got {in_channels}, {num_classes}")
    opts = {**_DEFAULTS[name], **kwargs}
    for key, val in list(opts.items()):  # profiles give lists; MONAI wants tuples
        if isinstance(val, list):
            opts[key] = tuple(val)

    def make() -> torch.nn.Module:
        if name == "unet":
            channels = tuple(opts.pop("channels"))
            strides = tuple(opts.pop("strides", (2,) * (len(channels) - 1)))
            if len(strides) != len(channels) - 1:
                raise ValueError(f"unet: len(strides) must be len(channels) - 1, got {strides} for {channels}")
            return UNet(spatial_dims=3, in_channels=in_channels, out_channels=num_classes, channels=channels, strides=strides, **opts)
        if name == "basicunet":
            return BasicUNet(spatial_dims=3, in_channels=in_channels, out_channels=num_classes, **opts)
        filters = tuple(opts.pop("filters"))
        kernel = tuple(opts.pop("kernel_size"))
        strides = tuple(opts.pop("strides"))
        if not len(filters) == len(kernel) == len(strides):
            raise ValueError("dynunet: filters, kernel_size and strides must have the same length")
        return DynUNet(
            spatial_dims=3, in_channels=in_channels, out_channels=num_classes, kernel_size=kernel,
            strides=strides, upsample_kernel_size=strides[1:], filters=filters, **opts,
        )

    try:
        if seed is None:
            return make()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return make()
    except TypeError as exc:  # an unknown kwarg for that architecture
        raise ValueError(f"bad options for model {name!r}: {exc}") from exc


class LogitScale(torch.nn.Module):
    """Wrap a network so its logits are multiplied by a fixed ``scale``.

    Two uses. (1) Attacking ``LogitScale(student, 1/T)`` undoes the softmax saturation of a
    distilled network deployed at T = 1 (Carlini & Wagner, 2016): same argmax, so the same
    predictions, but gradients of the cross-entropy no longer vanish. (2) Training
    ``LogitScale(net, T)`` at temperature T is the *output-scaled parametrisation* of a
    network trained at T: the same function class (the factor could be folded into the
    last layer), but the loss at T sees exactly the inner network's logits, so the
    optimiser does not have to grow the output weights T-fold first.

    Args:
        net: the wrapped network.
        scale: the factor, finite and > 0.
    """

    def __init__(self, net: torch.nn.Module, scale: float) -> None:
        super().__init__()
        try:
            value = float(scale)
        except (TypeError, ValueError):
            value = math.nan
        if not (math.isfinite(value) and value > 0):  # inf would make every logit ±inf and the softmax NaN
            raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
        self.net = net
        self.scale = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * self.scale

    def extra_repr(self) -> str:
        # repr of a float round-trips exactly: weights_signature reads the factor from here
        return f"scale={self.scale!r}"


#: Versions the byte stream :func:`weights_signature` hashes: a signature of another version never equals this one's,
#: so a resume tag recorded with it reads as "another tag" (training starts afresh) instead of matching by accident.
_SIGNATURE_HEADER = b"robustseg weights_signature v2\n"


def weights_signature(net: torch.nn.Module) -> str:
    """SHA-1 of everything that makes up a network's function: tells two networks apart, e.g. in a
    training ``resume_tag`` that depends on a teacher. Two networks that compute different outputs
    never share a signature; the same network (moved between devices, or in another train/eval mode,
    or rebuilt in another process) keeps it.

    The hashed stream is ``_SIGNATURE_HEADER``, then for each module (``named_modules`` order)
    ``"{name}:{module}.{qualname}({extra_repr})\n"`` (layer settings such as strides and
    :class:`LogitScale`'s factor), then for each parameter and buffer, persistent or not
    (``named_parameters`` then ``named_buffers``, shared ones under every name),
    ``"{name}:{shape tuple}:{dtype}\n"`` followed by its exact bytes in its own dtype.

    Args:
        net: any module.

    Returns:
        40 hex digits.
    """
    import hashlib

    if not isinstance(net, torch.nn.Module):
        raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
    h = hashlib.sha1(_SIGNATURE_HEADER)
    for name, m in net.named_modules(remove_duplicate=False):
        h.update(f"{name}:{type(m).__module__}.{type(m).__qualname__}({m.extra_repr()})\n".encode())
    tensors = [*net.named_parameters(remove_duplicate=False), *net.named_buffers(remove_duplicate=False)]
    for k, v in tensors:
        h.update(f"{k}:{tuple(v.shape)}:{v.dtype}\n".encode())
        raw = v.detach().cpu().resolve_conj().resolve_neg().contiguous().reshape(-1)
        h.update(raw.view(torch.uint8).numpy().tobytes())  # the dtype's own bytes (bfloat16 too: numpy has none)
    return h.hexdigest()


def save_model(net: torch.nn.Module, path: str | Path, spec: dict[str, Any]) -> Path:
    """Save deployed weights with the spec needed to rebuild the network (atomic write).

    Args:
        net: the network.
        path: target ``.pt`` file.
        spec: ``{"name": ..., "kwargs": {...}, ...}`` made of plain Python types (numpy scalars and
            arrays are stored as their Python values and lists; anything else is a ValueError). A
            :class:`LogitScale` network is stored as its inner network plus ``"logit_scale"``
            (the product of nested factors) in the spec, which :func:`load_model` restores;
            any ``logit_scale`` already in ``spec`` is replaced by the network's own.

    Returns:
        The path written.
    """
    if "name" not in spec:
        raise ValueError("spec must contain the architecture 'name'")
    scale = 1.0
    while isinstance(net, LogitScale):  # the factor is the network's, whatever the given spec says
        scale, net = scale * net.scale, net.net
    spec = {k: v for k, v in spec.items() if k != "logit_scale"}
    if scale != 1.0:
        spec["logit_scale"] = scale
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    return atomic_torch_save({"spec": _plain(spec), "state_dict": state}, path)


def _plain(obj: Any, key: str = "spec") -> Any:
    """The spec as plain JSON-like Python values, so it loads under ``weights_only=True``.

    Tuples become lists, numpy scalars their Python value (``np.int64(8)`` → ``8``; ``np.float64`` too, which
    would pass as a float but is pickled as a numpy object) and numpy arrays nested lists; dicts and lists are
    walked through.

    Args:
        obj: the value.
        key: where it sits in the spec (``spec['kwargs']['channels'][0]``), for the message.

    Returns:
        The plain value.

    Raises:
        ValueError: naming the key, for a dict key that is not a str or a value that is none of None, bool, int,
            float, str, list, tuple, dict or a numpy scalar or array (it used to be stored as ``str(value)``,
            which :func:`load_model` then failed on).
    """
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    elif isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ValueError(f"{key} has a key {k!r} of type {type(k).__name__}; spec keys must be str")
            out[str.__str__(k)] = _plain(v, f"{key}[{str.__str__(k)!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [_plain(v, f"{key}[{i}]") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, int):  # int(), float(), str.__str__(): subclasses (IntEnum...) as their plain value
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, str):
        return str.__str__(obj)
    raise ValueError(f"{key} must be a plain value (None, bool, int, float, str, list, dict or numpy), got {type(obj).__name__}: {obj!r}")


#: The notebook that writes each model of the chain, for the message when its file is missing.
_TRAINED_BY = {"baseline": "notebook 02_unet", "distilled": "notebook 06_distillation",
               "advtrain": "notebook 07_adversarial_training"}


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load a model written by :func:`save_model` (``weights_only=True``; no unpickling).

    Args:
        path: the ``.pt`` file.
        device: where to put the network.

    Returns:
        ``(net in eval mode, spec)``; wrapped in :class:`LogitScale` when the spec has a
        ``logit_scale`` other than 1.

    Raises:
        FileNotFoundError: no such file. ValueError naming the file: unreadable, not a model file, a spec
            that builds no network (bad name, kwargs or logit_scale), or weights that do not fit it.
    """
    path = Path(path)
    if not path.is_file():
        by = _TRAINED_BY.get(path.stem.removesuffix("_static"), "the notebook that trains it")
        raise FileNotFoundError(f"{path}: no such checkpoint (run {by} first, or `robustseg reproduce`)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or not a checkpoint
        raise ValueError(f"{path}: cannot read checkpoint: {exc}") from exc
    if not isinstance(blob, dict) or "spec" not in blob or "state_dict" not in blob:
        raise ValueError(f"{path}: not a robustseg model file (missing 'spec'/'state_dict')")
    spec = blob["spec"]
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"{path}: the model spec has no network 'name'")
    kwargs = spec.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise ValueError(f"{path}: the model spec's 'kwargs' must be a dict, got {type(kwargs).__name__}")
    scale = spec.get("logit_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"{path}: the model spec's 'logit_scale' must be a finite number > 0, got {scale!r}")
    try:
        net = build_unet(spec["name"], **kwargs)
    except (ValueError, TypeError) as exc:  # the spec names no network build_unet can make
        raise ValueError(f"{path}: the model spec does not build a network: {exc}") from exc
    try:
        net.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:  # keys or shapes do not fit the spec's network
        raise ValueError(f"{path}: weights do not fit the {spec['name']!r} network of its spec: {exc}") from exc
    scale = float(scale)
    if scale != 1.0:
        net = LogitScale(net, scale)
    return net.to(resolve_device(device)).eval(), spec


def predict(
    net: torch.nn.Module,
    image: torch.Tensor,
    *,
    roi_size: tuple[int, int, int] | None = None,
    overlap: float = 0.25,
    sw_batch_size: int = 2,
    mode: str = "gaussian",
) -> torch.Tensor:
    """Whole-volume logits with MONAI sliding-window inference.

    Args:
        net: the network (used in its current mode; call ``net.eval()`` first).
        image: ``(N, C, D, H, W)`` or ``(C, D, H, W)`` tensor, any spatial size.
        roi_size: window size (the training crop); None = the whole volume in one pass.
        overlap: window overlap fraction in [0, 1).
        sw_batch_size: windows per forward pass.
        mode: blending, ``"gaussian"`` or ``"constant"``.

    Returns:
        Logits ``(N, num_classes, D, H, W)`` (no batch dim added back if none was given).
    """
    if image.ndim not in (4, 5):
        raise ValueError(f"image must be (N, C, D, H, W) or (C, D, H, W), got shape {tuple(image.shape)}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    squeeze = image.ndim == 4
    x = image[None] if squeeze else image
    if roi_size is None or tuple(roi_size) == tuple(x.shape[2:]):
        out = net(x)
    else:
        out = sliding_window_inference(x, tuple(roi_size), sw_batch_size, net, overlap=overlap, mode=mode)
    return out[0] if squeeze else out


@torch.no_grad()
def predict_classes(net: torch.nn.Module, images: torch.Tensor, *, batch_size: int = 2, **kwargs: Any) -> torch.Tensor:
    """Class maps ``(N, D, H, W)`` (argmax of :func:`predict`), evaluated in batches.

    Args:
        net: the network (put in eval mode for the call; every submodule's mode is restored afterwards).
        images: ``(N, C, D, H, W)`` tensor (on the net's device or CPU).
        batch_size: volumes per forward pass.
        **kwargs: forwarded to :func:`predict` (roi_size, overlap, ...).

    Returns:
        int64 class maps on the images' device.
    """
    flags = [(m, m.training) for m in net.modules()]  # each submodule's own mode: a mixed-mode net comes back mixed
    net.eval()
    try:
        param = next(net.parameters(), None)  # a parameter-free module runs where the images are
        dev = images.device if param is None else param.device
        outs = [predict(net, images[i : i + batch_size].to(dev), **kwargs).argmax(1).to(images.device) for i in range(0, len(images), batch_size)]
    finally:
        for m, flag in flags:
            m.training = flag
    return torch.cat(outs)


def model_spec(
    name: str = "unet",
    *,
    width: int = 16,
    levels: int = 4,
    crop: Sequence[int] | None = None,
    overlap: float = 0.25,
    inference: str = "sliding",
) -> dict[str, Any]:
    """A plain-data model spec: architecture, sizes from one width/depth, and the inference window.

    Args:
        name: architecture (see ``MODEL_NAMES``).
        width: channels at the first level, doubled at each level.
        levels: resolution levels (the volume must be divisible by ``2 ** (levels - 1)``).
        crop: training crop, also the sliding-window size (None = whole volumes).
        overlap: sliding-window overlap.
        inference: ``"sliding"`` (windows of ``crop`` over larger volumes) or ``"whole"`` (one
            pass over the whole volume; its sides must be divisible by :func:`spatial_divisor`).

    Returns:
        ``{"name", "kwargs", "crop", "overlap", "inference"}``, accepted by :func:`build_unet` and :func:`save_model`.
    """
    if name not in _DEFAULTS:
        raise ValueError(f"unknown model name {name!r}; known: {', '.join(MODEL_NAMES)}")
    if inference not in INFERENCE_MODES:
        raise ValueError(f"inference must be one of {INFERENCE_MODES}, got {inference!r}")
    if width < 1 or levels < 2:
        raise ValueError(f"width must be >= 1 and levels >= 2, got width={width}, levels={levels}")
    chans = [width * 2**i for i in range(levels)]
    if name == "unet":
        kwargs: dict[str, Any] = {"channels": chans, "strides": [2] * (levels - 1)}
    elif name == "basicunet":
        if levels != 5:  # BasicUNet has a fixed depth of 5 feature levels
            chans = [width * 2 ** min(i, levels - 1) for i in range(5)]
        kwargs = {"features": [chans[0], *chans[:4], chans[0]]}
    else:
        kwargs = {"filters": chans, "kernel_size": [3] * levels, "strides": [1] + [2] * (levels - 1)}
    return {"name": name, "kwargs": kwargs, "crop": list(crop) if crop is not None else None, "overlap": float(overlap), "inference": inference}


def spatial_divisor(spec: dict[str, Any]) -> int:
    """The number every spatial side must be divisible by for one pass of the network in ``spec``.

    Args:
        spec: a model spec (:func:`model_spec` or a checkpoint's).

    Returns:
        The product of the downsampling strides; 1 for BasicUNet, whose decoder pads odd sides.
    """
    name, kw = spec.get("name"), {**_DEFAULTS.get(str(spec.get("name")), {}), **spec.get("kwargs", {})}
    if name == "basicunet":
        return 1
    if name == "unet":
        strides = kw.get("strides") or [2] * (len(kw["channels"]) - 1)
    elif name == "dynunet":
        strides = kw["strides"]
    else:
        raise ValueError(f"spec has unknown model name {name!r}; known: {', '.join(MODEL_NAMES)}")
    per_axis = [1, 1, 1]
    for st in strides:  # a stride is an int or one value per axis (anisotropic DynUNet)
        for ax, v in enumerate(st if isinstance(st, (list, tuple)) else (st,) * 3):
            per_axis[ax] *= int(v)
    return max(per_axis)  # conservative for anisotropic strides


def inference_roi(spec: dict[str, Any], shape: Sequence[int]) -> tuple[int, int, int] | None:
    """The sliding-window size for volumes of ``shape`` under ``spec``, or None for one pass.

    Args:
        spec: a model spec; ``spec["inference"]`` (default ``"sliding"``) picks the mode.
        shape: spatial shape ``(D, H, W)`` of the volumes.

    Returns:
        ``spec["crop"]`` when sliding over volumes that differ from it; None when the volume
        equals the crop, there is no crop, or ``inference == "whole"``.

    Raises:
        ValueError: unknown mode, or (``"whole"``) a side not divisible by :func:`spatial_divisor`.
    """
    mode = spec.get("inference", "sliding")
    if mode not in INFERENCE_MODES:
        raise ValueError(f"spec['inference'] must be one of {INFERENCE_MODES}, got {mode!r}")
    shape = tuple(int(v) for v in shape)
    crop = spec.get("crop")
    if mode == "whole":
        div = spatial_divisor(spec)
        if any(v % div for v in shape):
            raise ValueError(
                f"inference='whole' needs volume sides divisible by {div} for this network; the volumes are {shape} "
                "(choose a work_shape divisible by it, or inference='sliding')"
            )
        return None
    if crop is None or tuple(crop) == shape:
        return None
    return tuple(int(c) for c in crop)  # type: ignore[return-value]
