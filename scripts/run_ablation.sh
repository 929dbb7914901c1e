#!/usr/bin/env bash
# Re-runs the whole ablation table of docs/results.md (lair issue 5), one run at a time.
#
#   bash scripts/run_ablation.sh [--config.KEY=VALUE ...]      # e.g. --config.train.steps=10
#
# Environment: RUNS (default runs/ablation in the repository) holds one workdir per run; SEEDS
# (default "0 1") are the seeds of runs 2-4; PYTHON (default python3); E5 the multilingual-e5-small
# directory for run 1 (default ~/.cache/lair/multilingual-e5-small; the configs read the same
# path); LAIR_SHARED_DATA the data folder (default ../shared/data). Extra --config.* flags go to
# every run.
#
# Resumable: a run that finished (WORKDIR/DONE, written when its command exits 0) is skipped, and
# an unfinished training run resumes from the last checkpoint in its workdir (lair.train does
# that). Each run's wall time, summed over attempts (failed ones too), is kept in
# WORKDIR/wall_seconds and its log in WORKDIR/log.txt.
# The order is the priority order: run 1; runs 2-4 seed 0; run 5; runs 2-4 other seeds; run 6;
# then the extras (run 4 with monolingual z, run 5 with the other seeds).
# Then scripts/plot_results.py writes the tables (RUNS/results.md) and docs/results_map20.png.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
RUNS="${RUNS:-$root/runs/ablation}"
SEEDS="${SEEDS:-0 1}"
PYTHON="${PYTHON:-python3}"
E5="${E5:-$HOME/.cache/lair/multilingual-e5-small}"
SHARED="${LAIR_SHARED_DATA:-$root/../shared/data}"
export LAIR_MONO_DIR="$RUNS/mono"  # configs/xquadr_e5.py:ir_sem_lang_mono reads it.
common=(--config.data.cache_dir="$RUNS/cache" "$@")
mkdir -p "$RUNS"

# run NAME COMMAND...: runs COMMAND unless RUNS/NAME/DONE exists; logs and times it.
run() {
  local name="$1"; shift
  local workdir="$RUNS/$name"
  if [[ -e "$workdir/DONE" ]]; then
    echo "lair ablation: $name done ($(cat "$workdir/wall_seconds" 2>/dev/null || echo '?') s), skipped"
    return
  fi
  mkdir -p "$workdir"
  echo "lair ablation: $name started $(date -u +%H:%M:%S)"
  local start; start=$(date +%s)
  local status=0
  "$@" >> "$workdir/log.txt" 2>&1 || status=$?
  local spent=$(( $(date +%s) - start + $(cat "$workdir/wall_seconds" 2>/dev/null || echo 0) ))
  echo "$spent" > "$workdir/wall_seconds"
  if (( status != 0 )); then
    echo "lair ablation: $name failed (exit $status) after ${spent} s; see $workdir/log.txt" >&2
    exit "$status"
  fi
  touch "$workdir/DONE"
  echo "lair ablation: $name finished in ${spent} s"
}

# train NAME CONFIG[:ARG] [overrides...]
train() {
  local name="$1" config="$2"; shift 2
  run "$name" "$PYTHON" -m lair.train --config="$config" --workdir="$RUNS/$name" \
      "${common[@]}" "$@"
}

# LAIR_MONO_DIR/xxx.txt: 1,000 sentences of each language, evenly spaced rows of one column of
# the parallel TSVs (eng: 100 from each file), for the language loss's monolingual z.
make_mono() {
  [[ -d "$LAIR_MONO_DIR" ]] && return
  "$PYTHON" - "$SHARED/parallel" "$LAIR_MONO_DIR" <<'PY'
import csv, glob, os, sys
import numpy as np
src, out = sys.argv[1], sys.argv[2]
tmp = out + ".tmp"
os.makedirs(tmp, exist_ok=True)
english = []
for path in sorted(glob.glob(os.path.join(src, "en-*.tsv"))):
  with open(path, encoding="utf-8") as f:
    header, *rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
  rows = [r for r in rows if len(r) == 3 and r[1].strip() and r[2].strip()]
  pick = lambda n: [rows[i] for i in np.unique(np.linspace(0, len(rows) - 1, n).astype(int))]
  with open(os.path.join(tmp, f"{header[2]}.txt"), "w", encoding="utf-8") as f:
    f.writelines(r[2].strip() + "\n" for r in pick(1000))
  english += [r[1].strip() + "\n" for r in pick(100)]
with open(os.path.join(tmp, "eng.txt"), "w", encoding="utf-8") as f:
  f.writelines(english)
os.rename(tmp, out)
PY
}

first_seed="${SEEDS%% *}"
run e5_backbone "$PYTHON" -m lair.evaluate --hf="$E5" --config=configs/xquadr_e5.py:backbone \
    --workdir="$RUNS/e5_backbone" "${common[@]}"
for seed in $first_seed; do
  for variant in ir ir_sem ir_sem_lang; do
    train "e5_${variant}_s${seed}" "configs/xquadr_e5.py:${variant}" --config.seed="$seed"
  done
  train "e5_lowres_s${seed}" configs/xquadr_e5.py:lowres --config.seed="$seed"
done
for seed in $SEEDS; do
  [[ "$seed" == "$first_seed" ]] && continue
  for variant in ir ir_sem ir_sem_lang; do
    train "e5_${variant}_s${seed}" "configs/xquadr_e5.py:${variant}" --config.seed="$seed"
  done
done
train ems_xtr_cl configs/ems_small.py:xtr_cl
train ems_cl configs/ems_small.py:cl

# Extras: is run 4's language loss better with multilingual z? Run 5 with more seeds.
make_mono
for seed in $SEEDS; do
  train "e5_ir_sem_lang_mono_s${seed}" configs/xquadr_e5.py:ir_sem_lang_mono --config.seed="$seed"
done
for seed in $SEEDS; do
  train "e5_lowres_s${seed}" configs/xquadr_e5.py:lowres --config.seed="$seed"
done

"$PYTHON" scripts/plot_results.py --runs="$RUNS" --png=docs/results_map20.png \
    > "$RUNS/results.md"
echo "lair ablation: tables in $RUNS/results.md, plot in docs/results_map20.png"
