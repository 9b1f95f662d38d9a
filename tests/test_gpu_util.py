"""tools/gpu_util_summary.py: per-stage GPU utilisation from gpu_run.sh's sampled log, against hand-computed values."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "gpu_util_summary.py"
spec = importlib.util.spec_from_file_location("gpu_util_summary", TOOL)
gus = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gus)  # type: ignore[union-attr]

T0 = datetime(2026, 11, 27, 3, 0, 0, tzinfo=timezone.utc)


def _iso(sec: int) -> str:
    return datetime.fromtimestamp(T0.timestamp() + sec, timezone.utc).isoformat(timespec="seconds")


@pytest.fixture()
def run(tmp_path: Path) -> tuple[Path, Path]:
    manifest = {"stages": {
        "01_data": {"status": "done", "seconds": 4.0, "started": _iso(0), "finished": _iso(4)},
        "02_unet": {"status": "done", "seconds": 5.0, "started": _iso(10), "finished": _iso(15)},
        "03_fgsm": {"status": "running", "started": _iso(20)},  # cut short: ends at the last sample
        "04_ifgsm": {"status": "pending"},  # never started: no row
    }}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    t = T0.timestamp()
    lines = [f"{t + 0.5},0,500", f"{t + 2.5},10,600",  # 01: mean 5, none >= 50, peak 600
             f"{t + 11.5},90,9000", f"{t + 12.5},100,9100", f"{t + 13.5},40,8000",  # 02: mean 230/3, 2 of 3 >= 50
             f"{t + 21.2},70,700", f"{t + 22.2},80,800",  # 03 (running): mean 75
             f"{t + 23.2},8"]  # cut off by a kill mid-line: dropped
    util = tmp_path / "util.csv"
    util.write_text("\n".join(lines) + "\n")
    return tmp_path, util


def test_stage_utilisation_matches_hand_computed(run: tuple[Path, Path]) -> None:
    folder, util_csv = run
    util = gus.read_util_log(util_csv)
    assert len(util) == 7
    df = gus.stage_utilisation(json.loads((folder / "manifest.json").read_text()), util).set_index("stage")
    assert list(df.index) == ["01_data", "02_unet", "03_fgsm"]
    assert df.loc["01_data", "samples"] == 2 and df.loc["01_data", "mean_util"] == pytest.approx(5.0)
    assert df.loc["01_data", "busy_ge_50"] == 0.0 and df.loc["01_data", "peak_mem_mib"] == 600
    assert df.loc["02_unet", "mean_util"] == pytest.approx(230 / 3) and df.loc["02_unet", "busy_ge_50"] == pytest.approx(2 / 3)
    assert df.loc["02_unet", "peak_mem_mib"] == 9100
    assert df.loc["03_fgsm", "status"] == "running" and df.loc["03_fgsm", "mean_util"] == pytest.approx(75.0)
    assert df.loc["03_fgsm", "seconds"] == pytest.approx(22.2 - 20, abs=1e-6)


def test_cli_prints_a_row_per_started_stage(run: tuple[Path, Path]) -> None:
    folder, util_csv = run
    out = subprocess.run([sys.executable, str(TOOL), str(folder), str(util_csv)], capture_output=True, text=True, check=True).stdout
    assert "| 02_unet | done | 5 | 3 | 76.7 | 0.67 | 9100 |" in out
    assert "04_ifgsm" not in out


def test_rejects_a_folder_that_is_not_a_run() -> None:
    with pytest.raises(ValueError, match="stages"):
        gus.stage_utilisation({}, pd.DataFrame(columns=["t", "util", "mem_mib"]))


def test_summarise_run_reads_a_run_cut_short(tmp_path: Path) -> None:
    """gpu_run.sh's DEADLINE can stop the chain mid-stage: summarise_run.py still reports the stages and their status."""
    tool = TOOL.parent / "summarise_run.py"
    manifest = {"profile": "paper", "git_sha": "abc1234567+dirty", "device": "auto", "machine": {"summary": "an H100"},
                "stages": {"01_data": {"status": "done", "seconds": 116.0}, "02_unet": {"status": "running"}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "tables").mkdir()
    out = subprocess.run([sys.executable, str(tool), str(tmp_path)], capture_output=True, text=True, check=True).stdout
    assert "| 01_data | 116 | done |" in out and "| 02_unet | 0 | running |" in out and "| **total** | **116** | |" in out
    assert "No results tables yet" in out and "an H100" in out
