"""The committed teaching results (docs/results/teaching-cpu, and teaching seed 4's claims by region) are what the
current statistics code makes of the committed per-case tables: a change of the rules or the tests that would move a
published number or verdict fails here until docs/results is regenerated."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from robustseg_lib import evaluation, stats
from robustseg_lib.artefacts import RunPaths

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs" / "results" / "teaching-cpu"


def _as_published(df: pd.DataFrame) -> pd.DataFrame:
    """The frame as the notebooks publish it (CSV, no index) and read it back."""
    return pd.read_csv(io.StringIO(df.to_csv(index=False)))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> RunPaths:
    # a copy: RunPaths makes the run folder's subfolders, which must not appear under docs/
    root = tmp_path_factory.mktemp("teaching-cpu")
    shutil.copytree(COMMITTED / "tables", root / "tables")
    shutil.copytree(COMMITTED / "attacks", root / "attacks")
    return RunPaths(root)


@pytest.fixture(scope="module")
def params() -> dict:
    prof = yaml.safe_load((ROOT / "notebooks" / "profiles" / "teaching.yaml").read_text())
    return {**prof["common"], **prof["notebooks"]["08_statistics"]}


def test_committed_claims_follow_from_the_committed_tables(run: RunPaths, params: dict) -> None:
    table = evaluation.read_results(run)
    paper = evaluation.paper_attacks(run, table)
    cmp_claims = stats.compare(paper, alpha=params["alpha"])
    claims = stats.claims(paper, cmp_claims, region=params["region"], alpha=params["alpha"],
                          n_resamples=params["n_resamples"], seed=params["seed"])
    published = pd.read_csv(COMMITTED / "claims.csv")
    pd.testing.assert_frame_equal(_as_published(claims), published, rtol=1e-12)
    pd.testing.assert_frame_equal(_as_published(cmp_claims), pd.read_csv(COMMITTED / "claims_comparisons.csv"), rtol=1e-12)
    assert set(published.verdict) <= set(stats.VERDICTS)


def test_committed_claims_by_region_follow_from_the_committed_tables(run: RunPaths, params: dict) -> None:
    table = evaluation.read_results(run)
    paper = evaluation.paper_attacks(run, table)
    empty = stats.empty_truth_cases(evaluation.evaluated_region_volumes(run))
    by_region = stats.claims_by_region(paper, empty_truth=empty, alpha=params["alpha"],
                                       n_resamples=params["n_resamples"], seed=params["seed"])
    pd.testing.assert_frame_equal(_as_published(by_region), pd.read_csv(COMMITTED / "claims_by_region.csv"), rtol=1e-12)
    # the headline rows are the published claims
    wt = pd.read_csv(COMMITTED / "claims_by_region.csv").query("analysis == @params['region']")
    assert list(wt.verdict) == list(pd.read_csv(COMMITTED / "claims.csv").verdict)


def test_committed_comparisons_follow_from_the_committed_tables(run: RunPaths, params: dict) -> None:
    cmp = stats.compare(evaluation.read_results(run), alpha=params["alpha"])
    pd.testing.assert_frame_equal(_as_published(cmp), pd.read_csv(COMMITTED / "comparisons.csv"), rtol=1e-12)


def test_committed_seed4_claims_by_region_follow_from_its_tables(tmp_path) -> None:
    """Teaching seed 4 is the committed run whose ET C2 interval contains 65 % (70.4 %, CI 59.6–100 %): its
    claims_by_region.csv is what notebook 08's code path makes of its per-case tables with its manifest's parameters
    (the seed comparisons quote each run's own file without recomputing it)."""
    src = ROOT / "docs" / "results" / "teaching-seeds" / "seed4"
    for sub in ("tables", "attacks"):
        shutil.copytree(src / sub, tmp_path / sub)
    prm = json.loads((src / "manifest.json").read_text())["parameters"]["08_statistics"]
    run = RunPaths(tmp_path)
    paper = evaluation.paper_attacks(run, evaluation.read_results(run))
    cmp_claims = stats.compare(paper, alpha=prm["alpha"])
    empty = stats.empty_truth_cases(evaluation.evaluated_region_volumes(run))
    by_region = stats.claims_by_region(paper, cmp_claims, empty_truth=empty, alpha=prm["alpha"],
                                       n_resamples=prm["n_resamples"], seed=prm["seed"])  # fmt: skip
    committed = pd.read_csv(src / "tables" / "claims_by_region.csv")
    pd.testing.assert_frame_equal(_as_published(by_region), committed, rtol=1e-12)
    et = committed.set_index(["analysis", "claim"]).loc[("ET", "C2")]
    assert et["verdict"] == "not supported" and et["rel_drop_ci_lo"] < 0.65 <= et["rel_drop"] <= et["rel_drop_ci_hi"]


def test_committed_report_states_the_current_rules_and_the_committed_claims() -> None:
    """The committed report says what the current code would about the committed results: its decision rules are
    ``stats.CLAIM_RULES_MD`` (a change of the rules' text fails here until ``python tools/rerender_report.py
    docs/results/teaching-cpu`` re-renders it) and its claims table carries the committed verdicts."""
    text = (COMMITTED / "report.md").read_text()
    assert stats.CLAIM_RULES_MD.strip() in text, "report.md states old decision rules: run tools/rerender_report.py"
    for row in pd.read_csv(COMMITTED / "claims.csv").itertuples():
        assert f"| {row.claim} | {row.statement} | {row.verdict} |" in text


def _committed_comparisons() -> list[Path]:
    return sorted(p.parent for p in (ROOT / "docs" / "results").rglob("comparison.md"))


@pytest.mark.parametrize("folder", _committed_comparisons(), ids=lambda p: str(p.relative_to(ROOT / "docs" / "results")))
def test_committed_comparison_names_its_runs_as_the_current_code_does(folder: Path) -> None:
    """Each committed comparison's runs table (commits with their ``+dirty`` mark, machines) and its note on runs made by
    other code versions are what the current ``compare`` reads from the committed runs: when that text changes, the
    comparison is re-rendered (tools/rerender_comparison.py). Two comparisons name runs that live only in /tmp (runs
    of an earlier session, kept as their tables): those are checked to say so, not re-read."""
    from robustseg_lib import replicates

    spec = importlib.util.spec_from_file_location("rerender_comparison", ROOT / "tools" / "rerender_comparison.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    try:
        labels, paths = tool.committed_runs(folder)
    except ValueError as exc:
        assert "missing: /tmp/" in str(exc), exc
        return
    runs = [replicates.read_run(ROOT / p) for p in paths]
    want = _as_published(replicates.runs_table(runs, labels).drop(columns="path"))
    got = pd.read_csv(folder / "runs.csv").drop(columns="path")
    pd.testing.assert_frame_equal(got, want, obj=f"{folder}/runs.csv")
    note = replicates.code_version_note(runs, labels)
    text = (folder / "comparison.md").read_text()
    assert (note in text) if note else ("different code versions" not in text)


def test_re_render_stamps_name_commits_of_this_history() -> None:
    """A re-rendered report or comparison names the commit whose code wrote it; that commit must be in this checkout's
    history (a rebase after re-rendering renames it, and the stamp would point nowhere). Skipped outside a git checkout
    or in a shallow clone without that history."""
    import re
    import subprocess

    try:
        shallow = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], cwd=ROOT, capture_output=True,
                                 text=True, check=True).stdout.strip() == "true"  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    if shallow:
        pytest.skip("shallow clone: the history the stamps name is not here")
    files = [*(ROOT / "docs" / "results").rglob("report.md"), *(ROOT / "docs" / "results").rglob("comparison.md")]
    stamps = {(f, m) for f in files for m in re.findall(r"^\*Re-rendered on \S+ at git `([^`]*)`", f.read_text(), re.M)}
    assert any(f.name == "report.md" for f, _ in stamps) and any(f.name == "comparison.md" for f, _ in stamps)
    for f, sha in sorted(stamps):
        assert re.fullmatch(r"[0-9a-f]{7,40}", sha), f"{f.relative_to(ROOT)}: re-rendered at {sha!r}, not a clean commit"
        rc = subprocess.run(["git", "merge-base", "--is-ancestor", sha, "HEAD"], cwd=ROOT, capture_output=True).returncode
        assert rc == 0, f"{f.relative_to(ROOT)} names git {sha}, which is not in this history: re-render it"


def test_empty_truth_cases_where_notebook_08_says_they_are(run: RunPaths) -> None:
    """Notebook 08 says the teaching run's test split has no case without a region (only the per-region rows) and
    that other draws (--seed N) put cases without ET among the test cases: true of the committed runs (oracle: the
    committed region volumes of the evaluated cases, and every committed seed's claims by region)."""
    empty = stats.empty_truth_cases(evaluation.evaluated_region_volumes(run))
    assert all(len(ids) == 0 for ids in empty.values())
    assert set(pd.read_csv(COMMITTED / "claims_by_region.csv").analysis) == {"WT", "TC", "ET"}
    seeds = sorted((ROOT / "docs" / "results" / "teaching-seeds").glob("seed*/tables/claims_by_region.csv"))
    assert len(seeds) == 11
    for f in seeds:
        assert any(a.startswith("ET, ") and "empty-truth" in a for a in pd.read_csv(f).analysis), f
