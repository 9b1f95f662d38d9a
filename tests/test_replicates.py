"""Replicate runs (robustseg_lib.replicates, ``robustseg compare``, ``reproduce --seed``).

The per-run tables are checked on hand-made run folders against hand-written expectations; the pooled claims on the
committed seed replicates (docs/results/teaching-seeds) against scipy's Wilcoxon test on differences computed here
from the raw per-case CSVs, and against the committed pooled verdicts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from robustseg_lib import data, pipeline, replicates
from robustseg_lib.stats import CLAIM_COLUMNS, SENSITIVITY_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT / "docs" / "results" / "teaching-seeds"
#: The committed teaching run (seed 0) and its replicates, in seed order (seed2 before seed10).
COMMITTED_RUNS = [ROOT / "docs" / "results" / "teaching-cpu",
                  *sorted(SEEDS.glob("seed*"), key=lambda d: int(d.name.removeprefix("seed")))]  # fmt: skip


def _fake_run(root: Path, seed: int, verdicts: dict[str, tuple[str, int, int, int]], *, epochs: int = 15,
              status: str = "done") -> Path:  # fmt: skip
    """A run folder with a manifest and a claims_by_region table (WT only): claim -> (verdict, tests, support, against)."""
    root.mkdir(parents=True)
    params = {s: {"seed": seed} for s in pipeline.STAGES}
    params["02_unet"]["epochs"] = epochs
    stages = {s: {"status": "done", "seconds": 10.0} for s in pipeline.STAGES}
    stages["08_statistics"]["status"] = status
    man = {"profile": "teaching", "git_sha": "abc123def4567", "machine": {"summary": "test CPU"}, "parameters": params,
           "stages": stages}  # fmt: skip
    (root / "manifest.json").write_text(json.dumps(man))
    rows = []
    for claim, (verdict, n, sup, ag) in verdicts.items():
        rows.append({"analysis": "WT", "region": "WT", "n_cases": 14, "n_excluded": 0, "claim": claim, "statement": "s",
                     "verdict": verdict, "evidence": "e", "n_tests": n, "n_support": sup, "n_against": ag,
                     "rel_drop": 0.5 if claim == "C2" else np.nan, "rel_drop_ci_lo": np.nan, "rel_drop_ci_hi": np.nan})  # fmt: skip
    (root / "tables").mkdir()
    pd.DataFrame(rows, columns=SENSITIVITY_COLUMNS + CLAIM_COLUMNS).to_csv(root / "tables" / "claims_by_region.csv", index=False)
    return root


def test_verdicts_side_by_side_with_their_agreement(tmp_path) -> None:
    a = _fake_run(tmp_path / "s0", 0, {"C2": ("holds", 9, 2, 0), "C3": ("contradicted", 9, 0, 2), "C4": ("holds", 18, 18, 0)})
    b = _fake_run(tmp_path / "s1", 1, {"C2": ("holds", 9, 1, 0), "C3": ("contradicted", 9, 0, 5), "C4": ("mixed", 18, 17, 0)})
    c = _fake_run(tmp_path / "s2", 2, {"C2": ("holds", 9, 3, 0), "C3": ("not supported", 9, 0, 0), "C4": ("mixed", 18, 16, 0)})
    runs = [replicates.read_run(d) for d in (a, b, c)]
    assert runs[1]["seeds"] == [1] and runs[0]["n_cases"] == 14 and runs[2]["machine"] == "test CPU"
    agree = replicates.verdict_agreement(replicates.verdict_table(runs, ["s0", "s1", "s2"])).set_index("claim")
    assert list(agree.columns) == ["analysis", "s0", "s1", "s2", "agreement"]
    assert agree.loc["C2", "s1"] == "holds (50 %)" and agree.loc["C2", "agreement"] == "all holds"
    assert agree.loc["C4", "s0"] == "holds (18/18)" and agree.loc["C4", "s2"] == "mixed (16/18)"
    assert agree.loc["C4", "agreement"] == "mixed 2, holds 1"  # most frequent first
    assert agree.loc["C3", "agreement"] == "contradicted 2, not supported 1"
    assert agree.loc["C3", "s1"] == "contradicted (0/9, 5 against)"


def _summary(root: Path, rows: list[tuple]) -> None:
    cols = ["model", "attack", "target_policy", "source_model", "eps", "region", "n", "mean_dice", "ci_lo", "ci_hi"]
    pd.DataFrame([(*r[:5], "WT", 14, r[5], 0.0, 1.0) for r in rows], columns=cols).to_csv(root / "tables" / "summary.csv", index=False)


def test_dice_by_run_sets_conditions_side_by_side_without_diagnostics(tmp_path) -> None:
    a = _fake_run(tmp_path / "a", 0, {"C1": ("holds", 3, 3, 0)})
    b = _fake_run(tmp_path / "b", 1, {"C1": ("holds", 3, 3, 0)})
    _summary(a, [("baseline", "clean", None, None, 0.0, 0.80), ("baseline", "fgsm", None, None, 0.0, 0.80),
                 ("baseline", "fgsm", None, None, 1.0, 0.40), ("advtrain", "transfer_fgsm", None, "baseline", 1.0, 0.5),
                 ("distilled", "fgsm_logit_rescaled", None, None, 1.0, 0.3), ("baseline", "tifgsm", "erase", None, 1.0, 0.0)])  # fmt: skip
    _summary(b, [("baseline", "clean", None, None, 0.0, 0.84), ("baseline", "fgsm", None, None, 1.0, 0.30)])
    d = replicates.dice_by_run([a, b], ["a", "b"])
    assert list(d.columns) == ["region", "model", "attack", "target_policy", "eps", "a", "b", "min", "max", "spread"]
    assert list(zip(d.attack, d.eps)) == [("clean", 0.0), ("fgsm", 1.0), ("tifgsm", 1.0)]  # no eps-0 attack, no diagnostics
    assert d.loc[0, "spread"] == pytest.approx(0.04) and d.loc[1, "spread"] == pytest.approx(0.10)
    assert np.isnan(d.loc[2, "b"]) and d.loc[2, "target_policy"] == "erase" and d.loc[2, "spread"] == 0.0
    (b / "tables" / "summary.csv").unlink()
    with pytest.raises(FileNotFoundError, match="summary"):
        replicates.dice_by_run([a, b], ["a", "b"])


def test_a_claim_missing_from_a_run_is_counted_as_absent(tmp_path) -> None:
    a = _fake_run(tmp_path / "a", 0, {"C1": ("holds", 3, 3, 0), "C4": ("holds", 18, 18, 0)})
    b = _fake_run(tmp_path / "b", 1, {"C1": ("holds", 3, 3, 0)})
    agree = replicates.verdict_agreement(replicates.verdict_table([replicates.read_run(a), replicates.read_run(b)], ["a", "b"]))
    row = agree.set_index("claim").loc["C4"]
    assert row["b"] == "—" and row["agreement"] == "holds 1, absent 1"


def test_parameter_differences_name_only_what_differs(tmp_path) -> None:
    a = _fake_run(tmp_path / "a", 0, {"C1": ("holds", 3, 3, 0)})
    b = _fake_run(tmp_path / "b", 1, {"C1": ("holds", 3, 3, 0)}, epochs=20)
    runs = [replicates.read_run(a), replicates.read_run(b)]
    d = replicates.parameter_differences(runs, ["a", "b"])
    assert len(d) == len(pipeline.STAGES) + 1  # every stage's seed, and one epochs
    ep = d[d.parameter == "epochs"].iloc[0]
    assert (ep["stage"], ep["a"], ep["b"]) == ("02_unet", "15", "20")
    assert set(d[d.parameter == "seed"]["b"]) == {"1"}
    same = replicates.parameter_differences([runs[0], runs[0]], ["a", "b"])
    assert same.empty and list(same.columns) == ["stage", "parameter", "a", "b"]


def test_unfinished_or_foreign_folders_are_refused_by_name(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        replicates.read_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="manifest"):
        replicates.read_run(tmp_path / "empty")
    run = _fake_run(tmp_path / "half", 0, {"C1": ("holds", 3, 3, 0)}, status="failed")
    with pytest.raises(ValueError, match="08_statistics"):
        replicates.read_run(run)
    partial = _fake_run(tmp_path / "partial", 0, {"C1": ("holds", 3, 3, 0)})
    man = json.loads((partial / "manifest.json").read_text())
    del man["stages"]["08_statistics"]  # an --only run that never reached the statistics
    (partial / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ValueError, match="08_statistics"):
        replicates.read_run(partial)
    ok = _fake_run(tmp_path / "ok", 0, {"C1": ("holds", 3, 3, 0)})
    for bad in (["spread", "b"], ["claim", "b"], ["a", "pooled"]):
        with pytest.raises(ValueError, match="name columns"):
            replicates.write_comparison([ok, partial], tmp_path / "out", labels=bad)
    (ok / "tables" / "claims_by_region.csv").unlink()
    with pytest.raises(FileNotFoundError, match="claims_by_region"):
        replicates.read_run(ok)
    with pytest.raises(ValueError, match="^compare needs at least two run folders, got 1: .*ok$"):
        replicates.write_comparison([ok], tmp_path / "out")
    with pytest.raises(ValueError, match="distinct"):
        replicates.write_comparison([ok, ok], tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="empty"):
        replicates.pooled_table([tmp_path / "empty", ok], ["x", "y"])
    with pytest.raises(FileNotFoundError, match="empty"):
        replicates.pooled_empty_truth([tmp_path / "empty", ok], ["x", "y"])
    assert not (tmp_path / "empty" / "tables").exists()  # nothing made in a folder that is not a run


def test_cli_compare_writes_the_tables_and_refuses_a_bad_folder(tmp_path, capsys) -> None:
    a = _fake_run(tmp_path / "a", 0, {"C1": ("holds", 3, 3, 0)})
    b = _fake_run(tmp_path / "b", 1, {"C1": ("mixed", 3, 2, 0)})
    for d, v in ((a, 0.8), (b, 0.7)):
        _summary(d, [("baseline", "clean", None, None, 0.0, v)])
    out = tmp_path / "cmp"
    assert pipeline.main(["compare", str(a), str(b), "--out", str(out), "--no-pooled"]) == 0
    assert "holds 1, mixed 1" in capsys.readouterr().out
    for f in ("runs.csv", "parameter_differences.csv", "verdicts_by_run.csv", "agreement.csv", "dice_by_run.csv", "comparison.md"):
        assert (out / f).is_file(), f
    assert not (out / "pooled_claims_by_region.csv").exists()
    md = (out / "comparison.md").read_text()
    assert "| WT | C1 | holds (3/3) | mixed (2/3) | holds 1, mixed 1 |" in md
    assert "| WT | baseline | clean |  | 0 | 0.800 | 0.700 | 0.700 | 0.800 | 0.100 |" in md
    assert pipeline.main(["compare", str(a), str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "missing" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert pipeline.main(["compare", str(a), str(b), "--no-pooled", "--out", str(tmp_path / "file" / "x")]) == 2
    assert "file" in capsys.readouterr().err


# --- reproduce --seed -------------------------------------------------------------------------------------------------


def test_seed_replaces_every_stage_seed_and_set_still_wins(tmp_path, monkeypatch) -> None:
    import papermill

    nb_dir = _stub_notebooks(tmp_path / "nb")
    monkeypatch.chdir(tmp_path)
    # what is checked is the pipeline's bookkeeping (seeds, folder), not what a kernel does: no kernels (~2 s a stage)
    monkeypatch.setattr(papermill, "execute_notebook", lambda src, dst, **kw: Path(dst).write_text("{}"))
    man = pipeline.reproduce(str(nb_dir / "stub.yaml"), None, device="cpu", notebook_dir=nb_dir, seed=3,
                             sets=["unet.seed=7"], log=lambda _: None)  # fmt: skip
    assert man["seeds"] == {**{s: 3 for s in pipeline.STAGES}, "02_unet": 7}
    assert (tmp_path / "runs" / "stub-seed3" / "manifest.json").is_file()  # its own folder, not runs/stub
    assert not (tmp_path / "runs" / "stub").exists()
    for bad in (-1, True, 2**31, 1.5):
        with pytest.raises(pipeline.PipelineError, match="--seed"):
            pipeline.reproduce(str(nb_dir / "stub.yaml"), tmp_path / "x", notebook_dir=nb_dir, seed=bad, log=lambda _: None)
    assert pipeline.default_run_dir("teaching") == Path("runs/teaching")
    assert pipeline.default_run_dir("teaching", 0) == Path("runs/teaching-seed0")


def _stub_notebooks(nb_dir: Path) -> Path:
    import nbformat
    import yaml
    from nbformat.v4 import new_code_cell, new_notebook

    nb_dir.mkdir(parents=True)
    for fname in pipeline.STAGES.values():
        params = new_code_cell('run_dir: str = "."  # run folder\ndevice: str = "auto"  # device\nseed: int = 0  # seed')
        params.metadata["tags"] = ["parameters"]
        nb = new_notebook(cells=[params, new_code_cell("print(seed)")])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, nb_dir / fname)
    (nb_dir / "stub.yaml").write_text(yaml.safe_dump({"description": "stub", "common": {"seed": 0}, "notebooks": {}}))
    return nb_dir


# --- pooled claims on the committed seed replicates ------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory) -> list[Path]:
    """Copies of the first four committed runs (seed 0 = the teaching run, seeds 1-3), so nothing is made under
    docs/."""
    assert [d.name for d in COMMITTED_RUNS[1:4]] == ["seed1", "seed2", "seed3"], COMMITTED_RUNS
    root = tmp_path_factory.mktemp("seeds")
    out = []
    for d, lab in zip(COMMITTED_RUNS[:4], ("seed0", "seed1", "seed2", "seed3")):
        dst = root / lab
        for sub in ("tables", "attacks"):
            shutil.copytree(d / sub, dst / sub)
        shutil.copy(d / "manifest.json", dst / "manifest.json")
        out.append(dst)
    return out


def test_pooled_tests_pair_each_case_within_its_own_run(seed_runs) -> None:
    table = replicates.pooled_table(seed_runs)
    cmp, _ = replicates.pooled_claims(table.loc[table.region == "WT"], n_resamples=200)
    # the oracle: differences straight from the raw CSVs, per run, joined on the run's own case ids
    diffs = []
    for d in seed_runs:
        clean = pd.read_csv(d / "tables" / "results_02_unet.csv", dtype={"case_id": str})
        fgsm = pd.read_csv(d / "tables" / "results_03_fgsm.csv", dtype={"case_id": str})
        a = clean[(clean.model == "baseline") & (clean.region == "WT")].set_index("case_id")["dice"]
        b = fgsm[(fgsm.model == "baseline") & (fgsm.region == "WT") & (fgsm.eps == 1.0)].set_index("case_id")["dice"]
        assert len(a) == len(b) == 14
        diffs.append((a - b.reindex(a.index)).to_numpy())
    d = np.concatenate(diffs)
    row = cmp[(cmp.family == "attack_effect") & (cmp.model_a == "baseline") & (cmp.attack_b == "fgsm") & (cmp.eps_b == 1.0)]
    assert len(row) == 1
    row = row.iloc[0]
    ref = sps.wilcoxon(d[d != 0])
    assert row["n"] == 56 and row["n_nonzero"] == np.count_nonzero(d)
    assert row["pvalue"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert row["mean_a"] - row["mean_b"] == pytest.approx(d.mean(), abs=1e-12)
    assert set(table["run"]) == {"seed0", "seed1", "seed2", "seed3"}
    # C2's interval resamples within runs (test_stats checks the stratified bootstrap against an exact enumeration)
    _, cbr = replicates.pooled_claims(table.loc[table.region == "WT"], n_resamples=200)
    assert "56 cases within 4 strata" in cbr.set_index(["analysis", "claim"]).loc[("WT", "C2"), "evidence"]
    clash = table.assign(case_id=table["case_id"].str.split("/").str[1])
    with pytest.raises(ValueError, match="several runs"):
        replicates.pooled_claims(clash, n_resamples=50)
    assert table["case_id"].str.startswith(tuple(f"seed{i}/" for i in range(4))).all()


def test_pooling_needs_the_attack_records_and_says_so(seed_runs, tmp_path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(seed_runs[1], bare)
    shutil.rmtree(bare / "attacks")
    with pytest.raises(FileNotFoundError, match="without pooling"):
        replicates.pooled_table([seed_runs[0], bare])
    replicates.write_comparison([seed_runs[0], bare], tmp_path / "ok", pooled=False)  # the per-run tables need none


def test_a_run_without_region_volumes_is_named(seed_runs, tmp_path) -> None:
    novol = tmp_path / "novol"
    shutil.copytree(seed_runs[1], novol)
    (novol / "tables" / "data_region_volumes.csv").unlink()
    with pytest.warns(UserWarning, match="data_region_volumes"):
        empty = replicates.pooled_empty_truth([seed_runs[2], novol])
    assert all(i.startswith("seed2/") for ids in empty.values() for i in ids) and empty["ET"]
    replicates.write_comparison([seed_runs[2], novol], tmp_path / "cmp", n_resamples=200)
    text = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "runs novol have no region volumes" in text
    assert "with 2 runs an exact two-sided test over runs cannot go below p = 0.5;" in text  # 2·2⁻², by hand


def test_runs_with_other_conditions_are_not_pooled(seed_runs, tmp_path) -> None:
    other = tmp_path / "other"
    shutil.copytree(seed_runs[1], other)
    f = other / "tables" / "results_03_fgsm.csv"
    t = pd.read_csv(f)
    t.loc[t.eps == 1.0, "eps"] = 0.9
    t.to_csv(f, index=False)
    with pytest.raises(ValueError, match="other"):
        replicates.pooled_table([seed_runs[0], other])


@pytest.fixture(scope="module")
def all_runs(tmp_path_factory) -> list[Path]:
    """Copies of every committed run (the teaching run as seed0, then seed1, seed2, ...), as the committed
    comparison labels them."""
    root = tmp_path_factory.mktemp("allseeds")
    out = []
    for d in COMMITTED_RUNS:
        dst = root / ("seed0" if d.name == "teaching-cpu" else d.name)
        for sub in ("tables", "attacks"):
            shutil.copytree(d / sub, dst / sub)
        shutil.copy(d / "manifest.json", dst / "manifest.json")
        out.append(dst)
    return out


def test_committed_comparison_is_what_the_code_makes_of_the_committed_runs(all_runs, tmp_path) -> None:
    out = tmp_path / "cmp"
    replicates.write_comparison(all_runs, out)
    committed = SEEDS / "comparison"
    for name in ("agreement.csv", "verdicts_by_run.csv", "dice_by_run.csv", "pooled_claims_by_region.csv",
                 "pooled_comparisons.csv", "parameter_differences.csv", "run_level_table.csv",
                 "run_level_comparisons.csv", "run_level_spread.csv", "run_level_claims_by_region.csv"):  # fmt: skip
        got, want = pd.read_csv(out / name), pd.read_csv(committed / name)
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-9, obj=name)
    body = lambda f: f.read_text().split("## Parameters that differ", 1)[1]  # noqa: E731  (the runs table names paths)
    assert body(out / "comparison.md") == body(committed / "comparison.md")
    assert "Design: independent runs." in (out / "comparison.md").read_text()
    assert not (out / "case_mean_claims_by_region.csv").exists()  # only for training replicates on one test set
    # the spread's means are the comparisons' own mean_a - mean_b (stats.compare computes those separately)
    sp, rc = pd.read_csv(out / "run_level_spread.csv"), pd.read_csv(out / "run_level_comparisons.csv")
    np.testing.assert_allclose(sp["mean_diff"], rc["mean_a"] - rc["mean_b"], rtol=1e-9, atol=1e-12)
    assert (sp["n_runs"] == len(all_runs)).all()
    # per run, the committed verdicts are each run's own claims_by_region (not recomputed here)
    v = pd.read_csv(out / "verdicts_by_run.csv")
    for d in all_runs:
        own = replicates.canonical_analysis(pd.read_csv(d / "tables" / "claims_by_region.csv"))
        mine = v[v.run == d.name].merge(own, on=["analysis", "claim"], how="left", suffixes=("", "_own"))
        listed = mine["verdict_own"].notna()
        assert (mine.loc[listed, "verdict"] == mine.loc[listed, "verdict_own"]).all()
        assert listed.sum() == len(own)  # every own row is there; the rest are whole-region rows of runs without empties
        assert (mine.loc[~listed, "n_excluded"] == 0).all()
    diffs = pd.read_csv(out / "parameter_differences.csv")
    assert set(diffs["parameter"]) == {"seed"}  # the replicates differ in their seeds only


def test_exclusion_analyses_line_up_across_runs(tmp_path) -> None:
    a = _fake_run(tmp_path / "a", 0, {"C1": ("holds", 3, 3, 0)})
    b = _fake_run(tmp_path / "b", 1, {"C1": ("holds", 3, 3, 0)})
    c = _fake_run(tmp_path / "c", 2, {"C1": ("holds", 3, 3, 0)})  # no region volumes: could not look for empties
    for d in (a, b):
        (d / "tables" / "data_region_volumes.csv").write_text("case_id,WT,TC,ET\n")
    f = b / "tables" / "claims_by_region.csv"
    t = pd.read_csv(f)
    extra = t.assign(analysis="WT, 4 empty-truth cases excluded", n_cases=10, n_excluded=4, verdict="mixed", n_support=2)
    pd.concat([t, extra]).to_csv(f, index=False)
    v = replicates.verdict_table([replicates.read_run(d) for d in (a, b, c)], ["a", "b", "c"])
    assert not ((v.run == "c") & (v.analysis == "WT without empty-truth cases")).any()
    ex = v[v.analysis == "WT without empty-truth cases"].set_index("run")
    # run a has no empty-truth case: its whole-region verdict is its verdict without them
    assert ex.loc["a", "verdict"] == "holds" and ex.loc["a", "n_excluded"] == 0 and ex.loc["a", "n_cases"] == 14
    assert ex.loc["b", "verdict"] == "mixed" and ex.loc["b", "n_excluded"] == 4
    agree = replicates.verdict_agreement(v).set_index("analysis")
    assert agree.loc["WT without empty-truth cases", "agreement"] == "holds 1, mixed 1, absent 1"
    assert agree.loc["WT without empty-truth cases", "c"] == "—"
    assert agree.loc["WT", "agreement"] == "all holds"


def test_runs_that_may_share_their_cases_are_not_pooled(seed_runs, tmp_path, capsys) -> None:
    def rec(**data) -> dict:
        return {"parameters": {"01_data": {"seed": 0, "shape": [48, 48, 48], "data_dir": "", **data}}}

    labels = ["a", "b"]
    assert replicates.shared_cases([rec(), rec()], labels) == [("a", "b")]  # same synthetic seed
    assert replicates.shared_cases([rec(), rec(seed=1)], labels) == []
    assert replicates.shared_cases([rec(), rec(shape=[64, 64, 64], n_cases=20)], labels) == [("a", "b")]  # same patients
    assert replicates.shared_cases([rec(data_dir="/d", seed=0), rec(data_dir="/d", seed=1)], labels) == [("a", "b")]
    assert replicates.shared_cases([rec(data_dir="/d"), rec(data_dir="/e")], labels) == []
    moved = [{**rec(data_dir="/d"), "case_ids": {"BraTS2021_00001", "x"}}, {**rec(data_dir="/e"), "case_ids": {"x"}}]
    assert replicates.shared_cases(moved, labels) == [("a", "b")]  # the same real cases under another path
    assert replicates.shared_cases([rec(), rec(seed=1), rec()], ["a", "b", "c"]) == [("a", "c")]
    # a thread-count comparison: the same run twice
    twin = tmp_path / "twin"
    shutil.copytree(seed_runs[0], twin)
    with pytest.raises(ValueError, match="twice"):
        replicates.pooled_table([seed_runs[0], twin])
    out = tmp_path / "cmp"
    assert pipeline.main(["compare", str(seed_runs[0]), str(twin), "--out", str(out)]) == 0
    assert "no pooled verdicts" in capsys.readouterr().out
    assert not (out / "pooled_claims_by_region.csv").exists()
    assert "Not computed: runs may share patients (seed0 and twin (test cases))" in (out / "comparison.md").read_text()
    assert "pooled" not in pd.read_csv(out / "agreement.csv").columns


def _patients(n_cases: int, seed: int, train_seed: int, fractions=(0.55, 0.15, 0.3)) -> tuple[set, set]:
    """Oracle: a synthetic run's test and training-and-validation patients, one generator seed per case, straight
    from the writers' seeds and the split."""
    ids = data.case_ids_for("brats2021", n_cases)
    seeds = data.synthetic_case_seeds(ids, seed, train_seed=None if train_seed == -1 else train_seed, fractions=fractions)
    split = data.split_cases(ids, fractions, seed)
    test = {s for s, c in zip(seeds, ids) if split[c] == "test"}
    return test, set(seeds) - test


