"""Per-case cost of the segmentation metrics at the paper's work shape: a benchmark that prints a table.

Every attacked prediction is scored (Dice and HD95 of WT, TC and ET). At the ``paper``
profile's 144×176×144 that happens about 8000 times, so the per-case cost matters as much as
the attack's: on an H100 a 10-step attack of one volume takes a few hundred ms. Rows:

* ``robustseg Dice``: :func:`robustseg_lib.metrics.dice_per_region` (4×4 confusion matrix);
* ``MONAI compute_dice``: MONAI on the float one-hot region masks of the whole volume (the
  reference the tests compare with);
* ``robustseg HD95``: :func:`robustseg_lib.metrics.hd95_per_region` (MONAI on the tumour's box);
* ``MONAI HD95, whole volume``: MONAI's compute_hausdorff_distance on the uncropped masks;
* ``evaluate(), N threads``: the per-case throughput of :func:`robustseg_lib.metrics.evaluate`
  on N threads, as ``attack_sweep(metric_workers=N)`` runs it beside a GPU attack.

The case is a synthetic tumour (nested balls, a shifted prediction with a stray blob).

Usage::

    python benchmarks/bench_metrics.py [--shape 144 176 144] [--threads 1 2 8]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from robustseg_lib import metrics


def tumour_pair(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A truth and a prediction class map with a tumour of BraTS-like size near the centre."""
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    c = np.array(shape) / 2
    s = min(shape) / 144

    def ball(off: tuple[float, float, float], r: float) -> np.ndarray:
        return ((zz - c[0] - off[0] * s) ** 2 + (yy - c[1] - off[1] * s) ** 2 + (xx - c[2] - off[2] * s) ** 2) < (r * s) ** 2

    t = np.zeros(shape, np.int64)
    t[ball((0, 0, 0), 25)], t[ball((2, 2, 0), 14)], t[ball((2, 2, 0), 7)] = 2, 3, 1
    p = np.zeros(shape, np.int64)
    p[ball((2, -2, 0), 24)], p[ball((2, 0, 2), 13)], p[ball((0, 2, 0), 8)] = 2, 3, 1
    p[ball((-40, -50, -40), 4)] = 3  # a stray false positive far from the tumour
    return p, t


def median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[144, 176, 144])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts for the evaluate() throughput rows")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore", FutureWarning)  # MONAI's internal deprecation notice
    shape = tuple(args.shape)
    p, t = tumour_pair(shape)
    pt, tt = torch.from_numpy(p), torch.from_numpy(t)

    def onehot(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.isin(a, v) for v in metrics.REGIONS.values()])[None].astype(np.float64))

    rows = [
        ("robustseg Dice", median_time(lambda: metrics.dice_per_region(pt, tt), args.repeats)),
        ("MONAI compute_dice, whole volume", median_time(lambda: compute_dice(onehot(p), onehot(t), include_background=True, ignore_empty=False), args.repeats)),
        ("robustseg HD95", median_time(lambda: metrics.hd95_per_region(pt, tt), args.repeats)),
        ("MONAI HD95, whole volume", median_time(lambda: compute_hausdorff_distance(onehot(p), onehot(t), include_background=True, percentile=95), args.repeats)),
    ]
    n = 4 * max(args.threads)
    for k in args.threads:
        with ThreadPoolExecutor(k) as ex:
            def batch() -> None:
                list(ex.map(lambda _: metrics.evaluate(pt[None], tt[None], ["c"], model="m"), range(n)))

            rows.append((f"evaluate() (Dice + HD95), {k} thread(s)", median_time(batch, max(1, args.repeats // 2)) / n))
    print(f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads; one case of {'x'.join(map(str, shape))}")
    print(f"{'measurement':<44}{'s / case':>10}")
    for name, sec in rows:
        print(f"{name:<44}{sec:>10.3f}")
    print(f"Dice: MONAI / robustseg {rows[1][1] / rows[0][1]:.1f}x; HD95: whole volume / box {rows[3][1] / rows[2][1]:.1f}x")


if __name__ == "__main__":
    main()
