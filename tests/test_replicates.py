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

from robustseg_lib import pipeline, replicates
from robustseg_lib.stats import CLAIM_COLUMNS, SENSITIVITY_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT / "docs" / "results" / "teaching-seeds"
COMMITTED_RUNS = [ROOT / "docs" / "results" / "teaching-cpu", *sorted(SEEDS.glob("seed*"))]


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
    with pytest.raises(ValueError, match="at least two"):
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
    nb_dir = _stub_notebooks(tmp_path / "nb")
    monkeypatch.chdir(tmp_path)
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
    """Copies of the committed runs (seed 0 = the teaching run, seeds 1-3), so nothing is made under docs/."""
    assert len(COMMITTED_RUNS) == 4, COMMITTED_RUNS
    root = tmp_path_factory.mktemp("seeds")
    out = []
    for d, lab in zip(COMMITTED_RUNS, ("seed0", "seed1", "seed2", "seed3")):
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


def test_committed_comparison_is_what_the_code_makes_of_the_committed_runs(seed_runs, tmp_path) -> None:
    out = tmp_path / "cmp"
    replicates.write_comparison(seed_runs, out)
    committed = SEEDS / "comparison"
    for name in ("agreement.csv", "verdicts_by_run.csv", "dice_by_run.csv", "pooled_claims_by_region.csv",
                 "pooled_comparisons.csv", "parameter_differences.csv"):  # fmt: skip
        got, want = pd.read_csv(out / name), pd.read_csv(committed / name)
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-9, obj=name)
    body = lambda f: f.read_text().split("## Parameters that differ", 1)[1]  # noqa: E731  (the runs table names paths)
    assert body(out / "comparison.md") == body(committed / "comparison.md")
    # per run, the committed verdicts are each run's own claims_by_region (not recomputed here)
    v = pd.read_csv(out / "verdicts_by_run.csv")
    for d in seed_runs:
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
    assert "Not computed: runs seed0 and twin may share their cases" in (out / "comparison.md").read_text()
    assert "pooled" not in pd.read_csv(out / "agreement.csv").columns


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
    assert "with 6 runs an exact two-sided test over runs can reach p = 0.0312 < 0.05" in enough
    assert "cannot" not in enough and "Until then" not in enough


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
    with pytest.raises(ValueError, match=r"short: its conditions differ.*extra e\.g\. \[\], lacking e\.g\. \[\("):
        replicates.pooled_table([seed_runs[0], short])