def test_case_overlaps_are_the_patients_that_two_synthetic_runs_share() -> None:
    """For every pair of (data seed, train_seed) runs over a grid, an overlap is reported exactly when the two runs'
    patients (the writers' generator seeds) meet, and its role is the one the patient sets show."""
    def rec(seed: int, train_seed: int) -> dict:
        return {"parameters": {"01_data": {"seed": seed, "train_seed": train_seed, "data_dir": "", "n_cases": 48}}}

    grid = [(s, t) for s in (0, 1, 2) for t in (-1, 0, 1, 2, 5)]
    seen = set()
    for a in grid:
        for b in grid:
            got = replicates.case_overlaps([rec(*a), rec(*b)], ["a", "b"])
            (test_a, train_a), (test_b, train_b) = _patients(48, *a), _patients(48, *b)
            want = ("test cases" if test_a & test_b else "a's training cases are b's test cases" if train_a & test_b
                    else "b's training cases are a's test cases" if test_a & train_b
                    else "training cases" if train_a & train_b else None)  # fmt: skip
            assert got == ([("a", "b", want)] if want else []), (a, b)
            seen.add(want)
    assert seen == {"test cases", "a's training cases are b's test cases", "b's training cases are a's test cases",
                    "training cases", None}  # fmt: skip
    assert replicates.shared_cases([rec(0, 5), rec(1, -1), rec(5, -1)], ["x", "y", "z"]) == [("x", "z")]


