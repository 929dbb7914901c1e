"""Training on one's own data: the JSONL {"query","pos","neg"} format, corpus files to index, and
the tokenizer trained on the data the run reads.

Each format is read from a small file written here, bad lines included; the expected rows and
skip counts are written out by hand.
"""
import json
import logging
import pathlib

import pytest

from lair import configs
from lair import objectives
from lair import workdir as workdir_lib
from lair.data import builders
from lair.data import pipeline
from lair.data import readers
from lair.train import loop

REPO = pathlib.Path(__file__).resolve().parents[1]


def _write(path: pathlib.Path, text: str) -> str:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text, encoding="utf-8")
  return str(path)


def _warnings(caplog) -> list[str]:
  return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# ----------------------------------------------------------------------------
# JSONL {"query", "pos", "neg"}.

_IR_JSONL = "\n".join([
    json.dumps({"query": "q1", "pos": ["p1a", "p1b"], "neg": ["n1a", "n1b", "n1c"]}),
    json.dumps({"query": "q2", "pos": "p2", "neg": ["n2a"], "pos_scores": [1.0],
                "prompt": "ignored"}),                                  # one neg; a lone pos
    json.dumps({"query": "q3", "pos": ["p3"]}),                         # no "neg"
    "{not json",                                                        # 4: malformed
    json.dumps(["a", "list"]),                                          # 5: malformed
    json.dumps({"pos": ["p6"], "neg": ["n6"]}),                         # 6: missing_column
    json.dumps({"query": "q7", "pos": [], "neg": ["n7"]}),              # 7: empty_text
    json.dumps({"query": "  ", "pos": ["p8"], "neg": ["n8"]}),          # 8: empty_text
    "",                                                                 # 9: empty line
    json.dumps({"query": "q10", "pos": ["p10"], "neg": [" ", "n10"]}),  # 10: empty negative
    json.dumps({"query": "q11", "pos": [3], "neg": ["n11"]}),           # 11: pos not texts
]) + "\n"


def test_read_ir_jsonl_rows_and_skips(tmp_path, caplog):
  path = _write(tmp_path / "train.jsonl", _IR_JSONL)
  log = readers.SkipLog()
  rows = list(readers.read_ir_jsonl(path, num_negatives=0, log=log))
  # One row per positive; with K = 0 negatives are not read at all.
  assert [(r["query"], r["passage"], r["negatives"]) for r in rows] == [
      ("q1", "p1a", []), ("q1", "p1b", []), ("q2", "p2", []), ("q3", "p3", []),
      ("q10", "p10", [])]
  assert log.as_dict()["skipped"] == {readers.MALFORMED: 2, readers.MISSING_COLUMN: 2,
                                      readers.EMPTY_TEXT: 3}
  assert log.kept[path] == 4  # Lines kept (q1, q2, q3, q10), not rows.
  warnings = _warnings(caplog)
  for line, reason in [(4, "malformed"), (5, "malformed"), (6, "missing_column"),
                       (7, "empty_text"), (9, "empty_text"), (11, "missing_column")]:
    assert any(f"{path}:{line}: {reason}" in w for w in warnings), (line, reason)


def test_read_ir_jsonl_negatives_and_too_few(tmp_path, caplog):
  path = _write(tmp_path / "train.jsonl", _IR_JSONL)
  log = readers.SkipLog()
  rows = list(readers.read_ir_jsonl(path, num_negatives=2, log=log))
  # The first K negatives, hardest first as written; q2 (1 negative) and q3 (none) are short.
  assert [(r["query"], r["passage"], r["negatives"]) for r in rows] == [
      ("q1", "p1a", ["n1a", "n1b"]), ("q1", "p1b", ["n1a", "n1b"])]
  # q2 has one negative, q3 none; q10's first two hold an empty one.
  assert log.as_dict()["skipped"] == {readers.MALFORMED: 2, readers.MISSING_COLUMN: 2,
                                      readers.EMPTY_TEXT: 4, readers.TOO_FEW_NEGATIVES: 2}
  assert any(f"{path}:2: too_few_negatives" in w and "expected >= 2" in w
             for w in _warnings(caplog))
  with pytest.raises(readers.DataError, match=r"train.jsonl:2: too_few_negatives"):
    list(readers.read_ir_jsonl(path, num_negatives=2, log=readers.SkipLog(strict=True)))
  assert [r["negatives"] for r in readers.read_ir(path, format="jsonl", num_negatives=1)] == [
      ["n1a"], ["n1a"], ["n2a"]]


def test_an_ir_jsonl_file_without_a_usable_line_is_an_error(tmp_path):
  path = _write(tmp_path / "bad.jsonl", '{"question": "x", "answer": "y"}\n')
  with pytest.raises(readers.DataError, match=r"bad.jsonl: no usable row"):
    list(readers.read_ir_jsonl(path))


