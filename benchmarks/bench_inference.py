"""Sliding-window vs one-pass inference of a trained run's baseline: Dice and time, clean and attacked.

The ``paper`` profile evaluates and attacks whole volumes in one pass (``inference: whole``)
because MONAI sliding windows of the 128³ crop over a 144×176×144 volume cost about 4× as
much compute, and the attack sweeps dominate the chain. This script measures what that
choice changes for a model trained on crops smaller than its volumes: the test Dice (mean WT /
TC / ET) of the same checkpoint under both modes, clean and under FGSM and i-FGSM at one eps,
and the wall time of each sweep. It prints a table (a benchmark, not a test).

Usage::

    python -m robustseg_lib reproduce --profile teaching --out /tmp/crop40 --only data unet \\
        --set unet.crop=[40,40,40]
    python benchmarks/bench_inference.py --run /tmp/crop40 --eps 0.3
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import pandas as pd
import torch

from robustseg_lib import evaluation, models
from robustseg_lib.artefacts import RunPaths
from robustseg_lib.evaluation import AttackSpec


def compare(run: Path, *, eps: float, steps: int, model: str, device: str, n_cases: int | None) -> pd.DataFrame:
    """Dice and time of each inference mode for one checkpoint of a run.

    Args:
        run: run folder (needs ``data/prepared.npz`` and ``models/<model>.pt``).
        eps: attack budget (z-score units).
        steps: i-FGSM steps (alpha = eps / 4, as the profiles).
        model: checkpoint name.
        device: torch device.
        n_cases: first n test cases only (None = all).

    Returns:
        One row per (mode, attack): mean WT / TC / ET Dice and seconds.
    """
    net, spec = models.load_model(RunPaths(run).checkpoint(model), device=device)
    es = evaluation.load_split(RunPaths(run), "test")
    es = es.subset(n_cases) if n_cases else es
    shape = tuple(es.images.shape[2:])
    if spec.get("crop") is None or tuple(spec["crop"]) == shape:
        raise SystemExit(f"{run}: {model} was trained on whole {shape} volumes; the two modes are the same computation")
    rows = []
    for mode in ("sliding", "whole"):
        s = {**spec, "inference": mode}
        models.inference_roi(s, shape)  # refuses a shape the network cannot take in one pass
        for a in (AttackSpec("fgsm", (0.0, eps)), AttackSpec("ifgsm", (eps,), steps=steps, alpha_frac=0.25)):
            t = time.perf_counter()
            res, _ = evaluation.attack_table(net, es, a, model, s, device=device, percept=False)
            secs = time.perf_counter() - t
            for e, g in res.groupby("eps"):
                name = "clean" if e == 0 else f"{a.attack} eps {e:g}"
                d = g.groupby("region").dice.mean()
                rows.append({"mode": mode, "attack": name, "WT": d["WT"], "TC": d["TC"], "ET": d["ET"], "seconds (sweep)": secs})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a run folder whose model was trained on crops")
    ap.add_argument("--model", default="baseline")
    ap.add_argument("--eps", type=float, default=0.3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--cases", type=int, default=None, help="first n test cases (default all)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args(argv)
    if not (args.run / "models" / f"{args.model}.pt").is_file():
        raise SystemExit(f"{args.run / 'models' / (args.model + '.pt')}: no such checkpoint")
    dev = str(models.resolve_device(args.device))
    torch.manual_seed(0)
    table = compare(args.run, eps=args.eps, steps=args.steps, model=args.model, device=dev, n_cases=args.cases)
    name = torch.cuda.get_device_name() if dev.startswith("cuda") else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    _, spec = models.load_model(RunPaths(args.run).checkpoint(args.model))
    print(f"device: {dev} ({name}); {args.model} trained on {spec['crop']} crops")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    wide = table.pivot_table(index="attack", columns="mode", values="WT", sort=False)
    print("WT Dice, whole - sliding: " + ", ".join(f"{k} {v:+.3f}" for k, v in (wide["whole"] - wide["sliding"]).items()))
    secs = table.groupby("mode")["seconds (sweep)"].first() + table.groupby("mode")["seconds (sweep)"].last()
    print(f"sweep time sliding / whole: {secs['sliding'] / secs['whole']:.2f}")


if __name__ == "__main__":
    main()