def test_case_overlaps_of_real_runs_use_the_case_ids_and_their_roles() -> None:
    """Real data: the same folder; evaluated ids in common; one run's other ids (its region volumes' ids outside its
    test cases) among the other's test ids; other ids in common. A synthetic run is compared with a real one by ids
    too: the folder may be our writers' synthetic cases (as the committed bootstrap runs' folder is)."""
    def rec(data_dir: str, test: set, others: set = frozenset(), seed: int = 0) -> dict:
        return {"parameters": {"01_data": {"seed": seed, "data_dir": data_dir}}, "case_ids": set(test),
                "data_case_ids": set(test) | set(others)}

    o = replicates.case_overlaps
    assert o([rec("/d", {"x"}), rec("/d", {"y"}, seed=1)], ["a", "b"]) == [("a", "b", "the same folder")]
    assert o([rec("/d", {"x", "y"}), rec("/e", {"y"})], ["a", "b"]) == [("a", "b", "test cases")]
    assert o([rec("/d", {"x"}, {"y"}), rec("/e", {"y"}, {"z"})], ["a", "b"]) == [
        ("a", "b", "a's training cases are b's test cases")]
    assert o([rec("/d", {"y"}, {"z"}), rec("/e", {"x"}, {"y"})], ["a", "b"]) == [
        ("a", "b", "b's training cases are a's test cases")]
    assert o([rec("/d", {"x"}, {"z"}), rec("/e", {"y"}, {"z"})], ["a", "b"]) == [("a", "b", "training cases")]
    assert o([rec("/d", {"x"}, {"z"}), rec("/e", {"y"}, {"w"})], ["a", "b"]) == []
    synthetic = {"parameters": {"01_data": {"seed": 0, "data_dir": ""}}, "case_ids": {"x"}, "data_case_ids": {"x", "y"}}
    assert o([rec("/d", {"x"}), synthetic], ["a", "b"]) == [("a", "b", "test cases")]
    assert o([rec("/d", {"z"}, {"y"}), synthetic], ["a", "b"]) == [("a", "b", "training cases")]
    assert o([rec("/d", {"z"}, {"w"}), synthetic], ["a", "b"]) == []
    # BraTS 2023/2024: two timepoints of one subject are one patient (hand-written ids), other subjects are not
    assert o([rec("/d", {"BraTS-GLI-00001-000"}), rec("/e", {"BraTS-GLI-00001-001"})], ["a", "b"]) == [
        ("a", "b", "test cases")]
    assert o([rec("/d", {"BraTS-GLI-00002-000"}, {"BraTS-GLI-00001-000"}), rec("/e", {"BraTS-GLI-00001-101"})],
             ["a", "b"]) == [("a", "b", "a's training cases are b's test cases")]
    assert o([rec("/d", {"BraTS-GLI-00001-000"}), rec("/e", {"BraTS-MEN-00001-000"})], ["a", "b"]) == []


def test_read_run_counts_a_bootstrap_copy_as_its_case(tmp_path) -> None:
    """A real run with train_seed holds bootstrap copies (<id>~2) in its region volumes; read_run's data ids are the
    cases themselves, so the copy of a case still meets that case among another run's test cases."""
    run = tmp_path / "boot"
    shutil.copytree(COMMITTED_RUNS[0] / "tables", run / "tables")
    shutil.copy(COMMITTED_RUNS[0] / "manifest.json", run / "manifest.json")
    vols = pd.read_csv(run / "tables" / "data_region_volumes.csv", dtype={"case_id": str})
    test = set(pd.read_csv(run / "tables" / "results_02_unet.csv", dtype={"case_id": str})["case_id"])
    other = sorted(set(vols["case_id"]) - test)
    vols.loc[vols["case_id"] == other[1], "case_id"] = other[0] + "~2"  # other[1] not drawn, other[0] twice
    vols.to_csv(run / "tables" / "data_region_volumes.csv", index=False)
    r = replicates.read_run(run)
    assert r["data_case_ids"] == set(vols["case_id"]) - {other[0] + "~2"} and other[1] not in r["data_case_ids"]
    r["parameters"] = {**r["parameters"], "01_data": {**r["parameters"]["01_data"], "data_dir": "/d"}}
    b = {"parameters": {"01_data": {"seed": 0, "data_dir": "/e"}}, "case_ids": {other[0]}, "data_case_ids": {other[0]}}
    assert replicates.case_overlaps([r, b], ["a", "b"]) == [("a", "b", "a's training cases are b's test cases")]


def test_a_run_trained_on_another_runs_test_patients_is_not_pooled(tmp_path) -> None:
    """The committed runs hold such pairs: seed N of the redrawn trainings (data seed 0, train_seed N) trained on
    several of the 14 test patients of seed N of the independent seeds (data seed N). The oracle is notebook 01's
    region volumes: those cases are row for row the same. Before session 17, compare pooled such a pair as
    independent runs; results.md quotes how many test patients each redrawn run learnt."""
    learnt = []
    for n in range(1, 12):
        a, b = REDRAWN / f"seed{n}", SEEDS / f"seed{n}"
        ra, rb = replicates.read_run(a), replicates.read_run(b)
        assert len(ra["data_case_ids"]) == 48 and ra["case_ids"] < ra["data_case_ids"]
        va, vb = (pd.read_csv(d / "tables" / "data_region_volumes.csv").set_index("case_id") for d in (a, b))
        same = set(va.index[(va == vb.loc[va.index]).all(axis=1)])
        learnt.append(len(same & (ra["data_case_ids"] - ra["case_ids"]) & rb["case_ids"]))
        assert learnt[-1] > 0 and not same & ra["case_ids"], n  # trained on some; no test patient in common
        assert replicates.case_overlaps([ra, rb], ["r", "s"]) == [("r", "s", "r's training cases are s's test cases")]
        assert replicates.replicate_design([ra, rb], ["r", "s"]) == replicates.SHARED
    a, b = REDRAWN / "seed5", SEEDS / "seed5"
    with pytest.raises(ValueError, match="r5's training cases are s5's test cases"):
        replicates.pooled_table([a, b], labels=["r5", "s5"])
    replicates.write_comparison([a, b], tmp_path / "cmp", labels=["r5", "s5"])
    text = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "Not computed: runs may share patients (r5 and s5 (r5's training cases are s5's test cases))" in text
    assert not (tmp_path / "cmp" / "pooled_claims_by_region.csv").exists()
    results = " ".join((ROOT / "docs" / "results.md").read_text().split())
    assert (f"redrawn run N trained on {min(learnt)} to {max(learnt)} of the 14 test patients of seed N "
            f"({learnt[4]} for N = 5;") in results, learnt  # fmt: skip


def test_cli_seed_reaches_reproduce_and_names_its_folder(monkeypatch, tmp_path, capsys) -> None:
    seen = {}

    def fake(profile, out, **kw):
        seen.update(kw, profile=profile, out=out)
        return {"profile": "smoke", "stages": {}}

    monkeypatch.setattr(pipeline, "reproduce", fake)
    monkeypatch.chdir(tmp_path)
    assert pipeline.main(["reproduce", "--profile", "smoke", "--seed", "4"]) == 0
    assert seen["seed"] == 4 and seen["out"] is None
    assert "run folder runs/smoke-seed4" in capsys.readouterr().out
    assert pipeline.main(["reproduce", "--profile", "smoke"]) == 0
    assert seen["seed"] is None and "run folder runs/smoke " in capsys.readouterr().out


def test_run_level_floor_is_the_exact_all_same_sign_p() -> None:
    """With n runs as units the smallest two-sided p is 2·2⁻ⁿ (hand value), which scipy's exact signed-rank test
    gives for n same-signed differences; 6 runs are the fewest that can reach p < 0.05, 8 for p < 0.01."""
    for n in range(1, 10):
        assert replicates.run_level_min_p(n) == pytest.approx(min(1.0, 2 * 0.5**n), rel=1e-12)
    for n in range(2, 10):
        d = np.arange(1.0, n + 1)  # n distinct positive per-run differences
        assert sps.wilcoxon(d, method="exact").pvalue == pytest.approx(replicates.run_level_min_p(n), rel=1e-12)
    assert replicates.runs_for_run_level_test(0.05) == 6  # 2·2⁻⁵ = 0.0625 ≥ 0.05 > 2·2⁻⁶ = 0.03125
    assert replicates.runs_for_run_level_test(0.01) == 8  # 2·2⁻⁷ = 0.0156 ≥ 0.01 > 2·2⁻⁸ = 0.0078
    assert replicates.runs_for_run_level_test(0.0625) == 6  # p must be strictly below alpha, as notebook 08's rule
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="n_runs"):
            replicates.run_level_min_p(bad)
    for bad in (0.0, 1.0, "0.05"):
        with pytest.raises(ValueError, match="alpha"):
            replicates.runs_for_run_level_test(bad)
    few, enough = replicates._run_level_note(5, 0.05), replicates._run_level_note(6, 0.05)
    assert "with 5 runs an exact two-sided test over runs cannot go below p = 0.0625; it can reach p < 0.05 from 6" in few
    assert "with 6 runs an exact two-sided test over runs can reach p = 0.0312 < 0.05: the run-level column" in enough
    assert "cannot" not in enough and "Until then" not in enough
    assert replicates._run_level_note(6, 0.05, computed=False).endswith("that test was not run (run_level=False).")


# ----------------------------------------------------------------------------- found by mutation testing (session 13)
def test_labels_with_a_slash_are_refused(tmp_path) -> None:
    """A label holding '/' would make the pooled ids "<label>/<case id>" ambiguous: refused before anything is read."""
    with pytest.raises(ValueError, match="without '/'"):
        replicates.write_comparison([tmp_path / "a", tmp_path / "b"], tmp_path / "out", labels=["x/y", "z"])
    assert not (tmp_path / "out").exists()


def test_read_run_counts_the_cases_of_the_whole_region(tmp_path) -> None:
    """n_cases is the run's number of test cases (14, hand-written), not that of an analysis without its 4
    empty-truth cases (10)."""
    run = _fake_run(tmp_path / "r", 0, {"C1": ("holds", 3, 3, 0)})
    f = run / "tables" / "claims_by_region.csv"
    t = pd.read_csv(f)
    extra = t.assign(analysis="WT, 4 empty-truth cases excluded", n_cases=10, n_excluded=4)
    pd.concat([t, extra]).to_csv(f, index=False)
    assert replicates.read_run(run)["n_cases"] == 14


def test_parameter_differences_include_stages_and_keys_of_later_runs_only() -> None:
    """Hand-made records: a stage or a parameter only the second run has is a difference, shown as '—' where
    absent; an explicit null differs from an absent key."""
    a = {"parameters": {"01_data": {"seed": 0}}}
    b = {"parameters": {"01_data": {"seed": 0, "extra": None}, "09_new": {"x": 1}}}
    d = replicates.parameter_differences([a, b], ["a", "b"])
    assert d.values.tolist() == [["01_data", "extra", "—", "None"], ["09_new", "x", "—", "1"]]


def test_pooled_claims_pass_alpha_and_seed_on(seed_runs) -> None:
    """pooled_claims at alpha 0.01 and bootstrap seed 7 is stats.compare and stats.claims_by_region called directly
    with those arguments and strata = the run prefix of each case id (split here); seed 0 gives another interval,
    so the seed is seen."""
    from robustseg_lib import stats

    table = replicates.pooled_table(seed_runs)
    wt = table.loc[table.region == "WT"]
    cmp, cbr = replicates.pooled_claims(wt, alpha=0.01, n_resamples=100, seed=7)
    t = wt.drop(columns=["run"])
    strata = {c: c.split("/")[0] for c in t["case_id"]}
    ref_cmp = stats.compare(t, alpha=0.01)
    pd.testing.assert_frame_equal(cmp, ref_cmp)
    ref = stats.claims_by_region(t, ref_cmp, alpha=0.01, n_resamples=100, seed=7, strata=strata)
    pd.testing.assert_frame_equal(cbr.drop(columns="analysis"), ref.drop(columns="analysis"))
    seed0 = stats.claims_by_region(t, ref_cmp, alpha=0.01, n_resamples=100, seed=0, strata=strata)
    assert not seed0["rel_drop_ci_lo"].equals(ref["rel_drop_ci_lo"])
    assert not ref_cmp["hl_ci_lo"].equals(stats.compare(t)["hl_ci_lo"])


def test_a_run_lacking_a_condition_is_not_pooled(seed_runs, tmp_path) -> None:
    """A run without one of the other runs' conditions (its fgsm at eps 1 removed) cannot be paired in every
    condition: refused, naming what it lacks."""
    short = tmp_path / "short"
    shutil.copytree(seed_runs[1], short)
    f = short / "tables" / "results_03_fgsm.csv"
    t = pd.read_csv(f)
    t[t.eps != 1.0].to_csv(f, index=False)
    with pytest.raises(ValueError, match=r"short: its conditions differ.*extra e\.g\. \[\], lacking e\.g\. \[\(.*robustseg compare --no-pooled"):
        replicates.pooled_table([seed_runs[0], short])


