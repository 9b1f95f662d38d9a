"""Training-loop overhead and whole-volume inference: a benchmark that prints a table (not a test).

One training step of ``robustseg_lib.training.train`` (batch assembly, MONAI augmentation,
forward, Dice+CE, backward, AdamW, scheduler) against a bare forward + loss + backward +
optimizer step of the same net and batch, measured in interleaved rounds in one process;
plus whole-volume inference (sliding windows of the crop, and one pass) and, on a GPU, the fraction of a training run's
wall time during which the GPU was busy (union of profiled kernel intervals; the training
data resident on the GPU in float16, as ``evaluation.resident`` keeps it).

Usage: ``python benchmarks/bench_training.py [--size 48] [--batch 2] [--width 16] [--levels 4] [--device auto]``
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from robustseg_lib import models
from robustseg_lib.evaluation import resident_tensors
from robustseg_lib.profiling import device_busy_fraction
from robustseg_lib.models import resolve_device
from robustseg_lib.training import TrainConfig, dice_ce_objective, train


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=48, help="cubic volume size (default 48, the teaching profile)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--levels", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6, help="steps per timed training call")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--busy-steps", type=int, default=20, help="training steps profiled for the GPU busy fraction")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    dev = resolve_device(args.device)
    torch.manual_seed(0)
    s = args.size
    n = max(4, args.batch * 2)
    x = torch.randn(n, 4, s, s, s)
    y = torch.randint(0, 4, (n, s, s, s))
    spec = models.model_spec("unet", width=args.width, levels=args.levels)
    net = models.build_unet("unet", seed=0, **spec["kwargs"]).to(dev)
    obj = dice_ce_objective(1.0)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    xb, yb = x[: args.batch].to(dev), y[: args.batch].to(dev)
    use_amp = dev.type == "cuda"

    def bare() -> float:
        _sync(dev)
        t = time.perf_counter()
        for _ in range(args.steps):
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = net(xb)
            obj(logits, xb, yb).backward()
            opt.step()
        _sync(dev)
        return (time.perf_counter() - t) / args.steps

    def loop() -> float:
        cfg = TrainConfig(epochs=1, batch_size=args.batch, steps_per_epoch=args.steps, seed=0)
        _sync(dev)
        t = time.perf_counter()
        train(net, x, y, cfg, device=dev, progress=False)
        _sync(dev)
        return (time.perf_counter() - t) / args.steps

    def infer(roi: tuple[int, int, int] | None) -> float:
        net.eval()
        big = torch.randn(1, 4, s + s // 2, s + s // 2, s).to(dev)
        _sync(dev)
        t = time.perf_counter()
        with torch.no_grad():
            models.predict(net, big, roi_size=roi, overlap=0.25)
        _sync(dev)
        return time.perf_counter() - t

    def busy() -> tuple[float | None, float]:
        xr, yr = resident_tensors(x, y, dev)  # the training split kept on the device as the notebooks keep it
        cfg = TrainConfig(epochs=1, batch_size=args.batch, steps_per_epoch=args.busy_steps, seed=0)
        return device_busy_fraction(lambda: train(net, xr, yr, cfg, device=dev, progress=False), dev)

    bare(), loop()  # warm-up
    b, l = [], []
    for _ in range(args.rounds):  # interleaved so load drift hits both alike
        b.append(bare())
        l.append(loop())
    tb, tl = statistics.median(b), statistics.median(l)
    ti = statistics.median([infer((s, s, s)) for _ in range(3)])
    one_pass = all(v % models.spatial_divisor(spec) == 0 for v in (s + s // 2, s))
    tw = statistics.median([infer(None) for _ in range(3)]) if one_pass else float("nan")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    print(f"device: {dev} ({name}); UNet width {args.width}, {args.levels} levels; batch {args.batch}x4x{s}^3")
    print(f"{'measurement':<46}{'s/step':>10}{'ratio':>8}")
    print(f"{'bare forward+loss+backward+AdamW step':<46}{tb:>10.3f}{1.0:>8.3f}")
    print(f"{'train() step (batching, MONAI aug, schedule)':<46}{tl:>10.3f}{tl / tb:>8.3f}")
    vol = f"{s + s // 2}x{s + s // 2}x{s}"
    print(f"{'inference of a ' + vol + ' volume, ' + str(s) + '^3 windows':<46}{ti:>10.3f}   (s/volume)")
    print(f"{'inference of a ' + vol + ' volume, one pass':<46}{tw:>10.3f}{ti / tw:>8.3f}  (sliding / one pass)")
    print(f"training-loop overhead ratio: {tl / tb:.3f} (aim <= 1.15)")
    frac, wall = busy()
    if frac is None:
        print(f"device busy fraction during training: n/a on the CPU ({args.busy_steps} steps took {wall:.1f} s)")
    else:
        print(f"GPU busy fraction during training: {frac:.3f} over {args.busy_steps} steps ({wall:.2f} s, profiler on; aim >= 0.80)")


if __name__ == "__main__":
    main()
