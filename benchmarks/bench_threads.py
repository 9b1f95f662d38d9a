"""torch CPU threads against the CPU budget: a benchmark that prints a table (not a test).

Times a bare training step (forward + Dice/CE + backward + AdamW) and a no-grad forward of the teaching
profile's UNet at several torch thread counts, in this process. Run it under a CPU quota to see what
oversubscription costs, e.g. on Binder, or here under ``benchmarks/binder_sim.sh`` (root):

    sudo benchmarks/binder_sim.sh -- python benchmarks/bench_threads.py

``runtime.cpu_budget()`` (affinity mask capped by the cgroup quota) is what the notebooks' ``setup_run``
lowers torch to; the last column compares each count with it.

Usage: ``python benchmarks/bench_threads.py [--threads 1,2,4] [--size 48] [--steps 6]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from robustseg_lib import models
from robustseg_lib.runtime import cgroup_cpu_limit, cpu_budget
from robustseg_lib.training import dice_ce_objective


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2,4", help="comma-separated torch thread counts (default 1,2,4)")
    ap.add_argument("--size", type=int, default=48, help="cubic crop size (default 48, the teaching profile)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    if not counts or min(counts) < 1:
        raise SystemExit(f"--threads must be positive integers, got {args.threads!r}")
    budget, quota = cpu_budget(), cgroup_cpu_limit()
    s = args.size
    torch.manual_seed(0)
    spec = models.model_spec("unet", width=16, levels=4)
    net = models.build_unet("unet", seed=0, **spec["kwargs"])
    obj = dice_ce_objective(1.0)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.randn(args.batch, 4, s, s, s)
    y = torch.randint(0, 4, (args.batch, s, s, s))

    def train_step() -> float:
        net.train()
        t = time.perf_counter()
        for _ in range(args.steps):
            opt.zero_grad(set_to_none=True)
            obj(net(x), x, y).backward()
            opt.step()
        return (time.perf_counter() - t) / args.steps

    def forward() -> float:
        net.eval()
        t = time.perf_counter()
        with torch.no_grad():
            for _ in range(args.steps):
                net(x)
        return (time.perf_counter() - t) / args.steps

    rows = {}
    for n in counts:
        torch.set_num_threads(n)
        train_step(), forward()  # warm-up at this count
        rows[n] = (statistics.median(train_step() for _ in range(args.rounds)),
                   statistics.median(forward() for _ in range(args.rounds)))
    ref = rows.get(budget)
    print(f"{platform.machine()} CPU; visible cores {os.cpu_count()}, affinity {len(os.sched_getaffinity(0))}, "
          f"cgroup quota {quota if quota is not None else 'none'}, CPU budget {budget}")
    print(f"UNet width 16, 4 levels; batch {args.batch}x4x{s}^3; median of {args.rounds} rounds of {args.steps} steps")
    print(f"{'threads':>8}{'train s/step':>14}{'forward s':>11}{'train vs budget':>17}")
    for n, (tr, fw) in rows.items():
        rel = f"{tr / ref[0]:.2f}x" if ref else "-"
        print(f"{n:>8}{tr:>14.3f}{fw:>11.3f}{rel:>17}")
    if ref is None:
        print(f"(add the budget, {budget}, to --threads for the last column)")


if __name__ == "__main__":
    main()
