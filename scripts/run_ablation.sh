#!/usr/bin/env bash
# Re-runs the ablation of docs/results.md, one run at a time, resumable.
#
#   bash scripts/run_ablation.sh [--config.KEY=VALUE ...]      # e.g. --config.train.steps=10
#
# Environment: RUNS (default runs/ablation in the repository) holds one workdir per run; SEEDS
# (default "0 1"); VARIANTS (default: all of them, in the order below; none: no training
# run); TATOEBA=0 skips the Tatoeba runs (all 112 languages embed 177k sentences per model:
# 13-14 minutes each on an idle 2-core CPU), TATOEBA_LANGUAGES="ara deu ..." limits them to those
# languages; PYTHON (default python3); E5 the multilingual-e5-small folder (default
# ~/.cache/lair/multilingual-e5-small; written by ../shared/tools/e5_small_checkpoint.py);
# LAIR_SHARED_DATA the data folder (default ../shared/data). Extra --config.* flags go to every
# training run.
#
# Resumable: a run that finished (WORKDIR/DONE, written when its command exits 0) is skipped, and
# an unfinished training run resumes from the last checkpoint in its workdir (lair.train does
# that). Each run's wall time, summed over attempts, is kept in WORKDIR/wall_seconds and its log
# in WORKDIR/log.txt.
# Order (priority): the backbone; every variant with the first seed; every variant with the
# other seeds; then Tatoeba (all 112 languages, or TATOEBA_LANGUAGES) for the backbone and the
# recipe.
# Then scripts/plot_results.py writes RUNS/results.md and the pictures in RUNS (matplotlib: the
# [plots] extra, pip install -e '.[plots]'); the pictures in docs/ are drawn only on purpose, with
# the command docs/results.md gives, so an exploring run cannot overwrite them.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
RUNS="${RUNS:-$root/runs/ablation}"
SEEDS="${SEEDS:-0 1}"
PYTHON="${PYTHON:-python3}"
E5="${E5:-$HOME/.cache/lair/multilingual-e5-small}"
SHARED="${LAIR_SHARED_DATA:-$root/../shared/data}"
CONFIG=configs/e5_language_agnostic.py
VARIANTS="${VARIANTS:-ir_sem ir_sem_hn ir_sem_bs_hn lang_0.3_sg lang_0.3 ir ir_sem_bs lang_0.1_sg lang_1_sg lang_0.1 lang_1 lowres}"
[[ "$VARIANTS" == none ]] && VARIANTS=""  # Only the backbone, Tatoeba and the plot.
common=(--config.data.cache_dir="$RUNS/cache" --config.model.hf_path="$E5" "$@")
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

# train NAME VARIANT SEED
train() {
  run "$1" "$PYTHON" -m lair.train --config="$CONFIG:$2" --workdir="$RUNS/$1" \
      --config.seed="$3" "${common[@]}"
}

# The Tatoeba set (both directions, every pair) of the languages in TATOEBA_LANGUAGES (Tatoeba's
# codes; default: all 112), as a --config.eval.sets value.
tatoeba_set() {
  "$PYTHON" - "$SHARED/tatoeba" "${TATOEBA_LANGUAGES:-}" <<'PY'
import glob, os, sys
specs = sorted(p[:-4] for p in glob.glob(os.path.join(sys.argv[1], "tatoeba.*-eng.eng")))
wanted = sys.argv[2].split()
if wanted:
  by_lang = {os.path.basename(p).split(".")[1].split("-")[0]: p for p in specs}
  missing = sorted(set(wanted) - set(by_lang))
  if missing:
    sys.exit(f"TATOEBA_LANGUAGES: no Tatoeba files for {missing} in {sys.argv[1]}")
  specs = [by_lang[l] for l in wanted]
print(repr([{"name": "tatoeba", "kind": "tatoeba", "paths": specs}]))
PY
}

run backbone "$PYTHON" -m lair.evaluate --hf="$E5" --config="$CONFIG" \
    --workdir="$RUNS/backbone"
first_seed="${SEEDS%% *}"
for seed in $SEEDS; do
  for variant in $VARIANTS; do
    train "${variant}_s${seed}" "$variant" "$seed"
  done
done

if [[ "${TATOEBA:-1}" != 0 ]]; then
  # Tatoeba (all 112 languages, or TATOEBA_LANGUAGES): the recipe (first seed) against the
  # backbone.
  recipe="$("$PYTHON" -c "import sys; sys.path.insert(0, 'configs')
import e5_language_agnostic as c; print(c.RECIPE)")"
  sets="$(tatoeba_set)"
  # A finished run of other languages or of another recipe run is done again, not reused.
  for name in tatoeba_backbone recipe_export tatoeba_recipe; do
    inputs="$sets"
    [[ "$name" == tatoeba_backbone ]] || inputs+=" ${recipe}_s${first_seed}"
    if [[ -e "$RUNS/$name/DONE" && "$(cat "$RUNS/$name/inputs" 2>/dev/null)" != "$inputs" ]]; then
      rm -f "$RUNS/$name/DONE" "$RUNS/$name/wall_seconds"
    fi
    mkdir -p "$RUNS/$name"
    echo "$inputs" > "$RUNS/$name/inputs"
  done
  run tatoeba_backbone "$PYTHON" -m lair.evaluate --hf="$E5" --config="$CONFIG" \
      --config.eval.sets="$sets" --workdir="$RUNS/tatoeba_backbone"
  # The recipe run through its export (what a user serves), evaluated like any HF folder.
  run recipe_export "$PYTHON" -m lair.export --workdir="$RUNS/${recipe}_s${first_seed}" \
      --out="$RUNS/recipe_export/hf" --overwrite
  run tatoeba_recipe "$PYTHON" -m lair.evaluate --hf="$RUNS/recipe_export/hf" --config="$CONFIG" \
      --config.eval.sets="$sets" --workdir="$RUNS/tatoeba_recipe"
fi

# plot_results.py names on stderr each picture it drew (none for runs without an evaluation).
"$PYTHON" scripts/plot_results.py --runs="$RUNS" > "$RUNS/results.md"
echo "lair ablation: tables in $RUNS/results.md"
