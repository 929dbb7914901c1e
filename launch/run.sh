#!/usr/bin/env bash
# Train, evaluate and export one lair run: the one entry point inside every process.
#
#   bash launch/run.sh                                   # the quickstart: configs/quickstart.py
#   bash launch/run.sh --config=configs/X.py[:ARG] [--workdir=DIR] [--config.train.steps=100 ...]
#
# Every flag but --workdir goes to `python -m lair.train` as it is. A workdir that holds a
# checkpoint resumes from it. When the run ends the latest checkpoint is exported to WORKDIR/hf
# (replacing an earlier export there).
#
# Several processes (hosts, or one per GPU): run this same command in each. Under SLURM (srun),
# Open MPI, a Cloud TPU pod or Kubernetes with the `kubernetes` package, JAX finds the others by
# itself (launch/slurm.sbatch, launch/k8s/, launch/tpu_pod.sh); anywhere else set
#   LAIR_COORDINATOR=host0:1234 LAIR_NUM_PROCESSES=N LAIR_PROCESS_ID=i
# Only process 0 writes logs, evaluations and the export.
#
# Exit status: 0 done; 75 stopped by a scheduler's signal (SIGTERM / SIGINT / SIGUSR1) after
# saving a checkpoint: run the same command again to resume (schedulers requeue on it); 2 a bad
# config or missing file (the message says which); anything else a failure.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
config="${root}/configs/quickstart.py"
workdir=""
args=()
# Both spellings, --workdir=DIR and --workdir DIR: a missed one would reach lair.train after
# ours and win there, so training and export would use different folders.
while (( $# )); do
  case "$1" in
    --config=*) config="${1#--config=}" ;;
    --workdir=*) workdir="${1#--workdir=}" ;;
    --config|--workdir)
      if (( $# < 2 )); then
        echo "launch/run.sh: $1 needs a value (e.g. $1=VALUE)" >&2
        exit 2
      fi
      if [[ "$1" == --config ]]; then config="$2"; else workdir="$2"; fi
      shift ;;
    *) args+=("$1") ;;
  esac
  shift
done
if [[ -z "$workdir" ]]; then
  name="$(basename "${config%%:*}" .py)"
  workdir="runs/${name}"
fi
PYTHON="${PYTHON:-python3}"

echo "lair: config=${config} workdir=${workdir}"
"$PYTHON" -m lair.train --config="$config" --workdir="$workdir" "${args[@]+"${args[@]}"}"
# Process 0 exports (lair.export leaves it to process 0 under a cluster); it says where.
"$PYTHON" -m lair.export --workdir="$workdir" --out="$workdir/hf" --overwrite
