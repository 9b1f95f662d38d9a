"""Benchmark of the synthetic data generator and the preprocessing (prints a Markdown table).

Usage: ``python benchmarks/bench_data.py [--repeats 3] [--no-full]``. Times are wall-clock
seconds per case (mean ± std over ``repeats`` seeds, after one warm-up case that loads and
caches the MNI152 templates). "prepare" = load the written NIfTI + preprocess to the working
grid (MONAI import excluded by a warm-up). "generate + preprocess, no NIfTI" is
``data.prepare_synthetic`` (the paper profile's data path; identical arrays) per case, and
"threshold baseline" is ``data.threshold_baseline`` per case on the prepared working grid.
The BraTS grid uses the paper profile's working grid, 144×176×144.

A second table times loading one split of a ``prepared.npz`` of ``--split-cases`` cases at that
working grid (the generated cases repeated; the file is read from the page cache, as right
after notebook 01 wrote it): reading every image and selecting the split, as notebooks did
before, against memory-mapping the images (``load_prepared(..., mmap_images=True)``, what
``evaluation.load_split`` does) and reading only the split. Peak allocation is tracemalloc's
(numpy reports its buffers to it; mapped pages are not allocations).

A third table times ``prepare_dataset`` on a folder of ``--bootstrap-cases`` cases at the teaching grid (48³) with
and without ``train_seed`` (the bootstrap of the training and validation cases, notebook 01 on real data): a case
drawn more than once is loaded and preprocessed once, so the bootstrap costs its distinct cases, not its rows.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
import tracemalloc
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
    ap.add_argument("--split-cases", type=int, default=40, help="cases of the split-loading file (0: skip)")
    ap.add_argument("--bootstrap-cases", type=int, default=48, help="cases of the bootstrap folder (0: skip)")
    args = ap.parse_args()

    D.make_synthetic_case(0, (64, 64, 64))  # warm-up: template load + cache
    shapes = [(64, 64, 64), (96, 96, 96)] + ([] if args.no_full else [(240, 240, 155)])
    rows, split_rows = [], []
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
            if shape == (240, 240, 155) and args.split_cases > 0:
                split_rows = _split_loading(Path(tmp), prep, args.split_cases)
        boot_rows = _bootstrap(Path(tmp), args.bootstrap_cases) if args.bootstrap_cases > 0 else []
    print(f"machine: {platform.machine()}, Python {platform.python_version()}, numpy {np.__version__}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    _table(["step", "grid", "working grid", "s / case"], rows)
    _table(["load one split of prepared.npz", "cases in file → split", "seconds", "peak allocation"], split_rows)
    _table(["prepare_dataset, 48³ folder", "rows", "cases loaded", "seconds", "s / row"], boot_rows)


def _table(header: list[str], rows: list[tuple[str, ...]]) -> None:
    """Print a Markdown table after a blank line; nothing when there are no rows."""
    if rows:
        print()
        for r in (header, ["---"] * len(header), *rows):
            print("| " + " | ".join(r) + " |")


def _bootstrap(tmp: Path, n: int) -> list[tuple[str, ...]]:
    """Time prepare_dataset on an n-case 48³ folder: every case once, then a bootstrap of its training cases."""
    root = tmp / "boot"
    D.make_synthetic_dataset(root, n, shape=(48, 48, 48), seed=0, progress=False)
    out = []
    for label, train_seed in (("every case once", None), ("bootstrap (train_seed=1)", 1)):
        t0 = time.perf_counter()
        prep = D.load_prepared(D.prepare_dataset(root, tmp / "boot.npz", (48, 48, 48), fractions=(0.55, 0.15, 0.3),
                                                 seed=0, train_seed=train_seed, progress=False))
        dt = time.perf_counter() - t0
        ids = prep["case_ids"].tolist()
        loaded = len({D.original_case_id(c) for c in ids})
        out.append((label, str(len(ids)), str(loaded), f"{dt:.2f}", f"{dt / len(ids):.3f}"))
    return out


def _split_loading(tmp: Path, prep: dict, n: int) -> list[tuple[str, ...]]:
    """Time loading the test split (15 %) of an n-case prepared file both ways (see the module docstring)."""
    from robustseg_lib.artefacts import atomic_save_npz

    idx = np.arange(n) % len(prep["images"])
    arrays = {k: prep[k][idx] for k in D.PREPARED_KEYS}
    arrays["case_ids"] = np.asarray([f"c{i:04d}" for i in range(n)])
    arrays["split"] = np.asarray(["test" if i < max(1, round(0.15 * n)) else "train" for i in range(n)])
    path = atomic_save_npz(tmp / "split.npz", **arrays)
    del arrays
    n_test = int(max(1, round(0.15 * n)))
    out = []
    for label, mmap in (("read all images, then select", False), ("memory-map the images, select", True)):
        tracemalloc.start()
        t0 = time.perf_counter()
        p = D.load_prepared(path, mmap_images=mmap)
        sel = p["split"] == "test"
        x = np.ascontiguousarray(p["images"][sel], dtype=np.float32)
        dt = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert x.shape[0] == n_test
        del p, x
        out.append((label, f"{n} → {n_test}", f"{dt:.2f}", f"{peak / 2**30:.2f} GiB"))
    return out


if __name__ == "__main__":
    main()
