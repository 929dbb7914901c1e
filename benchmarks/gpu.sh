#!/usr/bin/env bash
# lair on one GPU: the train-step benchmark at the base shape in bfloat16 (with and without fused
# attention and remat, each side by side with PyTorch eager on the same card) and the encode
# benchmark; every figure printed, and all of them written to $OUT/gpu_bench.json (./gpu_bench.json
# when OUT is unset). Each run takes ~80-90 s on an H100 (~40-55 s of it compiling); a run that
# would start after LAIR_GPU_BUDGET_S seconds (default 300) is skipped and reported, so the
# script ends within about 7 minutes. On an H100 (2026-11-27, the order then: einsum, fused,
# remat dots, encode, ...) the budget left out remat full and float32, run by hand after; the
# order is now float32 before the remat runs. All six need LAIR_GPU_BUDGET_S=480 (~9 minutes).
#
#   bash benchmarks/gpu.sh                    # from the checkout's root, on the GPU machine
#   LAIR_BENCH_QUICK=1 bash benchmarks/gpu.sh # tiny shapes: checks the script end to end (CPU too)
#
# Needs python3 with jax (CUDA), flax, optax, orbax-checkpoint, numpy, torch (CUDA),
# transformers, sentence-transformers. lair's encode path imports ml-collections (pure Python),
# which a GPU image may lack: put its wheel in .whl/ beside the checkout (the repo root or its
# parent) and this script installs it from there, offline. ScaNN and tensorflow-datasets are not
# needed. Prepare .whl/ on a machine with PyPI access:
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl ml-collections==1.1.0
#
# (ml-collections needs absl-py and PyYAML, which jax/flax/orbax images already have; add
# `absl-py==2.5.1 PyYAML==6.0.2` to the command if yours lacks them.)
#
# Base shape: 12 layers x 768, 12 heads, FFN 3072, XLM-R vocabulary (250002 rows), random weights.
# Batch: 128 queries x 64 tokens + 128 passages x 256 tokens (40,960 tokens, ~22 model TFLOP per
# step): enough work per step that the AdamW update over the 278M params (a fixed few ms of
# memory traffic) is a small part of it. Hidden dropout 0.1, attention dropout 0 in both
# frameworks (lair's fused attention has no attention dropout). Utilisation is against the
# device's bf16 dense peak (lair/models/flops.py PEAK_FLOPS, by jax's device_kind). lair runs as
# docs/training.md recommends on a GPU: bfloat16 matmuls and residual stream
# (--activation-dtype bfloat16), the trainer's XLA options (no dot merger); both frameworks are
# timed with one step in flight (--pipelined), as lair.train runs. Until 2026-11-27 the script
# kept a float32 residual stream and waited for every step's loss (the H100 figures).
# benchmarks/gpu_profile.sh says where the step's time goes.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
OUT_DIR="${OUT:-$REPO}"
mkdir -p "$OUT_DIR"
PARTS="$(mktemp -d)"
BUDGET_S="${LAIR_GPU_BUDGET_S:-300}"
# JAX preallocates 75% of the GPU by default; PyTorch runs in the same process and needs room too.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.45}"
PY="${PYTHON:-python3}"
FAILED=()
SKIPPED=()

