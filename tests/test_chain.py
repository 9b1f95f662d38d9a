"""The smoke notebook chain through papermill: runs, skips when up to date, resumes after a kill, names a failing cell.

These tests run real notebooks (minutes on 2 cores); they are the CI's end-to-end check.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from robustseg_lib import pipeline, stats
from robustseg_lib.pipeline import STAGES, PipelineError

pytestmark = pytest.mark.slow


def _errors(nb_path: Path) -> list[str]:
    nb = json.loads(nb_path.read_text())
    return [f"{o.get('ename')}: {o.get('evalue')}" for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]


def _printed(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text())
    return "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []) if o.get("output_type") == "stream")


def _tables(run: Path) -> dict[str, pd.DataFrame]:
    """Every table of a run, without wall-time columns (the only thing allowed to differ)."""
    out = {}
    for p in sorted((run / "tables").glob("*.csv")):
        df = pd.read_csv(p)
        out[p.name] = df.drop(columns=[c for c in df.columns if c == "seconds"])
    return out


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("smoke")
    lines: list[str] = []
    pipeline.reproduce("smoke", out, device="cpu", log=lines.append)
    assert len(lines) == len(STAGES), lines
    return out


def test_smoke_chain_writes_every_artefact(smoke_run: Path) -> None:
    manifest = json.loads((smoke_run / "manifest.json").read_text())
    assert manifest["profile"] == "smoke" and manifest["git_sha"]
    assert {"torch", "monai", "python"} <= set(manifest["versions"])
    for stage, fname in STAGES.items():
        rec = manifest["stages"][stage]
        assert rec["status"] == "done" and rec["seconds"] > 0, stage
        assert set(manifest["parameters"][stage]) <= set(pipeline.notebook_parameters(stage))
        executed = smoke_run / "notebooks" / fname
        assert executed.is_file() and _errors(executed) == [], (stage, _errors(executed))
    for name in ("baseline", "distilled", "advtrain", "advtrain_static"):
        assert (smoke_run / "models" / f"{name}.pt").is_file(), name
        assert json.loads((smoke_run / "models" / f"{name}.train.json").read_text())["config"]["epochs"] >= 1, name
    table = pd.concat([pd.read_csv(p) for p in (smoke_run / "tables").glob("results_*.csv")])
    assert {"case_id", "model", "attack", "eps", "steps", "region", "dice", "hd95"} <= set(table.columns)
    assert set(table.model) >= {"baseline", "distilled", "advtrain"}
    assert {"clean", "fgsm", "ifgsm", "tifgsm"} <= set(table.attack)
    assert table.dice.between(0, 1).all()
    claims = pd.read_csv(smoke_run / "tables" / "claims.csv")
    assert list(claims.claim) == ["C1", "C2", "C3", "C4"]
    assert set(claims.verdict) <= set(stats.VERDICTS)
    report = (smoke_run / "report" / "report.md").read_text()
    assert "## Claims" in report and ".png" in report
    assert "### Decision rules" in report and "| 08_statistics | running (this report) |" in report
    # the claims are judged on their own comparison table (the paper's attacks only), written beside them
    cc = pd.read_csv(smoke_run / "tables" / "claims_comparisons.csv")
    full = pd.read_csv(smoke_run / "tables" / "comparisons.csv")
    assert "et_to_ncr" in set(full.target_policy_b.dropna()) and "et_to_ncr" not in set(cc.target_policy_b.dropna())
    assert "claims_comparisons" in report
    drops = pd.read_csv(smoke_run / "tables" / "drops.csv")  # C2's context: one row per baseline attack x eps > 0
    assert len(drops) == len(table[(table.model == "baseline") & (table.attack != "clean") & (table.eps > 0)
                                   & ~table.attack.str.startswith("transfer_")].groupby(["attack", "target_policy", "eps"], dropna=False))
    assert drops.psnr.notna().all() and "### C2 in context" in report
    # the verdicts on every region (and without empty-truth cases, where a region has such cases)
    by_region = pd.read_csv(smoke_run / "tables" / "claims_by_region.csv")
    vols = pd.read_csv(smoke_run / "tables" / "data_region_volumes.csv", dtype={"case_id": str})
    vols = vols[vols.case_id.isin(set(table.case_id.astype(str)))]
    # the empty-truth sentence is there exactly when an evaluated case lacks a region
    has_empty = bool((vols[["WT", "TC", "ET"]] == 0).to_numpy().any())
    assert ("Evaluated cases whose ground truth has no voxel of a region" in report) == has_empty
    expected = ["WT", "TC", "ET"]
    expected = [a for r in expected for a in [r] + ([f"{r}, {(vols[r] == 0).sum()} empty-truth case"
                                                     + ("s" if (vols[r] == 0).sum() > 1 else "") + " excluded"]
                                                    if (vols[r] == 0).any() and (vols[r] > 0).any() else [])]
    assert list(pd.unique(by_region.analysis)) == expected
    assert "### Sensitivity" in report
    # no warning reaches a student: the notebooks filter none, so any library warning would show here
    for fname in STAGES.values():
        nb = json.loads((smoke_run / "notebooks" / fname).read_text())
        err = "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code"
                      for o in c.get("outputs", []) if o.get("name") == "stderr")
        assert "Warning" not in err, (fname, err[:500])
    assert "## Gradient-masking diagnostics" in report and "diagnostics_06_distillation" in report and "verdict" in report
    # the machine the numbers came from; the kernels' own printout is the oracle for the thread count
    machine = manifest["machine"]
    assert machine["visible_cores"] == os.cpu_count() and 1 <= machine["cpu_budget"] <= os.cpu_count()
    for stage, fname in STAGES.items():
        assert f"device: cpu; torch threads: {machine['torch_threads']}\n" in _printed(smoke_run / "notebooks" / fname), stage
        assert manifest["stages"][stage]["machine"] == machine["summary"]
    assert machine["summary"] in report


def test_every_saved_figure_is_shown(smoke_run: Path) -> None:
    """A cell that saves a figure also shows it (once; a loop once per figure): the statistics figures are built
    without pyplot, where ``plt.show()`` shows nothing, and students read the notebooks, not the PNG files."""
    for fname in STAGES.values():
        nb = json.loads((smoke_run / "notebooks" / fname).read_text())
        for c in nb["cells"]:
            src = "".join(c["source"]) if c["cell_type"] == "code" else ""
            if "atomic_savefig(" not in src:
                continue
            shown = sum("image/png" in o.get("data", {}) for o in c.get("outputs", []))
            assert shown >= 1 if "for " in src else shown == 1, (fname, src[:200], shown)


def test_rerun_skips_up_to_date_stages(smoke_run: Path) -> None:
    lines: list[str] = []
    pipeline.reproduce("smoke", smoke_run, device="cpu", log=lines.append)
    assert len(lines) == len(STAGES) and all("up to date, skipped" in line for line in lines), lines


def _first_stages_of(run: Path, out: Path, n: int = 3) -> None:
    """Copy of ``run`` as it stood after its first ``n`` stages (01-03 by default): their records, notebooks, tables,
    attack records, models and figures; the later stages' outputs and records removed, so a call on ``out`` skips the
    first stages and runs the rest."""
    import shutil

    shutil.copytree(run, out)
    later = list(STAGES)[n:]
    man = json.loads((out / "manifest.json").read_text())
    for stage in later:
        man["stages"].pop(stage, None)
        (out / "notebooks" / STAGES[stage]).unlink()
    (out / "manifest.json").write_text(json.dumps(man))
    early = ("data_", "history_baseline", "unet_", "results_02_", "results_03_", "percept_03_", "03_")
    for folder in ("tables", "figures"):
        for f in (out / folder).iterdir():
            if not f.name.startswith(early):
                f.unlink()
    for f in (out / "attacks").iterdir():
        if f.name != "fgsm.json":
            f.unlink()
    for f in (out / "models").iterdir():
        if not f.name.startswith("baseline"):
            shutil.rmtree(f) if f.is_dir() else f.unlink()
    shutil.rmtree(out / "report", ignore_errors=True)


def test_killed_run_resumes_and_gives_the_same_tables(smoke_run: Path, tmp_path: Path) -> None:
    """A chain killed while stage 04 runs (01-03 done: taken from the smoke run as they stood then, which saves running
    them again) resumes with 01-03 skipped, and every table is the uninterrupted run's to the bit."""
    out = tmp_path / "killed"
    _first_stages_of(smoke_run, out)
    assert sorted(p.name for p in (out / "tables").glob("*.csv")) == sorted(
        ["data_region_volumes.csv", "data_threshold_baseline.csv", "history_baseline.csv", "results_02_unet.csv",
         "results_03_fgsm.csv", "percept_03_fgsm.csv"])  # fmt: skip
    cmd = [sys.executable, "-m", "robustseg_lib", "reproduce", "--profile", "smoke", "--out", str(out), "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    manifest = out / "manifest.json"
    deadline = time.time() + 600
    try:
        while time.time() < deadline:  # kill while stage 04 runs (01-03 finished)
            if manifest.is_file():
                try:
                    stages = json.loads(manifest.read_text()).get("stages", {})
                except ValueError:
                    stages = {}
                if stages.get("04_ifgsm", {}).get("status") == "running":
                    break
            if proc.poll() is not None:
                pytest.fail("the chain finished before it could be killed")
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    stages = json.loads(manifest.read_text())["stages"]
    assert stages["03_fgsm"]["status"] == "done" and stages["04_ifgsm"]["status"] == "running"
    lines: list[str] = []
    pipeline.reproduce("smoke", out, device="cpu", log=lines.append)
    assert all("skipped" in line for line in lines[:3]) and "done" in lines[3], lines
    assert [line.split("]")[0] for line in lines[:8]] == [f"[{s}" for s in STAGES]
    ref, got = _tables(smoke_run), _tables(out)
    assert ref.keys() == got.keys()
    for name in ref:  # exactly: same machine, same seeds, so the resumed chain must give the same bits
        pd.testing.assert_frame_equal(ref[name], got[name], obj=name, check_exact=True)


def test_failing_cell_is_named_and_partial_notebook_kept(tmp_path: Path, capfd) -> None:
    (tmp_path / "empty").mkdir()
    run = tmp_path / "run"
    with pytest.raises(PipelineError) as err:
        # what only the notebook can refuse (the CLI checks types, choices and value ranges, not a folder's cases)
        pipeline.reproduce("smoke", run, device="cpu", data_dir=str(tmp_path / "empty"), only=["data"], log=lambda s: None)
    # the chain's kernels start with pipeline.kernel_config(): no unencrypted-TCP warning from ipykernel
    assert "running over TCP without encryption" not in capfd.readouterr().err
    msg = str(err.value)
    assert "01_data" in msg and "cell" in msg and f"{tmp_path / 'empty'}: no cases found" in msg
    assert (run / "notebooks" / "01_data.ipynb").is_file()
    assert json.loads((run / "manifest.json").read_text())["stages"]["01_data"]["status"] == "failed"


def test_data_notebook_with_another_parameter_set(tmp_path: Path) -> None:
    """01_data under papermill with a second parameter set (MSD layout, another grid and seed, the training cases
    redrawn): the test cases are those of data seed 3, the others those of seed 5 (oracle: each seed's own set)."""
    sets = ["data.layout=msd", "data.shape=[40, 40, 40]", "data.work_shape=[32, 32, 32]", "data.n_cases=6", "data.seed=3",
            "data.train_seed=5"]
    pipeline.reproduce("smoke", tmp_path, device="cpu", sets=sets, only=["data"], log=lambda s: None)
    assert _errors(tmp_path / "notebooks" / "01_data.ipynb") == []
    import numpy as np

    from robustseg_lib.data import list_cases, load_prepared, prepare_synthetic

    assert list_cases(tmp_path / "data" / "raw")[0].layout == "msd"
    prep = load_prepared(tmp_path / "data" / "prepared.npz")
    assert prep["images"].shape == (6, 4, 32, 32, 32)
    assert (tmp_path / "tables" / "data_threshold_baseline.csv").is_file()
    fr = json.loads((tmp_path / "manifest.json").read_text())["parameters"]["01_data"]["fractions"]
    own = {s: load_prepared(prepare_synthetic(tmp_path / f"own{s}.npz", 6, shape=(40, 40, 40), work_shape=(32, 32, 32),
                                              seed=s, layout="msd", fractions=tuple(fr), progress=False)) for s in (3, 5)}
    assert prep["split"].tolist() == own[3]["split"].tolist() and "test" in prep["split"].tolist()
    for i, part in enumerate(prep["split"]):
        src = own[3] if part == "test" else own[5]
        assert np.array_equal(prep["labels"][i], src["labels"][i]) and np.array_equal(prep["images"][i], src["images"][i])
    # the same run folder again, fewer cases in another layout, over a set that an older version wrote (no marker):
    # exactly the new cases are listed and prepared
    (tmp_path / "data" / "raw" / ".robustseg_synthetic.json").unlink()
    sets = ["data.layout=brats2021", "data.shape=[40, 40, 40]", "data.work_shape=[32, 32, 32]", "data.n_cases=4"]
    pipeline.reproduce("smoke", tmp_path, device="cpu", sets=sets, only=["data"], log=lambda s: None)
    assert [c.layout for c in list_cases(tmp_path / "data" / "raw")] == ["brats2021"] * 4
    assert load_prepared(tmp_path / "data" / "prepared.npz")["images"].shape[0] == 4


def test_data_notebook_bootstraps_real_training_cases(tmp_path: Path) -> None:
    """01_data under papermill on a real-layout folder (BraTS 2023, written by our writer) with train_seed: the
    split and the test cases are those of the plain preparation, and every other row is the plain preparation's row
    of the case its id names (oracle: data.prepare_dataset without train_seed); the notebook says how many distinct
    cases each part kept, and the region-volume table carries the copies' ids."""
    import numpy as np

    from robustseg_lib import data

    raw = tmp_path / "real"
    data.make_synthetic_dataset(raw, 8, shape=(32, 32, 32), seed=4, layout="brats2023", progress=False)
    run = tmp_path / "run"
    pipeline.reproduce("smoke", run, data_dir=str(raw), device="cpu", sets=["data.train_seed=2"], only=["data"],
                       log=lambda s: None)  # fmt: skip
    assert _errors(run / "notebooks" / "01_data.ipynb") == []
    p = json.loads((run / "manifest.json").read_text())["parameters"]["01_data"]
    assert p["train_seed"] == 2 and p["data_dir"] == str(raw)
    prep = data.load_prepared(run / "data" / "prepared.npz")
    plain = data.load_prepared(data.prepare_dataset(raw, tmp_path / "plain.npz", tuple(p["work_shape"]),
                                                    fractions=tuple(p["fractions"]), seed=p["seed"], progress=False))
    assert prep["split"].tolist() == plain["split"].tolist()
    row = {c: i for i, c in enumerate(plain["case_ids"].tolist())}
    for i, (cid, part) in enumerate(zip(prep["case_ids"].tolist(), prep["split"].tolist())):
        j = row[data.original_case_id(cid)]
        assert (j == i) if part == "test" else plain["split"][j] == part, cid
        assert np.array_equal(prep["images"][i], plain["images"][j]) and np.array_equal(prep["labels"][i], plain["labels"][j])
    assert prep["case_ids"].tolist() != plain["case_ids"].tolist()  # seed 2 draws a case twice here
    text = (run / "notebooks" / "01_data.ipynb").read_text()
    assert "bootstrap of the training and validation cases, distinct cases per part" in text
    vols = pd.read_csv(run / "tables" / "data_region_volumes.csv", dtype={"case_id": str})
    assert vols["case_id"].tolist() == prep["case_ids"].tolist()


def test_distillation_notebook_plain_parametrisation(smoke_run: Path, tmp_path: Path) -> None:
    """06 with output_scaling=False trains plain networks at T (a teacher and a student per temperature);
    the default run deploys the output-scaled student as LogitScale(net, T)."""
    import shutil

    from robustseg_lib import models

    default, _ = models.load_model(smoke_run / "models" / "distilled.pt")
    assert isinstance(default, models.LogitScale) and default.scale == 10.0
    assert not (smoke_run / "models" / "student_T1_ckpt").exists()  # T = 1 reuses the T = 10 student

    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    pipeline.reproduce("smoke", run, device="cpu", sets=["distillation.output_scaling=False"], only=["distillation"], log=lambda s: None)
    assert _errors(run / "notebooks" / "06_distillation.ipynb") == []
    plain, spec = models.load_model(run / "models" / "distilled.pt")
    assert not isinstance(plain, models.LogitScale) and spec["temperature"] == 10.0
    for d in ("teacher_T10_ckpt", "student_T10_ckpt", "student_T1_ckpt"):
        assert (run / "models" / d / "last.pt").is_file(), d


def test_tifgsm_notebook_refuses_extra_policies_that_repeat(smoke_run: Path, tmp_path: Path) -> None:
    """Run directly (not through the CLI, which refuses it up front), notebook 05 stops before attacking when
    extra_policies repeats the main policy: its rows would be written twice and stage 08 would fail on them."""
    import shutil

    import papermill

    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    before = (run / "tables" / "results_05_tifgsm.csv").read_bytes()
    for extra in (["erase"], ["et_to_ncr", "et_to_ncr"]):
        with pytest.raises(papermill.PapermillExecutionError, match="must not repeat the main policy"):
            papermill.execute_notebook(str(pipeline.NOTEBOOK_DIR / "05_tifgsm.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3",
                                       parameters={"run_dir": str(run), "device": "cpu", "policy": "erase", "extra_policies": extra},
                                       progress_bar=False)
    assert (run / "tables" / "results_05_tifgsm.csv").read_bytes() == before  # stopped before writing anything


def test_whole_volume_inference_through_the_chain(smoke_run: Path, tmp_path: Path) -> None:
    """02 + 03 with a crop smaller than the volume and inference='whole' (as in the paper profile):
    the stored spec carries the mode, and the clean test Dice (02 table, and eps 0 in the FGSM table) is that of one pass
    of the network over each volume (oracle: its own forward and the metrics module)."""
    import shutil

    import torch

    from robustseg_lib import evaluation, models
    from robustseg_lib.artefacts import RunPaths
    from robustseg_lib.metrics import dice_per_region

    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    sets = ["unet.inference=whole", "unet.crop=[16, 16, 16]"]
    pipeline.reproduce("smoke", run, device="cpu", sets=sets, only=["unet", "fgsm"], log=lambda s: None)
    for nb in ("02_unet.ipynb", "03_fgsm.ipynb"):
        assert _errors(run / "notebooks" / nb) == [], nb
    net, spec = models.load_model(run / "models" / "baseline.pt")
    assert spec["inference"] == "whole" and spec["crop"] == [16, 16, 16]
    test = evaluation.load_split(RunPaths(run), "test")
    with torch.no_grad():
        pred = net(test.images).argmax(1)
    want = {test.case_ids[i]: dice_per_region(pred[i], test.labels[i])["WT"] for i in range(len(test))}
    for name, query in (("results_02_unet", "region == 'WT'"), ("results_03_fgsm", "region == 'WT' and eps == 0")):
        rows = pd.read_csv(run / "tables" / f"{name}.csv").query(query)
        assert len(rows) == len(test), name
        assert rows.dice.to_numpy() == pytest.approx([want[c] for c in rows.case_id], abs=1e-6), name


def test_summarise_run_reads_the_run_files(smoke_run: Path) -> None:
    """tools/summarise_run.py (what gpu_run.sh returns as summary.md): header from the manifest, machine included."""
    tool = Path(__file__).resolve().parents[1] / "tools" / "summarise_run.py"
    out = subprocess.run([sys.executable, str(tool), str(smoke_run)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    manifest = json.loads((smoke_run / "manifest.json").read_text())
    first = out.stdout.splitlines()[0]
    assert manifest["machine"]["summary"] in first and manifest["git_sha"][:10] in first
    for stage, rec in manifest["stages"].items():
        assert f"| {stage} | {rec['seconds']:.0f} |" in out.stdout
    assert "Clean test Dice" in out.stdout
