r"""`python -m lair.evaluate`: scores a retriever on evaluation sets (table on stdout, JSON file).

A training run, restored from its latest checkpoint (or --step), with the run's config
(WORKDIR/config.json, or --config) and its eval.sets; results in WORKDIR/eval/step_N.json:

  python -m lair.evaluate --workdir=RUN_DIR [--config=configs/x.py] [--step=N]

A Hugging Face encoder, scored directly; the sets come from flags (and/or --config's eval.sets),
results in WORKDIR/eval/eval.json when --workdir is given:

  python -m lair.evaluate --hf=~/.cache/lair/multilingual-e5-small \
      --config.model.query_prefix="query: " --config.model.passage_prefix="passage: " \
      --lareqa=../shared/data/xquad-r/en.json,../shared/data/xquad-r/de.json \
      --tatoeba=../shared/data/tatoeba/tatoeba.deu-eng --workdir=/tmp/e5_eval

Set flags: --lareqa (one JSON per language; the set is named after their folder, e.g.
"xquad-r"), --tatoeba (prefixes DIR/tatoeba.xxx-eng), --beir (folders); --languages,
--max_questions, --max_pairs and --max_len slice them. Any config key can be overridden with
--config.KEY=VALUE (e.g. --config.eval.search=scann, --config.eval.batch_size=128).
"""
import argparse
import json
import os
import sys

from absl import logging
import jax
import ml_collections

from lair import configs
from lair.evaluate import run


def parse_args(argv):
  """(args, ['--config.a.b=v', ...]); any other unknown argument is an error."""
  parser = argparse.ArgumentParser(prog="python -m lair.evaluate", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", help="configs/NAME.py[:ARG] (default: the run's config.json, "
                      "else lair.configs.default_config())")
  parser.add_argument("--workdir", help="a training run to restore (unless --hf); eval/*.json "
                      "goes here")
  parser.add_argument("--hf", help="score this Hugging Face encoder directory directly")
  parser.add_argument("--step", type=int, help="the run's checkpoint step (default: latest)")
  parser.add_argument("--lareqa", default="", help="XQuAD-R / LAReQA JSON files, comma-separated")
  parser.add_argument("--tatoeba", default="", help="Tatoeba pair prefixes DIR/tatoeba.xxx-eng")
  parser.add_argument("--beir", default="", help="BEIR folders, comma-separated")
  parser.add_argument("--languages", default="", help="keep only these languages of the flag sets")
  parser.add_argument("--max_questions", type=int, default=0, help="slice: first N questions")
  parser.add_argument("--max_pairs", type=int, default=0, help="slice: first N Tatoeba pairs")
  parser.add_argument("--max_len", type=int, default=0, help="token cut-off of the flag sets")
  args, rest = parser.parse_known_args(argv)
  bad = [a for a in rest if not a.startswith("--config.")]
  if bad:
    parser.error(f"unrecognized arguments {bad}: expected --config.KEY=VALUE overrides")
  if not args.hf and not args.workdir:
    parser.error("give --hf=DIR (an HF encoder) or --workdir=RUN_DIR (a training run)")
  return args, rest


def _split(text: str) -> list:
  return [t for t in (s.strip() for s in text.split(",")) if t]


def flag_sets(args) -> list:
  """config.eval.sets entries from --lareqa / --tatoeba / --beir."""
  common = {}
  if _split(args.languages):
    common["languages"] = _split(args.languages)
  if args.max_len:
    common["max_len"] = args.max_len
  sets = []
  if args.lareqa:
    paths = _split(args.lareqa)
    folder = os.path.basename(os.path.dirname(os.path.abspath(paths[0])))
    sets.append(dict(name=folder or "lareqa", kind="lareqa", paths=paths,
                     max_questions=args.max_questions, **common))
  if args.tatoeba:
    sets.append(dict(name="tatoeba", kind="tatoeba", paths=_split(args.tatoeba),
                     max_pairs=args.max_pairs, **common))
  if args.beir:
    sets.append(dict(name="beir", kind="beir", paths=_split(args.beir),
                     max_questions=args.max_questions, **common))
  return sets


def load_config(args, overrides) -> ml_collections.ConfigDict:
  """--config, else the run's saved config.json, else the defaults; then flags and overrides."""
  saved = os.path.join(args.workdir or "", "config.json")
  if args.config:
    config = configs.load_config(args.config)
  elif args.workdir and not args.hf and os.path.exists(saved):
    with open(saved, encoding="utf-8") as f:
      config = ml_collections.ConfigDict(json.load(f))
  else:
    config = configs.default_config()
  with config.unlocked():
    for override in overrides:
      configs.apply_override(config, override)
    if args.hf:
      config.model.hf_path = os.path.expanduser(args.hf)
    config.eval.sets = list(config.eval.sets) + flag_sets(args)
  if not config.eval.sets:
    raise SystemExit("no evaluation sets: give --lareqa / --tatoeba / --beir or a config whose "
                     "eval.sets lists some")
  return config


def load_model(args, config):
  """(params, rcfg, tokenizer, step): the --hf encoder, or the --workdir run's checkpoint."""
  from lair.models import retriever  # pylint: disable=g-import-not-at-top
  if args.hf:
    rcfg, params, tokenizer = retriever.build_from_config(
        config.model, rng=jax.random.PRNGKey(config.seed))
    return params, rcfg, tokenizer, None
  from lair.train import checkpoint  # pylint: disable=g-import-not-at-top
  rcfg, tokenizer = checkpoint.load_model_files(args.workdir)
  if tokenizer is None:
    raise FileNotFoundError(f"{args.workdir}/tokenizer not found: the run saved no tokenizer")
  step, saved = checkpoint.Checkpoints(args.workdir).restore_params(args.step)
  return saved["retriever"], rcfg, tokenizer, step


def main(argv=None):
  args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
  logging.set_verbosity(logging.INFO)  # Progress and sentences/s of long encodes.
  config = load_config(args, overrides)
  params, rcfg, tokenizer, step = load_model(args, config)
  run.run_evaluations(config, params, rcfg, tokenizer, workdir=args.workdir, step=step)


if __name__ == "__main__":
  main()
