"""tools/rerender_comparison.py: re-renders committed comparisons with the current `compare`, and refuses (writing
nothing to any folder) when that would change a table over runs."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
AVX2 = ROOT / "docs" / "results" / "teaching-avx2-cpu" / "comparison-with-avx512"  # two committed runs


def _tool():
    spec = importlib.util.spec_from_file_location("rerender_comparison", ROOT / "tools" / "rerender_comparison.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_committed_runs_reads_the_runs_table_and_names_a_missing_run(tmp_path: Path) -> None:
    tool = _tool()
    assert tool.committed_runs(AVX2) == (["avx512", "avx2"], ["docs/results/teaching-cpu", "docs/results/teaching-avx2-cpu"])
    folder = tmp_path / "cmp"
    shutil.copytree(AVX2, folder)
    csv = folder / "runs.csv"
    csv.write_text(csv.read_text().replace(",docs/results/teaching-avx2-cpu,", ",/tmp/gone_run,"))
    with pytest.raises(ValueError, match=r"missing: /tmp/gone_run"):
        tool.committed_runs(folder)
    pd.read_csv(csv).drop(columns="path").to_csv(csv, index=False)
    with pytest.raises(ValueError, match=r"no 'run' and 'path' columns"):
        tool.committed_runs(folder)
    with pytest.raises(ValueError, match=r"no comparison\.md and runs\.csv"):
        tool.committed_runs(tmp_path)


def test_changed_tables_ignores_runs_csv_and_names_a_changed_or_missing_table(tmp_path: Path) -> None:
    tool = _tool()
    new = tmp_path / "new"
    shutil.copytree(AVX2, new)
    assert tool.changed_tables(new, AVX2) == []
    runs = pd.read_csv(new / "runs.csv").assign(machine="another machine")
    runs.to_csv(new / "runs.csv", index=False)
    assert tool.changed_tables(new, AVX2) == []
    dice = pd.read_csv(new / "dice_by_run.csv")
    dice.loc[0, "avx2"] += 1e-9
    dice.to_csv(new / "dice_by_run.csv", index=False)
    (new / "agreement.csv").unlink()
    got = tool.changed_tables(new, AVX2)
    assert [g.split(" ")[0] for g in got] == ["agreement.csv", "dice_by_run.csv"]
    assert "written only before" in got[0]


def test_rerender_stamps_and_rewrites_only_the_text_and_the_runs_table_or_nothing(tmp_path: Path) -> None:
    tool = _tool()
    good, bad = tmp_path / "good", tmp_path / "bad"
    shutil.copytree(AVX2, good)
    shutil.copytree(AVX2, bad)
    md = good / "comparison.md"
    md.write_text(md.read_text().replace("The runs were made by different code versions", "STALE TEXT"))
    verdicts = pd.read_csv(bad / "verdicts_by_run.csv")
    verdicts.loc[0, "verdict"] = "contradicted"
    verdicts.to_csv(bad / "verdicts_by_run.csv", index=False)
    before = {"good": _snapshot(good), "bad": _snapshot(bad)}
    with pytest.raises(RuntimeError, match=r"bad: .*verdicts_by_run\.csv.*Nothing written"):
        tool.rerender([good, bad])  # all or none: the good folder is not written either
    assert {"good": _snapshot(good), "bad": _snapshot(bad)} == before
    written = tool.rerender([good])
    assert sorted(p.name for p in written) == ["comparison.md", "runs.csv"]
    after = _snapshot(good)
    assert {k for k in after if after[k] != before["good"][k]} == {"comparison.md"}  # runs.csv was current already
    text = md.read_text()
    assert "STALE TEXT" not in text and "The runs were made by different code versions" in text
    lines = text.splitlines()
    assert lines[0] == "# Verdicts across runs" and lines[2].startswith(tool.STAMP_PREFIX) and lines[4] == "## Runs"
    assert f"rerender_comparison.py {good}" in lines[2]
