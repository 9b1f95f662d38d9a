"""Run-time helpers every notebook calls first: seeding, device, versions, git commit."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import random
import subprocess
from pathlib import Path

import numpy as np
import torch

from .artefacts import RunPaths
from .models import resolve_device

__all__ = ["seed_everything", "git_sha", "package_versions", "print_config", "setup_run"]

_PACKAGES = ("robustseg", "torch", "monai", "numpy", "scipy", "pandas", "nibabel", "nilearn", "papermill", "matplotlib", "seaborn")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) and make CPU kernels deterministic.

    Args:
        seed: the run's seed.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    torch.manual_seed(int(seed))
    torch.backends.cudnn.benchmark = False


def git_sha(path: str | Path | None = None) -> str:
    """The current git commit of the checkout holding this package ("unknown" outside git)."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that matter for reproducibility, plus Python."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def print_config(device: str | torch.device | None = None) -> None:
    """Print versions, device, threads and git commit (the notebooks' Setup cell)."""
    for k, v in package_versions().items():
        print(f"{k:>11}: {v}")
    dev = resolve_device(device or "auto")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    print(f"{'device':>11}: {dev} ({name}); torch threads: {torch.get_num_threads()}; cores: {os.cpu_count()}")
    print(f"{'git':>11}: {git_sha()}")


def setup_run(run_dir: str | Path, seed: int, device: str = "auto") -> tuple[RunPaths, torch.device]:
    """Resolve the run folder, device and seed for a notebook.

    Args:
        run_dir: the run folder (created if missing).
        seed: the seed.
        device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"`` or ``"cuda"``.

    Returns:
        ``(RunPaths, torch.device)``.
    """
    if not str(run_dir):
        raise ValueError("run_dir must be a non-empty path")
    seed_everything(seed)
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    paths = RunPaths(run_dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    return paths, dev