# ----------------------------------------------------------------------------- the runs as units (session 14)
def test_run_level_table_is_each_runs_mean_per_condition() -> None:
    """Hand-made pooled table, 2 runs x 3 cases: the means are written out by hand (not medians: 0.6, not 0.7);
    excluding one ET case of run a changes a's ET means only."""
    clean = {"a": (0.9, 0.7, 0.2), "b": (0.6, 0.8, 0.4)}
    fgsm = {"a": (0.4, 0.2, 0.0), "b": (0.1, 0.3, 0.2)}
    rows = []
    for run in ("a", "b"):
        for i, cid in enumerate(("c1", "c2", "c3")):
            for region in ("WT", "ET"):
                for attack, eps, vals in (("clean", 0.0, clean), ("fgsm", 1.0, fgsm)):
                    rows.append({"case_id": f"{run}/{cid}", "model": "baseline", "attack": attack, "eps": eps,
                                 "region": region, "dice": vals[run][i], "hd95": 1.0, "run": run})  # fmt: skip
    t = pd.DataFrame(rows)
    assert list(replicates.run_level_table(t).columns) == ["case_id", "model", "attack", "eps", "region", "dice", "n_cases"]
    u = replicates.run_level_table(t).set_index(["case_id", "attack", "region"])
    assert u.loc[("a", "clean", "WT"), "dice"] == pytest.approx(0.6)  # (0.9 + 0.7 + 0.2) / 3
    assert u.loc[("a", "fgsm", "ET"), "dice"] == pytest.approx(0.2)  # (0.4 + 0.2 + 0.0) / 3
    assert u.loc[("b", "clean", "ET"), "dice"] == pytest.approx(0.6) and u.loc[("b", "fgsm", "WT"), "dice"] == pytest.approx(0.2)
    assert (u["n_cases"] == 3).all() and len(u) == 8
    x = replicates.run_level_table(t, exclude={"ET": ["a/c1"]}).set_index(["case_id", "attack", "region"])
    assert x.loc[("a", "clean", "ET"), "dice"] == pytest.approx(0.45) and x.loc[("a", "clean", "ET"), "n_cases"] == 2
    assert x.loc[("a", "fgsm", "ET"), "dice"] == pytest.approx(0.1)
    assert x.loc[("a", "clean", "WT"), "dice"] == pytest.approx(0.6) and x.loc[("b", "clean", "ET"), "dice"] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="'run'"):
        replicates.run_level_table(t.drop(columns="run"))
    with pytest.raises(ValueError, match="exclude"):
        replicates.run_level_table(t, exclude=["a/c1"])


def _units_table(n_runs: int, *, flip_run: int | None = None) -> pd.DataFrame:
    """A pooled table of n_runs runs x 2 cases in which every run's means say what the paper says: attacks lower the
    baseline, the student is above adversarial training under attack and both defenses stay below clean. The
    per-run effects differ in size (so that no two runs tie, and scipy's exact test applies); ``flip_run`` reverses
    C3 in that run."""
    rows = []
    for r in range(n_runs):
        k = 0.001 * (r + 1)  # run-specific effect sizes
        for c in range(2):
            base = 0.80 + 0.01 * c + 0.002 * r
            def add(model, attack, eps, dice):  # noqa: E306
                rows.append({"case_id": f"r{r}/c{c}", "model": model, "attack": attack, "eps": eps, "region": "WT",
                             "dice": dice, "run": f"r{r}"})  # fmt: skip
            gap = -(0.05 + 2 * k) if r == flip_run else 0.05 + 2 * k
            for m, offset in (("baseline", 0.0), ("distilled", 0.01 + 0.0003 * r), ("advtrain", 0.01 + 0.0005 * r)):
                add(m, "clean", 0.0, base - offset)
            for eps in (0.5, 1.0):
                add("baseline", "fgsm", eps, base - 0.3 * eps - k)
                add("advtrain", "fgsm", eps, base - 0.2 * eps - 0.1 - k)
                add("distilled", "fgsm", eps, base - 0.2 * eps - 0.1 - k + gap)
    return pd.DataFrame(rows)


def test_run_level_claims_are_wilcoxon_tests_over_run_means() -> None:
    """12 runs whose means all agree: each run-level p is scipy's exact signed-rank p of the 12 per-run mean
    differences (computed here with numpy), 2·2⁻¹² = 0.000488 (hand value); Holm multiplies it by the family's size;
    C3 and C4 hold, and C1 is supported by every test but "partly tested" (the table has FGSM only). With 5 of those runs nothing can pass (2·2⁻⁵ = 0.0625 ≥ 0.05 before Holm): C1, C3 and C4
    are 'not supported'. The run with the largest C3 effect reversed leaves C3 significant in no test at 12 runs."""
    t = _units_table(12)
    cmp, cbr = replicates.run_level_claims(t, n_resamples=200)
    v = cbr.set_index("claim")
    assert v.loc["C3", "verdict"] == v.loc["C4", "verdict"] == "holds"
    assert v.loc["C1", "verdict"] == "partly tested" and v.loc["C1", "n_support"] == v.loc["C1", "n_tests"] == 1
    assert (cbr["n_cases"] == 12).all() and (cbr["analysis"] == "WT").all()
    # the oracle: per-run means straight from the rows
    g = t.groupby(["run", "model", "attack", "eps"])["dice"].mean()
    runs = [f"r{r}" for r in range(12)]
    clean = np.array([g[(r, "baseline", "clean", 0.0)] for r in runs])
    att = np.array([g[(r, "baseline", "fgsm", 1.0)] for r in runs])
    row = cmp[(cmp.family == "attack_effect") & (cmp.model_a == "baseline") & (cmp.eps_b == 1.0)].iloc[0]
    assert row["n"] == 12
    assert row["pvalue"] == pytest.approx(sps.wilcoxon(clean - att, method="exact").pvalue, rel=1e-12)
    assert row["pvalue"] == pytest.approx(2 * 0.5**12, rel=1e-12)
    n_family = int(((cmp.family == "attack_effect") & (cmp.region == "WT")).sum())
    assert n_family == 6  # 3 models x 2 eps
    assert row["p_holm"] == pytest.approx(n_family * 2 * 0.5**12, rel=1e-12)
    # C2 on run means: 1 - mean(attacked)/mean(clean), the largest over the conditions (fgsm at eps 1)
    assert v.loc["C2", "rel_drop"] == pytest.approx(1 - att.mean() / clean.mean(), rel=1e-12)
    _, few = replicates.run_level_claims(t[t["run"].isin(runs[:5])], n_resamples=200)
    f = few.set_index("claim")
    assert [f.loc[c, "verdict"] for c in ("C1", "C3", "C4")] == ["not supported"] * 3
    # alpha and the bootstrap seed reach the tests: at alpha 0.001 no p_holm (0.0029 for C1) passes
    scmp, strict = replicates.run_level_claims(t, alpha=0.001, n_resamples=200)
    assert strict.set_index("claim").loc["C1", "verdict"] == "not supported"
    assert not scmp["significant"].any() and cmp["significant"].any()
    _, other = replicates.run_level_claims(t, n_resamples=200, seed=7)
    assert other.set_index("claim").loc["C2", "rel_drop_ci_lo"] != v.loc["C2", "rel_drop_ci_lo"]
    # run 11, the largest C3 effect, reversed: W- = 12, and 70 of the 2¹² sign patterns have W- ≤ 12 (the subsets of
    # 1..12 summing to at most 12, counted by hand), so p = 2·70/4096 = 0.034, and Holm over the 3 C3 tests: 0.10
    fcmp, flipped = replicates.run_level_claims(_units_table(12, flip_run=11), n_resamples=200)
    fl = flipped.set_index("claim")
    c3 = fcmp[(fcmp.family == "distill_vs_advtrain") & (fcmp.eps_a == 1.0)].iloc[0]
    assert c3["pvalue"] == pytest.approx(2 * 70 / 4096, rel=1e-12)
    assert fl.loc["C1", "verdict"] == "partly tested" and fl.loc["C3", "verdict"] == "not supported"


def test_run_level_claims_judge_each_region_again_without_its_empty_truth_cases() -> None:
    """The exclusion analysis averages each run over its remaining cases: with one case of every run excluded, the
    run means are the other case's values (the oracle), and the analysis is named as the pooled one is."""
    t = _units_table(6)
    empty = {"WT": [f"r{r}/c0" for r in range(6)]}
    cmp, cbr = replicates.run_level_claims(t, empty_truth=empty, n_resamples=100)
    assert list(cbr["analysis"].unique()) == ["WT", "WT without empty-truth cases"]
    ex = cbr[cbr["analysis"] == "WT without empty-truth cases"].set_index("claim")
    assert (ex["n_excluded"] == 6).all() and (ex["n_cases"] == 6).all()
    c1 = t[t.case_id.str.endswith("/c1") & (t.model == "baseline")]
    clean = c1[c1.attack == "clean"].set_index("run")["dice"]
    att = c1[(c1.attack == "fgsm") & (c1.eps == 1.0)].set_index("run")["dice"]
    assert ex.loc["C2", "rel_drop"] == pytest.approx(1 - att.mean() / clean.mean(), rel=1e-12)
    whole = cbr[cbr["analysis"] == "WT"].set_index("claim")
    assert whole.loc["C2", "rel_drop"] != pytest.approx(ex.loc["C2", "rel_drop"], rel=1e-9)
    with pytest.raises(ValueError, match="empty_truth"):
        replicates.run_level_claims(t, empty_truth=[("WT", "r0/c0")])


def test_run_level_reach_sentences_follow_the_family_sizes() -> None:
    """Hand values: families of 10, 24 and 36 tests. 4 runs: 0.125 x 10 = 1.25, capped at 1, so nothing can pass and
    every family can from 11 runs on (36·2·2⁻¹¹ = 0.035 < 0.05 ≤ 36·2·2⁻¹⁰ = 0.070); 10 runs: 10 x 0.00195 = 0.0195
    and 24 x 0.00195 = 0.047 can, 36 x 0.00195 = 0.0703 cannot; 12 runs: 36 x 0.000488 = 0.0176, all can."""
    fam = pd.DataFrame({"family": ["distill_vs_advtrain"] * 10 + ["defense_vs_clean"] * 24 + ["attack_effect"] * 36
                        + ["defense_vs_baseline"] * 50, "region": "WT"})  # fmt: skip
    assert replicates.runs_for_run_level_test(0.05, 36) == 11 and replicates.runs_for_run_level_test(0.05, 24) == 10
    s4 = replicates._run_level_reach(4, fam, 0.05)
    assert "no two-sided p can go below 0.125" in s4 and "(10–36 tests" in s4
    assert "smallest reachable p_holm is 1–1." in s4
    assert "No run-level test can reach p_holm < 0.05" in s4 and "Every family can from 11 runs on." in s4
    s10 = replicates._run_level_reach(10, fam, 0.05)
    assert "p_holm is 0.0195–0.0703." in s10
    assert "The largest families cannot reach p_holm < 0.05 (attack_effect, 36 tests)" in s10 and "from 11 runs on" in s10
    s12 = replicates._run_level_reach(12, fam, 0.05)
    assert s12.endswith("p_holm is 0.00488–0.0176. Every family can reach p_holm < 0.05.")
    with pytest.raises(ValueError, match="family_size"):
        replicates.runs_for_run_level_test(0.05, 0)


def test_write_comparison_adds_the_run_level_column_and_section(seed_runs, tmp_path) -> None:
    """The run_level column of agreement.csv is run_level_claims of the pooled table (called here directly);
    comparison.md says that 4 runs cannot reach significance; --no-pooled writes neither."""
    out = tmp_path / "cmp"
    agree = replicates.write_comparison(seed_runs, out, n_resamples=100)
    table = replicates.pooled_table(seed_runs)
    empty = replicates.pooled_empty_truth(seed_runs)
    _, rl = replicates.run_level_claims(table, empty_truth=empty, n_resamples=100)
    pd.testing.assert_frame_equal(pd.read_csv(out / "run_level_claims_by_region.csv"), rl, check_exact=False, rtol=1e-12)
    cell = agree.set_index(["analysis", "claim"]).loc[("WT", "C1"), "run_level"]
    assert cell == "not supported (0/3)"
    text = (out / "comparison.md").read_text()
    assert "## Run-level evidence" in text and "No run-level test can reach p_holm < 0.05" in text
    assert 'a "case" is a run' in text
    assert "the run-level column (below)" not in text  # 4 < 6 runs: the pooled section says what they cannot show
    u = pd.read_csv(out / "run_level_table.csv")
    assert set(u["case_id"]) == {"seed0", "seed1", "seed2", "seed3"} and (u["n_cases"] == 14).all()
    bare = replicates.write_comparison(seed_runs, tmp_path / "nopool", pooled=False)
    assert "run_level" not in bare.columns and not (tmp_path / "nopool" / "run_level_claims_by_region.csv").exists()
    replicates.write_comparison(seed_runs, tmp_path / "norl", run_level=False, n_resamples=50)
    assert not (tmp_path / "norl" / "run_level_table.csv").exists()
    assert "## Run-level evidence" not in (tmp_path / "norl" / "comparison.md").read_text()
    # the same folder again, without the pooled analyses: the earlier comparison's pooled and run-level tables go,
    # a file of the user's stays
    assert {p.name for p in out.iterdir()} <= set(replicates.COMPARISON_FILES)  # every file it writes is listed
    (out / "notes.txt").write_text("mine")
    replicates.write_comparison(seed_runs, out, pooled=False)
    assert sorted(p.name for p in out.iterdir()) == sorted({p.name for p in (tmp_path / "nopool").iterdir()} | {"notes.txt"})


