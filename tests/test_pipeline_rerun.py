"""When the pipeline reruns a stage, and when it refuses to: checked on stub notebooks (a second per stage), so each
rule can be exercised without training anything."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_notebook

from robustseg_lib import pipeline
from robustseg_lib.artefacts import atomic_write_text
from robustseg_lib.pipeline import STAGES, PipelineError

STUB = '''
import os, pathlib
if crash:
    os._exit(1)  # the kernel dies, as when the OOM killer takes it
with (pathlib.Path(run_dir) / "log.txt").open("a") as f:
    f.write("@STAGE@ x=%d\\n" % x)
'''


@pytest.fixture(scope="module")
def stubs(tmp_path_factory) -> tuple[Path, Path]:
    """Eight stub notebooks (same names and parameters cell form as the real ones) and a profile for them."""
    nb_dir = tmp_path_factory.mktemp("stub_notebooks")
    for stage, fname in STAGES.items():
        params = new_code_cell(
            'run_dir: str = "."  # run folder\ndevice: str = "auto"  # device\nseed: int = 0  # seed\n'
            "x: int = 1  # a parameter\ncrash: bool = False  # kill the kernel\ndata_dir: str = \"\"  # a data folder"
        )
        params.metadata["tags"] = ["parameters"]
        nb = new_notebook(cells=[params, new_code_cell(STUB.replace("@STAGE@", stage))])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, nb_dir / fname)
    prof = nb_dir / "stub.yaml"
    prof.write_text(yaml.safe_dump({"description": "stub", "common": {"seed": 0}, "notebooks": {}}))
    return nb_dir, prof


def _run(stubs, out: Path, **kw) -> list[str]:
    nb_dir, prof = stubs
    lines: list[str] = []
    pipeline.reproduce(str(prof), out, device="cpu", notebook_dir=nb_dir, log=lines.append, **kw)
    return lines


def _ran(lines: list[str]) -> list[str]:
    return [ln.split("]")[0].strip("[") for ln in lines if "done in" in ln]


@pytest.fixture(scope="module")
def done_run(stubs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stub_run")
    assert _ran(_run(stubs, out)) == list(STAGES)
    return out


def _copy(done_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(done_run, run)
    return run


def test_only_refuses_a_stage_whose_upstream_is_missing_or_stale(stubs, done_run, tmp_path) -> None:
    with pytest.raises(PipelineError, match="--only 03_fgsm: it reads the outputs of 01_data, 02_unet"):
        _run(stubs, tmp_path / "fresh", only=["fgsm"])
    run = _copy(done_run, tmp_path)
    with pytest.raises(PipelineError, match=r"of 02_unet, which are missing, failed, or were made with other parameters"):
        _run(stubs, run, only=["fgsm"], sets=["unet.x=2"])  # 02 on disk was made with x = 1
    assert (run / "log.txt").read_text().count("03_fgsm") == 1  # 03 did not run on the stale 02
    assert _ran(_run(stubs, run, only=["unet", "fgsm"], sets=["unet.x=2"])) == ["02_unet", "03_fgsm"]
    # and now 04-08 are stale for x = 2 (their upstream changed): a full run redoes exactly them
    assert _ran(_run(stubs, run, sets=["unet.x=2"])) == list(STAGES)[3:]


def test_library_code_is_part_of_the_fingerprint(stubs, done_run, tmp_path, monkeypatch) -> None:
    run = _copy(done_run, tmp_path)
    assert _ran(_run(stubs, run)) == []  # nothing changed: all skipped
    monkeypatch.setattr(pipeline, "library_hash", lambda: "another version of robustseg_lib")
    assert _ran(_run(stubs, run)) == list(STAGES)


def _old_fingerprints(manifest: dict, nb_dir: Path) -> dict[str, str]:
    """The fingerprints as computed before data folders were signed (code, library, params, upstream), chained."""
    out, upstream = {}, ""
    for stage in STAGES:
        blob = json.dumps({"stage": stage, "code": pipeline._code_hash(nb_dir / STAGES[stage]), "library": pipeline.library_hash(),
                           "params": manifest["parameters"][stage], "upstream": upstream}, sort_keys=True, default=str)
        out[stage] = upstream = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return out


def test_synthetic_data_keeps_its_fingerprints(stubs, done_run) -> None:
    """Without a data folder nothing is signed: existing run folders stay up to date after the upgrade."""
    manifest = json.loads((done_run / "manifest.json").read_text())
    assert "data_dir" not in manifest["parameters"]["01_data"]
    assert {s: r["fingerprint"] for s, r in manifest["stages"].items()} == _old_fingerprints(manifest, stubs[0])


def _data_folder(root: Path) -> Path:
    """A small data folder: two case folders, a top-level file, and hidden entries."""
    for case in ("c1", "c2"):
        (root / case).mkdir(parents=True)
        for mod in ("t1", "seg"):
            (root / case / f"{case}_{mod}.nii.gz").write_bytes(b"voxels of " + case.encode() + mod.encode())
    (root / "dataset.json").write_text("{}")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: main\n")
    (root / ".DS_Store").write_bytes(b"finder")
    return root


def _grow_keeping_mtime(f: Path) -> None:
    st = f.stat()
    f.write_bytes(f.read_bytes() + b"more")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # only the size tells


def _touch(f: Path) -> None:
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same bytes, newer mtime


DATA_CHANGES = {  # change → does stage 01 (and what follows) rerun? (an unchanged folder: the second run below)
    "hidden file changed": (lambda d: (d / ".DS_Store").write_bytes(b"finder, other view"), False),
    "hidden file added": (lambda d: (d / "c1" / "._c1_t1.nii.gz").write_bytes(b"resource fork"), False),
    "file in hidden folder changed": (lambda d: (d / ".git" / "HEAD").write_text("ref: other branch\n"), False),
    "file added": (lambda d: (d / "c2" / "c2_flair.nii.gz").write_bytes(b"flair"), True),
    "case folder added": (lambda d: (d / "c3").mkdir() or (d / "c3" / "c3_t1.nii.gz").write_bytes(b"t1"), True),
    "file size changed": (lambda d: _grow_keeping_mtime(d / "c1" / "c1_seg.nii.gz"), True),
    "file touched": (lambda d: _touch(d / "c2" / "c2_t1.nii.gz"), True),
    "file removed": (lambda d: (d / "dataset.json").unlink(), True),
}


@pytest.mark.parametrize("change", list(DATA_CHANGES))
def test_data_folder_contents_are_part_of_the_fingerprint(stubs, tmp_path, change) -> None:
    mutate, reruns = DATA_CHANGES[change]
    data = _data_folder(tmp_path / "brats")
    run = tmp_path / "run"
    stages = ["data", "unet"]  # 02 stands for every stage downstream of 01
    assert _ran(_run(stubs, run, only=stages, data_dir=str(data))) == ["01_data", "02_unet"]
    assert _ran(_run(stubs, run, only=stages, data_dir=str(data))) == []
    mutate(data)
    assert _ran(_run(stubs, run, only=stages, data_dir=str(data))) == (["01_data", "02_unet"] if reruns else [])


def test_a_changed_data_folder_makes_the_whole_chain_stale(stubs, tmp_path) -> None:
    data = _data_folder(tmp_path / "brats")
    run = tmp_path / "run"
    assert _ran(_run(stubs, run, data_dir=str(data))) == list(STAGES)
    assert _ran(_run(stubs, run, only=["statistics"], data_dir=str(data))) == []  # up to date
    (data / "c1" / "c1_flair.nii.gz").write_bytes(b"flair")
    with pytest.raises(PipelineError, match=r"reads the outputs of 01_data, 02_unet, .*, 07_adversarial_training, which are "
                                            r"missing, failed, or were made with other parameters, code or data"):
        _run(stubs, run, only=["statistics"], data_dir=str(data))
    assert _ran(_run(stubs, run, only=["data"], data_dir=str(data))) == ["01_data"]
    with pytest.raises(PipelineError, match=r"reads the outputs of 02_unet, 03_fgsm, .*, 07_adversarial_training, which"):
        _run(stubs, run, only=["statistics"], data_dir=str(data))  # 01 is redone: everything after it is stale


def test_data_dir_signature(tmp_path) -> None:
    data = _data_folder(tmp_path / "brats")
    sig = pipeline.data_dir_signature(data)
    assert sig == pipeline.data_dir_signature(str(data)) and len(sig) == 64
    # links the loaders skip leave the signature as it is, one at a time: a broken link, a link to itself, and a
    # link cycle back to the folder (walked once: its files are not counted a second time)
    (data / "gone.nii.gz").symlink_to(tmp_path / "nothing")
    assert pipeline.data_dir_signature(data) == sig
    (data / "self.nii.gz").symlink_to(data / "self.nii.gz")
    assert pipeline.data_dir_signature(data) == sig
    (data / "c1" / "loop").symlink_to(data, target_is_directory=True)
    assert pipeline.data_dir_signature(data) == sig
    # a link to a file outside is followed and counted
    shared = tmp_path / "shared.nii.gz"
    shared.write_bytes(b"shared")
    (data / "c2" / "c2_t2.nii.gz").symlink_to(shared)
    with_links = pipeline.data_dir_signature(data)
    assert with_links != sig
    _grow_keeping_mtime(shared)
    assert pipeline.data_dir_signature(data) != with_links  # the target's size counts
    linked, empty = tmp_path / "linked", tmp_path / "empty"
    linked.mkdir()
    empty.mkdir()
    (linked / "set").symlink_to(data, target_is_directory=True)
    assert pipeline.data_dir_signature(linked) != pipeline.data_dir_signature(empty)
    for bad in (tmp_path / "nowhere", shared):
        with pytest.raises(NotADirectoryError, match=re.escape(f"{bad}: data folder does not exist")):
            pipeline.data_dir_signature(bad)
    with pytest.raises(TypeError, match="str or path"):
        pipeline.data_dir_signature(3)  # type: ignore[arg-type]


def test_a_missing_data_dir_set_by_hand_is_named(stubs, tmp_path) -> None:
    with pytest.raises(PipelineError, match=r"data_dir 'no/such/folder': .*no/such/folder: data folder does not exist"):
        _run(stubs, tmp_path / "run", sets=["data.data_dir=no/such/folder"])


def test_a_fresh_rerun_clears_training_checkpoints_and_a_killed_one_resumes_them(stubs, done_run, tmp_path) -> None:
    run = _copy(done_run, tmp_path)
    ckpt = run / "models" / "baseline_ckpt"
    ckpt.mkdir(parents=True)
    (ckpt / "last.pt").write_bytes(b"an older training")
    _run(stubs, run, only=["data", "unet"], sets=["unet.x=3"])  # other parameters: train afresh
    man = json.loads((run / "manifest.json").read_text())["stages"]["02_unet"]
    assert not ckpt.exists() and man["cleared_checkpoints"] == ["baseline_ckpt"] and man["resumed_checkpoints"] is False
    assert man["parameters"]["x"] == 3 and man["git_sha"]
    # a run killed in 02 (status left at running, same request): its checkpoint is what the rerun resumes from
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["stages"]["02_unet"]["status"] = "running"
    atomic_write_text(run / "manifest.json", json.dumps(manifest))
    ckpt.mkdir()
    (ckpt / "last.pt").write_bytes(b"the killed training")
    assert _ran(_run(stubs, run, only=["data", "unet"], sets=["unet.x=3"])) == ["02_unet"]
    assert (ckpt / "last.pt").read_bytes() == b"the killed training"
    assert json.loads((run / "manifest.json").read_text())["stages"]["02_unet"]["resumed_checkpoints"] is True
    # --force means afresh
    _run(stubs, run, only=["data", "unet"], sets=["unet.x=3"], force=True)
    assert not ckpt.exists()


def test_a_dead_kernel_is_recorded_and_named(stubs, done_run, tmp_path) -> None:
    run = _copy(done_run, tmp_path)
    with pytest.raises(PipelineError, match=r"04_ifgsm \(04_ifgsm.ipynb\) failed: DeadKernelError"):
        _run(stubs, run, sets=["ifgsm.crash=true"])
    assert json.loads((run / "manifest.json").read_text())["stages"]["04_ifgsm"]["status"] == "failed"


def test_set_values_are_read_with_the_declared_type() -> None:
    got = pipeline.parse_overrides(["unet.lr=1e-3", "data.data_dir=no", "fgsm.eps_grid=[0, 5e-1]", "unet.epochs=4"])
    assert got["02_unet"] == {"lr": 0.001, "epochs": 4} and isinstance(got["02_unet"]["lr"], float)
    assert got["01_data"] == {"data_dir": "no"}  # YAML 1.1 would make this False
    assert got["03_fgsm"] == {"eps_grid": [0, 0.5]}
    for bad, what in (("unet.epochs=3.7", "an integer"), ("unet.crop=64", "a list"), ("distillation.output_scaling=maybe", "true or false"),
                      ("unet.lr=fast", "a number")):
        with pytest.raises(PipelineError, match=rf"{bad.split('=')[0].split('.')[1]} = .*expected {what}"):
            pipeline.parse_overrides([bad])


def test_profile_values_are_checked_against_the_notebooks(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("notebooks:\n  01_data:\n    layout: no\n")  # unquoted: YAML reads a boolean
    with pytest.raises(PipelineError, match="01_data.layout = False: expected a string"):
        pipeline.stage_parameters(pipeline.load_profile(str(bad)))
    ok = tmp_path / "ok.yaml"
    ok.write_text("notebooks:\n  02_unet:\n    lr: 2e-3\n")
    assert pipeline.stage_parameters(pipeline.load_profile(str(ok)))["02_unet"]["lr"] == 0.002


def test_atomic_writes_get_the_ordinary_file_mode(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.txt", "x")
        plain = tmp_path / "b.txt"
        plain.write_text("x")
    finally:
        os.umask(old)
    from robustseg_lib import artefacts

    want = 0o666 & ~artefacts._UMASK
    assert stat.S_IMODE(path.stat().st_mode) == want
    if artefacts._UMASK == 0o022:  # the usual case: the same as a file written with open()
        assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644


def test_a_profile_path_without_suffix_is_a_path(tmp_path, monkeypatch) -> None:
    (tmp_path / "myprof").write_text("description: mine\nnotebooks:\n  02_unet:\n    epochs: 2\n")
    monkeypatch.chdir(tmp_path)
    for ref in ("./myprof", "myprof", str(tmp_path / "myprof")):
        assert pipeline.load_profile(ref)["description"] == "mine", ref
    assert pipeline.load_profile("smoke")["name"] == "smoke"  # names still find the shipped profiles


def test_seed_everything_refuses_a_bool() -> None:
    from robustseg_lib.runtime import seed_everything

    with pytest.raises(ValueError, match="seed"):
        seed_everything(True)
