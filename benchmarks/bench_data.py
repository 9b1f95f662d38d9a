"""Benchmark of the synthetic data generator and the preprocessing (prints a Markdown table).

Usage: ``python benchmarks/bench_data.py [--repeats 3] [--no-full]``. Times are wall-clock
seconds per case (mean ± std over ``repeats`` seeds, after one warm-up case that loads and
caches the MNI152 templates). "prepare" = load the written NIfTI + preprocess to the working
grid (MONAI import excluded by a warm-up). "generate + preprocess, no NIfTI" is
``data.prepare_synthetic`` (the paper profile's data path; identical arrays) per case, and
"threshold baseline" is ``data.threshold_baseline`` per case on the prepared working grid.
The BraTS grid uses the paper profile's working grid, 144×176×144.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from robustseg_lib import data as D


def _time(fn, repeats: int) -> list[float]:
    out = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


def _fmt(ts: list[float]) -> str:
    sd = statistics.stdev(ts) if len(ts) > 1 else 0.0
    return f"{statistics.mean(ts):.2f} ± {sd:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-full", action="store_true", help="skip the 240x240x155 BraTS grid")
    args = ap.parse_args()

    D.make_synthetic_case(0, (64, 64, 64))  # warm-up: template load + cache
    shapes = [(64, 64, 64), (96, 96, 96)] + ([] if args.no_full else [(240, 240, 155)])
    rows = []
    for shape in shapes:
        ts = _time(lambda i: D.make_synthetic_case(1000 + i, shape), args.repeats)
        rows.append(("generate", "x".join(map(str, shape)), "-", _fmt(ts)))
    with tempfile.TemporaryDirectory() as tmp:
        for shape, work in [((96, 96, 96), (96, 96, 96))] + ([] if args.no_full else [((240, 240, 155), (144, 176, 144))]):
            g, w = "x".join(map(str, shape)), "x".join(map(str, work))
            root = Path(tmp) / g
            t0 = time.perf_counter()
            D.make_synthetic_dataset(root, args.repeats, shape=shape, seed=1, progress=False)
            write = (time.perf_counter() - t0) / args.repeats
            cases = D.list_cases(root)
            D.preprocess_case(*D.load_case(cases[0])[:2], work)  # warm-up (MONAI import)
            ts = _time(lambda i: D.preprocess_case(*D.load_case(cases[i])[:2], work), args.repeats)
            rows.append(("generate + write NIfTI", g, "-", f"{write:.2f}"))
            rows.append(("prepare (load + preprocess)", g, w, _fmt(ts)))
            t0 = time.perf_counter()
            out = D.prepare_synthetic(Path(tmp) / f"{g}.npz", args.repeats, shape=shape, work_shape=work, seed=1,
                                      progress=False)
            rows.append(("generate + preprocess, no NIfTI", g, w, f"{(time.perf_counter() - t0) / args.repeats:.2f}"))
            prep = D.load_prepared(out)
            t0 = time.perf_counter()
            D.threshold_baseline(prep["images"], prep["labels"], prep["brain"])
            rows.append(("threshold baseline", g, w, f"{(time.perf_counter() - t0) / args.repeats:.2f}"))
    print(f"machine: {platform.machine()}, Python {platform.python_version()}, numpy {np.__version__}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print()
    print("| step | grid | working grid | s / case |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