for wheels in "$REPO/.whl" "$REPO/../.whl"; do
  if compgen -G "$wheels/*.whl" > /dev/null; then
    echo "== installing wheels from $wheels (offline)"
    "$PY" -m pip install --no-index --no-deps --quiet "$wheels"/*.whl \
      || echo "!! pip install from $wheels failed; continuing with what is installed"
  fi
done

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
  || echo "(no nvidia-smi)"
"$PY" - <<'EOF' || true
import jax, torch
print(f"jax {jax.__version__}: {jax.devices()}; torch {torch.__version__}, cuda "
      f"{torch.cuda.is_available()}")
EOF
if ! "$PY" -c "import ml_collections" 2>/dev/null; then
  echo "!! ml_collections is missing: the encode benchmark will fail (see this script's header" \
       "for the .whl/ folder); the train-step benchmarks do not need it"
fi

QUICK=()
if [[ -n "${LAIR_BENCH_QUICK:-}" ]]; then
  QUICK=(--quick)
  echo "== LAIR_BENCH_QUICK is set: tiny shapes, only to check the script runs"
fi

# run NAME COMMAND...: runs one benchmark, keeps its JSON part, reports a failure and goes on.
run() {
  local name="$1"; shift
  if (( SECONDS > BUDGET_S )); then
    echo "!! $name skipped: ${SECONDS}s elapsed, past LAIR_GPU_BUDGET_S=${BUDGET_S}s"
    SKIPPED+=("$name")
    return 0
  fi
  echo
  echo "== $name (started at ${SECONDS}s): $*"
  local start=$SECONDS
  if "$@" --json "$PARTS/$name.json"; then
    echo "== $name done in $((SECONDS - start))s"
  else
    echo "!! $name FAILED (exit $?) after $((SECONDS - start))s; going on"
    FAILED+=("$name")
  fi
}

TRAIN=("$PY" benchmarks/train_step.py --model base --dtype bfloat16 --activation-dtype bfloat16
       --batch 128 --query-len 64 --passage-len 256 --dropout 0.1 --attention-dropout 0
       --warmup 2 --steps 5 --rounds 3 --pipelined --no-profile "${QUICK[@]}")
run train_einsum "${TRAIN[@]}" --attention einsum
run train_fused "${TRAIN[@]}" --attention dot_product
run encode_base "$PY" benchmarks/encode.py --model base --dtype bfloat16 \
  --activation-dtype bfloat16 --attention dot_product --sentences 8192 --batch 256 --max-len 128 \
  --rounds 3 "${QUICK[@]}"
# The same step in float32 (TF32 matmuls on the GPU), for the bfloat16 gain.
run train_fused_float32 "${TRAIN[@]}" --attention dot_product --dtype float32 \
  --activation-dtype float32
# Remat last: it only trades speed for memory.
run train_fused_remat_dots "${TRAIN[@]}" --attention dot_product --remat dots
run train_fused_remat_full "${TRAIN[@]}" --attention dot_product --remat full

echo
echo "== summary (${SECONDS}s in all)"
"$PY" - "$PARTS" "$OUT_DIR/gpu_bench.json" "${FAILED[*]:-}" "${SKIPPED[*]:-}" <<'EOF'
import json, pathlib, sys
parts, out, failed, skipped = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
results = {p.stem: json.loads(p.read_text()) for p in sorted(parts.glob("*.json"))}
for name, r in results.items():
  if name.startswith("train"):
    lair, torch_ = r["figures"]["lair"], r["figures"].get("torch")
    mfu = f"{lair['mfu']:.1%}" if lair.get("mfu") is not None else "peak unknown"
    vs = f", {r['lair_over_torch']:.2f}x PyTorch eager" if r.get("lair_over_torch") else ""
    print(f"  {name:24s} lair {lair['s_per_step'] * 1e3:8.1f} ms/step "
          f"{lair['padded_tokens_per_s']:10.0f} tok/s {lair['model_tflops_per_s']:7.1f} "
          f"TFLOP/s  MFU {mfu}{vs}")
  else:
    print(f"  {name:24s} lair {r['lair_sentences_per_s']:.0f} sentences/s, "
          f"sentence-transformers {r['st_sentences_per_s']:.0f}: {r['ratio']:.2f}x")
summary = {"results": results, "failed": failed.split(), "skipped": skipped.split()}
pathlib.Path(out).write_text(json.dumps(summary, indent=2))
print(f"wrote {out}; failed: {failed or 'none'}; skipped: {skipped or 'none'}")
EOF
rm -rf "$PARTS"
if (( ${#FAILED[@]} )); then
  exit 1
fi