def test_replicate_design_tells_independent_runs_training_replicates_and_repeats() -> None:
    """Independent: other data seeds. Same test set: the same data parameters and case ids, other training seeds.
    Shared: any other overlap (the same seeds twice, other data parameters, other case ids)."""
    ids = {"BraTS2021_00001", "BraTS2021_00002"}

    def rec(data_seed: int = 0, stage_seed: int = 0, case_ids: set | None = None, **data) -> dict:
        params = {s: {"seed": stage_seed} for s in pipeline.STAGES}
        params["01_data"] = {"seed": data_seed, "n_cases": 48, "shape": [48, 48, 48], "data_dir": "", "workers": 1, **data}
        return {"parameters": params, "case_ids": ids if case_ids is None else case_ids}

    d = replicates.replicate_design
    assert d([rec(0, 0), rec(1, 1), rec(2, 2)], ["a", "b", "c"]) == replicates.INDEPENDENT
    assert d([rec(0, 0), rec(0, 1), rec(0, 2)], ["a", "b", "c"]) == replicates.SAME_TEST_SET
    assert d([rec(0, 0), rec(0, 1, workers=2)], ["a", "b"]) == replicates.SAME_TEST_SET  # workers: same data
    assert d([rec(0, 0), rec(0, 0)], ["a", "b"]) == replicates.SHARED  # the same run twice
    assert d([rec(0, 0), rec(0, 1), rec(0, 1)], ["a", "b", "c"]) == replicates.SHARED  # two of them the same training
    assert d([rec(0, 0), rec(0, 1, n_cases=40)], ["a", "b"]) == replicates.SHARED  # same patients, another split
    assert d([rec(0, 0), rec(0, 1, case_ids={"BraTS2021_00001"})], ["a", "b"]) == replicates.SHARED
    assert d([rec(0, 0), rec(0, 1), rec(1, 2)], ["a", "b", "c"]) == replicates.SHARED  # a mix of both designs
    assert d([rec(0, 0, case_ids=set()), rec(0, 1, case_ids=set())], ["a", "b"]) == replicates.SHARED  # ids unknown
    # every model must be trained anew: with one training stage's seed other (07) and the rest the same, the baseline
    # and the distilled net are one training seen twice, and a test over the runs would count it as two; the
    # statistics' seed is not a training
    b = rec(0, 0)
    b["parameters"]["07_adversarial_training"]["seed"] = 5
    assert d([rec(0, 0), b], ["a", "b"]) == replicates.SHARED
    for stage in ("02_unet", "06_distillation", "07_adversarial_training"):  # three runs, one stage's seed kept
        runs = [rec(0, k) for k in range(3)]
        for r_ in runs:
            r_["parameters"][stage]["seed"] = 0
        assert d(runs, ["a", "b", "c"]) == replicates.SHARED, stage
    b = rec(0, 0)
    for stage in ("02_unet", "06_distillation", "07_adversarial_training"):
        b["parameters"][stage]["seed"] = 5
    assert d([rec(0, 0), b], ["a", "b"]) == replicates.SAME_TEST_SET  # the attacks' seeds may stay
    c = rec(0, 0)
    c["parameters"]["08_statistics"]["seed"] = 5
    assert d([rec(0, 0), c], ["a", "b"]) == replicates.SHARED
    # other training cases (train_seed) on the same test cases: still one test set, and a training of its own even
    # with the same stage seeds; -1 and the data seed itself both mean "not redrawn", as does an older run's absent key
    assert d([rec(0, 0), rec(0, 1, train_seed=1), rec(0, 2, train_seed=2)], ["a", "b", "c"]) == replicates.SAME_TEST_SET
    assert d([rec(0, 0, train_seed=-1), rec(0, 0, train_seed=3)], ["a", "b"]) == replicates.SAME_TEST_SET
    assert d([rec(0, 0, train_seed=3), rec(0, 0, train_seed=3)], ["a", "b"]) == replicates.SHARED
    assert d([rec(0, 0), rec(0, 0, train_seed=-1)], ["a", "b"]) == replicates.SHARED
    assert d([rec(4, 0, train_seed=4), rec(4, 0, train_seed=-1)], ["a", "b"]) == replicates.SHARED
    assert d([rec(0, 0, train_seed=3), rec(0, 1, train_seed=3, n_cases=40)], ["a", "b"]) == replicates.SHARED
    # real data: train_seed bootstraps the same folder's training cases; the same test cases, a training of its own
    assert d([rec(0, 0, data_dir="/d"), rec(0, 0, data_dir="/d", train_seed=3)], ["a", "b"]) == replicates.SAME_TEST_SET
    assert d([rec(0, 0, data_dir="/d"), rec(0, 0, data_dir="/d", train_seed=0)], ["a", "b"]) == replicates.SHARED
    r = replicates.redrawn_training
    assert r([rec(0, 0), rec(0, 1, train_seed=1)]) and r([rec(0, 0, train_seed=2), rec(0, 1, train_seed=1)])
    assert not r([rec(0, 0), rec(0, 1)]) and not r([rec(0, 0, train_seed=0), rec(0, 1, train_seed=-1)])


def test_run_level_spread_is_the_sd_over_runs_of_each_paired_difference() -> None:
    """By hand: clean 0.8/0.7/0.9 and FGSM 0.5/0.5/0.4 over three runs give differences 0.3/0.2/0.5: mean 1/3, SD
    sqrt(((-1/30)² + (-4/30)² + (5/30)²) / 2) = sqrt(0.07/3); a run lacking a condition pairs on the others."""
    rows = []
    for run, clean, fgsm in (("r1", 0.8, 0.5), ("r2", 0.7, 0.5), ("r3", 0.9, 0.4)):
        rows += [{"case_id": run, "model": "baseline", "attack": "clean", "target_policy": np.nan, "eps": 0.0,
                  "region": "WT", "dice": clean, "n_cases": 14},
                 {"case_id": run, "model": "baseline", "attack": "fgsm", "target_policy": np.nan, "eps": 0.1,
                  "region": "WT", "dice": fgsm, "n_cases": 14}]  # fmt: skip
    rows += [{"case_id": r, "model": "baseline", "attack": "tifgsm", "target_policy": "erase", "eps": 0.1,
              "region": "WT", "dice": v, "n_cases": 14} for r, v in (("r1", 0.6), ("r2", 0.3))]  # fmt: skip
    units = pd.DataFrame(rows)
    cmp = pd.DataFrame([
        {"family": "attack_effect", "region": "WT", "model_a": "baseline", "attack_a": "clean", "target_policy_a": "",
         "eps_a": 0.0, "model_b": "baseline", "attack_b": "fgsm", "target_policy_b": np.nan, "eps_b": 0.1},
        {"family": "attack_effect", "region": "WT", "model_a": "baseline", "attack_a": "clean", "target_policy_a": np.nan,
         "eps_a": 0.0, "model_b": "baseline", "attack_b": "tifgsm", "target_policy_b": "erase", "eps_b": 0.1},
    ])  # fmt: skip
    sp = replicates.run_level_spread(units, cmp)
    assert list(sp["n_runs"]) == [3, 2]
    assert sp.loc[0, "mean_diff"] == pytest.approx(1 / 3) and sp.loc[0, "sd_diff"] == pytest.approx(np.sqrt(0.07 / 3))
    assert sp.loc[1, "mean_diff"] == pytest.approx(0.3) and sp.loc[1, "sd_diff"] == pytest.approx(np.sqrt(0.02))  # 0.2, 0.4
    assert list(sp["attack_b"]) == ["fgsm", "tifgsm"]
    with pytest.raises(ValueError, match="units"):
        replicates.run_level_spread(units.drop(columns=["dice"]), cmp)
    with pytest.raises(ValueError, match="eps_b"):
        replicates.run_level_spread(units, cmp.drop(columns=["eps_b"]))


def _training_copies(run: Path, tmp_path: Path, n: int = 3) -> list[Path]:
    """``n`` copies of ``run`` (``tmp_path/train<k>``) relabelled as trainings from seeds 0..n-1 on its data: every
    stage's seed but notebook 01's set to k in the manifest."""
    runs = []
    for k in range(n):
        dst = tmp_path / f"train{k}"
        shutil.copytree(run, dst)
        man = json.loads((dst / "manifest.json").read_text())
        for stage, prm in man["parameters"].items():
            if stage != "01_data":
                prm["seed"] = k
        (dst / "manifest.json").write_text(json.dumps(man))
        runs.append(dst)
    return runs


def test_training_replicates_on_one_test_set_are_judged_at_run_level_only(seed_runs, tmp_path, capsys) -> None:
    """Three copies of the seed-0 run, relabelled as trainings from seeds 0, 1 and 2 on its data: no pooled tables,
    the run-level ones (each copy's means over the same 14 cases; identical copies, so every spread is 0), and
    comparison.md's sentences for that design. Another split in one copy makes the design "shared": neither."""
    runs = _training_copies(seed_runs[0], tmp_path)
    out = tmp_path / "cmp"
    assert pipeline.main(["compare", *map(str, runs), "--out", str(out)]) == 0
    assert "every run evaluated the same test cases; the run_level column" in capsys.readouterr().out
    assert not (out / "pooled_claims_by_region.csv").exists() and not (out / "pooled_comparisons.csv").exists()
    agree = pd.read_csv(out / "agreement.csv")
    assert "pooled" not in agree.columns and "run_level" in agree.columns
    u = pd.read_csv(out / "run_level_table.csv")
    assert set(u["case_id"]) == {"train0", "train1", "train2"} and (u.loc[u.region == "WT", "n_cases"] == 14).all()
    sp = pd.read_csv(out / "run_level_spread.csv")
    assert (sp["n_runs"] == 3).all() and (sp["sd_diff"].abs() < 1e-12).all()
    text = (out / "comparison.md").read_text()
    assert "Design: training replicates on one test set. All 3 runs evaluated the same 14 test cases" in text
    assert "Not computed: every run evaluated the same test cases, which a pooled test would count 3 times." in text
    assert "the spread it models is that from training to training" in text
    assert "from data draw to data draw" not in text
    # the cases as units, each averaged over the three identical trainings: the run's own verdicts
    assert "## Case-level evidence, trainings averaged" in text and "over the 3 trainings" in text
    own = replicates.canonical_analysis(pd.read_csv(runs[0] / "tables" / "claims_by_region.csv"))
    cm = pd.read_csv(out / "case_mean_claims_by_region.csv").set_index(["analysis", "claim"])
    assert [cm.loc[(a, c), "verdict"] for a, c in zip(own["analysis"], own["claim"])] == list(own["verdict"])
    assert agree.set_index(["analysis", "claim"]).loc[("WT", "C1"), "case_mean"] == "holds (3/3)"
    assert (out / "case_mean_comparisons.csv").is_file()
    assert pipeline.main(["compare", *map(str, runs), "--out", str(tmp_path / "bare"), "--no-pooled"]) == 0
    assert not any((tmp_path / "bare").glob("case_mean_*")) and not any((tmp_path / "bare").glob("run_level_*"))
    assert "Design: training replicates on one test set." in (tmp_path / "bare" / "comparison.md").read_text()
    assert "own draws of the training" not in text and "the draw of the training and validation" not in text
    for k, run in enumerate(runs):  # other training cases (notebook 01's train_seed): the sentences say so
        man = json.loads((run / "manifest.json").read_text())
        man["parameters"]["01_data"]["train_seed"] = 10 + k
        (run / "manifest.json").write_text(json.dumps(man))
    replicates.write_comparison(runs, tmp_path / "redrawn", n_resamples=50)
    text = (tmp_path / "redrawn" / "comparison.md").read_text()
    assert ("with models trained from other seeds on their own draws of the training and validation cases (notebook "
            "01's `train_seed`), so the runs can be units") in text
    assert "(initialisation, batches and the attacks' draws, and the draw of the training and validation cases)" in text
    assert (tmp_path / "redrawn" / "case_mean_claims_by_region.csv").is_file()
    man = json.loads((runs[2] / "manifest.json").read_text())
    man["parameters"]["01_data"]["fractions"] = [0.6, 0.1, 0.3]
    (runs[2] / "manifest.json").write_text(json.dumps(man))
    replicates.write_comparison(runs, tmp_path / "mixed")
    assert not (tmp_path / "mixed" / "run_level_table.csv").exists()
    assert not (tmp_path / "mixed" / "case_mean_claims_by_region.csv").exists()
    assert "Design: runs that share cases" in (tmp_path / "mixed" / "comparison.md").read_text()


def test_case_mean_table_is_each_cases_mean_over_runs() -> None:
    """By hand: two runs of two cases; case c1's clean Dice 0.8 and 0.6 average to 0.7. A case missing from one run,
    or a case id without its run's prefix, is refused by name."""
    rows = [{"run": r, "case_id": f"{r}/{c}", "model": "baseline", "attack": a, "eps": e, "region": "WT", "dice": v}
            for r, c, a, e, v in (("r1", "c1", "clean", 0.0, 0.8), ("r2", "c1", "clean", 0.0, 0.6),
                                  ("r1", "c2", "clean", 0.0, 0.9), ("r2", "c2", "clean", 0.0, 0.7),
                                  ("r1", "c1", "fgsm", 0.1, 0.2), ("r2", "c1", "fgsm", 0.1, 0.5),
                                  ("r1", "c2", "fgsm", 0.1, 0.3), ("r2", "c2", "fgsm", 0.1, 0.4))]  # fmt: skip
    t = pd.DataFrame(rows)
    u = replicates.case_mean_table(t).set_index(["case_id", "attack"])
    assert list(u.columns) == ["model", "eps", "region", "dice", "n_runs"]
    assert u.loc[("c1", "clean"), "dice"] == pytest.approx(0.7) and u.loc[("c2", "clean"), "dice"] == pytest.approx(0.8)
    assert u.loc[("c1", "fgsm"), "dice"] == pytest.approx(0.35) and u.loc[("c2", "fgsm"), "dice"] == pytest.approx(0.35)
    assert (u["n_runs"] == 2).all() and len(u) == 4
    with pytest.raises(ValueError, match="'c2'.*in 1 of 2 runs"):
        replicates.case_mean_table(t.drop(index=7))
    with pytest.raises(ValueError, match="'c1' does not start with its run's label 'r1/'"):
        replicates.case_mean_table(t.assign(case_id=t["case_id"].where(t.index != 0, "c1")))
    with pytest.raises(ValueError, match="'run'"):
        replicates.case_mean_table(t.drop(columns=["run"]))


