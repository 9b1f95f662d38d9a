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

from robustseg_lib import pipeline, replicates
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


@pytest.fixture()
def no_kernels(monkeypatch) -> list[str]:
    """``papermill.execute_notebook`` replaced by a stand-in that records the stage and writes the output notebook, and
    runs nothing: for the rules that depend only on the pipeline's bookkeeping (fingerprints, refusals), not on what a
    notebook does; a stub chain through real kernels costs ~2 s a stage. ``done_run`` itself, the tests that need what
    a kernel does (log lines, a dead kernel) and the chain tests run real kernels. Returns the stages executed, in order."""
    import papermill

    ran: list[str] = []

    def execute_notebook(src, dst, **kwargs):
        ran.append(Path(src).stem)
        Path(dst).write_text("{}")

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    return ran


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


def test_only_refuses_a_stage_whose_upstream_is_missing_or_stale(stubs, done_run, no_kernels, tmp_path) -> None:
    with pytest.raises(PipelineError, match="--only 03_fgsm: it reads the outputs of 01_data, 02_unet"):
        _run(stubs, tmp_path / "fresh", only=["fgsm"])
    run = _copy(done_run, tmp_path)
    with pytest.raises(PipelineError, match=r"of 02_unet, which are missing, failed, or were made with other parameters"):
        _run(stubs, run, only=["fgsm"], sets=["unet.x=2"])  # 02 on disk was made with x = 1
    assert (run / "log.txt").read_text().count("03_fgsm") == 1  # 03 did not run on the stale 02
    assert no_kernels == []  # nor did anything else: both refusals came before any notebook started
    assert _ran(_run(stubs, run, only=["unet", "fgsm"], sets=["unet.x=2"])) == ["02_unet", "03_fgsm"]
    # and now 04-08 are stale for x = 2 (their upstream changed): a full run redoes exactly them
    assert _ran(_run(stubs, run, sets=["unet.x=2"])) == list(STAGES)[3:]


def test_library_code_is_part_of_the_fingerprint(stubs, done_run, no_kernels, tmp_path, monkeypatch) -> None:
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
def test_data_folder_contents_are_part_of_the_fingerprint(stubs, no_kernels, tmp_path, change) -> None:
    mutate, reruns = DATA_CHANGES[change]
    data = _data_folder(tmp_path / "brats")
    run = tmp_path / "run"
    stages = ["data", "unet"]  # 02 stands for every stage downstream of 01
    assert _ran(_run(stubs, run, only=stages, data_dir=str(data))) == ["01_data", "02_unet"]
    assert _ran(_run(stubs, run, only=stages, data_dir=str(data))) == []
    mutate(data)
    assert _ran(_run(stubs, run, only=stages, data_dir=str(data))) == (["01_data", "02_unet"] if reruns else [])


def test_a_changed_data_folder_makes_the_whole_chain_stale(stubs, no_kernels, tmp_path) -> None:
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
    with pytest.raises(PipelineError, match=r"data_dir '/.*/no/such/folder': .*no/such/folder: data folder does not exist"):
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


# ----------------------------------------------------------------------------- found by mutation testing (session 13)
def _bookkeeping_chain(root: Path, monkeypatch, *, no_seed: tuple[str, ...] = (), notebooks: dict | None = None,
                       nb_name: str = "nb"):
    """Stub notebooks (a parameters cell: run_dir, device, seed unless the stage is in ``no_seed``, x: int, lr: float,
    data_dir: str) in ``root/nb_name`` and a papermill whose ``execute_notebook`` records (stage, parameters) and writes
    the output notebook, or raises what ``fail[stage]`` holds: the pipeline's bookkeeping without a kernel (a run takes
    ~0.2 s)."""
    import papermill

    nb_dir = root / nb_name
    nb_dir.mkdir(parents=True)
    for stage, fname in STAGES.items():
        seed = "" if stage in no_seed else "seed: int = 0\n"
        params = new_code_cell(f'run_dir: str = "."\ndevice: str = "auto"\n{seed}x: int = 1\nlr: float = 0.5\ndata_dir: str = ""')
        params.metadata["tags"] = ["parameters"]
        nb = new_notebook(cells=[params, new_code_cell(f"print({stage!r})")])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, nb_dir / fname)
    (nb_dir / "stub.yaml").write_text(yaml.safe_dump({"description": "stub", "common": {"x": 1},
                                                       "notebooks": notebooks or {}}))  # fmt: skip
    calls: list[tuple[str, dict]] = []
    fail: dict[str, BaseException] = {}

    def execute_notebook(src, dst, parameters=None, **kwargs):
        stage = Path(src).stem
        calls.append((stage, dict(parameters)))
        if stage in fail:
            raise fail[stage]
        Path(dst).write_text("{}")

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)

    def run(out: Path, **kw) -> list[str]:
        del calls[:]
        pipeline.reproduce(str(nb_dir / "stub.yaml"), out, device=kw.pop("device", "cpu"), notebook_dir=nb_dir,
                           log=lambda _: None, **kw)  # fmt: skip
        return [s for s, _ in calls]

    return nb_dir, run, calls, fail