def test_build_ir_jsonl_with_negatives(tmp_path):
  path = _write(tmp_path / "train.jsonl", _IR_JSONL)
  c = configs.default_config()
  c.data.ir.update(dict(format="jsonl", paths=[path], num_negatives=2))
  built = builders.build_ir(c, str(tmp_path / "cache"))
  rows = [built.source[i] for i in range(len(built.source))]
  assert [(r["query"], r["passage"], list(r["negatives"])) for r in rows] == [
      (b"q1", b"p1a", [b"n1a", b"n1b"]), (b"q1", b"p1b", [b"n1a", b"n1b"])]
  assert built.stats["skipped"][readers.TOO_FEW_NEGATIVES] == 2
  # Negatives only come with formats that carry them: not BEIR's qrels, and from SQuAD only as
  # other sentences of the answer's paragraph.
  c.data.ir.update(dict(format="beir",
                        paths=[str(REPO / "lair" / "data" / "quickstart" / "train.squad.json")]))
  assert any("config.data.ir.num_negatives=2" in e and "'jsonl'" in e
             for e in builders.config_errors(c, "ir"))
  c.data.ir.update(dict(format="squad", squad_target="paragraph"))
  assert any("config.data.ir.num_negatives=2" in e and "squad_target='sentence'" in e
             for e in builders.config_errors(c, "ir"))
  c.data.ir.squad_target = "sentence"
  assert not builders.config_errors(c, "ir")
  c.data.ir.format = "parquet"
  assert any("config.data.ir.format='parquet'" in e and "jsonl" in e
             for e in builders.config_errors(c, "ir"))


# ----------------------------------------------------------------------------
# Corpora to index.


def test_read_corpus_jsonl_and_beir(tmp_path, caplog):
  path = _write(tmp_path / "docs.jsonl", "\n".join([
      json.dumps({"id": "a", "text": "Alpha text.", "lang": "eng"}),
      json.dumps({"_id": "b", "title": "Beta", "text": "Beta text."}),  # BEIR: title + text
      json.dumps({"id": 3, "text": "Drei.", "language": "deu"}),        # int id, "language"
      json.dumps({"text": "no id"}),                                    # 4: missing_column
      json.dumps({"id": "e", "text": ""}),                              # 5: empty_text
      json.dumps({"id": "a", "text": "Again a."}),                      # 6: duplicate_id
      "[1, 2]",                                                         # 7: malformed
      json.dumps({"id": "h", "text": ["not", "a", "string"]}),          # 8: malformed
  ]) + "\n")
  log = readers.SkipLog()
  docs = list(readers.read_corpus(path, language="fra", log=log))
  assert docs == [{"id": "a", "text": "Alpha text.", "lang": "eng"},
                  {"id": "b", "text": "Beta Beta text.", "lang": "fra"},
                  {"id": "3", "text": "Drei.", "lang": "deu"}]
  assert log.as_dict()["skipped"] == {readers.MISSING_COLUMN: 1, readers.EMPTY_TEXT: 1,
                                      readers.DUPLICATE_ID: 1, readers.MALFORMED: 2}
  warnings = _warnings(caplog)
  assert any(f"{path}:6: duplicate_id" in w and f"{path}:1" in w for w in warnings)
  assert any(f"{path}:4: missing_column" in w for w in warnings)
  # A BEIR folder is its corpus.jsonl.
  beir = tmp_path / "beir"
  _write(beir / "corpus.jsonl", json.dumps({"_id": "d1", "title": "T", "text": "x"}) + "\n")
  assert list(readers.read_corpus(str(beir))) == [{"id": "d1", "text": "T x", "lang": ""}]


def test_read_corpus_tsv_lines_and_language_specs(tmp_path, caplog):
  tsv = _write(tmp_path / "collection.tsv",
               "id\ttext\n"          # 1: header
               "7\tSieben.\n"
               "8\n"                 # 3: missing_column
               "9\ta\tb\n"           # 4: malformed
               "10\t \n")            # 5: empty_text
  lines = _write(tmp_path / "fr.txt", "Un.\n\nDeux.\n")  # 2: empty line
  log = readers.SkipLog()
  docs = list(readers.read_corpus([f"deu:{tsv}", lines], language="fra", log=log))
  assert docs == [{"id": "7", "text": "Sieben.", "lang": "deu"},
                  {"id": "fr.txt:1", "text": "Un.", "lang": "fra"},
                  {"id": "fr.txt:3", "text": "Deux.", "lang": "fra"}]
  files = log.as_dict()["files"]
  assert files[tsv]["skipped"] == {readers.HEADER: 1, readers.MISSING_COLUMN: 1,
                                   readers.MALFORMED: 1, readers.EMPTY_TEXT: 1}
  assert files[lines] == {"rows": 2, "skipped": {readers.EMPTY_TEXT: 1}}
  assert any(f"{tsv}:4: malformed" in w for w in _warnings(caplog))
  # The format by name can be overridden: the TSV read as lines keeps whole lines.
  as_lines = list(readers.read_corpus(tsv, format="lines"))
  assert as_lines[1] == {"id": "collection.tsv:2", "text": "7\tSieben.", "lang": ""}


