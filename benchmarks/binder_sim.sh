#!/usr/bin/env bash
# Run a command under Binder-like limits and report its wall time, peak memory and CPU throttling.
#
# mybinder.org gives a notebook about 1 CPU and 2 GB as cgroup limits: a CFS bandwidth quota (the
# process still sees every core of the node) and a hard memory limit. This script makes such a cgroup
# (v1 or v2), runs the command in it and prints what the kernel counted. Root only; Linux only.
# Written against the cgroup files directly because the usual tools need what containers often lack:
# `systemd-run -p CPUQuota=100% -p MemoryMax=2G` needs systemd as PID 1, `cgexec` needs cgroup-tools.
#
# Usage:  sudo benchmarks/binder_sim.sh [--cpus 1] [--mem 2G] -- COMMAND...
# e.g.    sudo benchmarks/binder_sim.sh -- robustseg reproduce --profile teaching --out /tmp/binder-run
set -euo pipefail

CPUS=1
MEM=2G
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cpus) CPUS="$2"; shift 2 ;;
    --mem) MEM="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "binder_sim.sh: unknown option $1 (the command goes after --)" >&2; exit 2 ;;
  esac
done
[[ $# -gt 0 ]] || { echo "binder_sim.sh: no command given (usage: binder_sim.sh [--cpus N] [--mem SIZE] -- COMMAND...)" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "binder_sim.sh: needs root to create cgroups" >&2; exit 2; }

PERIOD=100000
QUOTA=$(python3 -c "print(int(float('$CPUS') * $PERIOD))")
BYTES=$(python3 -c "
s='$MEM'.upper(); m={'K':2**10,'M':2**20,'G':2**30}
print(int(float(s[:-1]) * m[s[-1]]) if s[-1] in m else int(s))")
NAME="robustseg-binder-$$"

if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then   # cgroup v2 (unified)
  CG=/sys/fs/cgroup/$NAME
  for c in cpu memory; do grep -qw $c /sys/fs/cgroup/cgroup.subtree_control || echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control; done
  mkdir "$CG"
  echo "$QUOTA $PERIOD" > "$CG/cpu.max"
  echo "$BYTES" > "$CG/memory.max"
  [[ -f "$CG/memory.swap.max" ]] && echo 0 > "$CG/memory.swap.max"
  JOIN=("$CG/cgroup.procs")
  cleanup() { rmdir "$CG" 2>/dev/null || true; }
  report() {
    echo "cpu.stat:"; sed 's/^/  /' "$CG/cpu.stat"
    [[ -f "$CG/memory.peak" ]] && echo "memory peak (cgroup, incl. page cache): $(( $(cat "$CG/memory.peak") / 1048576 )) MiB"
    echo "memory.events:"; sed 's/^/  /' "$CG/memory.events"
  }
else                                                  # cgroup v1
  CPU=/sys/fs/cgroup/cpu/$NAME
  MEMCG=/sys/fs/cgroup/memory/$NAME
  mkdir "$CPU" "$MEMCG"
  echo "$PERIOD" > "$CPU/cpu.cfs_period_us"
  echo "$QUOTA" > "$CPU/cpu.cfs_quota_us"
  echo "$BYTES" > "$MEMCG/memory.limit_in_bytes"
  [[ -f "$MEMCG/memory.memsw.limit_in_bytes" ]] && echo "$BYTES" > "$MEMCG/memory.memsw.limit_in_bytes"
  JOIN=("$CPU/cgroup.procs" "$MEMCG/cgroup.procs")
  cleanup() { rmdir "$CPU" "$MEMCG" 2>/dev/null || true; }
  report() {
    echo "cpu.stat:"; sed 's/^/  /' "$CPU/cpu.stat"
    echo "memory peak (cgroup, incl. page cache): $(( $(cat "$MEMCG/memory.max_usage_in_bytes") / 1048576 )) MiB"
    echo "memory limit hits (failcnt): $(cat "$MEMCG/memory.failcnt")"
    grep -E "oom_kill|under_oom" "$MEMCG/memory.oom_control" | sed 's/^/  /'
  }
fi
trap cleanup EXIT

echo "binder_sim: $CPUS CPU quota, $MEM memory; host has $(nproc) visible cores; command: $*"
START=$(date +%s.%N)
set +e
# the child joins the cgroup(s) itself, then becomes the command; /usr/bin/time -v adds the largest RSS
bash -c 'for f in "${@:2:$1}"; do echo $$ > "$f"; done; shift $(( $1 + 1 )); exec /usr/bin/time -v "$@"' \
  _ "${#JOIN[@]}" "${JOIN[@]}" "$@" 2> >(tee /tmp/"$NAME".time >&2)
RC=$?
set -e
END=$(date +%s.%N)
sleep 2   # let the tee of the time report finish
echo "---- binder_sim report ----"
echo "exit status: $RC"
python3 -c "w=$END-$START; print(f'wall: {w:.0f} s ({int(w//60)} min {w%60:.0f} s)')"
grep -E "Maximum resident set size" /tmp/"$NAME".time | sed 's/^\s*/largest process /' || true
report
rm -f /tmp/"$NAME".time
exit $RC
