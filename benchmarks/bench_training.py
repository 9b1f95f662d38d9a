"""Training-loop overhead and whole-volume inference: a benchmark that prints a table (not a test).

One training step of ``robustseg_lib.training.train`` (crops from larger volumes held as the
notebooks hold them, augmentation by each backend, forward, Dice+CE, backward, AdamW, scheduler)
against a bare forward + loss + backward + optimizer step of the same net on a fixed batch,
measured in interleaved rounds in one process (the ratio is the median of the rounds' own ratios);
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
    ap.add_argument("--size", type=int, default=48, help="cubic crop size (default 48, the teaching profile)")
    ap.add_argument("--volume", type=int, nargs=3, default=None, metavar=("D", "H", "W"),
                    help="training volume the crops come from (default: 9/8, 11/8, 9/8 of --size, as 144x176x144 for 128)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--levels", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6, help="steps per timed training call")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds; ratios are medians of per-round ratios")
    ap.add_argument("--busy-steps", type=int, default=20, help="training steps profiled for the GPU busy fraction")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    dev = resolve_device(args.device)
    torch.manual_seed(0)
    s = args.size
    vol = tuple(args.volume) if args.volume else tuple(8 * max(1, round(s * f / 8)) for f in (9 / 8, 11 / 8, 9 / 8))
    n = max(4, args.batch * 2)
    x = torch.randn(n, 4, *vol)
    y = torch.randint(0, 4, (n, *vol)) * (torch.rand(n, *vol) < 0.1)  # ~10 % tumour, as pos/neg crops expect
    xr, yr = resident_tensors(x, y, dev)  # as the notebooks keep the training split: float16/uint8 on a GPU
    spec = models.model_spec("unet", width=args.width, levels=args.levels)
    net = models.build_unet("unet", seed=0, **spec["kwargs"]).to(dev)
    obj = dice_ce_objective(1.0)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    xb, yb = x[: args.batch, :, :s, :s, :s].to(dev), y[: args.batch, :s, :s, :s].to(dev)
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

    def cfg(backend: str, steps: int) -> TrainConfig:
        return TrainConfig(epochs=1, batch_size=args.batch, steps_per_epoch=steps, crop=(s, s, s), seed=0, augment_backend=backend)

    def loop(backend: str) -> float:
        _sync(dev)
        t = time.perf_counter()
        train(net, xr, yr, cfg(backend, args.steps), device=dev, progress=False)
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

    backends = ("tensor", "monai")
    bare(), [loop(b) for b in backends]  # warm-up
    tb_all: list[float] = []
    tl_all: dict[str, list[float]] = {b: [] for b in backends}
    for _ in range(args.rounds):  # interleaved so load drift hits all alike
        tb_all.append(bare())
        for b in backends:
            tl_all[b].append(loop(b))
    tb = statistics.median(tb_all)
    tl = {b: statistics.median(v) for b, v in tl_all.items()}
    # each round's train() calls against the same round's bare steps: load that drifts between rounds (a shared VM)
    # cancels in the pair, which a ratio of the two medians does not do
    ratio = {b: statistics.median(t / t0 for t, t0 in zip(v, tb_all)) for b, v in tl_all.items()}
    ti = statistics.median([infer((s, s, s)) for _ in range(3)])
    one_pass = all(v % models.spatial_divisor(spec) == 0 for v in (s + s // 2, s))
    tw = statistics.median([infer(None) for _ in range(3)]) if one_pass else float("nan")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    shape = "x".join(map(str, vol))
    print(f"device: {dev} ({name}); UNet width {args.width}, {args.levels} levels; batch {args.batch}x4x{s}^3 crops of {shape} volumes"
          f"{' resident in float16' if dev.type == 'cuda' else ''}")
    default = "tensor" if dev.type == "cuda" else "monai"
    print(f"{'measurement':<52}{'s/step':>10}{'ratio':>8}")
    print(f"{'bare forward+loss+backward+AdamW step':<52}{tb:>10.3f}{1.0:>8.3f}")
    for b in backends:
        label = f"train() step, {b} backend{' (default here)' if b == default else ''}"
        print(f"{label:<52}{tl[b]:>10.3f}{ratio[b]:>8.3f}")
    iv = f"{s + s // 2}x{s + s // 2}x{s}"
    print(f"{'inference of a ' + iv + ' volume, ' + str(s) + '^3 windows':<52}{ti:>10.3f}   (s/volume)")
    print(f"{'inference of a ' + iv + ' volume, one pass':<52}{tw:>10.3f}{ti / tw:>8.3f}  (sliding / one pass)")
    spread = sorted(t / t0 for t, t0 in zip(tl_all[default], tb_all))
    print(f"training-loop overhead ratio: {ratio[default]:.3f} with the default ({default}) backend (median of {args.rounds} "
          f"rounds' ratios, range {spread[0]:.3f}-{spread[-1]:.3f}; aim <= 1.15)")
    for b in backends:
        frac, wall = device_busy_fraction(lambda: train(net, xr, yr, cfg(b, args.busy_steps), device=dev, progress=False), dev)
        if frac is None:
            print(f"device busy fraction during training ({b}): n/a on the CPU ({args.busy_steps} steps took {wall:.1f} s)")
        else:
            print(f"GPU busy fraction during training ({b}): {frac:.3f} over {args.busy_steps} steps ({wall:.2f} s, profiler on; aim >= 0.80)")


if __name__ == "__main__":
    main()
