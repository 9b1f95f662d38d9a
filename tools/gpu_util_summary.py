"""Per-stage GPU utilisation of a run, from a sampled utilisation log (what gpu_run.sh records).

The log is a CSV without header, one sample per line: ``epoch_seconds,utilization_percent,memory_used_MiB``
(``nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits`` prefixed with
``date +%s.%N``). ``utilization.gpu`` is the driver's share of the last sample period in which a kernel
was running, i.e. a busy fraction. Stages are matched by the manifest's ``started`` / ``finished`` times
(second resolution), so a stage's figure includes its kernel start-up and data loading.

Usage: ``python tools/gpu_util_summary.py RUN_DIR UTIL_CSV``
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path

import pandas as pd


def read_util_log(path: str | Path) -> pd.DataFrame:
    """Read the sampled log; malformed lines (e.g. one cut off by a kill) are dropped.

    Args:
        path: the CSV file.

    Returns:
        DataFrame with float columns ``t``, ``util``, ``mem_mib``.
    """
    df = pd.read_csv(path, header=None, names=["t", "util", "mem_mib"], on_bad_lines="skip", skipinitialspace=True)
    df = df.apply(pd.to_numeric, errors="coerce").dropna()
    return df.astype(float)


def stage_utilisation(manifest: dict, util: pd.DataFrame) -> pd.DataFrame:
    """Mean utilisation, samples and peak memory of each stage of a run manifest.

    Args:
        manifest: parsed ``manifest.json``.
        util: :func:`read_util_log` output.

    Returns:
        One row per stage with a start time: ``stage``, ``status``, ``seconds``, ``samples``,
        ``mean_util`` (percent), ``busy_ge_50`` (share of samples at >= 50 %), ``peak_mem_mib``.
        A stage still ``running`` (killed) ends at the last sample.
    """
    if "stages" not in manifest:
        raise ValueError("manifest has no 'stages' (not a robustseg run folder?)")
    rows = []
    end_all = float(util.t.max()) if len(util) else 0.0
    for stage, rec in manifest["stages"].items():
        if "started" not in rec:
            continue
        t0 = datetime.fromisoformat(rec["started"]).timestamp()
        t1 = datetime.fromisoformat(rec["finished"]).timestamp() if "finished" in rec else end_all
        s = util[(util.t >= t0) & (util.t <= t1 + 1)]
        rows.append({
            "stage": stage, "status": rec.get("status", "?"), "seconds": float(rec.get("seconds") or (t1 - t0)),
            "samples": len(s), "mean_util": float(s.util.mean()) if len(s) else float("nan"),
            "busy_ge_50": float((s.util >= 50).mean()) if len(s) else float("nan"),
            "peak_mem_mib": float(s.mem_mib.max()) if len(s) else float("nan"),
        })
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("util_csv", type=Path)
    args = ap.parse_args()
    man = json.loads((args.run / "manifest.json").read_text())
    util = read_util_log(args.util_csv)
    df = stage_utilisation(man, util)
    print(f"GPU utilisation per stage ({len(util)} samples, nvidia-smi utilization.gpu):\n")
    print("| stage | status | seconds | samples | mean util % | samples >= 50 % | peak memory MiB |\n|---|---|---|---|---|---|---|")
    for _, r in df.iterrows():
        print(f"| {r.stage} | {r.status} | {r.seconds:.0f} | {r.samples} | {r.mean_util:.1f} | {r.busy_ge_50:.2f} | {r.peak_mem_mib:.0f} |")


if __name__ == "__main__":
    main()
