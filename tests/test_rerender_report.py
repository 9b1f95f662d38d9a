"""tools/rerender_report.py: re-renders a committed run's report with the current notebook 08, and refuses when that
would change a result."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from robustseg_lib import stats

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs" / "results" / "teaching-cpu"


def _tool():
    spec = importlib.util.spec_from_file_location("rerender_report", ROOT / "tools" / "rerender_report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    dst = tmp_path / "teaching-cpu"
    shutil.copytree(COMMITTED, dst)
    return dst


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_check_folder_names_what_is_missing(folder: Path) -> None:
    tool = _tool()
    assert tool.check_folder(folder) == json.loads((folder / "manifest.json").read_text())["parameters"]["08_statistics"]
    (folder / "tables" / "drops.csv").unlink()
    with pytest.raises(ValueError, match=r"tables: missing drops\.csv"):
        tool.check_folder(folder)
    (folder / "report.md").unlink()
    with pytest.raises(ValueError, match=r"no report\.md"):
        tool.check_folder(folder)


def test_check_folder_refuses_a_run_whose_statistics_did_not_finish(folder: Path) -> None:
    man = json.loads((folder / "manifest.json").read_text())
    man["stages"]["08_statistics"]["status"] = "failed"
    (folder / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ValueError, match=r"manifest\.json: stage 08_statistics is 'failed'"):
        _tool().check_folder(folder)


def test_changed_tables_names_the_table_whose_values_differ(folder: Path, tmp_path: Path) -> None:
    tool = _tool()
    new = tmp_path / "new"
    shutil.copytree(folder / "tables", new)
    assert tool.changed_tables(new, folder / "tables") == []
    claims = pd.read_csv(new / "claims.csv")
    claims.loc[0, "verdict"] = "mixed"
    claims.to_csv(new / "claims.csv", index=False)
    summary = pd.read_csv(new / "summary.csv")
    summary.loc[0, "ci_lo"] += 1e-9  # beyond rtol 1e-12
    summary.to_csv(new / "summary.csv", index=False)
    differ = tool.changed_tables(new, folder / "tables")
    assert [d.split(" ")[0] for d in differ] == ["summary.csv", "claims.csv"]


def test_rerender_writes_nothing_when_notebook_08_would_change_a_result(folder: Path, monkeypatch) -> None:
    """A stand-in for the notebook writes the committed tables with one verdict changed: the tool stops, and the
    folder is byte-for-byte as it was."""
    import papermill

    def fake_execute(src, dst, parameters, **kw):
        run = Path(parameters["run_dir"])
        claims = pd.read_csv(run / "tables" / "claims.csv")
        claims.loc[0, "verdict"] = "contradicted"
        claims.to_csv(run / "tables" / "claims.csv", index=False)
        (run / "report").mkdir()
        (run / "report" / "report.md").write_text("Run folder `x` · new\n")

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    before = _snapshot(folder)
    with pytest.raises(RuntimeError, match=r"other results from the committed tables: claims\.csv"):
        _tool().rerender(folder)
    assert _snapshot(folder) == before


def test_rerender_states_the_current_rules_and_keeps_the_runs_record(folder: Path) -> None:
    """End to end with the real notebook 08 on a copy of the committed teaching run: the report gets the current
    decision rules and a line saying how it was re-rendered, keeps the run's header and stages, and every table
    stays as committed."""
    tool = _tool()
    old = (folder / "report.md").read_text()
    tables_before = {p.name: p.read_bytes() for p in (folder / "tables").glob("*.csv")}
    written = tool.rerender(folder)
    text = (folder / "report.md").read_text()
    assert stats.CLAIM_RULES_MD.strip() in text
    assert f"by `python tools/rerender_report.py {folder}`" in text
    header = next(line for line in old.splitlines() if line.startswith("Run folder `"))
    assert header in text.splitlines()  # folder, profile, device, commit and machine of the run itself
    for row in pd.read_csv(folder / "claims.csv").itertuples():
        assert f"| {row.claim} | {row.statement} | {row.verdict} |" in text
    assert {p.name for p in written} == {"report.md", "08_paired_0.png", "08_paired_1.png", "08_robustness_curves.png"}
    assert {p.name: p.read_bytes() for p in (folder / "tables").glob("*.csv")} == tables_before
