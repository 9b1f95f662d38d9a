"""Benchmark the attack step against the bare forward+backward it is built on.

Times (after warm-up, median of several runs) on the reference 3D UNet:

* ``fwd+bwd``: one forward pass and one backward pass w.r.t. the input only;
* ``step ops only``: what an iteration adds to fwd+bwd (``x + delta``, sign, in-place
  update, one ``clamp_`` against precomputed eps/clip/mask bounds);
* ``ifgsm 1 step``: a whole ``ifgsm(..., steps=1)`` call with clip and brain mask
  (setup of the projection bounds + one iteration + finalisation);
* ``S x fwd+bwd`` vs ``ifgsm S steps``: the per-step ratio with setup amortised;
* throughput in volumes/s of FGSM and of S-step i-FGSM;
* one volume larger than the window (default: the paper profile's 144×176×144 work shape per
  128³ crop, scaled to ``--size``): FGSM and inference through MONAI sliding windows of the
  crop (``inference: sliding``) against one pass over the whole volume (``inference: whole``).

Ratios are of interleaved medians (robust to drifting load on a shared machine).

Usage::

    python benchmarks/bench_attacks.py                     # 2×4×64³, auto device
    python benchmarks/bench_attacks.py --size 96 --batch 1 --device cuda
    python benchmarks/bench_attacks.py --size 128 --volume 144 176 144 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from monai.networks.nets import UNet

from robustseg_lib.attacks import SlidingWindowModel, _delta_bounds, fgsm, ifgsm
from robustseg_lib.metrics import perceptibility


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def timeit(fns: dict[str, Callable[[], object]], device: torch.device, warmup: int, repeats: int) -> dict[str, float]:
    """Median wall time in seconds of each function (device-synchronised).

    The functions are timed in interleaved rounds, so drifting load on a shared machine
    affects them alike and their ratios stay meaningful.
    """

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def make_batch(batch: int, size: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random z-scored volumes inside a spherical 'brain', labels, per-case clip range."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, size, size, size, generator=g)
    r = torch.linspace(-1, 1, size)
    brain = (r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2) < 0.8
    brain = brain.expand(batch, 1, size, size, size).contiguous()
    x = x * brain
    y = torch.randint(0, 4, (batch, size, size, size), generator=g) * brain[:, 0]
    lo, hi = x.amin(dim=(2, 3, 4), keepdim=True), x.amax(dim=(2, 3, 4), keepdim=True)
    return x.to(device), y.to(device), brain.to(device), lo.to(device), hi.to(device)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64, help="cubic volume side (default 64)")
    p.add_argument("--batch", type=int, default=2, help="volumes per batch (default 2)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--steps", type=int, default=10, help="i-FGSM steps for the throughput row")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5, help="timed runs of the short measurements")
    p.add_argument("--repeats-long", type=int, default=2, help="timed runs of the S-step i-FGSM")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    p.add_argument("--volume", type=int, nargs=3, default=None, metavar=("D", "H", "W"),
                   help="volume for the sliding-vs-whole rows (default: size x (9/8, 11/8, 9/8), as 144x176x144 per 128^3)")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=4, out_channels=4, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=1)
    net = net.to(device).eval()
    x, y, brain, lo, hi = make_batch(args.batch, args.size, device)
    eps, alpha = 0.1, 0.025
    kw = dict(clip=(lo, hi), mask=brain)

    def fwd_bwd() -> torch.Tensor:
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(net(xr), y), xr)
        return g

    dlo, dhi, _ = _delta_bounds(x, torch.full((1, 4, 1, 1, 1), eps, device=device), (lo, hi), brain)
    delta, g = torch.zeros_like(x), torch.randn_like(x)

    def step_ops() -> None:  # everything an iteration adds to fwd+bwd (g.sign() stands for grad.sign_())
        x_k = (x + delta).requires_grad_(True)  # noqa: F841
        delta.add_(g.sign(), alpha=alpha).clamp_(dlo, dhi)

    short = timeit(
        {
            "ops": step_ops,
            "fb": fwd_bwd,
            "i1": lambda: ifgsm(net, x, y, eps, alpha, 1, **kw),
            "fg": lambda: fgsm(net, x, y, eps, **kw),
        },
        device,
        args.warmup,
        args.repeats,
    )
    long = timeit(
        {"fb": lambda: [fwd_bwd() for _ in range(args.steps)], "iS": lambda: ifgsm(net, x, y, eps, alpha, args.steps, **kw)},
        device,
        0,
        args.repeats_long,
    )
    t_fb, t_i1, t_fg, t_ops = short["fb"], short["i1"], short["fg"], short["ops"]
    t_iS, t_fbS = long["iS"], long["fb"]

    n = args.batch
    print(f"device={device} ({torch.get_num_threads()} threads)  batch={n}x4x{args.size}^3  UNet(16,32,64,128) eval")
    print(f"{'measurement':<32}{'time [s]':>10}{'ratio':>8}{'vol/s':>9}")
    rows = [
        ("fwd+bwd w.r.t. input", t_fb, 1.0, None),
        ("step ops only (sign/update/proj)", t_ops, t_ops / t_fb, None),
        ("ifgsm 1 step (call, clip+mask)", t_i1, t_i1 / t_fb, None),
        ("fgsm (clip+mask)", t_fg, t_fg / t_fb, n / t_fg),
        (f"{args.steps} x fwd+bwd", t_fbS, 1.0, None),
        (f"ifgsm {args.steps} steps (clip+mask)", t_iS, t_iS / t_fbS, n / t_iS),
    ]
    for name, t, ratio, thr in rows:
        print(f"{name:<32}{t:>10.3f}{ratio:>8.3f}{'' if thr is None else f'{thr:>9.3f}'}")
    print(f"one i-FGSM iteration / one fwd+bwd: {1 + t_ops / t_fb:.3f} (fwd+bwd + step ops), "
          f"{t_i1 / t_fb:.3f} (whole 1-step call), {t_iS / t_fbS:.3f} (per step of {args.steps}); target <= 1.1")

    vol = tuple(args.volume) if args.volume else tuple(8 * max(1, round(args.size * f / 8)) for f in (9 / 8, 11 / 8, 9 / 8))
    xv, yv, bv, lov, hiv = make_batch(1, max(vol), device, seed=1)
    xv, yv, bv = xv[..., : vol[0], : vol[1], : vol[2]], yv[..., : vol[0], : vol[1], : vol[2]], bv[..., : vol[0], : vol[1], : vol[2]]
    sw = SlidingWindowModel(net, (args.size,) * 3, sw_batch_size=2, overlap=0.25)  # as evaluation.wrap_model builds it
    kv = dict(clip=(lov, hiv), mask=bv)

    def infer(model: torch.nn.Module) -> torch.Tensor:
        with torch.no_grad():
            return model(xv)

    vt = timeit(
        {"fs": lambda: fgsm(sw, xv, yv, eps, **kv), "fw": lambda: fgsm(net, xv, yv, eps, **kv), "ps": lambda: infer(sw), "pw": lambda: infer(net)},
        device,
        1,
        args.repeats_long + 1,
    )
    shape = "x".join(map(str, vol))
    print(f"\none 1x4x{shape} volume, windows of {args.size}^3 (overlap 0.25) vs one pass")
    print(f"{'measurement':<32}{'sliding [s]':>12}{'whole [s]':>11}{'ratio':>8}")
    for name, a, b in (("fgsm (clip+mask)", vt["fs"], vt["fw"]), ("inference (no grad)", vt["ps"], vt["pw"])):
        print(f"{name:<32}{a:>12.3f}{b:>11.3f}{a / b:>8.2f}")

    # perceptibility (L-inf, L2, PSNR, SSIM of 4 modalities) of one adversarial volume, as attack_sweep scores
    # it: on the attack's device, and (the pre-GPU behaviour) from host copies on the CPU
    xa = fgsm(net, xv, yv, eps, **kv)
    pt = timeit({"dev": lambda: perceptibility(xv, xa, brain=bv[:, 0]), "cpu": lambda: perceptibility(xv.cpu(), xa.cpu(), brain=bv[:, 0].cpu())},
                device, 1, 2)
    print(f"perceptibility of one volume: {pt['dev']:.3f} s on {device.type}, {pt['cpu']:.3f} s from host copies "
          f"({torch.get_num_threads()} CPU threads)")


if __name__ == "__main__":
    main()
