r"""`python -m lair.mine`: hard negatives for an IR training set, from a retriever's own rankings.

    # Negatives from a corpus index (python -m lair.index), for the IR data of a config:
    python -m lair.mine --index=DIR --config=configs/quickstart.py --out=mined.jsonl \
        --num_negatives=4 [--skip_top=2] [--depth=100]
    # No index: negatives from the training set's own passages, with a run's model and its data:
    python -m lair.mine --workdir=RUN [--step=N|best] --out=mined.jsonl --num_negatives=4
    # ...then train on them:
    python -m lair.train --config=... --config.data.ir.format=jsonl \
        --config.data.ir.paths=mined.jsonl --config.data.ir.num_negatives=4

The training set is config.data.ir (format, paths, squad_target), read by the training
readers (`lair.data.readers.read_ir`: SQuAD, triples, BEIR, JSONL); its config is the
--workdir run's config.json, or --config, with --config.KEY=VALUE overrides. Each query's
positives are gathered over the set. The pool searched is the --index's documents (embedded
once, by the model that built the index unless --workdir / --hf name another of the same
width), or, without --index, every distinct positive passage of the training set (embedded here
by --workdir or --hf; no folder is written).

For each query the top --depth documents are visited best first: the query's positives and the
query itself are passed over (texts compared with whitespace collapsed), and so are repeated
texts; the first --skip_top of what remains are skipped too (likely false negatives:
unlabelled answers, or the positive in another language of a multilingual corpus); the next
--num_negatives are the query's negatives, hardest first. A query with fewer within --depth is
left out and counted.

Output (--out_format, by default from the file name): `jsonl`, one line per query
{"query": str, "pos": [str], "neg": [str]} (data.ir.format="jsonl"), or `triples`, one TSV line
per (query, positive): query, positive, then the negatives (data.ir.format="triples").
"""
import json
import os
import time
from typing import Iterable, Optional, Sequence

from absl import flags
import jax

from lair import cli
from lair import configs
from lair import files
from lair import index as index_lib
from lair import inference
from lair import sharding
from lair.data import readers
from lair.errors import ConfigError
from lair.errors import UserError

OUT_FORMATS = ("auto", "jsonl", "triples")


def _key(text: str) -> str:
  """A text compared with whitespace collapsed."""
  return " ".join(text.split())


def group_positives(rows: Iterable[dict]) -> list[tuple[str, list[str]]]:
  """(query, its distinct positive passages) from IR rows {"query", "passage"}, in first order."""
  grouped = {}
  for row in rows:
    positives = grouped.setdefault(row["query"], [])
    if row["passage"] not in positives:
      positives.append(row["passage"])
  return list(grouped.items())


def read_training_set(ir_config, *, strict: bool = False) -> tuple[list[tuple[str, list[str]]],
                                                                   dict]:
  """((query, positives) of config.data.ir, skipped {reason: n}), read by the training readers."""
  if ir_config.format not in readers.IR_FORMATS:
    raise ConfigError(f"config.data.ir.format={ir_config.format!r}: expected one of "
                      f"{readers.IR_FORMATS}")
  if not ir_config.paths:
    raise ConfigError("config.data.ir.paths is empty: no training set to mine negatives for",
                      hint="name it with --config.data.ir.paths=FILE (and "
                           "--config.data.ir.format), or --workdir=RUN for a run's own data")
  for path in ir_config.paths:
    if not os.path.exists(path):
      raise FileNotFoundError(f"config.data.ir.paths: {path}: no such file")
  log = readers.SkipLog(strict=strict)
  rows = (row for path in ir_config.paths
          for row in readers.read_ir(path, format=ir_config.format,
                                     squad_target=ir_config.squad_target, log=log))
  return group_positives(rows), log.total_skipped()


def pick_negatives(query: str, positives: Sequence[str], ranked_texts: Iterable[str], *,
                   num_negatives: int, skip_top: int = 0) -> list[str]:
  """The first `num_negatives` of `ranked_texts` (best first) that are not positives.

  The query itself, its positives and repeated texts are passed over; then the first
  `skip_top` remaining ones (likely false negatives). Fewer come back when the ranking runs out.
  """
  excluded = {_key(p) for p in positives} | {_key(query)}
  negatives, skipped = [], 0
  for text in ranked_texts:
    key = _key(text)
    if key in excluded:
      continue
    excluded.add(key)
    if skipped < skip_top:
      skipped += 1
      continue
    negatives.append(text)
    if len(negatives) == num_negatives:
      break
  return negatives


