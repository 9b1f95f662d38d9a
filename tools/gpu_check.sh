#!/usr/bin/env bash
# Short device check (a few minutes): the training-loop and attack benchmarks, the notebooks' import time and the
# data stage (worker start-up, and the one-pass path's cost per case on one core), written to $OUT/check.txt. For a GPU session with too little time for gpu_run.sh.
# Device call (carry [".whl"]):  bash tools/gpu_check.sh          Test here first:  OUT=/tmp/chk SMALL=1 bash tools/gpu_check.sh
set -uo pipefail
start=$(date +%s)
out=${OUT:?set OUT}; mkdir -p "$out"
source "$(dirname "$0")/gpu_env.sh"   # carried wheels -> /tmp/site, PYTHONPATH
if [ "${SMALL:-0}" = 1 ]; then tr=(--size 32 --batch 2 --levels 4 --rounds 1 --steps 2 --busy-steps 2); at=(--size 32 --batch 1 --repeats 1 --repeats-long 1 --steps 2); dn=4; ds="96, 96, 64"
else tr=(--size 128 --batch 2 --width 16 --levels 5 --busy-steps 50); at=(--size 128 --batch 2 --volume 144 176 144); dn=32; ds="240, 240, 155"; fi
{
  echo "== install: $(( $(date +%s) - start )) s"
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
  echo "== bench_training"; timeout 150 python3 benchmarks/bench_training.py "${tr[@]}"
  echo "== bench_attacks"; timeout 120 python3 benchmarks/bench_attacks.py "${at[@]}"
  echo "== a notebook's import cell (03_fgsm) and print_config"
  python3 -X importtime -c "
import time; t = time.perf_counter()
import matplotlib.pyplot as plt, numpy as np, pandas as pd, torch
from IPython.display import Markdown, display
t1 = time.perf_counter()
from robustseg_lib.runtime import print_config, setup_run
from robustseg_lib import attacks, evaluation, models
from robustseg_lib.viz_models import plot_attack_example
from robustseg_lib.viz_stats import plot_robustness_curves
t2 = time.perf_counter(); print_config(); t3 = time.perf_counter()
print(f'imports: base {t1 - t:.1f} s, robustseg_lib (MONAI) {t2 - t1:.1f} s; print_config {t3 - t2:.1f} s')" 2> /tmp/importtime.txt
  echo "slowest imports (cumulative microseconds):"; sort -t'|' -k2 -n /tmp/importtime.txt | tail -12
  echo "== data stage: $dn cases"
  python3 -c "
import time
from robustseg_lib import data
t = time.perf_counter(); data.make_synthetic_dataset('/tmp/chk_raw', $dn, shape=($ds), workers=16, progress=False); t1 = time.perf_counter()
data.prepare_dataset('/tmp/chk_raw', '/tmp/chk_prep.npz', (144, 176, 144), workers=16, progress=False); t2 = time.perf_counter()
print(f'generate {t1 - t:.1f} s, prepare {t2 - t1:.1f} s ($dn cases, 16 workers requested)')
data.prepare_synthetic('/tmp/chk_direct.npz', $dn, shape=($ds), work_shape=(144, 176, 144), workers=16, progress=False); t3 = time.perf_counter()
print(f'generate + preprocess, no NIfTI: {t3 - t2:.1f} s ($dn cases, 16 workers requested)')
data.prepare_synthetic('/tmp/chk_one.npz', 1, shape=($ds), work_shape=(144, 176, 144), progress=False); t4 = time.perf_counter()
data.prepare_synthetic('/tmp/chk_one.npz', 2, shape=($ds), work_shape=(144, 176, 144), progress=False); t5 = time.perf_counter()
print(f'one core, warm: {(t5 - t4) / 2:.2f} s per case (first case with imports and templates: {t4 - t3:.1f} s)')"
  echo "== total $(( $(date +%s) - start )) s"
} 2>&1 | tee "$out/check.txt"
