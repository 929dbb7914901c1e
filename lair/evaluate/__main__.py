r"""Scores a retriever on evaluation sets: a table on stdout, JSON in the workdir.

A Hugging Face encoder, scored directly (the sets from flags, or from a config's eval.sets):

  python -m lair.evaluate --hf=~/.cache/lair/multilingual-e5-small \
      --query_prefix="query: " --passage_prefix="passage: " \
      --lareqa=../shared/data/xquad-r/en.json,../shared/data/xquad-r/de.json \
      --tatoeba=../shared/data/tatoeba/tatoeba.deu-eng --workdir=/tmp/e5_eval

A training run, restored from its latest checkpoint (or --step) with the run's own config:

  python -m lair.evaluate --config=configs/x.py --workdir=RUN_DIR

Flags add sets to the config's `eval.sets`: --lareqa (one JSON per language; the set is named
after their folder, e.g. "xquad-r"), --tatoeba (prefixes DIR/tatoeba.xxx-eng), --beir (folders).
--max_questions / --max_pairs slice them. Results go to WORKDIR/eval/eval.json (or step_N.json
for a restored run); without --workdir only the table is printed.
"""
import os

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from lair import configs
from lair.evaluate import run

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A configs/*.py file; default: lair.configs.default_config().",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "A training run to restore (unless --hf), and where eval/*.json goes.")
_HF = flags.DEFINE_string("hf", None, "Score this Hugging Face encoder directory directly.")
_STEP = flags.DEFINE_integer("step", None, "The run's checkpoint step (default: the latest).")
_LAREQA = flags.DEFINE_list("lareqa", [], "XQuAD-R / LAReQA JSON files, one per language.")
_TATOEBA = flags.DEFINE_list("tatoeba", [], "Tatoeba pairs: prefixes DIR/tatoeba.xxx-eng.")
_BEIR = flags.DEFINE_list("beir", [], "BEIR folders (corpus.jsonl, queries.jsonl, qrels/).")
_LANGUAGES = flags.DEFINE_list("languages", [], "Keep only these languages of the flag sets.")
_MAX_QUESTIONS = flags.DEFINE_integer("max_questions", 0, "Slice: first N questions (0: all).")
_MAX_PAIRS = flags.DEFINE_integer("max_pairs", 0, "Slice: first N Tatoeba pairs (0: all).")
_MAX_LEN = flags.DEFINE_integer("max_len", 0, "Token cut-off for the flag sets (0: config).")
_QUERY_PREFIX = flags.DEFINE_string("query_prefix", None, "Overrides config.model.query_prefix.")
_PASSAGE_PREFIX = flags.DEFINE_string("passage_prefix", None,
                                      "Overrides config.model.passage_prefix.")
_SEARCH = flags.DEFINE_enum("search", None, ["auto", "exact", "scann"],
                            "Overrides config.eval.search.")


def flag_sets() -> list:
  """config.eval.sets entries from --lareqa / --tatoeba / --beir."""
  common = {}
  if _LANGUAGES.value:
    common["languages"] = list(_LANGUAGES.value)
  if _MAX_LEN.value:
    common["max_len"] = _MAX_LEN.value
  sets = []
  if _LAREQA.value:
    folder = os.path.basename(os.path.dirname(os.path.abspath(_LAREQA.value[0])))
    sets.append(dict(name=folder or "lareqa", kind="lareqa", paths=list(_LAREQA.value),
                     max_questions=_MAX_QUESTIONS.value, **common))
  if _TATOEBA.value:
    sets.append(dict(name="tatoeba", kind="tatoeba", paths=list(_TATOEBA.value),
                     max_pairs=_MAX_PAIRS.value, **common))
  if _BEIR.value:
    sets.append(dict(name="beir", kind="beir", paths=list(_BEIR.value),
                     max_questions=_MAX_QUESTIONS.value, **common))
  return sets


def load_config():
  """The --config (or default) config with the flag overrides applied."""
  config = _CONFIG.value if _CONFIG.value is not None else configs.default_config()
  with config.unlocked():
    if _HF.value:
      config.model.hf_path = os.path.expanduser(_HF.value)
    if _QUERY_PREFIX.value is not None:
      config.model.query_prefix = _QUERY_PREFIX.value
    if _PASSAGE_PREFIX.value is not None:
      config.model.passage_prefix = _PASSAGE_PREFIX.value
    if _SEARCH.value:
      config.eval.search = _SEARCH.value
    config.eval.sets = list(config.eval.sets) + flag_sets()
  if not config.eval.sets:
    raise app.UsageError("no evaluation sets: give --lareqa / --tatoeba / --beir or a --config "
                         "whose eval.sets lists some")
  return config


def load_model(config):
  """(params, rcfg, tokenizer, step): the --hf encoder, or the --workdir run's checkpoint."""
  from lair.models import retriever  # pylint: disable=g-import-not-at-top
  if _HF.value:
    rcfg, params, tokenizer = retriever.build_from_config(
        config.model, rng=jax.random.PRNGKey(config.seed))
    return params, rcfg, tokenizer, None
  if not _WORKDIR.value:
    raise app.UsageError("give --hf=DIR (an HF encoder) or --workdir=RUN_DIR (a training run)")
  from lair.train import checkpoints  # pylint: disable=g-import-not-at-top
  return checkpoints.restore_for_eval(config, _WORKDIR.value, step=_STEP.value)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = load_config()
  params, rcfg, tokenizer, step = load_model(config)
  logging.info("evaluating %s on %d set(s)", _HF.value or _WORKDIR.value, len(config.eval.sets))
  run.run_evaluations(config, params, rcfg, tokenizer, workdir=_WORKDIR.value, step=step)


if __name__ == "__main__":
  app.run(main)
