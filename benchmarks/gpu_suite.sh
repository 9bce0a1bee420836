#!/usr/bin/env bash
# The GPU benchmark set of issue 25, in one call of at most 10 minutes on one H100:
#  1. bench_gpu_step.py: every change to the cifar_resnet18 step on its own, batch 128 and 512
#     (fp32 · TF32 · bf16 · channels_last · no syncs · the CUDA defaults · compile=reduce-overhead ·
#     the project's loop), images/s, host and wall ms per step, % of the bf16 dense peak;
#  2. several seeds per GPU: 1, 2 and 4 processes of the CUDA defaults at batch 128 at once, images/s added;
#  3. bench_barrier.py and bench_star_step.py on the device.
# Everything goes to $OUT (default: a new folder under /tmp) as text and JSON lines; every part has its
# own time limit, so one that hangs cannot take the rest with it.
#
#     benchmarks/gpu_suite.sh            # on the GPU machine
#     benchmarks/gpu_suite.sh --dry-run  # anywhere: the same parts on the CPU, tiny, to check they run
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
OUT=${OUT:-$(mktemp -d /tmp/gpu-suite.XXXXXX)}
mkdir -p "$OUT"
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

part() {  # part NAME SECONDS COMMAND...: run with a limit, keep its output, say how it ended
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.txt" 2>&1
  local rc=$?
  echo "== $name: exit $rc in $((SECONDS - start)) s (limit $limit s)"
  tail -n 25 "$OUT/$name.txt"
}

{
  date -u; uptime
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")'
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv
} >"$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

seeds() {  # seeds K LIMIT ARGS...: K processes of the CUDA defaults at once, their images/s added
  local k=$1 limit=$2; shift 2
  local start=$SECONDS
  for i in $(seq 1 "$k"); do
    timeout "$limit" "$PY" benchmarks/bench_gpu_step.py --variants defaults --json "$@" \
      >"$OUT/seeds_${k}_$i.json" 2>"$OUT/seeds_${k}_$i.err" &
  done
  wait
  "$PY" - "$OUT" "$k" "$((SECONDS - start))" <<'PYEOF'
import json, pathlib, sys
out, k, wall = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rows = [json.loads(l) for i in range(1, k + 1) for l in (out / f"seeds_{k}_{i}.json").read_text().splitlines() if l.startswith("{")]
total = sum(r["images_per_s"] for r in rows)
batch = rows[0]["batch"] if rows else "?"
print(f"== {k} seed process(es) at once, batch {batch}, CUDA defaults: {len(rows)}/{k} finished, "
      f"{total:,.0f} images/s together ({wall} s wall)")
PYEOF
}

if [ "$DRY" = 1 ]; then
  part gpu_step 300 "$PY" benchmarks/bench_gpu_step.py --dry-run
  seeds 2 120 --dry-run | tee "$OUT/seeds.txt"
  echo "dry run: the parts ran on the CPU; nothing here is a GPU measurement. Output in $OUT"
  exit 0
fi

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "no CUDA device: nothing measured (benchmarks/gpu_suite.sh --dry-run checks the parts run)"; exit 0
fi

# 1. each change on its own (≈ 4 min with the two compilations). Worst case, every limit reached: 300 + 3 × 60 + 75 + 45 = 600 s.
part gpu_step 300 "$PY" benchmarks/bench_gpu_step.py --batch-sizes 128,512 --epochs 2 --repeats 2

# 2. several seeds per GPU: K processes at once, each its own seed's worth of work.
for k in 1 2 4; do
  seeds "$k" 60 --batch-sizes 128 --epochs 2 --repeats 1
done | tee "$OUT/seeds.txt"

# 3. the other device benchmarks, short.
part barrier 75 "$PY" benchmarks/bench_barrier.py --device cuda --repeats 2
part star_step 45 "$PY" benchmarks/bench_star_step.py --device cuda --quick
echo "output in $OUT"
