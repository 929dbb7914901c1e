r"""`python -m lair.search`: the top-k documents of an index for each query, in any language.

    python -m lair.search --index=DIR "Wo wohnt Leon Novunt?" ["another question" ...]
    python -m lair.search --index=DIR --queries=queries.jsonl --format=trec > run.trec
    cat questions.txt | python -m lair.search --index=DIR --k=5 --format=jsonl

Queries come from the command line, from --queries (the corpus formats of `lair.index`:
JSONL `{"id" or "_id", "text"}` such as BEIR's queries.jsonl, TSV `id<TAB>text`, or one query
per line), or from stdin, one per line, when neither gives any (or with --queries=-). They are
embedded by the model that built the index, with its query prefix and max length (as
index.json records them); --workdir [--step] or --hf name another model of the same width
(then its config and --config.KEY=VALUE overrides apply).

Output (--format): `table` (default; per query, rank, score, id, language and text cut to 100
columns), `jsonl` (one line per query: {"qid", "query", "hits": [{"rank", "score", "id",
"lang", "text"}]}) or `trec` (a TREC run file: `qid Q0 docid rank score tag`, for trec_eval).
"""
import json
import sys
from typing import Sequence, TextIO

from absl import flags

from lair import cli
from lair import configs
from lair import index as index_lib
from lair import inference
from lair.errors import ConfigError
from lair.errors import UserError

FORMATS = ("table", "jsonl", "trec")
WIDTH = 100  # Columns of the table output.


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("index", None, "an index folder written by python -m lair.index",
                      flag_values=fv)
  flags.DEFINE_string("queries", None, "a file of queries (JSONL, TSV id<TAB>text or lines); "
                      "'-' reads stdin", flag_values=fv)
  flags.DEFINE_enum("queries_format", "auto", ("auto", "jsonl", "tsv", "lines"),
                    "how to read --queries (auto: by the file name)", flag_values=fv)
  flags.DEFINE_integer("k", 10, "results per query", flag_values=fv)
  flags.DEFINE_enum("format", "table", FORMATS, "table | jsonl | trec", flag_values=fv)
  flags.DEFINE_string("tag", "lair", "the run name of --format=trec lines", flag_values=fv)
  inference.define_model_flags(fv, required=False)


# ------------------------------------------------------------------------------------------------
# Queries.


def stdin_queries(stream: TextIO) -> list[tuple[str, str]]:
  """(qid, text) of each non-empty line; qid is the line number."""
  return [(str(n), line.strip()) for n, line in enumerate(stream, start=1) if line.strip()]


def gather_queries(positional: Sequence[str], queries_file: str, queries_format: str,
                   stdin: TextIO) -> list[tuple[str, str]]:
  """(qid, text) of the command line's queries (qids 1, 2, ...), a file's, or stdin's."""
  if positional and queries_file:
    raise ConfigError("give queries either on the command line or with --queries, not both")
  if positional:
    return [(str(i), q) for i, q in enumerate(positional, start=1) if q.strip()]
  if queries_file and queries_file != "-":
    docs, _ = index_lib.read_corpus_flags([queries_file], queries_format, "", flag="--queries")
    return [(d["id"], d["text"]) for d in docs]
  if queries_file != "-" and stdin.isatty():
    raise ConfigError('no queries: give them as arguments ("a question"), with --queries=FILE, '
                      'or on stdin, one per line')
  return stdin_queries(stdin)


# ------------------------------------------------------------------------------------------------
# Output.


def _cut(text: str, width: int) -> str:
  text = " ".join(text.split())
  return text if len(text) <= width else text[:max(width - 1, 0)] + "…"


def format_table(query: str, qid: str, hits: Sequence[index_lib.Hit], width: int = WIDTH) -> str:
  """One query's hits as a table of at most `width` columns (the text column is cut to fit)."""
  id_width = min(max([len(h.id) for h in hits] + [2]), 28)
  lang_width = max([len(h.lang) for h in hits] + [4])
  lines = [_cut(f"query {qid}: {query}", width)]
  head = f"{'rank':>4}  {'score':>6}  {'id':<{id_width}}  {'lang':<{lang_width}}  "
  text_width = max(width - len(head), 10)
  lines.append(head + "text")
  for h in hits:
    lines.append(f"{h.rank:>4}  {h.score:>6.3f}  {_cut(h.id, id_width):<{id_width}}  "
                 f"{h.lang:<{lang_width}}  {_cut(h.text, text_width)}")
  return "\n".join(lines)


def format_jsonl(query: str, qid: str, hits: Sequence[index_lib.Hit]) -> str:
  return json.dumps({"qid": qid, "query": query, "hits": [
      {"rank": h.rank, "score": round(h.score, 6), "id": h.id, "lang": h.lang, "text": h.text}
      for h in hits]}, ensure_ascii=False)


def format_trec(qid: str, hits: Sequence[index_lib.Hit], tag: str) -> str:
  """TREC run lines `qid Q0 docid rank score tag` (the format trec_eval reads)."""
  for name, value in (("query id", qid), ("--tag", tag)):
    if not value or any(c.isspace() for c in value):
      raise UserError(f"{name} {value!r}: TREC run files need ids without spaces")
  lines = []
  for h in hits:
    if any(c.isspace() for c in h.id):
      raise UserError(f"document id {h.id!r} has a space; TREC run files need ids without")
    lines.append(f"{qid} Q0 {h.id} {h.rank} {h.score:.6f} {tag}")
  return "\n".join(lines)


def write_results(out: TextIO, queries: Sequence[tuple[str, str]],
                  results: Sequence[Sequence[index_lib.Hit]], fmt: str, tag: str) -> None:
  for (qid, query), hits in zip(queries, results):
    if fmt == "table":
      out.write(format_table(query, qid, hits) + "\n\n")
    elif fmt == "jsonl":
      out.write(format_jsonl(query, qid, hits) + "\n")
    else:
      out.write(format_trec(qid, hits, tag) + "\n")


def main(argv) -> None:
  positional = []
  default = (inference.default_config_file(argv) if configs.flag_value(argv, "workdir")
             or configs.flag_value(argv, "hf") else configs.__file__)
  config, fv = configs.parse_command_line(argv, define_flags, default_config_file=default,
                                          positional=positional)
  if not fv.index:
    raise ConfigError("--index=DIR is required: a folder written by python -m lair.index")
  if fv.k <= 0:
    raise ConfigError(f"--k={fv.k}: expected a positive number of results")
  index = index_lib.load_index(fv.index)
  queries = gather_queries(positional, fv.queries, fv.queries_format, sys.stdin)
  if not queries:
    raise ConfigError("no queries: every query given is empty")
  if inference.model_named(fv):
    index.retriever = inference.from_flags(fv, config)
  results = index.search([q for _, q in queries], k=fv.k)
  write_results(sys.stdout, queries, results, fv.format, fv.tag)
  sys.stdout.flush()


if __name__ == "__main__":
  cli.run(main)