def test_case_means_of_identical_trainings_give_the_runs_own_verdicts(seed_runs) -> None:
    """Averaged over three copies of one run, every case keeps its own Dice, so case_mean_claims must reach the
    verdicts that the run's own notebook 08 wrote (tables/claims_by_region.csv, made when the run was made), and its
    comparisons must be notebook 08's per-case tests of the claims (tables/claims_comparisons.csv)."""
    labels = ["a", "b", "c"]
    table = replicates._stacked_table([seed_runs[0]] * 3, labels)
    empty = replicates.pooled_empty_truth([seed_runs[0]] * 3, labels)
    cmp, cm = replicates.case_mean_claims(table, empty_truth=empty)
    own = replicates.canonical_analysis(pd.read_csv(seed_runs[0] / "tables" / "claims_by_region.csv"))
    got = cm.set_index(["analysis", "claim"])
    for _, r in own.iterrows():
        g = got.loc[(r["analysis"], r["claim"])]
        assert (g["verdict"], g["n_tests"], g["n_support"], g["n_against"], g["n_cases"]) == (
            r["verdict"], r["n_tests"], r["n_support"], r["n_against"], r["n_cases"]), (r["analysis"], r["claim"])
        if r["claim"] == "C2":
            assert g["rel_drop"] == pytest.approx(r["rel_drop"], rel=1e-9)
    assert len(got) == len(own)
    nb = pd.read_csv(seed_runs[0] / "tables" / "claims_comparisons.csv")  # notebook 08's tests of the paper's attacks
    key = ["family", "region", "model_a", "attack_a", "eps_a", "model_b", "attack_b", "eps_b"]
    m = cmp.merge(nb, on=[*key, "target_policy_a", "target_policy_b"], suffixes=("", "_nb"))
    assert len(m) == len(cmp)
    np.testing.assert_allclose(m["pvalue"], m["pvalue_nb"], rtol=1e-9)
    np.testing.assert_allclose(m["p_holm"], m["p_holm_nb"], rtol=1e-9)
    # a case without ET in every run (pooled ids, one per run) is one case left out of the ET analysis, once
    case = sorted(table["case_id"].str.split("/").str[1].unique())[0]
    _, cm = replicates.case_mean_claims(table, empty_truth={"ET": [f"{lab}/{case}" for lab in labels]}, n_resamples=50)
    ex = cm[cm["analysis"] == "ET without empty-truth cases"]
    assert len(ex) == 4 and (ex["n_cases"] == 13).all() and (ex["n_excluded"] == 1).all()
    assert (cm.loc[cm["analysis"] == "ET", "n_cases"] == 14).all()


TRAININGS = ROOT / "docs" / "results" / "teaching-trainings"


def _teaching_and_replicates(folder: Path) -> list[Path]:
    """The committed teaching run (N = 0) and a design's committed replicates seed1...seed11 of ``folder``, in order."""
    runs = [ROOT / "docs" / "results" / "teaching-cpu",
            *sorted(folder.glob("seed*"), key=lambda d: int(d.name.removeprefix("seed")))]  # fmt: skip
    assert [d.name for d in runs[1:]] == [f"seed{i}" for i in range(1, 12)]
    return runs


def _recomputes_committed_comparison(runs: list[Path], labels: list[str], committed: Path, out: Path) -> Path:
    """Compare ``runs`` into ``out`` and assert that every table over runs, and comparison.md below its runs table
    (paths and times differ), equal the committed ones; returns ``out``."""
    replicates.write_comparison(runs, out, labels=labels)
    for name in ("agreement.csv", "verdicts_by_run.csv", "dice_by_run.csv", "parameter_differences.csv",
                 "run_level_table.csv", "run_level_comparisons.csv", "run_level_spread.csv",
                 "run_level_claims_by_region.csv", "case_mean_comparisons.csv", "case_mean_claims_by_region.csv"):  # fmt: skip
        assert (out / name).is_file() == (committed / name).is_file(), name  # what a design writes, and only that
        if not (out / name).is_file():
            continue
        pd.testing.assert_frame_equal(pd.read_csv(out / name), pd.read_csv(committed / name), check_exact=False,
                                      rtol=1e-9, obj=name)  # fmt: skip
    body = lambda f: f.read_text().split("## Parameters that differ", 1)[1]  # noqa: E731
    assert body(out / "comparison.md") == body(committed / "comparison.md")
    return out


def test_committed_training_replicates_are_one_test_set_and_their_comparison_is_the_codes(tmp_path) -> None:
    """The committed twelve trainings (the teaching run and ``--seed N --set data.seed=0``, N = 1-11): their data are
    the teaching run's (every notebook-01 region-volume table byte-identical to its), they differ in the seeds of
    stages 02-08 only, compare finds them training replicates, and the committed comparison is what the code makes of
    them now."""
    runs = _teaching_and_replicates(TRAININGS)
    vols = (runs[0] / "tables" / "data_region_volumes.csv").read_bytes()
    assert all((d / "tables" / "data_region_volumes.csv").read_bytes() == vols for d in runs[1:])
    labels = [f"seed{i}" for i in range(12)]
    recs = [replicates.read_run(d) for d in runs]
    assert replicates.replicate_design(recs, labels) == replicates.SAME_TEST_SET
    out = _recomputes_committed_comparison(runs, labels, TRAININGS / "comparison", tmp_path / "cmp")
    diffs = pd.read_csv(out / "parameter_differences.csv")
    assert set(diffs["parameter"]) == {"seed"} and "01_data" not in set(diffs["stage"])
    assert not (out / "pooled_claims_by_region.csv").exists()


REDRAWN = ROOT / "docs" / "results" / "teaching-redrawn"


def test_committed_redrawn_training_replicates_keep_the_test_cases_and_their_comparison_is_the_codes(tmp_path) -> None:
    """The committed twelve trainings on redrawn training cases (the teaching run and ``--seed N --set data.seed=0
    --set data.train_seed=N``, N = 1-11): every run's test cases have the teaching run's region volumes row for row,
    its training and validation cases do not, the runs differ in the training seeds and notebook 01's ``train_seed``
    only, compare finds them training replicates on redrawn training cases, and the committed comparison is what the
    code makes of them now."""
    runs = _teaching_and_replicates(REDRAWN)
    labels = [f"seed{i}" for i in range(12)]
    recs = [replicates.read_run(d) for d in runs]
    test_ids = sorted(recs[0]["case_ids"])
    assert len(test_ids) == 14 and all(sorted(r["case_ids"]) == test_ids for r in recs[1:])
    vols = [pd.read_csv(d / "tables" / "data_region_volumes.csv").set_index("case_id") for d in runs]
    others = vols[0].index.difference(test_ids)
    assert len(others) == 34
    for d, v in zip(runs[1:], vols[1:]):
        pd.testing.assert_frame_equal(v.loc[test_ids], vols[0].loc[test_ids], obj=d.name)
        assert (v.loc[others] != vols[0].loc[others]).any(axis=1).all(), d.name  # every other case redrawn
    assert replicates.replicate_design(recs, labels) == replicates.SAME_TEST_SET and replicates.redrawn_training(recs)
    out = _recomputes_committed_comparison(runs, labels, REDRAWN / "comparison", tmp_path / "cmp")
    assert "on their own draws of the training and validation cases" in (REDRAWN / "comparison" / "comparison.md").read_text()
    diffs = pd.read_csv(out / "parameter_differences.csv")
    assert set(diffs["parameter"]) == {"seed", "train_seed"}
    assert set(diffs.loc[diffs["stage"] == "01_data", "parameter"]) == {"train_seed"}


BOOTSTRAP = ROOT / "docs" / "results" / "teaching-bootstrap"


def test_committed_bootstrap_replicates_resample_the_teaching_cases_and_their_comparisons_are_the_codes(tmp_path) -> None:
    """The committed bootstrap replicates (the teaching run's 48 synthetic cases written as a BraTS 2021 folder and
    read as real data, ``--seed N --set data.seed=0 --set data.train_seed=N --data-dir FOLDER``): every run's test
    cases have the teaching run's region volumes row for row, every other row is the teaching run's row of the case its
    id names, from the same part, and some case is drawn twice; compare finds training replicates on one test set,
    and the three committed comparisons (bootstrap, and the redrawn runs and the trainings with the same stage seeds)
    are what the code makes of the committed runs now."""
    runs = sorted((d for d in BOOTSTRAP.glob("seed*")), key=lambda d: int(d.name.removeprefix("seed")))
    k = len(runs)
    assert k >= 6 and [d.name for d in runs] == [f"seed{i}" for i in range(1, k + 1)]
    teaching = COMMITTED_RUNS[0]
    ref = pd.read_csv(teaching / "tables" / "data_region_volumes.csv", dtype={"case_id": str}).set_index("case_id")
    ids = data.case_ids_for("brats2021", 48)
    fr = json.loads((teaching / "manifest.json").read_text())["parameters"]["01_data"]["fractions"]
    split = data.split_cases(ids, fr, 0)
    recs = [replicates.read_run(d) for d in runs]
    for d, r in zip(runs, recs):
        p = r["parameters"]["01_data"]
        assert p["data_dir"] and p["seed"] == 0 and p["train_seed"] == int(d.name.removeprefix("seed")), d.name
        vols = pd.read_csv(d / "tables" / "data_region_volumes.csv", dtype={"case_id": str})
        assert len(vols) == 48 and vols["case_id"].str.contains("~").any(), d.name  # some case drawn twice
        for i, row in vols.iterrows():
            orig = data.original_case_id(row["case_id"])
            assert split[orig] == split[ids[i]] and (split[ids[i]] != "test" or orig == ids[i]), (d.name, i)
            assert (row.drop("case_id") == ref.loc[orig]).all(), (d.name, row["case_id"])
        assert r["case_ids"] == {c for c in ids if split[c] == "test"}
    labels = [f"seed{i}" for i in range(1, k + 1)]
    assert replicates.replicate_design(recs, labels) == replicates.SAME_TEST_SET and replicates.redrawn_training(recs)
    # the bootstrap runs read a folder of the teaching cases: compare does not take them for independent of the teaching run
    assert replicates.case_overlaps([recs[0], replicates.read_run(teaching)], ["b", "t"])[0][2] == "test cases"
    _recomputes_committed_comparison(runs, labels, BOOTSTRAP / "comparison", tmp_path / "boot")
    for folder, name in ((REDRAWN, "redrawn-same-seeds"), (TRAININGS, "trainings-same-seeds")):
        _recomputes_committed_comparison([folder / lab for lab in labels], labels, BOOTSTRAP / name, tmp_path / name)


def test_committed_real_avx2_run_is_the_teaching_run_on_another_cpu_and_its_comparison_is_the_codes(tmp_path) -> None:
    """The teaching run of session 18's AVX2 CPU (docs/results/teaching-avx2-cpu): the committed run's parameters and
    data (region volumes byte-identical) on other kernels, and its committed comparison with the AVX-512 run is what
    the code makes of the two now (compare does not pool them: the same test cases)."""
    avx2, avx512 = ROOT / "docs" / "results" / "teaching-avx2-cpu", COMMITTED_RUNS[0]
    recs = [replicates.read_run(d) for d in (avx512, avx2)]
    man = [json.loads((d / "manifest.json").read_text()) for d in (avx512, avx2)]
    assert [m["machine"]["cpu_capability"] for m in man] == ["AVX512", "AVX2"]
    assert recs[0]["parameters"] == recs[1]["parameters"]
    assert ((avx2 / "tables" / "data_region_volumes.csv").read_bytes()
            == (avx512 / "tables" / "data_region_volumes.csv").read_bytes())  # fmt: skip
    assert [r["machine"] for r in recs] == ["AMD EPYC (x86_64, AVX512), 2 torch threads, no GPU",
                                            "AMD EPYC (x86_64, AVX2), 2 torch threads, no GPU"]  # fmt: skip
    assert replicates.case_overlaps(recs, ["avx512", "avx2"]) == [("avx512", "avx2", "test cases")]
    out = _recomputes_committed_comparison([avx512, avx2], ["avx512", "avx2"], avx2 / "comparison-with-avx512",
                                           tmp_path / "cmp")  # fmt: skip
    assert not (out / "pooled_claims_by_region.csv").exists()


def test_runs_whose_test_cases_have_other_region_volumes_are_not_one_test_set(seed_runs, tmp_path) -> None:
    """The same data parameters and case ids do not make the same cases when the data differ (e.g. another code
    version's generator): a test case whose notebook-01 region volumes differ from another run's is another case
    under the same id, so the runs are not training replicates on one test set, and the case means would average
    other images under one id."""
    runs = _training_copies(seed_runs[0], tmp_path)
    labels = ["t0", "t1", "t2"]
    assert replicates.replicate_design([replicates.read_run(d) for d in runs], labels) == replicates.SAME_TEST_SET
    f = runs[2] / "tables" / "data_region_volumes.csv"
    vols = pd.read_csv(f, dtype={"case_id": str})
    test_id = sorted(replicates.read_run(runs[2])["case_ids"])[0]
    train_id = sorted(set(vols["case_id"]) - replicates.read_run(runs[2])["case_ids"])[0]
    v = vols.copy()
    v.loc[v["case_id"] == train_id, "WT"] += 1  # a training case: training may be redrawn, the test set is the same
    v.to_csv(f, index=False)
    assert replicates.replicate_design([replicates.read_run(d) for d in runs], labels) == replicates.SAME_TEST_SET
    v.loc[v["case_id"] == test_id, "WT"] += 1
    v.to_csv(f, index=False)
    assert replicates.replicate_design([replicates.read_run(d) for d in runs], labels) == replicates.SHARED
    (runs[2] / "tables" / "data_region_volumes.csv").unlink()  # no volumes: nothing to check them by
    assert replicates.replicate_design([replicates.read_run(d) for d in runs], labels) == replicates.SAME_TEST_SET


