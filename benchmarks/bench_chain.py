"""Per-stage wall time of the notebook chain: a benchmark that prints a table (not a test).

Either runs a profile into a fresh folder (``--profile smoke``, the default, takes a few
minutes on 2 cores) or reads the manifest of a finished run (``--run runs/teaching``).
Stage times are the pipeline's own (papermill start to finish of each notebook, kernel
start-up included), so they add up to the chain's wall time minus the CLI's start-up.

Usage::

    python benchmarks/bench_chain.py                          # run smoke in a temp folder
    python benchmarks/bench_chain.py --profile teaching --out /tmp/teach
    python benchmarks/bench_chain.py --run runs/teaching     # read an existing run
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from robustseg_lib.pipeline import reproduce
from robustseg_lib.runtime import short_sha


def stage_table(manifest: dict) -> list[tuple[str, float, str]]:
    """``(stage, seconds, status)`` rows of a run manifest, in chain order.

    Args:
        manifest: the parsed ``manifest.json`` of a run folder.

    Returns:
        One row per stage recorded in the manifest.
    """
    if "stages" not in manifest:
        raise ValueError("manifest has no 'stages' (not a robustseg run folder?)")
    return [(k, float(v.get("seconds") or 0.0), str(v.get("status", "?"))) for k, v in manifest["stages"].items()]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke", help="profile to run (default smoke)")
    ap.add_argument("--out", type=Path, default=None, help="run folder (default: a temporary folder)")
    ap.add_argument("--run", type=Path, default=None, help="read this finished run instead of running one")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args(argv)
    wall = None
    if args.run is not None:
        folder = args.run
        if not (folder / "manifest.json").is_file():
            raise SystemExit(f"{folder / 'manifest.json'}: no such file (not a run folder)")
    else:
        folder = args.out or Path(tempfile.mkdtemp(prefix=f"bench_chain_{args.profile}_"))
        t = time.perf_counter()
        reproduce(args.profile, folder, device=args.device, force=True, log=lambda *a, **k: None)
        wall = time.perf_counter() - t
    man = json.loads((folder / "manifest.json").read_text())
    rows = stage_table(man)
    total = sum(s for _, s, _ in rows)
    dev = man.get("device", "?")
    name = torch.cuda.get_device_name() if str(dev).startswith("cuda") and torch.cuda.is_available() else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    print(f"run {folder} profile {man.get('profile')} device {dev} ({name}) git {short_sha(man.get('git_sha', '?'))}")
    print(f"{'stage':<28}{'seconds':>10}{'share':>8}  status")
    for stage, sec, status in rows:
        print(f"{stage:<28}{sec:>10.1f}{sec / total if total else 0:>8.1%}  {status}")
    print(f"{'sum of stages':<28}{total:>10.1f}")
    if wall is not None:
        print(f"{'chain wall time':<28}{wall:>10.1f}  (CLI overhead {wall - total:.1f} s)")


if __name__ == "__main__":
    main()
