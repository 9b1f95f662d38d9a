#!/usr/bin/env bash
# Run a profile of the notebook chain (default: paper) plus the benchmarks on the offline GPU machine,
# and leave at most 8 files under $OUT (the device tool's limit). Recipe: ../shared/GPU.md.
#
# On the development machine, once:   echo /.whl/ >> .git/info/exclude && ../shared/tools/gpu-wheels.sh .whl nilearn==0.14.1
# Device call (carry [".whl"]):       bash tools/gpu_run.sh paper [--set ... | --only ...]
# Test it here on the CPU first:      OUT=/tmp/gpu_out bash tools/gpu_run.sh smoke
#
# Dry run of the paper profile's option combination on the CPU (tiny sizes, ~5 min on 2 cores; numbers meaningless):
#   robustseg reproduce --profile paper --out /tmp/pdry --device cpu --set data.n_cases=8 --set "data.shape=[96, 96, 64]" \
#     --set "data.work_shape=[64, 64, 64]" --set data.workers=2 --set unet.epochs=1 --set unet.steps_per_epoch=2 \
#     --set "unet.crop=[32, 32, 32]" --set distillation.epochs=1 --set distillation.steps_per_epoch=2 \
#     --set adversarial_training.epochs=1 --set adversarial_training.steps_per_epoch=2 --set "fgsm.eps_grid=[0.0, 0.5]" \
#     --set "ifgsm.eps_grid=[0.0, 0.5]" --set "tifgsm.eps_grid=[0.0, 0.5]" --set ifgsm.steps=2 --set tifgsm.steps=2 \
#     --set statistics.n_resamples=200
#
# One 15-minute device session cannot hold the full paper profile (estimate in docs/results.md: about 40 min). Session 5
# ran this reduced command on an H100 with DEADLINE=575 (git 3949eed): stages 01-05 in 398 s, cut 30 s into 06:
#   DEADLINE=575 bash tools/gpu_run.sh paper --set data.n_cases=40 --set "data.fractions=[0.6, 0.1, 0.3]" \
#     --set data.workers=16 --set unet.epochs=4 --set distillation.epochs=4 --set adversarial_training.epochs=4 \
#     --set "tifgsm.extra_policies=[]" --set "distillation.compare_temperatures=[]" --set adversarial_training.static=False
# Since then (git 56728f8) training and the attack tables are faster on the GPU (docs/benchmarks.md), but the eight
# notebooks' imports (~16 s each) and the data stage stay on the CPU: by estimate the whole reduced chain needs 8-9 min.
# Since session 6 the profile itself sets data.workers=16, write_nifti=false (one-pass generate + preprocess, identical
# arrays) and threshold_cases=64, so the same command without `--set data.workers=16` is the next one to run.
# DEADLINE (seconds from start) cuts the chain so that the benchmarks and the packing still fit in the device call.
#
# Every extra argument goes to `robustseg reproduce`. The run folder defaults to /tmp/run_<profile>; RUN=... overrides.
# Files returned: summary.md (per-stage times, Dice, claims), bench.txt, manifest.json, report.md,
# tables.tar.gz (with gpu_util.csv, nvidia-smi at 1 Hz), figures.tar.gz, notebooks.tar.gz (executed), reproduce.log.
set -uo pipefail
start=$(date +%s)
profile=${1:-paper}; shift || true
out=${OUT:?set OUT to the folder whose files come back}
run=${RUN:-/tmp/run_${profile}}
deadline=${DEADLINE:-0}   # seconds from start by which everything must be packed (0: no limit); the chain is cut short to keep it
left() { echo $(( deadline - ($(date +%s) - start) )); }
mkdir -p "$out"
source "$(dirname "$0")/gpu_env.sh"   # carried wheels -> /tmp/site, PYTHONPATH
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
gpu=0; python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" && gpu=1

# 1. the micro-benchmarks first (short, and they do not depend on the chain)
{
  if [ $gpu = 1 ]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    timeout 120 python3 benchmarks/bench_training.py --size 128 --batch 2 --width 16 --levels 5 --steps 30 --busy-steps 50
    timeout 120 python3 benchmarks/bench_attacks.py --size 128 --batch 2 --volume 144 176 144
  else
    python3 benchmarks/bench_training.py --rounds 1 --busy-steps 4
    python3 benchmarks/bench_metrics.py --shape 64 64 64 --repeats 2
  fi
} > "$out/bench.txt" 2>&1
cat "$out/bench.txt"

# 2. the chain, GPU utilisation sampled once a second beside it
util=/tmp/gpu_util.csv; : > "$util"; sampler=
if [ $gpu = 1 ] && command -v nvidia-smi >/dev/null; then
  ( while :; do echo "$(date +%s.%N),$(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits | head -1)"; sleep 1; done ) >> "$util" &
  sampler=$!
fi
lim=()
if [ "$deadline" -gt 0 ]; then lim=(timeout --kill-after=10 $(( $(left) - 40 ))); echo "chain limited to ${lim[2]} s"; fi
t0=$(date +%s)
"${lim[@]}" python3 -m robustseg_lib reproduce --profile "$profile" --out "$run" "$@" 2>&1 | grep -v -e IPKernelApp -e '^$' | tee "$out/reproduce.log"
rc=${PIPESTATUS[0]}
echo "chain: exit $rc, $(( $(date +%s) - t0 )) s wall" | tee -a "$out/reproduce.log"
[ -n "$sampler" ] && kill "$sampler" 2>/dev/null
pkill -f ipykernel_launcher 2>/dev/null  # a kernel left behind by a cut-short chain

# 3. what the run measured
{
  python3 benchmarks/bench_chain.py --run "$run"
  [ -s "$util" ] && python3 tools/gpu_util_summary.py "$run" "$util"
  if [ $rc = 0 ] && { [ "$deadline" = 0 ] || [ "$(left)" -gt 60 ]; }; then
    if [ $gpu = 1 ]; then timeout $(( deadline > 0 ? $(left) - 30 : 300 )) python3 benchmarks/bench_inference.py --run "$run" --cases 8 --eps 0.25 --steps 10 2>/dev/null
    else python3 benchmarks/bench_inference.py --run "$run" --cases 2 --steps 2 2>/dev/null; fi
  fi
} 2>&1 | tee -a "$out/bench.txt"

python3 tools/summarise_run.py "$run" > "$out/summary.md" 2>&1
cp "$run/manifest.json" "$out/" 2>/dev/null
cp "$run/report/report.md" "$out/" 2>/dev/null
[ -s "$util" ] && mkdir -p "$run/tables" && cp "$util" "$run/tables/gpu_util.csv"
for d in tables figures notebooks; do
  [ -d "$run/$d" ] && tar -czf "$out/$d.tar.gz" -C "$run" "$d"
done
cat "$out/summary.md"
ls -la "$out"
echo "gpu_run.sh: $(( $(date +%s) - start )) s in all"
exit "$rc"