def test_float_parameters_get_floats_and_int_parameters_refuse_booleans(tmp_path) -> None:
    """Coercion by the notebook's declared type (02_unet declares ``lr: float``, ``epochs: int``): an integer given
    for a float becomes a float, equal in value (so ``lr=1`` and ``lr=1.0`` are one request); YAML's ``true`` is a
    bool, which Python counts as an int but the parameter refuses, from --set and from a profile alike."""
    for got in (pipeline.parse_overrides(["unet.lr=1"])["02_unet"]["lr"],
                pipeline.check_parameter("02_unet", "lr", 2)):
        assert type(got) is float and got in (1.0, 2.0)
    prof = tmp_path / "p.yaml"
    prof.write_text("notebooks:\n  02_unet:\n    lr: 1\n")
    assert type(pipeline.stage_parameters(pipeline.load_profile(str(prof)))["02_unet"]["lr"]) is float
    with pytest.raises(PipelineError, match=r"epochs = True: expected an integer"):
        pipeline.parse_overrides(["unet.epochs=true"])
    prof.write_text("notebooks:\n  02_unet:\n    epochs: yes\n")
    with pytest.raises(PipelineError, match=r"epochs = True: expected an integer"):
        pipeline.stage_parameters(pipeline.load_profile(str(prof)))


