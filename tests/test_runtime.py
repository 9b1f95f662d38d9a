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
