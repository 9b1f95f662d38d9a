"""CPU budget under container quotas: cgroup v1/v2 files laid out by hand, torch's thread count,
and (where the test may create a cgroup) the kernel's own quota as the oracle."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from robustseg_lib import data as D
from robustseg_lib import runtime


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_cgroup_v2_quota_of_own_group_and_ancestors(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    proc = tmp_path / "proc_cgroup"
    _write(proc, "0::/kubepods/pod1/c1\n")
    _write(root / "kubepods" / "pod1" / "c1" / "cpu.max", "150000 100000\n")  # 1.5 cores
    _write(root / "kubepods" / "cpu.max", "max 100000\n")  # unlimited
    assert runtime.cgroup_cpu_limit(proc, root) == pytest.approx(1.5)
    # a stricter ancestor binds (Kubernetes puts the pod's limit one level up)
    _write(root / "kubepods" / "pod1" / "c1" / "cpu.max", "max 100000\n")
    _write(root / "kubepods" / "pod1" / "cpu.max", "200000 100000\n")
    assert runtime.cgroup_cpu_limit(proc, root) == pytest.approx(2.0)
    _write(root / "kubepods" / "pod1" / "cpu.max", "max 100000\n")
    assert runtime.cgroup_cpu_limit(proc, root) is None


def test_cgroup_v2_container_view_reads_the_mount_point(tmp_path: Path) -> None:
    """In a container, /proc/self/cgroup may name a host path the container cannot see: then the
    container's own cgroup is the mount point itself."""
    root = tmp_path / "cg"
    proc = tmp_path / "proc_cgroup"
    _write(proc, "0::/system.slice/docker-abc.scope\n")
    _write(root / "cpu.max", "100000 100000\n")
    assert runtime.cgroup_cpu_limit(proc, root) == pytest.approx(1.0)


