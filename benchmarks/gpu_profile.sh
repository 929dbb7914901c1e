#!/usr/bin/env bash
# Where lair's GPU train step spends its time, and what moves it: the base-shape bfloat16 step
# (fused attention) traced with jax.profiler and summarised by kernel kind, side by side with
# PyTorch eager; then lair alone with the residual stream in bfloat16
# (--activation-dtype bfloat16, traced too), the same with XLA's default options instead of the
# trainer's (--xla-defaults: the dot merger on), without Triton GEMMs (cuBLAS for every matmul),
# at twice the batch, and without dropout. Each run prints its table; JSONs and the Perfetto
# traces (open them at ui.perfetto.dev) land in $OUT (./gpu_profile when OUT is unset). About 6-7
# minutes on an H100/H200, most of it compiling; a run that would start after LAIR_GPU_BUDGET_S
# seconds (default 400) is skipped. docs/training.md "Measured on an H200" has its figures.
#
#   bash benchmarks/gpu_profile.sh              # from the checkout's root, on the GPU machine
#   LAIR_BENCH_QUICK=1 bash benchmarks/gpu_profile.sh  # tiny shapes: checks the script (CPU too)
#
# Needs what benchmarks/gpu.sh's train-step runs need (jax with CUDA, flax, optax, torch,
# transformers); not ml-collections, ScaNN or tensorflow-datasets.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
OUT_DIR="${OUT:-$REPO/gpu_profile}"
mkdir -p "$OUT_DIR"
BUDGET_S="${LAIR_GPU_BUDGET_S:-400}"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.45}"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
QUICK=()
[[ -n "${LAIR_BENCH_QUICK:-}" ]] && QUICK=(--quick)

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
  --format=csv,noheader 2>/dev/null || echo "(no nvidia-smi)"

# run NAME [ENV=VALUE ...] -- ARGS...: one train_step.py run, its JSON (and trace) into OUT.
run() {
  local name="$1"; shift
  local envs=()
  while [[ "$1" != "--" ]]; do envs+=("$1"); shift; done
  shift
  if (( SECONDS > BUDGET_S )); then
    echo "!! $name skipped: ${SECONDS}s elapsed, past LAIR_GPU_BUDGET_S=${BUDGET_S}s"
    return 0
  fi
  echo; echo "== $name (at ${SECONDS}s): ${envs[*]} $*"
  env "${envs[@]}" "$PY" benchmarks/train_step.py --model base --dtype bfloat16 --batch 128 \
    --query-len 64 --passage-len 256 --dropout 0.1 --attention-dropout 0 \
    --attention dot_product --warmup 2 --steps 3 --rounds 3 --no-profile \
    --json "$OUT_DIR/$name.json" "${QUICK[@]}" "$@" || echo "!! $name FAILED (exit $?)"
  local trace
  trace=$(ls -t /tmp/lair_trace_"$name"/plugins/profile/*/perfetto_trace.json.gz 2>/dev/null \
          | head -1)
  [[ -n "$trace" ]] && cp "$trace" "$OUT_DIR/$name.perfetto.json.gz"
  return 0
}

run baseline -- --trace /tmp/lair_trace_baseline
run act_bf16 -- --no-torch --activation-dtype bfloat16 --trace /tmp/lair_trace_act_bf16
run act_bf16_xla_defaults -- --no-torch --activation-dtype bfloat16 --xla-defaults
run act_bf16_cublas XLA_FLAGS=--xla_gpu_enable_triton_gemm=false -- --no-torch \
  --activation-dtype bfloat16
run act_bf16_batch256 -- --no-torch --activation-dtype bfloat16 --batch 256
run act_bf16_no_dropout -- --no-torch --activation-dtype bfloat16 --dropout 0
echo; echo "== done in ${SECONDS}s; files in $OUT_DIR"
