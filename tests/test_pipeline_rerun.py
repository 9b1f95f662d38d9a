"""When the pipeline reruns a stage, and when it refuses to: checked on stub notebooks (a second per stage), so each
rule can be exercised without training anything."""

from __future__ import annotations

import json
import os
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
            "x: int = 1  # a parameter\ncrash: bool = False  # kill the kernel"
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
    got = pipeline.parse_overrides(["unet.lr=1e-3", "data.layout=no", "fgsm.eps_grid=[0, 5e-1]", "unet.epochs=4"])
    assert got["02_unet"] == {"lr": 0.001, "epochs": 4} and isinstance(got["02_unet"]["lr"], float)
    assert got["01_data"] == {"layout": "no"}  # YAML 1.1 would make this False
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
