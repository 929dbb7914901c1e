#!/usr/bin/env bash
# lair on a Cloud TPU pod slice: the same launch/run.sh on every worker, started over ssh.
#
#   bash launch/tpu_pod.sh NAME ZONE --config=configs/e5_language_agnostic.py --config.model.dtype=bfloat16
#
# Change: REPO (where the repository is checked out on every worker) and LAIR_WORKDIR (a bucket
# or shared disk every worker sees, e.g. gs://BUCKET/runs/x mounted with gcsfuse). JAX finds the
# other workers of the slice by itself (lair.sharding.initialize_distributed). Spot / preemptible
# slices send SIGTERM before they go: lair saves a checkpoint and exits with code 75; run this
# script again (on a new slice) to resume.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: bash launch/tpu_pod.sh TPU_NAME ZONE [run.sh flags...]" >&2
  exit 2
fi
name="$1"; zone="$2"; shift 2
REPO="${REPO:-~/lair}"
LAIR_WORKDIR="${LAIR_WORKDIR:-~/runs/tpu-${name}}"
printf -v flags ' %q' "$@"
gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" --worker=all \
    --command="cd ${REPO} && bash launch/run.sh --workdir=${LAIR_WORKDIR}${flags}"