def test_cgroup_v1_combined_mount_and_fraction(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    proc = tmp_path / "proc_cgroup"
    _write(proc, "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n")
    grp = root / "cpu,cpuacct" / "docker" / "abc"
    _write(grp / "cpu.cfs_quota_us", "50000\n")
    _write(grp / "cpu.cfs_period_us", "100000\n")
    _write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")  # the root: unlimited
    _write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    assert runtime.cgroup_cpu_limit(proc, root) == pytest.approx(0.5)
    _write(grp / "cpu.cfs_quota_us", "-1\n")
    assert runtime.cgroup_cpu_limit(proc, root) is None


def test_cgroup_v1_separate_cpu_mount(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    proc = tmp_path / "proc_cgroup"
    _write(proc, "2:cpuacct:/\n1:cpu:/binder\n")
    _write(root / "cpu" / "binder" / "cpu.cfs_quota_us", "300000\n")
    _write(root / "cpu" / "binder" / "cpu.cfs_period_us", "100000\n")
    assert runtime.cgroup_cpu_limit(proc, root) == pytest.approx(3.0)


def test_cgroup_missing_or_garbage_means_no_limit(tmp_path: Path) -> None:
    assert runtime.cgroup_cpu_limit(tmp_path / "absent", tmp_path) is None
    proc = tmp_path / "proc_cgroup"
    _write(proc, "garbage\n0::/a\n")
    _write(tmp_path / "cg" / "a" / "cpu.max", "lots of cores\n")
    assert runtime.cgroup_cpu_limit(proc, tmp_path / "cg") is None


@pytest.mark.parametrize(("affinity", "quota", "expected"), [
    (16, None, 16),  # no quota: the affinity mask
    (16, 1.0, 1),  # Binder: 1 CPU of a 16-core node
    (16, 1.5, 1),  # fractions round down...
    (16, 0.5, 1),  # ...but never below one thread
    (16, 7.65, 7),
    (4, 32.0, 4),  # a quota above the mask: the mask binds
])
def test_cpu_budget_is_mask_capped_by_quota(monkeypatch, affinity, quota, expected) -> None:
    monkeypatch.setattr(runtime, "_affinity_count", lambda: affinity)
    monkeypatch.setattr(runtime, "cgroup_cpu_limit", lambda *a, **k: quota)
    assert runtime.cpu_budget() == expected


def test_limit_threads_lowers_never_raises_and_respects_env(monkeypatch, restore_threads) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    assert runtime.limit_threads(1) == 1 and torch.get_num_threads() == 1
    assert runtime.limit_threads(4) == 1  # never raised
    torch.set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's choice wins
    assert runtime.limit_threads(1) == 2
    for bad in (0, -1, 1.5, True, "1"):
        with pytest.raises(ValueError, match="budget"):
            runtime.limit_threads(bad)


def test_setup_run_fits_threads_to_the_budget(monkeypatch, tmp_path, restore_threads) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(runtime, "cpu_budget", lambda: 1)
    torch.set_num_threads(2)
    runtime.setup_run(tmp_path / "run", seed=0, device="cpu")
    assert torch.get_num_threads() == 1


def test_map_cases_caps_processes_at_the_budget(monkeypatch) -> None:
    """A lambda cannot be sent to a spawned process, so it only runs when the cap made the map serial."""
    monkeypatch.setattr(D, "cpu_budget", lambda: 1)
    assert list(D._map_cases(lambda j: j * 2, [1, 2, 3], 4, "t", False)) == [2, 4, 6]
    monkeypatch.setattr(D, "cpu_budget", lambda: 4)
    assert list(D._map_cases(lambda j: j + 1, [7], 4, "t", False)) == [8]  # one job: no pool either
    with pytest.raises(Exception, match="pickle"):
        list(D._map_cases(lambda j: j, [1, 2], 2, "t", False))


def _cgroup_v1_cpu() -> Path | None:
    mount = Path("/sys/fs/cgroup/cpu")
    if os.geteuid() != 0 or not (mount / "cpu.cfs_quota_us").exists() or not os.access(mount, os.W_OK):
        return None
    return mount


@pytest.mark.skipif(_cgroup_v1_cpu() is None, reason="needs root and a writable cgroup v1 cpu hierarchy")
def test_real_cgroup_quota_reaches_torch(tmp_path: Path) -> None:
    """The kernel is the oracle: a child process in a new cgroup with a 1-CPU quota sees budget 1, its
    notebook set-up runs torch on one thread, and the manifest's machine record says so."""
    grp = _cgroup_v1_cpu() / f"robustseg-test-{uuid.uuid4().hex[:8]}"
    try:
        grp.mkdir()
    except OSError as e:
        pytest.skip(f"cannot create a cgroup here: {e}")
    try:
        try:
            (grp / "cpu.cfs_period_us").write_text("100000")
            (grp / "cpu.cfs_quota_us").write_text("100000")
        except OSError as e:
            pytest.skip(f"cannot set a CPU quota here: {e}")
        code = (
            "import os, sys\n"
            f"try: open({str(grp / 'cgroup.procs')!r}, 'w').write(str(os.getpid()))\n"
            "except OSError: print('cannot-join'); sys.exit(0)\n"
            "import torch; torch.set_num_threads(2);"
            "from robustseg_lib import runtime;"
            f"runtime.setup_run({str(tmp_path / 'run')!r}, seed=0, device='cpu');"
            "m = runtime.machine_info();"
            "print(runtime.cgroup_cpu_limit(), runtime.cpu_budget(), torch.get_num_threads(), m['cgroup_cpu_quota'], m['cpu_budget'], m['torch_threads'])"
        )
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        if out.stdout.strip() == "cannot-join":
            pytest.skip("cannot move a process into a new cgroup here")
        assert out.stdout.split() == ["1.0", "1", "1", "1.0", "1", "1"]
    finally:
        grp.rmdir()


def test_git_sha_marks_a_modified_checkout(tmp_path) -> None:
    """A run from a tree whose tracked files differ from HEAD records ``<sha>+dirty`` (untracked files do not count)."""
    import shutil
    import subprocess

    from robustseg_lib.runtime import git_sha

    if shutil.which("git") is None:
        pytest.skip("git not installed")
    env = ["-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "a.txt").write_text("one\n")
    subprocess.run(["git", "-C", str(tmp_path), "add", "a.txt"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), *env, "commit", "-qm", "c"], check=True)
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert git_sha(tmp_path) == head
    (tmp_path / "new.txt").write_text("untracked\n")
    assert git_sha(tmp_path) == head
    (tmp_path / "a.txt").write_text("two\n")
    assert git_sha(tmp_path) == head + "+dirty"
    assert git_sha(tmp_path.parent / "definitely-not-a-repo-here") == "unknown"


def test_short_sha_keeps_the_dirty_mark() -> None:
    """Headers (report, summarise_run, bench_chain) shorten the hash but must not drop ``+dirty``."""
    from robustseg_lib.runtime import short_sha

    full = "3949eed96d863797381880a506703ba8651cfee8"
    assert short_sha(full) == "3949eed96d"
    assert short_sha(full + "+dirty") == "3949eed96d+dirty"
    assert short_sha("unknown") == "unknown"


# ----------------------------------------------------------------------------- found by mutation testing (session 14)
@pytest.fixture
def restore_torch_flags():
    """Put back the torch settings that seeding and a CUDA set-up change."""
    flags = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    yield
    torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def test_seed_everything_seeds_python_numpy_and_torch(restore_torch_flags) -> None:
    """The oracle is each library seeded directly: after seed_everything(7) the next draw of random, numpy and torch
    is the one random.seed(7), np.random.seed(7) and torch.manual_seed(7) give; numpy gets the seed mod 2**32;
    the cuDNN autotuner is turned off."""
    import random

    import numpy as np

    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    torch.backends.cudnn.benchmark = True
    runtime.seed_everything(7)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
    assert torch.backends.cudnn.benchmark is False
    np.random.seed(5)
    expected_np = float(np.random.rand())
    runtime.seed_everything(2**32 + 5)
    assert float(np.random.rand()) == expected_np


def test_resolve_device_by_hand(monkeypatch) -> None:
    """'auto' follows torch.cuda.is_available (patched both ways); any CUDA device ('cuda', 'cuda:1') without CUDA is
    refused; a torch.device passes through; anything but a string or device is refused by type."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.resolve_device("auto") == torch.device("cuda")
    assert runtime.resolve_device("cuda:1") == torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.resolve_device("auto") == torch.device("cpu")
    assert runtime.resolve_device("cpu") == torch.device("cpu")
    assert runtime.resolve_device(torch.device("cuda", 3)) == torch.device("cuda", 3)
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match="CUDA is not available"):
            runtime.resolve_device(name)
    with pytest.raises(ValueError, match="string or torch.device"):
        runtime.resolve_device(0)


def test_cgroup_quota_at_the_mount_point_binds_a_process_below_it(tmp_path: Path) -> None:
    """The mount point is the last ancestor searched: a quota there (2 cores) binds a process in a sub-group that
    has none, and one whose own group allows 3 (the smaller quota binds), and a process in the root group itself
    ('0::/')."""
    root = tmp_path / "cg"
    proc = tmp_path / "proc_cgroup"
    _write(root / "cpu.max", "200000 100000\n")
    (root / "app").mkdir()
    _write(proc, "0::/app\n")
    assert runtime.cgroup_cpu_limit(proc, root) == pytest.approx(2.0)
    _write(root / "app" / "cpu.max", "300000 100000\n")
    assert runtime.cgroup_cpu_limit(proc, root) == pytest.approx(2.0)
    _write(proc, "0::/\n")
    assert runtime.cgroup_cpu_limit(proc, root) == pytest.approx(2.0)


def test_cgroup_v1_cpuacct_alone_is_not_the_cpu_controller(tmp_path: Path) -> None:
    """A separately mounted cpuacct hierarchy carries no CPU quota: its group path must not be looked up under the
    cpu mount (hand: the process's cpu group 'mine' has no quota; another group 'other' has 0.5 cores)."""
    root = tmp_path / "cg"
    proc = tmp_path / "proc_cgroup"
    _write(proc, "3:cpuacct:/other\n2:cpu:/mine\n")
    (root / "cpu" / "mine").mkdir(parents=True)
    _write(root / "cpu" / "other" / "cpu.cfs_quota_us", "50000\n")
    _write(root / "cpu" / "other" / "cpu.cfs_period_us", "100000\n")
    assert runtime.cgroup_cpu_limit(proc, root) is None


def test_cgroup_lines_after_an_unmounted_v1_cpu_are_still_read(tmp_path: Path) -> None:
    """A hybrid layout: /proc/self/cgroup names a v1 cpu hierarchy that is not mounted here, then the unified (v2)
    one, which has a 1-core quota: the missing v1 mount is skipped, the v2 quota found."""
    root = tmp_path / "cg"
    proc = tmp_path / "proc_cgroup"
    _write(proc, "4:cpu,cpuacct:/x\n0::/y\n")
    _write(root / "y" / "cpu.max", "100000 100000\n")
    assert runtime.cgroup_cpu_limit(proc, root) == pytest.approx(1.0)


def test_cgroup_v1_quota_without_period_is_no_limit(tmp_path: Path) -> None:
    """A v1 group with a quota file but no period file (unreadable): no limit, not a crash."""
    root = tmp_path / "cg"
    proc = tmp_path / "proc_cgroup"
    _write(proc, "2:cpu:/g\n")
    _write(root / "cpu" / "g" / "cpu.cfs_quota_us", "50000\n")
    assert runtime.cgroup_cpu_limit(proc, root) is None


def test_affinity_count_is_the_mask_not_the_core_count(monkeypatch) -> None:
    """The CPUs this process may run on (a 3-CPU mask, patched) and not every core of the host (64, patched);
    without sched_getaffinity (not Linux) the core count."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert runtime._affinity_count() == 3
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    assert runtime._affinity_count() == 64


def test_limit_threads_respects_mkl_num_threads(monkeypatch, restore_threads) -> None:
    """MKL_NUM_THREADS alone is the user's choice too: the thread count is left as it is."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "2")
    torch.set_num_threads(2)
    assert runtime.limit_threads(1) == 2 and torch.get_num_threads() == 2


def test_cpu_model_reads_the_model_name_line(monkeypatch, tmp_path: Path) -> None:
    """From a hand-written /proc/cpuinfo of two processors: the first one's 'model name' value with its family and
    model numbers (the 'model' line is the number, not the name); without those lines, the name alone."""
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 85\n"
                    "model name\t: Intel(R) Xeon(R) CPU @ 2.00GHz\nstepping\t: 7\n\n"
                    "processor\t: 1\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC\n\n")
    monkeypatch.setattr(runtime, "Path", lambda p: info if str(p) == "/proc/cpuinfo" else Path(p))
    assert runtime._cpu_model() == "Intel(R) Xeon(R) CPU @ 2.00GHz, family 6 model 85"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\n")
    assert runtime._cpu_model() == "AMD EPYC"


def _machine(monkeypatch: pytest.MonkeyPatch, *, quota: float | None, affinity: int, threads: int, gpu: str | None = None) -> dict:
    """machine_info with the quota, affinity mask, CPU model, host core count (64) and GPU patched."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(runtime, "cgroup_cpu_limit", lambda *a, **k: quota)
    monkeypatch.setattr(runtime, "_affinity_count", lambda: affinity)
    monkeypatch.setattr(runtime, "_cpu_model", lambda: "Test CPU")
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu is not None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: gpu)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    torch.set_num_threads(threads)
    return runtime.machine_info()


def test_machine_info_by_hand(monkeypatch, restore_threads) -> None:
    """Quota 1.5 cores (patched) on a 4-CPU mask of a 64-core host, torch at 3 threads: budget 1 (floor), torch
    lowered to 1 thread, the quota itself recorded, visible_cores the host's 64, 'thread' in the singular; with 2
    threads, no quota and a GPU: 'threads' and the GPU's name."""
    import platform

    m = _machine(monkeypatch, quota=1.5, affinity=4, threads=3)
    assert {k: m[k] for k in ("cgroup_cpu_quota", "cpu_budget", "torch_threads", "visible_cores", "gpu", "cpu")} == {
        "cgroup_cpu_quota": 1.5, "cpu_budget": 1, "torch_threads": 1, "visible_cores": 64, "gpu": None, "cpu": "Test CPU"}
    assert torch.get_num_threads() == 1
    assert m["summary"] == f"Test CPU ({platform.machine()}, AVX512), 1 torch thread, no GPU"
    m = _machine(monkeypatch, quota=None, affinity=2, threads=2, gpu="Fake GPU 80GB")
    assert m["cgroup_cpu_quota"] is None and m["cpu_budget"] == 2 and m["gpu"] == "Fake GPU 80GB"
    assert m["summary"] == f"Test CPU ({platform.machine()}, AVX512), 2 torch threads, Fake GPU 80GB"
    assert runtime.machine_summary(m) == m["summary"]
    # a manifest written before the summary named the kernels keeps its own line; one with the fields gets them
    old = {"cpu": "AMD EPYC", "machine": "x86_64", "summary": "AMD EPYC (x86_64), 2 torch threads, no GPU"}
    assert runtime.machine_summary(old) == old["summary"] and runtime.machine_summary({}) == ""
    assert runtime.machine_summary({**old, "cpu_capability": "AVX2", "torch_threads": 2, "gpu": None}) == (
        "AMD EPYC (x86_64, AVX2), 2 torch threads, no GPU")


def test_git_sha_outside_a_repository_is_unknown(tmp_path) -> None:
    """An existing folder that is not in a git checkout: git runs but prints no commit -> 'unknown'."""
    import shutil

    if shutil.which("git") is None:
        pytest.skip("git not installed")
    plain = tmp_path / "plain"
    plain.mkdir()
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=plain, capture_output=True).returncode == 0:
        pytest.skip("the temporary folder is inside a git checkout")
    assert runtime.git_sha(plain) == "unknown"


def test_package_versions_by_hand(monkeypatch) -> None:
    """Every listed package (hand-written list) plus Python (from sys.version_info); a package that is not
    installed says so; the first listed package is not skipped."""
    import importlib.metadata

    v = runtime.package_versions()
    assert set(v) == {"python", "robustseg", "torch", "monai", "numpy", "scipy", "pandas", "nibabel", "nilearn",
                      "papermill", "matplotlib", "seaborn"}
    assert v["python"] == "{}.{}.{}".format(*sys.version_info[:3])
    monkeypatch.setattr(runtime, "_PACKAGES", ("numpy", "no-such-package-robustseg-test"))
    assert runtime.package_versions() == {"python": v["python"], "numpy": importlib.metadata.version("numpy"),
                                          "no-such-package-robustseg-test": "not installed"}


def test_print_config_by_hand(monkeypatch, capsys) -> None:
    """print_config with machine_info, versions and git patched: the device asked for (cpu, although CUDA is
    'available'), torch threads and budget told apart, the quota shown; names right-aligned to 11 characters."""
    monkeypatch.setattr(runtime, "machine_info", lambda: {"cpu": "Test CPU", "cgroup_cpu_quota": 1.5, "torch_threads": 3,
                                                          "visible_cores": 8, "cpu_budget": 1})
    monkeypatch.setattr(runtime, "package_versions", lambda: {"python": "3.0.0"})
    monkeypatch.setattr(runtime, "git_sha", lambda *a: "abc123")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")
    runtime.print_config("cpu")
    assert capsys.readouterr().out.splitlines() == [
        "     python: 3.0.0",
        "     device: cpu (Test CPU); torch threads: 3; cores: 8; CPU budget: 1 (cgroup CPU quota 1.5)",
        "        git: abc123",
    ]
    # the Setup cell runs before the parameters cell: what "auto" would pick, not called the notebook's device
    runtime.print_config()
    assert capsys.readouterr().out.splitlines()[1] == (
        "auto device: cuda (Fake GPU); torch threads: 3; cores: 8; CPU budget: 1 (cgroup CPU quota 1.5)")


def test_setup_run_seeds_creates_and_sets_up_cuda(monkeypatch, tmp_path, restore_threads, restore_torch_flags) -> None:
    """setup_run: the run folder exists afterwards; torch draws what torch.manual_seed(5) gives (the oracle); an empty
    path is refused; the device asked for is the one returned ('cpu' although CUDA is 'available', patched), and
    a CUDA run turns on the cuDNN autotuner and TF32."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    torch.manual_seed(5)
    expected = torch.rand(3)
    paths, dev = runtime.setup_run(tmp_path / "run", seed=5, device="cpu")
    assert torch.equal(torch.rand(3), expected)
    assert paths.root == tmp_path / "run" and paths.root.is_dir()
    assert dev == torch.device("cpu") and torch.backends.cudnn.benchmark is False
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    _, dev = runtime.setup_run(tmp_path / "run2", seed=5, device="cuda")
    assert dev == torch.device("cuda")
    assert torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    with pytest.raises(ValueError, match="run_dir"):
        runtime.setup_run("", seed=0)