def test_every_stage_gets_the_device_and_the_resolved_run_folder(tmp_path, monkeypatch) -> None:
    """What each notebook is run with: its own parameters plus ``device`` as asked and ``run_dir`` as the absolute
    run folder (oracle: the arguments handed to papermill, compared with the request)."""
    _, run, calls, _ = _bookkeeping_chain(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert run(Path("rel_run"), device="cpu") == list(STAGES)
    for stage, params in calls:
        assert params["device"] == "cpu" and params["run_dir"] == str((tmp_path / "rel_run").resolve()), stage
    # reproduce refuses cuda up front on a machine without one (test_pipeline.py tests that); here only its passing on
    monkeypatch.setattr(pipeline, "check_device", lambda device: device)
    run(tmp_path / "other", device="cuda")
    assert {p["device"] for _, p in calls} == {"cuda"}


def test_set_wins_over_the_profiles_own_value(tmp_path, monkeypatch) -> None:
    """Precedence common < notebook section < --set: the profile gives 02 x = 5, --set unet.x=7 is what 02 runs with,
    and 03 keeps the common x = 1."""
    _, run, calls, _ = _bookkeeping_chain(tmp_path, monkeypatch, notebooks={"02_unet": {"x": 5}})
    run(tmp_path / "run", sets=["unet.x=7"])
    got = dict(calls)
    assert got["02_unet"]["x"] == 7 and got["03_fgsm"]["x"] == 1
    run(tmp_path / "run2")
    assert dict(calls)["02_unet"]["x"] == 5


def test_force_reruns_up_to_date_stages_and_trains_afresh(tmp_path, monkeypatch) -> None:
    """--force: every stage runs again although its fingerprint matches, and a stage whose manifest record says it
    was killed (status running, same request) clears its checkpoints instead of resuming them."""
    _, run, _, _ = _bookkeeping_chain(tmp_path, monkeypatch)
    out = tmp_path / "run"
    assert run(out) == list(STAGES)
    assert run(out) == []
    assert run(out, force=True) == list(STAGES)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["stages"]["02_unet"]["status"] = "running"
    (out / "manifest.json").write_text(json.dumps(manifest))
    ckpt = out / "models" / "baseline_ckpt"
    ckpt.mkdir(parents=True)
    assert run(out, only=["data", "unet"], force=True) == ["01_data", "02_unet"]
    rec = json.loads((out / "manifest.json").read_text())["stages"]["02_unet"]
    assert not ckpt.exists() and rec["resumed_checkpoints"] is False and rec["cleared_checkpoints"] == ["baseline_ckpt"]


def test_a_deleted_executed_notebook_reruns_its_stage_only(tmp_path, monkeypatch) -> None:
    """A stage counts as done only while its executed notebook is there (module docstring): delete 03's and a rerun
    redoes 03 alone (its fingerprint, hence every later one, is unchanged)."""
    _, run, _, _ = _bookkeeping_chain(tmp_path, monkeypatch)
    out = tmp_path / "run"
    run(out)
    (out / "notebooks" / STAGES["03_fgsm"]).unlink()
    assert run(out) == ["03_fgsm"]


def test_an_edited_code_cell_reruns_its_stage_and_what_follows(tmp_path, monkeypatch) -> None:
    """The notebook's code is part of the fingerprint, its Markdown is not: a changed code cell in 04 reruns 04-08,
    a new Markdown cell in 02 reruns nothing."""
    nb_dir, run, _, _ = _bookkeeping_chain(tmp_path, monkeypatch)
    out = tmp_path / "run"
    run(out)
    nb = nbformat.read(nb_dir / STAGES["02_unet"], as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("A note for the reader."))
    nbformat.write(nb, nb_dir / STAGES["02_unet"])
    assert run(out) == []
    nb = nbformat.read(nb_dir / STAGES["04_ifgsm"], as_version=4)
    nb.cells[1].source += "\nprint('changed')"
    nbformat.write(nb, nb_dir / STAGES["04_ifgsm"])
    assert run(out) == list(STAGES)[3:]


def test_seed_goes_only_to_notebooks_that_declare_it(tmp_path, monkeypatch) -> None:
    """``--seed`` sets the seed of the stages that have one; a notebook without a ``seed`` parameter is not handed one
    (papermill would inject it regardless) and the manifest's ``seeds`` lists only the others."""
    _, run, calls, _ = _bookkeeping_chain(tmp_path, monkeypatch, no_seed=("08_statistics",))
    run(tmp_path / "run", seed=5)
    got = dict(calls)
    assert "seed" not in got["08_statistics"] and all(got[s]["seed"] == 5 for s in list(STAGES)[:-1])
    man = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert man["seeds"] == {s: 5 for s in list(STAGES)[:-1]}


def test_an_interrupted_stage_is_recorded_and_resumes_its_checkpoints(tmp_path, monkeypatch) -> None:
    """Ctrl-C in 02: the exception propagates, the manifest says 02 was ``interrupted`` (not failed, not done), and the
    rerun of the same request resumes its checkpoints instead of clearing them."""
    _, run, _, fail = _bookkeeping_chain(tmp_path, monkeypatch)
    out = tmp_path / "run"
    fail["02_unet"] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        run(out)
    assert json.loads((out / "manifest.json").read_text())["stages"]["02_unet"]["status"] == "interrupted"
    (out / "models" / "baseline_ckpt").mkdir(parents=True)
    del fail["02_unet"]
    assert run(out) == list(STAGES)[1:]
    assert (out / "models" / "baseline_ckpt").is_dir()
    assert json.loads((out / "manifest.json").read_text())["stages"]["02_unet"]["resumed_checkpoints"] is True


def test_data_dir_is_resolved_and_a_relative_one_is_read_from_the_notebook_folder(tmp_path, monkeypatch) -> None:
    """--data-dir relative to the caller's folder reaches notebook 01 as an absolute path (the notebooks run in the
    notebook folder), and so does a relative ``--set data.data_dir`` (it used to be read from the notebook folder);
    giving both is refused (--data-dir silently won). A relative ``data_dir`` from a profile is signed where the
    notebooks will read it, the notebook folder (oracle: data_dir_signature of that folder)."""
    nb_dir, run, calls, _ = _bookkeeping_chain(tmp_path, monkeypatch)
    (tmp_path / "here" / "brats").mkdir(parents=True)
    (tmp_path / "here" / "brats" / "c1_t1.nii.gz").write_bytes(b"t1")
    monkeypatch.chdir(tmp_path / "here")
    run(tmp_path / "run", data_dir="brats", only=["data"])
    assert dict(calls)["01_data"]["data_dir"] == str(tmp_path / "here" / "brats")
    run(tmp_path / "run2", sets=["data.data_dir=brats"], only=["data"])
    assert dict(calls)["01_data"]["data_dir"] == str(tmp_path / "here" / "brats")
    (tmp_path / "link").symlink_to(tmp_path / "here" / "brats", target_is_directory=True)
    run(tmp_path / "run3", sets=[f"data.data_dir={tmp_path / 'link'}"], only=["data"])
    assert dict(calls)["01_data"]["data_dir"] == str(tmp_path / "link")  # an absolute one as it is (link kept)
    with pytest.raises(PipelineError, match=r"--data-dir brats and --set data.data_dir=other: give the data folder once"):
        run(tmp_path / "run4", data_dir="brats", sets=["data.data_dir=other"])
    assert not (tmp_path / "run4").exists()
    (nb_dir / "cases").mkdir()
    (nb_dir / "cases" / "c2_t1.nii.gz").write_bytes(b"t1 of another case")
    sig = pipeline._data_signature({"data_dir": "cases"}, nb_dir)
    assert sig == pipeline.data_dir_signature(nb_dir / "cases")


def test_data_dir_signature_sees_sub_second_mtimes(tmp_path) -> None:
    """The signature uses modification times in nanoseconds (its docstring): a file touched 1 µs later, same size and
    bytes, changes it (a same-second rewrite by a tool would otherwise go unnoticed)."""
    (tmp_path / "a.nii.gz").write_bytes(b"voxels")
    st = (tmp_path / "a.nii.gz").stat()
    base = (st.st_mtime_ns // 10**9) * 10**9 + 1000  # inside one second: 1 s resolution cannot tell them apart
    os.utime(tmp_path / "a.nii.gz", ns=(st.st_atime_ns, base))
    if (tmp_path / "a.nii.gz").stat().st_mtime_ns != base:
        pytest.skip("this file system keeps no sub-second modification times")
    sig = pipeline.data_dir_signature(tmp_path)
    os.utime(tmp_path / "a.nii.gz", ns=(st.st_atime_ns, base + 1000))
    assert pipeline.data_dir_signature(tmp_path) != sig


def test_cli_hands_every_option_to_reproduce(monkeypatch, tmp_path, capsys) -> None:
    """``robustseg reproduce`` passes each option through unchanged: every repeated --set in order, all --only stages,
    --force, --device, --data-dir and --out (oracle: the argv written by hand)."""
    seen: dict = {}

    def fake(profile, out, **kw):
        seen.update(kw, profile=profile, out=out)
        return {"profile": "smoke", "stages": {}}

    monkeypatch.setattr(pipeline, "reproduce", fake)
    argv = ["reproduce", "--profile", "smoke", "--out", str(tmp_path / "r"), "--set", "unet.epochs=1", "--set",
            "fgsm.eps_grid=[0]", "--only", "data", "unet", "--force", "--device", "cpu", "--data-dir", "d"]
    assert pipeline.main(argv) == 0
    assert seen == {"profile": "smoke", "out": str(tmp_path / "r"), "sets": ["unet.epochs=1", "fgsm.eps_grid=[0]"],
                    "only": ["data", "unet"], "force": True, "device": "cpu", "data_dir": "d", "seed": None}
    assert pipeline.main(["reproduce", "--profile", "smoke"]) == 0
    assert seen["force"] is False and seen["sets"] == [] and seen["only"] == []


def test_a_common_key_goes_only_to_the_notebooks_that_declare_it(tmp_path) -> None:
    """``common`` is shared by the notebooks that have the parameter: ``layout`` (01_data's only) reaches 01 alone,
    ``seed`` (every notebook's) reaches all eight; no notebook is handed a parameter it does not declare."""
    prof = tmp_path / "p.yaml"
    prof.write_text("common:\n  layout: msd\n  seed: 3\nnotebooks: {}\n")
    merged = pipeline.stage_parameters(pipeline.load_profile(str(prof)))
    assert merged["01_data"] == {"layout": "msd", "seed": 3}
    assert all(merged[s] == {"seed": 3} for s in list(STAGES)[1:])


def test_a_killed_run_of_another_request_is_not_resumed(tmp_path, monkeypatch) -> None:
    """Resuming needs the same request: 02 interrupted while running with x = 1 leaves checkpoints that a rerun with
    x = 3 must not continue from (they belong to another training): cleared, ``resumed_checkpoints`` False."""
    _, run, _, fail = _bookkeeping_chain(tmp_path, monkeypatch)
    out = tmp_path / "run"
    fail["02_unet"] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        run(out)
    (out / "models" / "baseline_ckpt").mkdir(parents=True)
    del fail["02_unet"]
    assert run(out, sets=["unet.x=3"]) == list(STAGES)[1:]
    rec = json.loads((out / "manifest.json").read_text())["stages"]["02_unet"]
    assert not (out / "models" / "baseline_ckpt").exists()
    assert rec["resumed_checkpoints"] is False and rec["cleared_checkpoints"] == ["baseline_ckpt"]


def test_only_on_an_earlier_stage_marks_the_later_ones_stale(stubs, done_run, no_kernels, tmp_path) -> None:
    """``--only unet --set unet.x=5`` reruns 02 alone: 03-08 were made from the old 02, so they are ``stale`` (not
    ``done``), ``compare`` refuses the run, and they are ``done`` again once the request is the one they were made for."""
    run = _copy(done_run, tmp_path)
    assert _ran(_run(stubs, run, only=["unet"], sets=["unet.x=5"])) == ["02_unet"]
    man = json.loads((run / "manifest.json").read_text())
    assert [s for s in STAGES if man["stages"][s]["status"] == "stale"] == list(STAGES)[2:]
    assert pipeline.stale_stages(man) == list(STAGES)[2:]
    assert "--only 02_unet" in man["stages"]["03_fgsm"]["stale_because"]
    with pytest.raises(ValueError, match=r"stages not done: 03_fgsm \(stale\), 04_ifgsm \(stale\)"):
        replicates.read_run(run)
    # back to the request 03-08 were made for: 02 reruns, they are up to date again without running
    assert _ran(_run(stubs, run, only=["unet"])) == ["02_unet"]
    man = json.loads((run / "manifest.json").read_text())
    assert pipeline.stale_stages(man) == [] and "stale_because" not in man["stages"]["03_fgsm"]
    # a stale stage reruns in a full call of the new request
    _run(stubs, run, only=["unet"], sets=["unet.x=5"])
    assert _ran(_run(stubs, run, sets=["unet.x=5"])) == list(STAGES)[2:]
    assert pipeline.stale_stages(json.loads((run / "manifest.json").read_text())) == []


def test_the_default_folder_refuses_a_run_on_other_data(stubs, no_kernels, tmp_path, monkeypatch) -> None:
    """``--seed 1`` then ``--seed 1 --set data.seed=0`` share the default folder ``runs/<profile>-seed1``: the second
    would replace the first replicate, so it is refused (nothing runs) unless ``--out`` names a folder; a change to a
    later stage still reruns in place."""
    monkeypatch.chdir(tmp_path)
    assert _ran(_run(stubs, None, seed=1)) == list(STAGES)
    del no_kernels[:]
    with pytest.raises(PipelineError, match=r"runs/stub-seed1 holds a run on other data \(01_data seed: 1 -> 0\)"):
        _run(stubs, None, seed=1, sets=["data.seed=0"])
    assert no_kernels == []  # nothing ran
    assert _ran(_run(stubs, None, seed=1, sets=["fgsm.x=2"])) == list(STAGES)[2:]
    assert _ran(_run(stubs, Path("runs/stub-seed1"), seed=1, sets=["data.seed=0"])) == list(STAGES)
    # the profile file itself changed (an update): not this request's own setting, so it reruns in place
    nb_dir, _ = stubs
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "stub.yaml").write_text(yaml.safe_dump({"common": {"seed": 0}, "notebooks": {"data": {"x": 7}}}))
    lines: list[str] = []
    pipeline.reproduce(str(tmp_path / "new" / "stub.yaml"), None, device="cpu", notebook_dir=nb_dir, log=lines.append,
                       seed=1, sets=["data.seed=0"])
    assert _ran(lines) == list(STAGES)


def test_cli_after_only_names_the_stale_stages_and_prints_no_claims(monkeypatch, tmp_path, capsys) -> None:
    """After an ``--only`` call that left later stages stale the CLI says which, and does not print the old claims
    table as if this run had measured it."""
    out = tmp_path / "r"
    (out / "tables").mkdir(parents=True)
    (out / "tables" / "claims.csv").write_text("claim,verdict,evidence\nC1,holds,an earlier request\n")
    stages = {s: {"status": "done" if i < 2 else "stale"} for i, s in enumerate(STAGES)}
    monkeypatch.setattr(pipeline, "reproduce", lambda profile, out, **kw: {"profile": "smoke", "stages": stages})
    assert pipeline.main(["reproduce", "--profile", "smoke", "--out", str(out), "--only", "unet"]) == 0
    text = capsys.readouterr().out
    assert "Not up to date for this request: 03_fgsm, 04_ifgsm" in text and "an earlier request" not in text
    assert "All stages done" not in text


def test_an_install_without_the_notebooks_says_to_install_a_checkout(tmp_path, monkeypatch) -> None:
    """After a plain ``pip install .`` the package's folder has no notebooks: the CLI says how to install instead of
    listing no known profiles."""
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", tmp_path / "notebooks")
    monkeypatch.setattr(pipeline, "PROFILE_DIR", tmp_path / "notebooks" / "profiles")
    with pytest.raises(PipelineError, match=r"no notebooks here; .* `python3 -m pip install -e \.`"):
        pipeline.load_profile("teaching")


# ----------------------------------------------------------------------------- session 20 audit (s20h7)
def test_only_refuses_before_running_anything(tmp_path, monkeypatch) -> None:
    """``--only unet ifgsm --set unet.x=4``: 04 reads 03, which this request makes stale, so the call is refused. The
    refusal follows from the fingerprints alone, so it comes before 02 trains (it used to come after)."""
    _, run, calls, _ = _bookkeeping_chain(tmp_path, monkeypatch)
    out = tmp_path / "run"
    run(out)
    before = (out / "manifest.json").read_text()
    del calls[:]
    with pytest.raises(PipelineError, match=r"--only 04_ifgsm: it reads the outputs of 03_fgsm"):
        pipeline.reproduce(str(tmp_path / "nb" / "stub.yaml"), out, device="cpu", notebook_dir=tmp_path / "nb",
                           log=lambda _: None, only=["unet", "ifgsm"], sets=["unet.x=4"])
    assert calls == [] and (out / "manifest.json").read_text() == before


def test_a_second_call_on_a_busy_run_folder_is_refused(tmp_path, monkeypatch) -> None:
    """Two ``reproduce`` calls on one run folder at once would train the same stage twice into the same checkpoints
    (the second one takes the first one's ``running`` record for a killed run and resumes it) and overwrite each
    other's manifest: the second is refused, naming the folder, and runs nothing. A notebook's own headless call
    (the Colab setup cell, a child process of the run holding the folder) is let through."""
    import threading

    import papermill

    _, run, calls, _ = _bookkeeping_chain(tmp_path, monkeypatch)
    out = tmp_path / "run"
    stub_execute = papermill.execute_notebook
    entered, release = threading.Event(), threading.Event()
    executed: list[str] = []

    def slow_execute(src, dst, parameters=None, **kwargs):
        executed.append(Path(src).stem)
        if Path(src).stem == "02_unet":
            entered.set()
            release.wait(30)
        return stub_execute(src, dst, parameters=parameters, **kwargs)

    monkeypatch.setattr(papermill, "execute_notebook", slow_execute)
    errors: list[BaseException] = []

    def first() -> None:
        try:
            run(out)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    t = threading.Thread(target=first)
    t.start()
    try:
        assert entered.wait(30)
        n = len(executed)
        with pytest.raises(PipelineError, match=rf"{re.escape(str(out))}: another robustseg reproduce is running"):
            run(out)
        assert len(executed) == n  # the second call ran nothing
        # a child process of the holder (same folder, the holder's pid in the environment) is not refused
        monkeypatch.setenv(pipeline._LOCK_ENV, f"{os.getpid() + 1}:{out.resolve()}")
        assert run(out, only=["data"]) == []
        monkeypatch.delenv(pipeline._LOCK_ENV)
    finally:
        release.set()
        t.join(30)
    assert not errors
    assert json.loads((out / "manifest.json").read_text())["stages"]["08_statistics"]["status"] == "done"
    assert run(out) == []  # the lock is released with the call


def test_an_unreadable_manifest_is_named(tmp_path, monkeypatch) -> None:
    """A manifest that is not JSON (or not a JSON object) is refused with its path, not a bare JSONDecodeError."""
    _, run, _, _ = _bookkeeping_chain(tmp_path, monkeypatch)
    out = tmp_path / "run"
    out.mkdir()
    (out / "manifest.json").write_text('{"stages": {')
    with pytest.raises(PipelineError, match=rf"{re.escape(str(out / 'manifest.json'))}: not valid JSON"):
        run(out)
    (out / "manifest.json").write_text("[]")
    with pytest.raises(PipelineError, match=rf"{re.escape(str(out / 'manifest.json'))}: expected a JSON object"):
        run(out)


def test_an_empty_data_dir_is_refused_not_taken_for_synthetic_data(tmp_path, monkeypatch) -> None:
    """``--data-dir "$BRATS"`` with the variable unset passes an empty string: refused, naming the option (it used to
    run the whole chain on synthetic data without a word)."""
    _, run, calls, _ = _bookkeeping_chain(tmp_path, monkeypatch)
    with pytest.raises(PipelineError, match=r"--data-dir '': empty"):
        run(tmp_path / "run", data_dir="")
    assert calls == []


# ----------------------------------------------------------------------------- CLI audit (cli23)
def test_a_run_folder_among_the_source_notebooks_is_refused(tmp_path, monkeypatch) -> None:
    """``cd <repo> && robustseg reproduce --out .``: the run's ``notebooks/`` is the source folder, and papermill would
    overwrite the source notebooks with executed copies. Refused before anything is written, as is an --out that is the
    source folder or inside it (oracle: the source folder's bytes and listing, and papermill never called); a folder
    beside the notebooks runs."""
    nb_dir, run, calls, _ = _bookkeeping_chain(tmp_path, monkeypatch, nb_name="notebooks")
    sources = {p.name: p.read_bytes() for p in nb_dir.iterdir()}
    monkeypatch.chdir(tmp_path)
    (tmp_path / "alias").symlink_to(tmp_path, target_is_directory=True)
    for out in (".", str(tmp_path), "notebooks/..", "alias"):
        with pytest.raises(PipelineError, match=r"--out .*: its notebooks/ folder is the source notebooks' folder "
                                                r".*overwrite.*; leave --out out \(runs/<profile>"):
            run(Path(out))
    for out in ("notebooks", "notebooks/runs/x", str(nb_dir / "profiles")):
        with pytest.raises(PipelineError, match=r"--out .*: the source notebooks' folder .* or a folder inside it"):
            run(Path(out))
    assert calls == [] and {p.name: p.read_bytes() for p in nb_dir.iterdir()} == sources
    assert not (tmp_path / ".robustseg.lock").exists() and not (tmp_path / "manifest.json").exists()
    assert run(Path("runs/x")) == list(STAGES)  # beside the notebooks: fine
    assert {p.name: p.read_bytes() for p in nb_dir.iterdir()} == sources


def test_an_empty_out_is_refused_not_taken_for_the_default_folder(tmp_path, monkeypatch, capsys) -> None:
    """``--out "$RUN"`` with RUN unset passed an empty string, which was taken as no --out: the default folder, without
    its protection against replacing another request's data. Refused, naming the option, like ``--data-dir ""``."""
    _, run, calls, _ = _bookkeeping_chain(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)
    for out in ("", "  "):
        with pytest.raises(PipelineError, match=r"--out '\s*': empty; give a run folder"):
            run(out)
    assert calls == [] and not (tmp_path / "runs").exists()
    assert pipeline.main(["reproduce", "--profile", "smoke", "--out", ""]) == 2
    assert "robustseg: error: --out '': empty" in capsys.readouterr().err


def test_an_out_that_is_a_file_or_cannot_be_created_is_named(tmp_path, monkeypatch, capsys) -> None:
    """``--out`` on a file, under a file, or where the folder or its lock file cannot be made gave FileExistsError,
    NotADirectoryError or PermissionError tracebacks: each is refused naming the option or the folder, and why."""
    _, run, calls, _ = _bookkeeping_chain(tmp_path, monkeypatch)
    (tmp_path / "afile").write_text("not a run folder")
    with pytest.raises(PipelineError, match=rf"^--out {re.escape(str(tmp_path / 'afile'))}: not a folder"):
        run(tmp_path / "afile")
    with pytest.raises(PipelineError, match=rf"--out .*: cannot create {re.escape(str(tmp_path / 'afile'))}.*: Not a "
                                            "directory"):
        run(tmp_path / "afile" / "run")
    assert (tmp_path / "afile").read_text() == "not a run folder" and calls == []
    assert pipeline.main(["reproduce", "--profile", "smoke", "--out", str(tmp_path / "afile")]) == 2
    assert capsys.readouterr().err.startswith(f"robustseg: error: --out {tmp_path / 'afile'}: not a folder")
    if not os.path.ismount("/sys"):  # sysfs: no one, root included, may make a folder or file at its top
        pytest.skip("no sysfs at /sys here to stand for a place nobody may write in")
    with pytest.raises(PipelineError, match=r"--out /sys/robustseg-run: cannot create /sys/robustseg-run: "):
        run(Path("/sys/robustseg-run"))
    with pytest.raises(PipelineError, match=r"^/sys: cannot create the run folder's lock file \.robustseg\.lock \("):
        run(Path("/sys"))
    assert calls == []


def test_a_refused_call_removes_the_run_folder_it_made(tmp_path, monkeypatch) -> None:
    """A refusal after the run folder was made (``--only`` whose upstream is missing, a ``data_dir`` that is not there)
    left an empty folder holding only ``.robustseg.lock``: the folders this call made are removed again. A folder that
    was there before, or that a stage wrote in, is kept."""
    _, run, calls, fail = _bookkeeping_chain(tmp_path, monkeypatch)
    out = tmp_path / "new" / "deeper" / "run"
    with pytest.raises(PipelineError, match=r"--only 03_fgsm: it reads the outputs of 01_data, 02_unet"):
        run(out, only=["fgsm"])
    assert not (tmp_path / "new").exists()
    with pytest.raises(PipelineError, match=r"data_dir '/no/such/data'"):
        run(out, sets=["data.data_dir=/no/such/data"])
    assert not (tmp_path / "new").exists() and calls == []
    (tmp_path / "mine").mkdir()
    with pytest.raises(PipelineError, match=r"--only 03_fgsm"):
        run(tmp_path / "mine", only=["fgsm"])
    assert (tmp_path / "mine").is_dir()  # not made by this call
    fail["02_unet"] = RuntimeError("a stage failed")
    with pytest.raises(PipelineError, match="02_unet .* failed"):
        run(out)
    assert (out / "manifest.json").is_file() and (out / "notebooks" / STAGES["01_data"]).is_file()


def test_cli_done_line_after_only_has_no_doubled_period(monkeypatch, tmp_path, capsys) -> None:
    """``--out . --only unet`` printed ``run folder .. Not up to date``: the path ends the sentence no more."""
    monkeypatch.chdir(tmp_path)
    stages = {s: {"status": "done" if i < 2 else "stale"} for i, s in enumerate(STAGES)}
    monkeypatch.setattr(pipeline, "reproduce", lambda profile, out, **kw: {"profile": "smoke", "stages": stages})
    assert pipeline.main(["reproduce", "--profile", "smoke", "--out", ".", "--only", "unet"]) == 0
    done = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("Done"))
    assert done.startswith("Done: 02_unet (run folder .). Not up to date for this request: 03_fgsm") and ".." not in done


def test_repeated_only_and_set_accumulate(monkeypatch) -> None:
    """A second ``--only`` replaced the first (``nargs="+"`` alone): ``--only data --only unet`` ran 02 only. Both
    options now add up, in order (oracle: the argv written by hand)."""
    seen: dict = {}

    def fake(profile, out, **kw):
        seen.update(kw)
        return {"profile": "smoke", "stages": {}}

    monkeypatch.setattr(pipeline, "reproduce", fake)
    argv = ["reproduce", "--out", "r", "--only", "data", "--set", "unet.epochs=1", "--only", "unet", "fgsm", "--set",
            "unet.lr=0.1"]
    assert pipeline.main(argv) == 0
    assert seen["only"] == ["data", "unet", "fgsm"] and seen["sets"] == ["unet.epochs=1", "unet.lr=0.1"]
    args = pipeline.build_parser().parse_args(["compare", "r1", "r2", "r3", "--labels", "a", "b", "--labels", "c"])
    assert args.labels == ["a", "b", "c"]  # compare's --labels likewise
