r"""`python -m lair.evaluate`: scores a retriever on evaluation sets (table on stdout, JSON file).

A training run, restored from its latest checkpoint (or --step=N | best), with the run's config
(WORKDIR/config.json, or --config) and its eval.sets; results in WORKDIR/eval/evaluate_step_N.json
(the trainer's eval/step_N.json is left as it is):

  python -m lair.evaluate --workdir=RUN_DIR [--config=configs/x.py] [--step=N]

A Hugging Face or sentence-transformers folder, scored directly (its pooling, Dense layers,
normalisation and prompts as its modules declare); the sets come from flags (and/or --config's
eval.sets), results in WORKDIR/eval/eval.json when --workdir is given:

  python -m lair.evaluate --hf=~/.cache/lair/multilingual-e5-small \
      --config.model.query_prefix="query: " --config.model.passage_prefix="passage: " \
      --lareqa=../shared/data/xquad-r/en.json,../shared/data/xquad-r/de.json \
      --tatoeba=../shared/data/tatoeba/tatoeba.deu-eng --workdir=/tmp/e5_eval

Set flags: --lareqa (one JSON per language; the set is named after their folder, e.g.
"xquad-r"), --tatoeba (prefixes DIR/tatoeba.xxx-eng), --beir (folders); --languages,
--max_questions, --max_pairs and --max_len slice them. Any config key can be overridden with
--config.KEY=VALUE (e.g. --config.eval.search=scann, --config.eval.batch_size=128).
"""
import os

from absl import flags
from absl import logging

from lair import checkpoint
from lair import cli
from lair import configs
from lair import inference
from lair import sharding
from lair.errors import ConfigError
from lair.evaluate import evaluators
from lair.evaluate import run


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("workdir", None, "a training run to restore (unless --hf); eval/*.json "
                      "goes here", flag_values=fv)
  flags.DEFINE_string("hf", None, "score this Hugging Face / sentence-transformers folder",
                      flag_values=fv)
  flags.DEFINE_string("step", None, "the run's checkpoint step, or 'best' (default: latest)",
                      flag_values=fv)
  flags.DEFINE_list("lareqa", [], "XQuAD-R / LAReQA JSON files", flag_values=fv)
  flags.DEFINE_list("tatoeba", [], "Tatoeba pair prefixes DIR/tatoeba.xxx-eng", flag_values=fv)
  flags.DEFINE_list("beir", [], "BEIR folders", flag_values=fv)
  flags.DEFINE_list("languages", [], "keep only these languages of the flag sets",
                    flag_values=fv)
  flags.DEFINE_integer("max_questions", 0, "slice: first N questions", flag_values=fv)
  flags.DEFINE_integer("max_pairs", 0, "slice: first N Tatoeba pairs", flag_values=fv)
  flags.DEFINE_integer("max_len", 0, "token cut-off of the flag sets", flag_values=fv)


def flag_sets(fv: flags.FlagValues) -> list:
  """config.eval.sets entries from --lareqa / --tatoeba / --beir.

  --languages spans them: each set keeps the codes its paths give (XQuAD-R's "de", Tatoeba's
  "deu"), a set with none of them is left out, and a code no set gives is an error.
  """
  common = {"max_len": fv.max_len} if fv.max_len else {}
  sets = []
  if fv.lareqa:
    folder = os.path.basename(os.path.dirname(os.path.abspath(fv.lareqa[0])))
    sets.append(dict(name=folder or "lareqa", kind="lareqa", paths=list(fv.lareqa),
                     max_questions=fv.max_questions, **common))
  if fv.tatoeba:
    sets.append(dict(name="tatoeba", kind="tatoeba", paths=list(fv.tatoeba),
                     max_pairs=fv.max_pairs, **common))
  if fv.beir:
    sets.append(dict(name="beir", kind="beir", paths=list(fv.beir),
                     max_questions=fv.max_questions, **common))
  if not fv.languages:
    return sets
  problems = [e for spec in sets for e in evaluators.set_errors(spec)]
  if problems:  # Paths that do not parse have no languages to pick from.
    raise ConfigError("; ".join(problems))
  given = {id(spec): evaluators.set_languages(spec) for spec in sets}
  unknown = [c for c in fv.languages if not any(c in codes for codes in given.values())]
  if unknown:
    raise ConfigError(f"--languages: {unknown} are in none of the flag sets, whose languages "
                      f"are {sorted({c for codes in given.values() for c in codes})}")
  kept = []
  for spec in sets:
    wanted = [c for c in fv.languages if c in given[id(spec)]]
    if wanted:
      kept.append(dict(spec, languages=wanted))
  return kept


def load_model(fv: flags.FlagValues, config):
  """(params, rcfg, tokenizer, step): the --hf folder, or the --workdir run's checkpoint.

  Through lair.inference, as lair.index and lair.search load theirs; an --hf folder's prompts
  fill in the query/passage prefixes the command line left unset.
  """
  if fv.hf:
    retriever = inference.from_hf(fv.hf, config=config)
    with config.unlocked():
      config.model.query_prefix = retriever.query_prefix
      config.model.passage_prefix = retriever.passage_prefix
    step = None
  else:
    retriever = inference.from_run(fv.workdir, checkpoint.parse_step(fv.step), config=config)
    step = retriever.source["step"]
  return retriever.params, retriever.rcfg, retriever.tokenizer, step


def main(argv) -> None:
  # --workdir names the run to evaluate (its config.json is the default config), or with --hf
  # only where the results go.
  config, fv = configs.parse_command_line(
      argv, define_flags, default_config_file=inference.default_config_file(argv))
  if not fv.hf and not fv.workdir:
    raise ConfigError("give --hf=DIR (an HF encoder) or --workdir=RUN_DIR (a training run)")
  logging.set_verbosity(logging.INFO)  # Progress and sentences/s of long encodes.
  with config.unlocked():
    if fv.hf:
      config.model.hf_path = os.path.expanduser(fv.hf)
    config.eval.sets = list(config.eval.sets) + flag_sets(fv)
  if not config.eval.sets:
    raise ConfigError("no evaluation sets: give --lareqa / --tatoeba / --beir or a config whose "
                      "eval.sets lists some")
  problems = evaluators.config_errors(config.eval)
  if problems:
    raise ConfigError("; ".join(problems))
  print(sharding.initialize_distributed(), flush=True)
  params, rcfg, tokenizer, step = load_model(fv, config)
  run.run_evaluations(config, params, rcfg, tokenizer, workdir=fv.workdir, step=step)


if __name__ == "__main__":
  cli.run(main)
