"""`run_evaluations`: every set of `config.eval.sets`, a table on stdout, JSON in the workdir."""
import functools
import time
from typing import Dict, Mapping, Optional, Union

from absl import logging
import jax
import ml_collections

from lair import configs
from lair import sharding
from lair import workdir as workdir_lib
from lair.evaluate import encode
from lair.evaluate import evaluators
from lair.evaluate import search


def make_encoders(config: ml_collections.ConfigDict, params, rcfg, tokenizer,
                  spec: Mapping, stats: Optional[dict] = None) -> evaluators.Encoders:
  """The query / passage / bitext encoders of one set, with the model's prefixes and lengths."""
  make = functools.partial(encode.make_text_encoder, params, rcfg, tokenizer,
                           batch_size=config.eval.batch_size,
                           buckets=tuple(config.data.length_buckets), stats=stats)
  def cut_off(training_len: int) -> int:
    # Never past the encoder's position table.
    return min(configs.eval_cut_off(config, training_len, spec.get("max_len") or 0),
               rcfg.encoder.max_length)

  query_len = cut_off(config.data.max_query_len)
  passage_len = cut_off(config.data.max_passage_len)
  sentence_len = cut_off(config.data.max_sentence_len)
  return evaluators.Encoders(
      query=make(max_len=query_len, prefix=config.model.query_prefix, tower="query"),
      passage=make(max_len=passage_len, prefix=config.model.passage_prefix, tower="passage"),
      # Bitext: both sides are sentences of the same kind, so both take the query side.
      sentence=make(max_len=sentence_len, prefix=config.model.query_prefix, tower="query"))


def make_searcher(config: ml_collections.ConfigDict) -> evaluators.Searcher:
  """(queries [Q, D], db [N, D], k) -> (scores, ids) by config.eval.search.

  Each process searches its share of the queries against the whole pool; the results are
  gathered, so every process returns all of them.
  """
  def searcher(queries, db, k):
    start, stop = sharding.process_share(len(queries))
    scores, ids = search.search(queries[start:stop], db, k, method=config.eval.search,
                                exact_below=config.eval.exact_below,
                                scann_config=config.eval.scann)
    return (sharding.gather_shares(scores, len(queries)),
            sharding.gather_shares(ids, len(queries)))

  return searcher


TABLE_WIDTH = 100  # Columns a table may take; wider ones wrap their language columns.


def format_table(results: Mapping[str, float], width: int = TABLE_WIDTH) -> str:
  """One block per set: rows are metrics, columns the groups (languages) then "mean".

  A set with more groups than fit in `width` columns (Tatoeba's 112 languages) is printed in
  several blocks of columns, each with the metric names, so every line fits.
  """
  blocks = {}  # set -> metric -> group -> value, in first-seen order.
  for key, value in results.items():
    set_name, metric, group = key.rsplit("/", 2)
    blocks.setdefault(set_name, {}).setdefault(metric, {})[group] = value
  lines = []
  for set_name, rows in blocks.items():
    groups = [g for g in dict.fromkeys(g for r in rows.values() for g in r) if g != "mean"]
    columns = groups + ["mean"]
    label = max([len(set_name)] + [len(m) + 2 for m in rows])
    per_line = max(1, (width - label) // 9)
    for start in range(0, len(columns), per_line):
      chunk = columns[start:start + per_line]
      lines.append(f"{set_name:<{label}}" + "".join(f"{c:>9}" for c in chunk))
      for metric, values in rows.items():
        cells = "".join(f"{values[c]:9.4f}" if c in values else " " * 9 for c in chunk)
        lines.append(f"  {metric:<{label - 2}}{cells}")
  return "\n".join(lines)


def run_evaluations(config: ml_collections.ConfigDict, params, rcfg, tokenizer, *,
                    workdir: Union[workdir_lib.Workdir, str, None],
                    step: Optional[int] = None) -> Dict[str, float]:
  """Scores `params` on every `config.eval.sets` entry.

  Returns flat metrics ("xquad-r/map@20/de", "xquad-r/map@20/mean", ...), prints them as a
  table and (on process 0, when `workdir` is set: lair.evaluate) writes them to its
  eval/evaluate_step_N.json (eval/eval.json without a step); the trainer writes its own.
  """
  searcher = make_searcher(config)
  results, stats = {}, {}
  began = time.time()
  for spec in config.eval.sets:
    spec = dict(spec)
    evaluators.check_set(spec)
    start = time.time()
    encoders = make_encoders(config, params, rcfg, tokenizer, spec, stats)
    scores = evaluators.EVALUATORS[spec["kind"]](spec, encoders, searcher, config.eval.top_k)
    logging.info("eval set %s (%s) took %.1fs", spec["name"], spec["kind"], time.time() - start)
    results.update(scores)
  # One line per process: what it embedded of the sets, and how long the evaluation took.
  print(f"evaluation: process {jax.process_index()} of {jax.process_count()} embedded "
        f"{stats.get('texts', 0)} texts in {stats.get('seconds', 0.0):.1f}s; "
        f"{time.time() - began:.1f}s in all", flush=True)
  if jax.process_index() == 0 and results:
    print(f"evaluation at step {step}:" if step is not None else "evaluation:")
    print(format_table(results), flush=True)
    if workdir:
      if not isinstance(workdir, workdir_lib.Workdir):
        workdir = workdir_lib.Workdir(workdir)
      logging.info("wrote %s", workdir.write_eval(step, results, by_command=True))
  return results
