"""Cost of the paired Wilcoxon test with tied differences: a benchmark that prints a table.

Notebook 08 runs a few hundred paired Wilcoxon tests on 14 test cases (the teaching profile), and Dice values tie
often under attack (many cases at 0.000 or 1.000). With ties among at most 13 non-zero differences,
``scipy.stats.wilcoxon``'s default runs an exhaustive sign-flip permutation test that evaluates the statistic for one
sign pattern at a time; :func:`robustseg_lib.stats.paired_wilcoxon` runs the same scipy ``permutation_test`` with the
statistic vectorised. Both give the same p-value to the last bit (checked here on every row, and in the tests).
Rows: n non-zero differences with ties; times are medians over ``--repeats`` calls.

Usage::

    python benchmarks/bench_stats.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import scipy
import scipy.stats as sst

from robustseg_lib import stats as S


def _median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"{platform.machine()} CPU, Python {platform.python_version()}, scipy {scipy.__version__}")
    print("| non-zero differences (tied) | scipy.stats.wilcoxon, s | paired_wilcoxon, s | ratio | same p |")
    print("|---|---|---|---|---|")
    for n in (8, 11, 13):
        d = rng.choice([-0.2, -0.1, 0.1, 0.3, 0.5], size=n)  # five values: ties
        t_scipy, ref = _median_time(lambda: sst.wilcoxon(d), args.repeats)
        t_ours, ours = _median_time(lambda: S.paired_wilcoxon(d, np.zeros(n)), args.repeats)
        print(f"| {n} | {t_scipy:.4f} | {t_ours:.4f} | {t_scipy / t_ours:.0f} | {ref.pvalue == ours.pvalue} |")


if __name__ == "__main__":
    main()
