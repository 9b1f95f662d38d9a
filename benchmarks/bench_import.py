"""Start-up cost of a notebook kernel's imports: a benchmark that prints a table (not a test).

Times ``import robustseg_lib.models`` (torch + MONAI, what every notebook imports) in fresh interpreters, as the
package imports it (jsonschema without the rfc3987_syntax IRI grammar, see ``robustseg_lib/__init__.py``) and with
``ROBUSTSEG_KEEP_IRI_CHECKER=1``, so that jsonschema compiles that grammar as it did before. Rounds alternate the two.

Usage: ``python benchmarks/bench_import.py [--rounds 5]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {  # name -> value of ROBUSTSEG_KEEP_IRI_CHECKER
    "as packaged (no IRI grammar)": "",
    "ROBUSTSEG_KEEP_IRI_CHECKER=1": "1",
}


def _seconds(keep: str) -> float:
    env = {**os.environ, "ROBUSTSEG_KEEP_IRI_CHECKER": keep}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import robustseg_lib.models"], cwd=ROOT, env=env, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="fresh interpreters per variant (default 5)")
    args = ap.parse_args()
    if args.rounds < 1:
        raise SystemExit(f"--rounds must be >= 1, got {args.rounds}")
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}, torch {torch.__version__}")
    times: dict[str, list[float]] = {k: [] for k in VARIANTS}
    for _ in range(args.rounds):
        for name, keep in VARIANTS.items():
            times[name].append(_seconds(keep))
    base = statistics.median(times[next(iter(VARIANTS))])
    print(f"{'variant':<32} {'median s':>9} {'min':>7} {'max':>7} {'ratio':>6}")
    for name, t in times.items():
        med = statistics.median(t)
        print(f"{name:<32} {med:>9.2f} {min(t):>7.2f} {max(t):>7.2f} {med / base:>6.2f}")


if __name__ == "__main__":
    main()
