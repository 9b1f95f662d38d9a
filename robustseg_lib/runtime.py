"""Run-time helpers every notebook calls first: seeding, device, CPU threads, versions, git commit."""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import random
import subprocess
from pathlib import Path

import numpy as np
import torch

from .artefacts import RunPaths
from .checks import check_int

__all__ = ["seed_everything", "git_sha", "package_versions", "print_config", "setup_run", "cpu_budget", "cgroup_cpu_limit", "limit_threads", "machine_info", "machine_summary", "resolve_device", "short_sha"]

_PACKAGES = ("robustseg", "torch", "monai", "numpy", "scipy", "pandas", "nibabel", "nilearn", "papermill", "matplotlib", "seaborn")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) and turn off cuDNN's autotuner.

    CPU kernels need nothing more to repeat bit for bit on one machine at one thread count (the test suite checks a
    repeated training weight for weight); GPU runs are repeatable only up to cuDNN/cuBLAS nondeterminism, and the GPU
    path turns the autotuner back on for speed (docs/design.md).

    Args:
        seed: the run's seed.
    """
    check_int(seed, "seed")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    torch.manual_seed(int(seed))
    torch.backends.cudnn.benchmark = False


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Resolve ``"auto"`` to CUDA when available, else CPU.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device``.

    Returns:
        The torch device. Raises ValueError naming ``device`` when CUDA is requested but absent or the
        string names no device.
    """
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise ValueError(f"device must be a string or torch.device, got {type(device).__name__}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:  # torch's own message lists every backend type; name the parameter first
        raise ValueError(f"device={device!r} is not a device: use 'auto', 'cpu', 'cuda' or 'cuda:N' ({e})") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    return dev


def _quota_cores(quota: str, period: str) -> float | None:
    """Cores granted by one cgroup quota/period pair (None when unlimited or unreadable)."""
    try:
        q, per = int(quota), int(period)
    except ValueError:  # "max" (v2 unlimited) or garbage
        return None
    if q <= 0 or per <= 0:  # -1 is v1's "unlimited"
        return None
    return q / per


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _dir_chain(mount: Path, rel: str) -> list[Path]:
    """The cgroup folder of this process and its ancestors up to the mount point.

    In a container the path in /proc/self/cgroup is often the host's, while the container sees its own
    cgroup at the mount point; then only the mount point itself is searched.
    """
    parts = [p for p in rel.strip("/").split("/") if p]
    here = mount.joinpath(*parts) if parts else mount
    if not here.is_dir():
        return [mount]
    chain = [here]
    while chain[-1] != mount:
        chain.append(chain[-1].parent)
    return chain


def cgroup_cpu_limit(proc_cgroup: str | Path = "/proc/self/cgroup", root: str | Path = "/sys/fs/cgroup") -> float | None:
    """The CPU bandwidth quota (in cores) of this process's cgroup, or None when there is none.

    Binder, Docker ``--cpus`` and Kubernetes CPU limits are CFS quotas: the process still sees every core
    of the host (``os.cpu_count()``, the affinity mask), so thread pools sized from the core count
    oversubscribe the quota and stall on throttling. Reads cgroup v2 ``cpu.max`` and v1
    ``cpu.cfs_quota_us``/``cpu.cfs_period_us`` of the process's cgroup and its ancestors (the smallest
    quota binds). Hand-written: neither the stdlib (``os.process_cpu_count`` counts the affinity mask
    only) nor torch reads quotas.

    Args:
        proc_cgroup: the process's cgroup membership file.
        root: where the cgroup hierarchies are mounted.

    Returns:
        The quota in cores (may be fractional), or None.
    """
    text = _read(Path(proc_cgroup))
    if text is None:
        return None
    root = Path(root)
    limits: list[float] = []
    for line in text.splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, rel = fields
        if controllers == "":  # cgroup v2 (unified) hierarchy
            for d in _dir_chain(root, rel):
                raw = _read(d / "cpu.max")
                if raw and len(raw.split()) == 2:
                    cores = _quota_cores(*raw.split())
                    if cores is not None:
                        limits.append(cores)
        elif "cpu" in controllers.split(","):  # cgroup v1, mounted as cpu, cpu,cpuacct or cpuacct,cpu
            mounts = [root / name for name in (controllers, "cpu", "cpu,cpuacct", "cpuacct,cpu")]
            mount = next((m for m in mounts if m.is_dir()), None)
            if mount is None:
                continue
            for d in _dir_chain(mount, rel):
                quota, period = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
                if quota is not None and period is not None:
                    cores = _quota_cores(quota, period)
                    if cores is not None:
                        limits.append(cores)
    return min(limits) if limits else None


def _affinity_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def cpu_budget() -> int:
    """How many CPU threads this process can keep busy: the affinity mask, capped by a cgroup quota.

    A fractional quota rounds down (one thread more than the quota is enough to get throttled), never
    below 1.

    Returns:
        The number of CPUs (>= 1).
    """
    return _budget(cgroup_cpu_limit())


def _budget(quota: float | None) -> int:
    n = _affinity_count()
    if quota is not None:
        n = min(n, max(1, math.floor(quota)))
    return max(1, n)


def limit_threads(budget: int | None = None) -> int:
    """Lower torch's intra-op thread count to the CPU budget (never raise it).

    Does nothing when the user chose a count through ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS``.
    Measured under a 1-CPU quota on the 2-core dev VM (docs/benchmarks.md): a teaching training step
    took 1.06-1.33 times as long at 2 threads as at 1, and 2.3-2.5 times at 4.

    Args:
        budget: the CPUs to use; None = :func:`cpu_budget`.

    Returns:
        torch's thread count afterwards.
    """
    check_int(budget, "budget", minimum=1, none_ok=True)
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
        return torch.get_num_threads()
    budget = cpu_budget() if budget is None else budget
    if torch.get_num_threads() > budget:
        torch.set_num_threads(budget)
    return torch.get_num_threads()


def _cpu_model() -> str:
    """The first CPU's model name from /proc/cpuinfo, with its family and model numbers where the file gives them
    ("AMD EPYC" alone names several generations whose kernels round differently: docs/results.md); else what
    :mod:`platform` knows."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip() and fields:
                break  # the first processor's block only
            key, sep, value = line.partition(":")
            if sep:
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    if fields.get("cpu family") and fields.get("model"):
        name += f", family {fields['cpu family']} model {fields['model']}"
    return name


def machine_summary(info: dict) -> str:
    """One line naming what a run's numbers depend on: CPU, architecture, torch's CPU kernels, torch threads, GPU.

    Args:
        info: a :func:`machine_info` dict (a manifest's ``machine``); older manifests without ``cpu_capability``
            or ``torch_threads`` keep their stored ``summary``.

    Returns:
        e.g. ``"AMD EPYC, family 25 model 1 (x86_64, AVX2), 2 torch threads, no GPU"``.
    """
    if not info.get("cpu_capability") or not info.get("torch_threads"):
        return str(info.get("summary", ""))
    n = info["torch_threads"]
    return (f"{info.get('cpu', '?')} ({info.get('machine', '?')}, {info['cpu_capability']}), {n} torch "
            f"thread{'s' if n != 1 else ''}, " + (info.get("gpu") or "no GPU"))


def machine_info() -> dict:
    """What a run's numbers depend on besides code, data and seeds: the CPU, the torch thread count the
    notebooks use (CPU results are bit-for-bit repeatable for a given count; another count sums in
    another order and trains to other weights) and the GPU.

    Calls :func:`limit_threads` first, as every notebook's ``setup_run`` does.

    Returns:
        A JSON-able dict: ``machine``, ``cpu``, ``cpu_capability`` (torch's kernel ISA), ``visible_cores``,
        ``cgroup_cpu_quota``, ``cpu_budget``, ``torch_threads``, ``gpu`` (name or None) and ``summary``.
    """
    quota = cgroup_cpu_limit()
    budget = _budget(quota)
    threads = limit_threads(budget)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    info = {
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "visible_cores": os.cpu_count(),
        "cgroup_cpu_quota": quota,
        "cpu_budget": budget,
        "torch_threads": threads,
        "gpu": gpu,
    }
    info["summary"] = machine_summary(info)
    return info


def git_sha(path: str | Path | None = None) -> str:
    """The current git commit of the checkout holding this package, with ``+dirty`` appended when
    tracked files differ from it (the code that ran is then not that commit; untracked files do
    not count); ``"unknown"`` outside git.

    Args:
        path: a folder inside the checkout (default: this package's).

    Returns:
        e.g. ``"3949eed…"`` or ``"3949eed…+dirty"``.
    """
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        sha = out.stdout.strip()
        if not sha:
            return "unknown"
        st = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where, capture_output=True, text=True, timeout=30)
        return sha + "+dirty" if st.returncode == 0 and st.stdout.strip() else sha
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def short_sha(sha: str, n: int = 10) -> str:
    """A :func:`git_sha` value shortened for headers, keeping its ``+dirty`` mark.

    Args:
        sha: the recorded commit (``"unknown"``, a hash, or a hash with ``+dirty``).
        n: hash characters kept.

    Returns:
        e.g. ``"3949eed96d+dirty"``.
    """
    base, dirty, _ = str(sha).partition("+dirty")
    return base[:n] + ("+dirty" if dirty else "")


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
    """Print versions, device, threads and git commit (the notebooks' Setup cell).

    Fits torch's threads to the CPU budget first (through :func:`machine_info`, as ``setup_run`` does),
    so the count printed is the one the notebook computes with.

    Args:
        device: the device the notebook will use; None (the Setup cell, which runs before the parameters cell) prints
            what ``"auto"`` would pick, labelled ``auto device`` since the parameters may choose another.
    """
    info = machine_info()
    for k, v in package_versions().items():
        print(f"{k:>11}: {v}")
    dev = resolve_device(device or "auto")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else info["cpu"]
    quota = info["cgroup_cpu_quota"]
    limit = f" (cgroup CPU quota {quota:g})" if quota is not None else ""
    print(f"{'device' if device is not None else 'auto device':>11}: {dev} ({name}); torch threads: {info['torch_threads']}; cores: {info['visible_cores']}; "
          f"CPU budget: {info['cpu_budget']}{limit}")
    print(f"{'git':>11}: {git_sha()}")


def setup_run(run_dir: str | Path, seed: int, device: str = "auto") -> tuple[RunPaths, torch.device]:
    """Resolve the run folder, device and seed for a notebook, and fit torch's threads to the CPU budget.

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
    limit_threads()
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    paths = RunPaths(run_dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    return paths, dev