def test_corpus_errors_name_the_file(tmp_path):
  empty = _write(tmp_path / "empty.txt", "\n \n")
  with pytest.raises(readers.DataError, match=r"empty.txt: no usable document"):
    list(readers.read_corpus(empty))
  with pytest.raises(FileNotFoundError, match=r"missing.jsonl"):
    list(readers.read_corpus(str(tmp_path / "missing.jsonl")))
  with pytest.raises(readers.DataError, match=r"corpus format 'csv'"):
    list(readers.read_corpus(empty, format="csv"))


# ----------------------------------------------------------------------------
# The tokenizer learns from the data the run reads.


def _own_data(tmp_path) -> dict:
  """A user's own IR data (JSONL) and parallel pairs, in words the quickstart never uses."""
  ir = _write(tmp_path / "own" / "train.jsonl", "".join(
      json.dumps({"query": f"zorblat quixote {i}?", "pos": [f"flimwazzle answer {i}."],
                  "neg": [f"grobnitz {i}."]}) + "\n" for i in range(40)))
  par = _write(tmp_path / "own" / "en-deu.tsv", "source\teng\tdeu\n" + "".join(
      f"own\tplumbusk {i}\tschnurzelwerk {i}\n" for i in range(40)))
  return {"ir": ir, "parallel": par}


def _config(data: dict):
  c = configs.load_config(str(REPO / "configs" / "quickstart.py"))
  with c.unlocked():
    c.data.ir.update(dict(format="jsonl", paths=[data["ir"]], num_negatives=1))
    c.data.parallel.paths = [data["parallel"]]
    c.loss.language_weight = 0.0
    c.data.mono.paths = []  # Only the IR and parallel streams are read.
    c.data.languages = ["eng", "deu"]
  return c


def test_a_stream_the_config_names_shapes_the_tokenizer_even_with_its_loss_off(tmp_path):
  """Runs that compare loss settings on the same files share one vocabulary: a stream whose
  files are named counts, whatever its loss weight; one with no files does not."""
  c = _config(_own_data(tmp_path))
  plan = objectives.plan_objectives(c)
  assert "mono" not in plan.streams
  assert pipeline.named_streams(c, plan) == ("ir", "parallel")
  with c.unlocked():
    c.data.mono.paths = configs.load_config(str(REPO / "configs" / "quickstart.py")).data.mono.paths
  assert pipeline.named_streams(c, objectives.plan_objectives(c)) == ("ir", "parallel", "mono")


def test_tokenizer_trains_on_the_streams_the_run_reads(tmp_path):
  c = _config(_own_data(tmp_path))
  assert not c.tokenizer.train_files  # The quickstart now names no tokenizer files.
  run = workdir_lib.Workdir(tmp_path / "run")
  tokenizer = loop.make_tokenizer(c, run)
  vocab = tokenizer.get_vocab()
  # Words of the user's files (the IR rows, the negatives, both sides of the pairs) are pieces;
  # words only the quickstart files (the config's defaults, overridden here) hold are not.
  for word in ("zorblat", "flimwazzle", "grobnitz", "plumbusk", "schnurzelwerk"):
    assert word in vocab, word
  for word in ("balesko", "lomander", "geige"):
    assert word not in vocab, word
  # The texts are the rows the builders wrote (the caches training reuses).
  texts = list(pipeline.stream_texts(c, cache_dir=run.data_dir))
  assert texts[:3] == ["zorblat quixote 0?", "flimwazzle answer 0.", "grobnitz 0."]
  assert texts[-2:] == ["plumbusk 39", "schnurzelwerk 39"]
  assert len(texts) == 40 * 3 + 40 * 2


def test_tokenizer_train_files_still_win(tmp_path):
  c = _config(_own_data(tmp_path))
  with c.unlocked():
    c.tokenizer.train_files = [str(REPO / "lair" / "data" / "quickstart" / "mono.deu.txt")]
  vocab = loop.make_tokenizer(c, workdir_lib.Workdir(tmp_path / "run")).get_vocab()
  assert "balesko" in vocab and "geige" in vocab and "zorblat" not in vocab
  assert not (tmp_path / "run").exists()  # Nothing was built for the tokenizer.