def test_run_level_and_case_means_leave_out_a_case_with_a_missing_score_in_every_condition() -> None:
    """A NaN score (a case that one condition could not score) must not make a run's two paired means means over
    different cases: the case leaves that run's region, in every condition, and n_cases says so (by hand: clean
    (0.9 + 0.2) / 2, fgsm (0.1 + 0.1) / 2, not 1.9 / 3 against 0.2 / 2)."""
    rows = []
    for run in ("r0", "r1"):
        for i, (a, b) in enumerate([(0.9, 0.1), (0.8, np.nan), (0.2, 0.1)]):
            for attack, eps, v in (("clean", 0.0, a), ("fgsm", 1.0, b)):
                rows.append({"run": run, "case_id": f"{run}/c{i}", "model": "baseline", "attack": attack, "eps": eps,
                             "region": "WT", "dice": v})  # fmt: skip
        rows.append({"run": run, "case_id": f"{run}/c1", "model": "baseline", "attack": "clean", "eps": 0.0,
                     "region": "TC", "dice": 0.5})  # fmt: skip
    t = pd.DataFrame(rows)
    with pytest.warns(UserWarning, match="r0/c1"):
        u = replicates.run_level_table(t)
    wt = u[u.region == "WT"].set_index(["case_id", "attack"])
    assert wt.loc[("r0", "clean"), "dice"] == pytest.approx(0.55) and wt.loc[("r0", "fgsm"), "dice"] == pytest.approx(0.1)
    assert (wt["n_cases"] == 2).all()
    assert (u.loc[u.region == "TC", "n_cases"] == 1).all()  # only the region with the missing score loses the case
    with pytest.warns(UserWarning, match="c1"):
        cm = replicates.case_mean_table(t)
    assert "c1" not in set(cm.loc[cm.region == "WT", "case_id"]) and "c1" in set(cm.loc[cm.region == "TC", "case_id"])


def test_comparison_says_when_runs_differ_in_more_than_their_seeds(seed_runs, tmp_path) -> None:
    """Independent runs (or training replicates) whose procedures differ (here another number of epochs) are not
    replicates of one procedure: comparison.md must not describe their spread as seed-to-seed alone."""
    other = tmp_path / "seed1long"
    shutil.copytree(seed_runs[1], other)
    man = json.loads((other / "manifest.json").read_text())
    man["parameters"]["02_unet"]["epochs"] = 30
    (other / "manifest.json").write_text(json.dumps(man))
    replicates.write_comparison([seed_runs[0], other], tmp_path / "cmp", pooled=False)
    text = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "Design: independent runs." in text
    assert "The runs differ in more than their seeds (02_unet.epochs" in text
    replicates.write_comparison(seed_runs[:2], tmp_path / "same", pooled=False)
    assert "differ in more than their seeds" not in (tmp_path / "same" / "comparison.md").read_text()


def test_training_replicates_without_one_runs_volumes_exclude_the_same_empty_truth_cases_from_every_run(
        seed_runs, tmp_path) -> None:  # fmt: skip
    """Training replicates evaluate the same test cases, so the empty-truth cases that one run's volumes name are every
    run's: a run without its volumes table must not keep them in its run mean (three identical copies of the seed-1
    run, which has such cases: its run-level verdicts without them are those of the copies that all have their volumes)."""
    runs = _training_copies(seed_runs[1], tmp_path)
    replicates.write_comparison(runs, tmp_path / "all", n_resamples=50)
    (runs[2] / "tables" / "data_region_volumes.csv").unlink()
    replicates.write_comparison(runs, tmp_path / "two", n_resamples=50)
    want, got = (pd.read_csv(tmp_path / d / "run_level_claims_by_region.csv") for d in ("all", "two"))
    sel = lambda t: t.loc[t["analysis"] == "ET without empty-truth cases", "evidence"].tolist()  # noqa: E731
    assert sel(want) and sel(got) == sel(want)


def _set_code(run: Path, top: str, stages: dict[str, str] | None = None) -> Path:
    """Record a run's commit in its manifest: ``top`` as the last call's, ``stages`` (stage -> sha) as the stages' own."""
    man = json.loads((run / "manifest.json").read_text())
    man["git_sha"] = top
    for s, sha in (stages or {}).items():
        man["stages"][s]["git_sha"] = sha
    (run / "manifest.json").write_text(json.dumps(man))
    return run


def test_comparison_says_when_runs_ran_other_code(tmp_path) -> None:
    """Runs at other commits, a run whose stages ran at two commits, a run from a dirty checkout and one that records
    no commit are named in comparison.md's runs section (the runs table keeps the ``+dirty`` mark); runs at one clean
    commit get no such sentence, whatever their last call's commit."""
    sha_a, sha_b = "a" * 40, "b" * 40
    runs = []
    for i in range(4):
        r = _fake_run(tmp_path / f"r{i}", i, {"C1": ("holds", 3, 3, 0)})
        _summary(r, [("baseline", "clean", None, None, 0.0, 0.8)])
        runs.append(r)
    _set_code(runs[0], sha_a, {s: sha_a for s in pipeline.STAGES})
    _set_code(runs[1], sha_b, {s: sha_a for s in pipeline.STAGES})  # a later call at b found every stage up to date
    replicates.write_comparison(runs[:2], tmp_path / "same", pooled=False)
    same = (tmp_path / "same" / "comparison.md").read_text()
    assert "code versions" not in same and "+dirty" not in same and "no git commit" not in same

    _set_code(runs[1], sha_b, {"02_unet": sha_b})  # its stage 02 rerun at b
    _set_code(runs[2], sha_a + "+dirty", {s: sha_a + "+dirty" for s in pipeline.STAGES})
    _set_code(runs[3], "unknown")
    replicates.write_comparison(runs, tmp_path / "cmp", labels=["a", "b", "d", "u"], pooled=False)
    text = (tmp_path / "cmp" / "comparison.md").read_text()
    runs_section = text.split("## Parameters that differ", 1)[0]
    assert ("The runs were made by different code versions (git_sha: a aaaaaaaaaa; b aaaaaaaaaa, bbbbbbbbbb; "
            "d aaaaaaaaaa+dirty; u unknown)") in runs_section
    assert "d ran from a checkout with uncommitted changes (`+dirty`)" in runs_section
    assert "u record no git commit" in runs_section
    info = pd.read_csv(tmp_path / "cmp" / "runs.csv").set_index("run")["git_sha"]
    assert info["d"] == "aaaaaaaaaa+dirty" and info["b"] == "aaaaaaaaaa, bbbbbbbbbb"
    recs = [replicates.read_run(r) for r in runs]
    assert [r["code_versions"] for r in recs] == [[sha_a], [sha_a, sha_b], [sha_a + "+dirty"], ["unknown"]]
    assert replicates.code_version_note(recs[:1] * 2, ["x", "y"]) == ""


