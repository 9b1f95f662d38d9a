"""Print a Markdown summary of a finished run folder (for docs/results.md).

Usage: ``python tools/summarise_run.py runs/teaching [--machine "2-core x86_64 VM"]``.
Everything printed is read from the run's own files (manifest, tables); the machine defaults to the
manifest's record of it (CPU, torch threads, GPU).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from robustseg_lib.runtime import short_sha


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--machine", default=None, help="default: the manifest's machine summary")
    ap.add_argument("--region", default="WT")
    args = ap.parse_args()
    run = args.run
    man = json.loads((run / "manifest.json").read_text())
    if args.machine is None:
        args.machine = (man.get("machine") or {}).get("summary", "unknown machine")
    print(f"### Run `{run.name}`: profile `{man['profile']}`, git `{short_sha(man['git_sha'])}`, device `{man['device']}`, {args.machine}\n")
    print("| stage | seconds | status |\n|---|---|---|")
    total = 0.0
    for stage, rec in man["stages"].items():
        total += rec.get("seconds") or 0
        print(f"| {stage} | {rec.get('seconds') or 0:.0f} | {rec.get('status', '?')} |")
    print(f"| **total** | **{total:.0f}** | |\n")
    tables = sorted((run / "tables").glob("results_*.csv"))
    if not tables:
        print("No results tables yet (the run stopped before notebook 03).")
        return
    t = pd.concat([pd.read_csv(p, dtype={"case_id": str}) for p in tables], ignore_index=True)
    clean = t[(t.attack == "clean")].groupby(["model", "region"]).dice.mean().unstack("region")[["WT", "TC", "ET"]]
    print("Clean test Dice (mean over cases):\n")
    print("| model | WT | TC | ET |\n|---|---|---|---|")
    for m, r in clean.iterrows():
        print(f"| {m} | {r.WT:.3f} | {r.TC:.3f} | {r.ET:.3f} |")
    att = t[(t.region == args.region) & (t.eps > 0)]
    if "target_policy" in att:
        att = att.assign(attack=[a if not isinstance(p, str) else f"{a}[{p}]" for a, p in zip(att.attack, att.target_policy)])
    piv = att.pivot_table(index=["attack", "eps"], columns="model", values="dice", aggfunc="mean")
    print(f"\nMean {args.region} Dice under attack (eps in z-score units):\n")
    cols = list(piv.columns)
    print("| attack | eps | " + " | ".join(cols) + " |\n|---|---|" + "---|" * len(cols))
    for (a, e), r in piv.iterrows():
        print(f"| {a} | {e:g} | " + " | ".join("" if pd.isna(v) else f"{v:.3f}" for v in r) + " |")
    for diag in sorted((run / "tables").glob("diagnostics_*.csv")):
        d = pd.read_csv(diag)
        print(f"\nGradient-masking diagnostics ({diag.stem}):\n")
        keep = [c for c in ("model", "attack", "eps", "dice_direct", "dice_transfer", "dice_logit_rescaled", "frac_saturated_voxels", "frac_saturated_voxels_baseline", "frac_near_zero_grad", "frac_near_zero_grad_baseline", "verdict") if c in d]
        print("| " + " | ".join(keep) + " |\n|" + "---|" * len(keep))
        for _, r in d[keep].iterrows():
            print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) + " |")
    claims = run / "tables" / "claims.csv"
    if claims.is_file():
        c = pd.read_csv(claims)
        print("\nClaims:\n\n| claim | verdict | evidence |\n|---|---|---|")
        for _, r in c.iterrows():
            print(f"| {r.claim} | {r.verdict} | {r.evidence} |")


if __name__ == "__main__":
    main()