def mine_hard_negatives(index: index_lib.Index, examples: Sequence[tuple[str, Sequence[str]]],
                        *, num_negatives: int, skip_top: int = 0, depth: Optional[int] = None,
                        progress: bool = False) -> tuple[list[dict], int]:
  """({"query", "pos", "neg"} rows, the number of queries left out for too few negatives).

  Args:
    index: the pool to search; its retriever embeds the queries.
    examples: (query, positive passages) pairs (`read_training_set`).
    num_negatives: negatives per query (K).
    skip_top: non-positive hits skipped before the negatives are taken.
    depth: hits retrieved per query (default: enough for the positives, skip_top and K, plus
      slack for repeated texts).
  """
  if num_negatives <= 0:
    raise ConfigError(f"--num_negatives={num_negatives}: expected a positive number")
  if skip_top < 0:
    raise ConfigError(f"--skip_top={skip_top}: expected 0 or more")
  if not examples:
    return [], 0
  most_positives = max(len(p) for _, p in examples)
  depth = depth or (skip_top + num_negatives + most_positives + 16)
  vectors = index.retriever.encode([q for q, _ in examples], kind="query", progress=progress)
  _, rows = index.search_vectors(vectors, depth)
  mined, too_few = [], 0
  for (query, positives), ranked in zip(examples, rows):
    negatives = pick_negatives(query, positives, (index.docs[r]["text"] for r in ranked),
                               num_negatives=num_negatives, skip_top=skip_top)
    if len(negatives) < num_negatives:
      too_few += 1
      continue
    mined.append({"query": query, "pos": list(positives), "neg": negatives})
  return mined, too_few


def out_format(path: str, fmt: str) -> str:
  if fmt not in OUT_FORMATS:
    raise ConfigError(f"--out_format={fmt!r}: expected one of {OUT_FORMATS}")
  if fmt != "auto":
    return fmt
  return "triples" if path.lower().endswith(".tsv") else "jsonl"


def _tsv_field(text: str) -> str:
  return " ".join(text.split())  # A tab or newline inside a text would break the columns.


def write_mined(path: str, mined: Sequence[dict], fmt: str) -> None:
  """Writes `mined` as JSONL {"query", "pos", "neg"} or triples TSV lines, atomically."""
  with files.atomic_open(path) as f:
    for row in mined:
      if fmt == "jsonl":
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
      else:
        for positive in row["pos"]:
          f.write("\t".join(_tsv_field(t) for t in [row["query"], positive, *row["neg"]]) + "\n")


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("index", None, "an index folder (python -m lair.index) whose documents "
                      "are the pool; default: the training set's own passages", flag_values=fv)
  inference.define_model_flags(fv, required=False)
  flags.DEFINE_string("out", None, "the training file to write", flag_values=fv)
  flags.DEFINE_enum("out_format", "auto", OUT_FORMATS, "jsonl | triples (auto: .tsv is "
                    "triples)", flag_values=fv)
  flags.DEFINE_integer("num_negatives", 4, "negatives per query (data.ir.num_negatives)",
                       flag_values=fv)
  flags.DEFINE_integer("skip_top", 0, "skip this many of the best non-positive hits (likely "
                       "false negatives)", flag_values=fv)
  flags.DEFINE_integer("depth", 0, "hits retrieved per query (0: enough for the negatives)",
                       flag_values=fv)


def main(argv) -> None:
  config, fv = configs.parse_command_line(
      argv, define_flags, default_config_file=inference.default_config_file(argv))
  if not fv.out:
    raise ConfigError("--out=FILE is required: the training file to write")
  fmt = out_format(fv.out, fv.out_format)
  if fv.num_negatives <= 0 or fv.skip_top < 0 or fv.depth < 0:
    raise ConfigError(f"--num_negatives={fv.num_negatives}, --skip_top={fv.skip_top}, "
                      f"--depth={fv.depth}: expected a positive count of negatives and counts "
                      f"of 0 or more")
  if not fv.index and not inference.model_named(fv):
    raise ConfigError("no pool to search: give --index=DIR (a corpus index), or --workdir / "
                      "--hf to search the training set's own passages")
  examples, skipped = read_training_set(config.data.ir, strict=config.data.strict)
  print(f"training set: {len(examples)} queries, "
        f"{sum(len(p) for _, p in examples)} positives, skipped {skipped or 'none'}", flush=True)
  start = time.time()
  sharding.initialize_distributed()  # Several hosts (LAIR_COORDINATOR...) embed together.
  if fv.index:
    index = index_lib.load_index(fv.index)
    if inference.model_named(fv):
      index.retriever = inference.from_flags(fv, config)
    pool = f"the {len(index)} documents of {index.folder}"
  else:
    passages = list(dict.fromkeys(p for _, positives in examples for p in positives))
    index = index_lib.build_index(inference.from_flags(fv, config), passages,
                                  method="auto",
                                  exact_below=int(config.eval.exact_below),
                                  scann_config=config.eval.scann, progress=True)
    pool = f"the training set's {len(index)} distinct passages"
  mined, too_few = mine_hard_negatives(index, examples, num_negatives=fv.num_negatives,
                                       skip_top=fv.skip_top, depth=fv.depth or None,
                                       progress=True)
  if not mined:
    raise UserError(f"no query got {fv.num_negatives} negatives from {pool}",
                    hint="lower --num_negatives or --skip_top, or raise --depth")
  if jax.process_index() == 0:  # Every host mined the same rows; one writes them.
    write_mined(fv.out, mined, fmt)
  print(f"mined {fv.num_negatives} negatives for {len(mined)} queries from {pool} in "
        f"{time.time() - start:.1f} s (skipping the top {fv.skip_top}); {too_few} queries "
        f"left out with fewer within the top {fv.depth or 'few'}; wrote {fv.out} ({fmt}: train "
        f"with --config.data.ir.format={fmt} --config.data.ir.paths={fv.out} "
        f"--config.data.ir.num_negatives={fv.num_negatives})", flush=True)


if __name__ == "__main__":
  cli.run(main)