def test_real_runs_without_training_ids_say_so_or_read_them_from_the_prepared_data(tmp_path) -> None:
    """Two real-data runs of other folders without notebook 01's region volumes: their training cases were unknown
    and compare called them independent without a word. comparison.md now says it could not check them; where the
    run folder keeps ``data/prepared.npz``, its case ids are read instead, and here they show that run a trained on
    run b's test patient."""
    runs = []
    for lab, folder, test in (("a", "/data/one", "P1"), ("b", "/data/two", "P2")):
        r = _fake_run(tmp_path / lab, 0, {"C1": ("holds", 3, 3, 0)})
        _summary(r, [("baseline", "clean", None, None, 0.0, 0.8)])
        man = json.loads((r / "manifest.json").read_text())
        man["parameters"]["01_data"]["data_dir"] = folder
        (r / "manifest.json").write_text(json.dumps(man))
        pd.DataFrame({"case_id": [test]}).to_csv(r / "tables" / "results_02_unet.csv", index=False)
        runs.append(r)
    replicates.write_comparison(runs, tmp_path / "cmp", pooled=False)
    text = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "Design: independent runs." in text
    assert "Training cases not checked: a, b have neither notebook 01's region volumes" in text
    assert "could not be checked, and the design above rests on the test cases alone" in text
    recs = [replicates.read_run(r) for r in runs]
    assert replicates.unchecked_training_cases(recs, ["a", "b"]) == ["a", "b"]
    same = [{**rec, "parameters": {"01_data": {"data_dir": "/data/one"}}} for rec in recs]
    assert replicates.unchecked_training_cases(same, ["a", "b"]) == []  # the same folder: shared, no ids needed

    for r, ids in ((runs[0], ["P1", "P2~2", "P3"]), (runs[1], ["P2", "P4"])):  # a trained on b's test patient P2
        (r / "data").mkdir()
        np.savez(r / "data" / "prepared.npz", case_ids=np.array(ids), images=np.zeros((len(ids), 1)))
    recs = [replicates.read_run(r) for r in runs]
    assert recs[0]["data_case_ids"] == {"P1", "P2", "P3"} and not recs[0]["has_volumes"]
    assert replicates.unchecked_training_cases(recs, ["a", "b"]) == []
    assert replicates.case_overlaps(recs, ["a", "b"]) == [("a", "b", "a's training cases are b's test cases")]
    replicates.write_comparison(runs, tmp_path / "cmp", pooled=False)
    text = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "Training cases not checked" not in text and "Design: runs that share cases" in text
    (runs[1] / "data" / "prepared.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"b/data/prepared.npz: cannot read its case_ids"):
        replicates.read_run(runs[1])


def test_seed_equal_to_the_profiles_own_says_it_repeats_the_profiles_run(tmp_path, monkeypatch) -> None:
    """``--seed 0`` with a profile whose seed is 0 is the request ``runs/<profile>`` is made for; it keeps its own
    folder (every --seed N gets runs/<profile>-seedN), and the log says so and how to reuse the profile's run.
    Another seed, or an explicit --out, gets no note. Notebooks are not executed (papermill is a recorder)."""
    import papermill

    nb_dir = _stub_notebooks(tmp_path / "nb")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(papermill, "execute_notebook", lambda src, dst, **kw: Path(dst).write_text("{}"))
    lines: list[str] = []
    pipeline.reproduce(str(nb_dir / "stub.yaml"), None, device="cpu", notebook_dir=nb_dir, seed=0,
                       sets=["unet.seed=7"], log=lines.append)  # fmt: skip
    notes = [ln for ln in lines if ln.startswith("note:")]
    assert notes == ["note: --seed 0 is the profile's own seed, so this is the request that runs/stub is made for; it "
                     "still runs into runs/stub-seed0 (every --seed N gets its own folder); pass --out runs/stub "
                     "instead to reuse a finished run there"]  # fmt: skip
    assert (tmp_path / "runs" / "stub-seed0" / "manifest.json").is_file()
    for kw in ({"seed": 1}, {"seed": 0, "out": tmp_path / "mine"}):
        lines.clear()
        pipeline.reproduce(str(nb_dir / "stub.yaml"), kw.pop("out", None), device="cpu", notebook_dir=nb_dir,
                           log=lines.append, **kw)  # fmt: skip
        assert not [ln for ln in lines if ln.startswith("note:")], kw
    import argparse

    sub = next(a for a in pipeline.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert "--seed 0 (the shipped profiles' own seed) repeats" in " ".join(sub.choices["reproduce"].format_help().split())


def test_code_version_note_names_runs_whose_stages_ran_at_two_commits_even_when_all_runs_did() -> None:
    """Oracle by hand: two runs that each ran their stages at commits a and b have the same list of versions, yet
    each run mixes two commits, so the note must name them (short shas: the first 10 hex digits); one commit each: no
    note."""
    sha_a, sha_b = "a" * 40, "b" * 40
    mixed = {"code_versions": [sha_a, sha_b], "git_sha": sha_b}
    note = replicates.code_version_note([mixed, dict(mixed)], ["x", "y"])
    assert "different code versions (git_sha: x aaaaaaaaaa, bbbbbbbbbb; y aaaaaaaaaa, bbbbbbbbbb)" in note
    one = {"code_versions": [sha_a], "git_sha": sha_a}
    assert replicates.code_version_note([one, dict(one)], ["x", "y"]) == ""


def _replicate_pair(tmp_path: Path, train_seed: int | None, epochs: int = 15, seed_b: int = 1) -> list[Path]:
    """Two fake runs on data seed 0 with results for cases c0 and c1: run a trains every stage with seed 0; run b with
    ``seed_b`` (``train_seed``: its notebook-01 ``train_seed``; ``epochs``: its 02_unet epochs)."""
    runs = []
    for lab, k in (("a", 0), ("b", seed_b)):
        r = _fake_run(tmp_path / lab, k, {"C1": ("holds", 3, 3, 0)}, epochs=15 if lab == "a" else epochs)
        man = json.loads((r / "manifest.json").read_text())
        man["parameters"]["01_data"]["seed"] = 0
        if lab == "b" and train_seed is not None:
            man["parameters"]["01_data"]["train_seed"] = train_seed
        (r / "manifest.json").write_text(json.dumps(man))
        _summary(r, [("baseline", "clean", None, None, 0.0, 0.8)])
        res = pd.DataFrame({"case_id": ["c0", "c1"], "dice": [0.8, 0.7]})
        res.to_csv(r / "tables" / "results_02_unet.csv", index=False)
        runs.append(r)
    return runs


def test_redrawn_training_cases_are_not_a_procedure_difference(tmp_path) -> None:
    """Oracle by construction: runs that differ only in their stage seeds and notebook 01's ``train_seed`` (same data
    seed, same test case ids) are training replicates on one test set; ``train_seed`` is a seed, so comparison.md must
    not say that they differ in more than their seeds."""
    runs = _replicate_pair(tmp_path, train_seed=5)
    assert replicates.replicate_design([replicates.read_run(r) for r in runs], ["a", "b"]) == replicates.SAME_TEST_SET
    replicates.write_comparison(runs, tmp_path / "cmp", pooled=False)
    text = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "Design: training replicates on one test set." in text
    assert "differ in more than their seeds" not in text


def test_runs_sharing_cases_get_no_procedure_sentence(tmp_path) -> None:
    """Oracle by construction: two runs on data seed 0 with the same training seeds but other 02_unet epochs are
    shared (a model trained twice from one seed, so no cross-run verdicts): the sentence about cross-run verdicts
    being about a mixture of procedures belongs to independent runs and training replicates only."""
    runs = _replicate_pair(tmp_path, train_seed=None, epochs=30, seed_b=0)
    assert replicates.replicate_design([replicates.read_run(r) for r in runs], ["a", "b"]) == replicates.SHARED
    replicates.write_comparison(runs, tmp_path / "cmp", pooled=False)
    text = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "Design: runs that share cases" in text and "02_unet | epochs" in text
    assert "differ in more than their seeds" not in text


# --- damaged run folders: every file compare reads is refused by name, never with a traceback ------------------------


def _fake_pair(tmp_path: Path) -> tuple[Path, Path]:
    """Two finished fake runs with a summary table each: what ``compare --no-pooled`` reads."""
    a = _fake_run(tmp_path / "a", 0, {"C1": ("holds", 3, 3, 0), "C2": ("holds", 9, 2, 0)})
    b = _fake_run(tmp_path / "b", 1, {"C1": ("mixed", 3, 2, 0), "C2": ("holds", 9, 1, 0)})
    for d, v in ((a, 0.8), (b, 0.7)):
        _summary(d, [("baseline", "clean", None, None, 0.0, v)])
    return a, b


def _edit_manifest(run: Path, edit) -> None:
    man = json.loads((run / "manifest.json").read_text())
    edit(man)
    (run / "manifest.json").write_text(json.dumps(man))


#: (case, the manifest's new text or an edit of its dict, what the error must name besides the file)
_BAD_MANIFESTS = [
    ("not JSON", "{oops", "not valid JSON"),
    ("not UTF-8", b"\xff\xfe{", "not valid JSON"),
    ("an array", "[1]", "JSON object"),
    ("stages an array", lambda m: m.update(stages=[]), "'stages'"),
    ("stages a string", lambda m: m.update(stages="done"), "'stages'"),
    ("a stage record a string", lambda m: m["stages"].update({"08_statistics": "done"}), "stages.08_statistics"),
    ("seconds a string", lambda m: m["stages"]["02_unet"].update(seconds="ten"), "stages.02_unet.seconds"),
    ("parameters an array", lambda m: m.update(parameters=[]), "'parameters'"),
    ("a stage's parameters a number", lambda m: m["parameters"].update({"02_unet": 15}), "parameters.02_unet"),
    ("a seed a string", lambda m: m["parameters"]["02_unet"].update(seed="zero"), "parameters.02_unet.seed"),
    ("train_seed a list", lambda m: m["parameters"]["01_data"].update(train_seed=[1]), "parameters.01_data.train_seed"),
    ("machine a string", lambda m: m.update(machine="a laptop"), "'machine'"),
    ("machine.gpu a list", lambda m: m["machine"].update(cpu_capability="AVX2", torch_threads=2, gpu=["H100"]),
     "'machine.gpu'"),
]  # fmt: skip


@pytest.mark.parametrize("bad", _BAD_MANIFESTS, ids=[c for c, _, _ in _BAD_MANIFESTS])
def test_a_malformed_manifest_is_refused_naming_the_file_and_key(tmp_path, bad) -> None:
    """Oracle: hand-broken manifests of an otherwise valid run; each must be a ValueError naming the manifest and the
    key at fault (before: JSON errors without the file, AttributeError, TypeError)."""
    _, change, what = bad
    a, b = _fake_pair(tmp_path)
    if callable(change):
        _edit_manifest(b, change)
    else:
        (b / "manifest.json").write_bytes(change if isinstance(change, bytes) else change.encode())
    with pytest.raises(ValueError) as err:
        replicates.write_comparison([a, b], tmp_path / "cmp", pooled=False)
    assert str(b / "manifest.json") in str(err.value) and what in str(err.value), str(err.value)


_CLAIM_NEEDS = ["analysis", "region", "n_cases", "n_excluded", "claim", "verdict", "n_tests", "n_support", "n_against",
                "rel_drop"]  # fmt: skip


def _edit_csv(path: Path, edit) -> None:
    t = pd.read_csv(path, dtype={"case_id": str})
    edit(t).to_csv(path, index=False)


_BAD_CLAIMS = [
    ("empty file", lambda f: f.write_text(""), "empty"),
    ("not UTF-8", lambda f: f.write_bytes(b"analysis,region\n\xff\xfe,\xfa\n"), "cannot be read"),
    ("header only", lambda f: _edit_csv(f, lambda t: t.iloc[:0]), "no rows"),
    ("n_tests not a number", lambda f: _edit_csv(f, lambda t: t.assign(n_tests=["three"] * len(t))), "'n_tests'"),
    ("n_cases blank", lambda f: _edit_csv(f, lambda t: t.assign(n_cases=np.nan)), "'n_cases'"),
    ("rel_drop not a number", lambda f: _edit_csv(f, lambda t: t.assign(rel_drop="half")), "'rel_drop'"),
    *((f"no {c}", (lambda c: lambda f: _edit_csv(f, lambda t: t.drop(columns=[c])))(c), f"'{c}'")
      for c in _CLAIM_NEEDS),
]  # fmt: skip


@pytest.mark.parametrize("bad", _BAD_CLAIMS, ids=[c for c, _, _ in _BAD_CLAIMS])
def test_a_malformed_claims_table_is_refused_naming_the_file_and_column(tmp_path, bad) -> None:
    """Oracle: hand-broken tables/claims_by_region.csv (before: KeyError, pandas' "No columns to parse from file",
    int() of a word, IndexError of an empty table, none naming the file)."""
    _, breaks, what = bad
    a, b = _fake_pair(tmp_path)
    f = a / "tables" / "claims_by_region.csv"  # the first run's: its first analysis names the headline region
    breaks(f)
    with pytest.raises(ValueError) as err:
        replicates.write_comparison([a, b], tmp_path / "cmp", pooled=False)
    assert str(f) in str(err.value) and what in str(err.value), str(err.value)


_BAD_OTHER_TABLES = [
    ("summary empty", "summary.csv", lambda f: f.write_text(""), "empty"),
    ("summary without mean_dice", "summary.csv", lambda f: _edit_csv(f, lambda t: t.drop(columns=["mean_dice"])),
     "'mean_dice'"),
    ("summary without attack", "summary.csv", lambda f: _edit_csv(f, lambda t: t.drop(columns=["attack"])), "'attack'"),
    ("summary eps a word", "summary.csv", lambda f: _edit_csv(f, lambda t: t.assign(eps="none")), "'eps'"),
    ("results without case_id", "results_02_unet.csv",
     lambda f: pd.DataFrame({"model": ["baseline"], "dice": [0.5]}).to_csv(f, index=False), "'case_id'"),
    ("results empty", "results_02_unet.csv", lambda f: f.write_text(""), "empty"),
    ("volumes without case_id", "data_region_volumes.csv",
     lambda f: pd.DataFrame({"WT": [3.0], "TC": [1.0], "ET": [0.0]}).to_csv(f, index=False), "'case_id'"),
    ("volumes not CSV", "data_region_volumes.csv", lambda f: f.write_text('case_id,WT\n"c0,3\n'), "cannot be read"),
]  # fmt: skip


@pytest.mark.parametrize("bad", _BAD_OTHER_TABLES, ids=[c for c, _, _, _ in _BAD_OTHER_TABLES])
def test_malformed_summary_results_and_volume_tables_are_refused_by_name(tmp_path, bad) -> None:
    """Oracle: hand-broken tables/summary.csv, results_02_unet.csv and data_region_volumes.csv of an otherwise valid
    run (before: KeyError, TypeError, pandas errors without the file)."""
    _, name, breaks, what = bad
    a, b = _fake_pair(tmp_path)
    f = b / "tables" / name
    breaks(f)
    with pytest.raises(ValueError) as err:
        replicates.write_comparison([a, b], tmp_path / "cmp", pooled=False)
    assert str(f) in str(err.value) and what in str(err.value), str(err.value)


_BAD_POOLED_FILES = [
    ("attack record an array", "attacks/fgsm.json", lambda f: f.write_text("[1]"), "JSON object"),
    ("attack record of an unknown attack", "attacks/fgsm.json",
     lambda f: f.write_text(json.dumps({"attack": "pgd", "eps_grid": [1.0]})), "pgd"),
    ("attack record without eps_grid", "attacks/fgsm.json", lambda f: f.write_text(json.dumps({"attack": "fgsm"})),
     "eps_grid"),
    ("attack record not JSON", "attacks/fgsm.json", lambda f: f.write_text("{oops"), "not valid JSON"),
    ("results without dice", "tables/results_03_fgsm.csv", lambda f: _edit_csv(f, lambda t: t.drop(columns=["dice"])),
     "'dice'"),
    ("results without case_id", "tables/results_03_fgsm.csv",
     lambda f: _edit_csv(f, lambda t: t.drop(columns=["case_id"])), "'case_id'"),
    ("results eps a word", "tables/results_03_fgsm.csv",
     lambda f: _edit_csv(f, lambda t: t.assign(eps=t["eps"].astype(object).where(t.index > 0, "one"))), "'eps'"),
    ("results empty", "tables/results_04_ifgsm.csv", lambda f: f.write_text(""), "empty"),
]  # fmt: skip


@pytest.mark.parametrize("bad", _BAD_POOLED_FILES, ids=[c for c, _, _, _ in _BAD_POOLED_FILES])
def test_malformed_files_of_the_pooled_analyses_are_refused_by_name(seed_runs, tmp_path, bad) -> None:
    """Oracle: a copy of a committed run with one attack record or per-case results table broken by hand; pooling
    reads them (before: TypeError, pandas errors without the file, or a silently NaN dice column)."""
    _, name, breaks, what = bad
    broken = tmp_path / "broken"
    shutil.copytree(seed_runs[1], broken)
    breaks(broken / name)
    with pytest.raises(ValueError) as err:
        replicates.pooled_empty_truth([seed_runs[0], broken])
        replicates.pooled_table([seed_runs[0], broken])
    assert str(broken / name) in str(err.value) and what in str(err.value), str(err.value)


def test_cli_compare_names_the_damaged_file_and_what_the_user_typed(seed_runs, tmp_path, capsys) -> None:
    """The audit's cases through ``robustseg compare``: exit 2 and one ``robustseg: error:`` line naming the file (and
    the key or column), no traceback; one run alone is refused in the command's own words."""
    a, b = _fake_pair(tmp_path)
    out = str(tmp_path / "cmp")
    man = (b / "manifest.json").read_text()
    for text, what in (("{oops", "not valid JSON"), ("[1]", "JSON object"),
                       (json.dumps({**json.loads(man), "stages": []}), "'stages'")):  # fmt: skip
        (b / "manifest.json").write_text(text)
        assert pipeline.main(["compare", str(a), str(b), "--out", out, "--no-pooled"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("robustseg: error: ") and str(b / "manifest.json") in err and what in err, err
    (b / "manifest.json").write_text(man)
    claims = b / "tables" / "claims_by_region.csv"
    _edit_csv(claims, lambda t: t.drop(columns=["n_cases"]))
    assert pipeline.main(["compare", str(a), str(b), "--out", out, "--no-pooled"]) == 2
    err = capsys.readouterr().err
    assert str(claims) in err and "'n_cases'" in err, err
    claims.write_text("")
    assert pipeline.main(["compare", str(a), str(b), "--out", out, "--no-pooled"]) == 2
    err = capsys.readouterr().err
    assert str(claims) in err and "empty" in err, err
    assert pipeline.main(["compare", str(a), "--out", out]) == 2
    err = capsys.readouterr().err
    assert "compare needs at least two run folders, got 1" in err and str(a) in err and "run_dirs" not in err, err
    broken = tmp_path / "broken"  # the pooled analyses' files, through the command
    shutil.copytree(seed_runs[1], broken)
    res = broken / "tables" / "results_03_fgsm.csv"
    _edit_csv(res, lambda t: t.drop(columns=["dice"]))
    assert pipeline.main(["compare", str(seed_runs[0]), str(broken), "--out", out]) == 2
    err = capsys.readouterr().err
    assert str(res) in err and "'dice'" in err, err
