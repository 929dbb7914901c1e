#!/usr/bin/env bash
# Train, evaluate and export one lair run.
#
#   bash launch/run.sh                                   # the quickstart: configs/quickstart.py
#   bash launch/run.sh --config=configs/X.py[:ARG] [--workdir=DIR] [--config.train.steps=100 ...]
#
# Every flag but --workdir goes to `python -m lair.train` as it is. A workdir that holds a
# checkpoint resumes from it. When the run ends the latest checkpoint is exported to WORKDIR/hf.
#
# Multi-host (one process per host, same command on every host): set
#   LAIR_COORDINATOR=host0:1234 LAIR_NUM_PROCESSES=N LAIR_PROCESS_ID=i
# and lair calls jax.distributed.initialize with them; only process 0 exports.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
config="${root}/configs/quickstart.py"
workdir=""
args=()
for arg in "$@"; do
  case "$arg" in
    --config=*) config="${arg#--config=}" ;;
    --workdir=*) workdir="${arg#--workdir=}" ;;
    *) args+=("$arg") ;;
  esac
done
if [[ -z "$workdir" ]]; then
  name="$(basename "${config%%:*}" .py)"
  workdir="runs/${name}"
fi
PYTHON="${PYTHON:-python3}"

echo "lair: config=${config} workdir=${workdir}"
"$PYTHON" -m lair.train --config="$config" --workdir="$workdir" "${args[@]+"${args[@]}"}"
if [[ "${LAIR_PROCESS_ID:-0}" == "0" ]]; then
  "$PYTHON" -m lair.export --workdir="$workdir" --out="$workdir/hf"
  echo "lair: exported the trained encoder to $workdir/hf (transformers and sentence-transformers load it)"
fi
