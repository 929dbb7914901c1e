"""Readers and array_record builders of lair.data, on fixtures and on the real shared data.

Expected rows and counts are written out by hand (fixtures) or counted independently
(line counts, a walk of the JSON) for the real files.
"""
import json
import logging
import os
import pathlib
import subprocess
import sys
import time

import pytest

from lair import configs
from lair.data import builders
from lair.data import readers

LANGS = ["eng", "deu", "spa"]


def _write(path: pathlib.Path, text: str) -> str:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text, encoding="utf-8")
  return str(path)


def _warnings(caplog) -> list[str]:
  return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# ----------------------------------------------------------------------------
# Sentence splitting.


@pytest.mark.parametrize("text, sentences", [
    ("One. Two! Three?", ["One.", "Two!", "Three?"]),
    ('He said "Go." Then he left.', ['He said "Go."', "Then he left."]),
    ("It costs 3.5 dollars, e.g. today. Next one.", ["It costs 3.5 dollars, e.g. today.",
                                                      "Next one."]),
    ("中文。好的！ok", ["中文。", "好的！", "ok"]),
    ("  lead space.  Трава зелёная. ещё", ["lead space.", "Трава зелёная. ещё"]),
])
def test_split_sentences(text, sentences):
  spans = readers.split_sentences(text)
  assert [text[s:e] for s, e in spans] == sentences


def test_split_sentences_mostly_agrees_with_xquad_r(shared_data):
  # XQuAD-R ships its own sentence breaks: an independent reference for English.
  data = json.loads((shared_data / "xquad-r" / "en.json").read_text())
  paragraphs = [p for a in data["data"] for p in a["paragraphs"]]
  same = sum(readers.split_sentences(p["context"]) == [tuple(b) for b in p["sentence_breaks"]]
             for p in paragraphs)
  assert same / len(paragraphs) > 0.8


def test_answer_sentence_span_takes_every_sentence_the_answer_touches():
  breaks = [(0, 4), (5, 10), (11, 20)]
  assert readers.answer_sentence_span(breaks, 6, 8) == (5, 10)
  assert readers.answer_sentence_span(breaks, 2, 7) == (0, 10)


# ----------------------------------------------------------------------------
# SQuAD.

_CONTEXT = "Paris is in France. The Seine flows through it. It is big."


def _squad_fixture(tmp_path) -> str:
  data = {"version": "1.1", "data": [{"title": "t", "paragraphs": [
      {"context": _CONTEXT, "qas": [
          {"id": "q1", "question": "Where is Paris?",
           "answers": [{"text": "France", "answer_start": 12}]},
          # answer_start is wrong but the text is there: kept, found by its text.
          {"id": "q2", "question": "What flows?",
           "answers": [{"text": "The Seine", "answer_start": 0}]},
          {"id": "q3", "question": "  ", "answers": [{"text": "big", "answer_start": 54}]},
          {"id": "q4", "question": "Who?", "answers": [{"text": "Napoleon", "answer_start": 3}]},
          {"id": "q5", "answers": [{"text": "big", "answer_start": 54}]},
      ]},
      {"context": "", "qas": [{"id": "q6", "question": "Anything?", "answers": []}]},
  ]}]}
  return _write(tmp_path / "squad.json", json.dumps(data))


def test_read_squad_sentence_and_paragraph_targets(tmp_path, caplog):
  path = _squad_fixture(tmp_path)
  log = readers.SkipLog()
  rows = list(readers.read_squad(path, target="sentence", log=log))
  assert [(r["query"], r["passage"]) for r in rows] == [
      ("Where is Paris?", "Paris is in France."),
      ("What flows?", "The Seine flows through it.")]
  assert log.as_dict()["skipped"] == {readers.EMPTY_TEXT: 2, readers.ANSWER_NOT_IN_CONTEXT: 1,
                                      readers.MISSING_COLUMN: 1}
  assert log.as_dict()["rows"] == 2
  warnings = _warnings(caplog)
  assert any(f"{path}:data[0].paragraphs[0].qas[3] (id q4)" in w for w in warnings)
  assert any(f"{path}:data[0].paragraphs[1].qas[0]" in w for w in warnings)
  rows = list(readers.read_squad(path, target="paragraph"))
  assert [r["passage"] for r in rows] == [_CONTEXT, _CONTEXT]


def test_read_squad_negatives_are_the_other_sentences_of_the_paragraph(tmp_path):
  path = _squad_fixture(tmp_path)
  sentences = ["Paris is in France.", "The Seine flows through it.", "It is big."]
  # q1's answer is in sentence 0 and q2's in sentence 1: with K = 2 each gets the other two.
  rows = list(readers.read_squad(path, num_negatives=2))
  assert [(r["passage"], sorted(r["negatives"])) for r in rows] == [
      (sentences[0], sorted(sentences[1:])), (sentences[1], sorted([sentences[0], sentences[2]]))]
  # K = 1: one of them, the same on every read.
  once = [r["negatives"] for r in readers.read_squad(path, num_negatives=1)]
  assert once == [r["negatives"] for r in readers.read_squad(path, num_negatives=1)]
  assert once[0][0] in sentences[1:] and once[1][0] in (sentences[0], sentences[2])
  # K = 3: more than the paragraph has, so every question is a too_few_negatives skip.
  log = readers.SkipLog()
  with pytest.raises(readers.DataError, match="no usable question"):
    list(readers.read_squad(path, num_negatives=3, log=log))
  assert log.skipped[path][readers.TOO_FEW_NEGATIVES] == 2 and log.kept[path] == 0
  with pytest.raises(readers.DataError, match="squad_target='sentence'"):
    list(readers.read_squad(path, target="paragraph", num_negatives=1))


def test_read_squad_strict_raises_naming_the_question(tmp_path):
  path = _squad_fixture(tmp_path)
  with pytest.raises(readers.DataError, match=r"squad.json:data\[0\].paragraphs\[0\].qas\[2\]"):
    list(readers.read_squad(path, log=readers.SkipLog(strict=True)))


def test_read_squad_with_no_usable_question_is_an_error(tmp_path):
  path = _write(tmp_path / "bad.json", json.dumps({"data": [{"paragraphs": [
      {"context": "abc", "qas": [{"id": "x", "question": "q?", "answers": [
          {"text": "zzz", "answer_start": 0}]}]}]}]}))
  with pytest.raises(readers.DataError, match="no usable question"):
    list(readers.read_squad(path))
  with pytest.raises(readers.DataError, match="not valid JSON"):
    list(readers.read_squad(_write(tmp_path / "broken.json", "{\"data\": [")))


def _squad_question_count(path) -> int:
  data = json.loads(pathlib.Path(path).read_text())
  return sum(len(p["qas"]) for a in data["data"] for p in a["paragraphs"])


def test_read_squad_real(shared_data):
  path = shared_data / "squad" / "dev-v1.1.minus_xquad_paragraphs.json"
  log = readers.SkipLog()
  rows = list(readers.read_squad(path, log=log))
  skipped = sum(log.as_dict()["skipped"].values())
  assert len(rows) == _squad_question_count(path) - skipped
  assert len(rows) > 9000


# ----------------------------------------------------------------------------
# XQuAD-R / LAReQA.


def test_read_lareqa_fixture(tmp_path):
  context = "A b. C d. E f."
  path = _write(tmp_path / "de.json", json.dumps({"data": [{"paragraphs": [
      {"context": context, "sentences": ["A b.", "C d.", "E f."],
       "sentence_breaks": [[0, 4], [5, 9], [10, 14]],
       "qas": [{"id": "1", "question": "q1", "answers": [{"text": "d", "answer_start": 7}]},
               {"id": "2", "question": "q2", "answers": [{"text": "A", "answer_start": 0}]}]},
      {"context": "No questions here.", "qas": []},
  ]}]}))
  s = readers.read_lareqa(path)
  assert s.language == "de"
  assert s.question_ids == ["1", "2"]
  assert s.sentences == ["A b.", "C d.", "E f.", "No questions here."]
  assert [s.sentences[a] for a in s.answer] == ["C d.", "A b."]
  assert s.sentence_context == [0, 0, 0, 1]


@pytest.mark.parametrize("lang", ["en", "ru"])
def test_read_lareqa_real(shared_data, lang):
  path = shared_data / "xquad-r" / f"{lang}.json"
  data = json.loads(path.read_text())
  s = readers.read_lareqa(path)
  assert len(s.questions) == _squad_question_count(path) == 1190
  assert len(s.sentences) == sum(len(p["sentences"]) for a in data["data"]
                                 for p in a["paragraphs"])
  # Independent reference: the given sentence whose break holds answer_start.
  expected = {}
  for a in data["data"]:
    for p in a["paragraphs"]:
      for q in p["qas"]:
        start = q["answers"][0]["answer_start"]
        expected[q["id"]] = next(text for (b, e), text in zip(p["sentence_breaks"], p["sentences"])
                                 if b <= start < e).replace("\ufeff", "").strip()
  assert [s.sentences[a] for a in s.answer] == [expected[i] for i in s.question_ids]


# ----------------------------------------------------------------------------
# Triples, parallel TSV, aligned pairs, monolingual.


def test_read_triples_counts_and_negatives(tmp_path, caplog):
  path = _write(tmp_path / "triples.tsv",
                "q1\tp1\tn1\n"
                "q2\tp2\n"  # no negative: fine for K=0, missing column for K=1
                "only-one-column\n"
                "q4\t \tn4\n")
  log = readers.SkipLog()
  rows = list(readers.read_triples(path, num_negatives=0, log=log))
  assert [(r["query"], r["passage"], r["negatives"]) for r in rows] == [
      ("q1", "p1", []), ("q2", "p2", [])]
  assert log.as_dict()["skipped"] == {readers.MISSING_COLUMN: 1, readers.EMPTY_TEXT: 1}
  assert any(f"{path}:3:" in w and "missing_column" in w for w in _warnings(caplog))
  assert any(f"{path}:4:" in w and "empty_text" in w for w in _warnings(caplog))
  log = readers.SkipLog()
  rows = list(readers.read_triples(path, num_negatives=1, log=log))
  assert [r["negatives"] for r in rows] == [["n1"]]
  assert log.as_dict()["skipped"] == {readers.MISSING_COLUMN: 2, readers.EMPTY_TEXT: 1}
  with pytest.raises(readers.DataError, match=r"triples.tsv:2: missing_column"):
    list(readers.read_triples(path, num_negatives=1, log=readers.SkipLog(strict=True)))


_PARALLEL_TSV = ("source\teng\tdeu\n"
                 "sub/a\tHello.\tHallo.\n"
                 "sub/a\tMissing.\n"
                 "sub/a\tToo\tmany\tcolumns\n"
                 "sub/b\t\tLeer.\n"
                 "sub/b\tGood night.\tGute Nacht.\n")


def test_read_parallel_tsv(tmp_path, caplog):
  path = _write(tmp_path / "en-deu.tsv", _PARALLEL_TSV)
  log = readers.SkipLog()
  rows = list(readers.read_parallel_tsv(path, languages=LANGS, log=log))
  assert rows == [
      {"src": "Hello.", "tgt": "Hallo.", "src_lang": 0, "tgt_lang": 1},
      {"src": "Good night.", "tgt": "Gute Nacht.", "src_lang": 0, "tgt_lang": 1}]
  assert log.as_dict()["skipped"] == {readers.MISSING_COLUMN: 1, readers.MALFORMED: 1,
                                      readers.EMPTY_TEXT: 1}
  warnings = _warnings(caplog)
  for line, reason in [(3, "missing_column"), (4, "malformed"), (5, "empty_text")]:
    assert any(f"{path}:{line}: {reason}" in w for w in warnings)
  with pytest.raises(readers.DataError, match=r"en-deu.tsv:3: missing_column"):
    list(readers.read_parallel_tsv(path, languages=LANGS, log=readers.SkipLog(strict=True)))


def test_read_parallel_tsv_unknown_language_and_bad_files(tmp_path, caplog):
  path = _write(tmp_path / "en-fra.tsv", "source\teng\tfra\nx\tHi.\tSalut.\nx\tNo.\tNon.\n")
  log = readers.SkipLog()
  assert list(readers.read_parallel_tsv(path, languages=LANGS, log=log)) == []
  assert log.as_dict()["skipped"] == {readers.UNKNOWN_LANGUAGE: 2}
  assert any(f"{path}:2: unknown_language" in w for w in _warnings(caplog))
  with pytest.raises(readers.DataError, match="unknown_language"):
    list(readers.read_parallel_tsv(path, languages=LANGS, log=readers.SkipLog(strict=True)))
  no_header = _write(tmp_path / "nohead.tsv", "x\tHi there.\tHallo da.\n")
  with pytest.raises(readers.DataError, match=r"nohead.tsv:1: expected a header"):
    list(readers.read_parallel_tsv(no_header, languages=LANGS))
  all_bad = _write(tmp_path / "bad.tsv", "source\teng\tdeu\nx\t\t\n")
  with pytest.raises(readers.DataError, match="no usable pair"):
    list(readers.read_parallel_tsv(all_bad, languages=LANGS))


def test_read_aligned_specs(tmp_path, caplog):
  _write(tmp_path / "tatoeba.spa-eng.spa", "Hola.\n\nAdiós.\n")
  _write(tmp_path / "tatoeba.spa-eng.eng", "Hello.\nEmpty other side.\nBye.\n")
  prefix = str(tmp_path / "tatoeba.spa-eng")
  log = readers.SkipLog()
  rows = list(readers.read_aligned(prefix, languages=LANGS, log=log))
  assert rows == [{"src": "Hola.", "tgt": "Hello.", "src_lang": 2, "tgt_lang": 0},
                  {"src": "Adiós.", "tgt": "Bye.", "src_lang": 2, "tgt_lang": 0}]
  assert log.as_dict()["skipped"] == {readers.EMPTY_TEXT: 1}
  assert any(f"{prefix}.spa:2: empty_text" in w for w in _warnings(caplog))
  explicit = f"eng:{prefix}.eng,spa:{prefix}.spa"
  rows = list(readers.read_aligned(explicit, languages=LANGS))
  assert rows[0] == {"src": "Hello.", "tgt": "Hola.", "src_lang": 0, "tgt_lang": 2}
  assert readers.read_tatoeba(f"{prefix}.spa", f"{prefix}.eng") == (
      ["Hola.", "Adiós."], ["Hello.", "Bye."])
  _write(tmp_path / "short.eng", "one\n")
  with pytest.raises(readers.DataError, match="line-aligned"):
    readers.read_tatoeba(f"{prefix}.spa", str(tmp_path / "short.eng"))
  with pytest.raises(readers.DataError, match="config.data.parallel.paths entry"):
    readers.parse_aligned_spec(str(tmp_path / "no-languages"))


def test_read_mono(tmp_path, caplog):
  path = _write(tmp_path / "de.txt", "\ufeffEin Satz.\n\n  \nNoch einer.\n")  # BOM dropped
  log = readers.SkipLog()
  rows = list(readers.read_mono(f"deu:{path}", languages=LANGS, log=log))
  assert rows == [{"text": "Ein Satz.", "lang": 1}, {"text": "Noch einer.", "lang": 1}]
  assert log.as_dict()["skipped"] == {readers.EMPTY_TEXT: 2}
  assert any(f"{path}:3: empty_text" in w for w in _warnings(caplog))
  log = readers.SkipLog()
  assert list(readers.read_mono(f"fra:{path}", languages=LANGS, log=log)) == []
  assert log.as_dict()["skipped"] == {readers.UNKNOWN_LANGUAGE: 4}
  with pytest.raises(readers.DataError, match="config.data.mono.paths entry"):
    readers.parse_mono_spec(path)


def _line_count(path) -> int:
  with open(path, "rb") as f:
    return f.read().count(b"\n")


@pytest.mark.parametrize("lang", ["ara", "deu", "ell", "hin", "ron", "rus", "spa", "tha",
                                  "tur", "vie", "zho"])
def test_read_parallel_tsv_real(shared_data, lang):
  path = shared_data / "parallel" / f"en-{lang}.tsv"
  log = readers.SkipLog()
  rows = list(readers.read_parallel_tsv(path, languages=["eng", lang], log=log))
  skipped = sum(log.as_dict()["skipped"].values())
  assert len(rows) == _line_count(path) - 1 - skipped  # minus the header
  assert {(r["src_lang"], r["tgt_lang"]) for r in rows} == {(0, 1)}


@pytest.mark.parametrize("lang", ["deu", "cmn", "swg"])
def test_read_tatoeba_real(shared_data, lang):
  src = shared_data / "tatoeba" / f"tatoeba.{lang}-eng.{lang}"
  tgt = shared_data / "tatoeba" / f"tatoeba.{lang}-eng.eng"
  log = readers.SkipLog()
  a, b = readers.read_tatoeba(src, tgt, log=log)
  skipped = sum(log.as_dict()["skipped"].values())
  assert len(a) == len(b) == _line_count(src) - skipped


# ----------------------------------------------------------------------------
# BEIR.


def _beir_fixture(tmp_path) -> pathlib.Path:
  root = tmp_path / "beir"
  _write(root / "corpus.jsonl", "\n".join([
      json.dumps({"_id": "d1", "title": "Cats", "text": "Cats purr."}),
      json.dumps({"_id": "d2", "title": "", "text": "Dogs bark."}),
      "{not json",
      json.dumps({"title": "no id", "text": "x"}),
      json.dumps({"_id": "d5", "title": "", "text": ""}),
  ]) + "\n")
  _write(root / "queries.jsonl", "\n".join([
      json.dumps({"_id": "q1", "text": "what purrs"}),
      json.dumps({"_id": "q2", "text": "what barks"}),
  ]) + "\n")
  _write(root / "qrels" / "train.tsv",
         "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\nq2\td1\t0\n"
         "q9\td1\t1\nq1\td9\t1\nq1\td2\tx\nq1\n")
  return root


def test_read_beir(tmp_path, caplog):
  root = _beir_fixture(tmp_path)
  log = readers.SkipLog()
  beir = readers.read_beir(root, split="train", log=log)
  assert beir.corpus == {"d1": {"title": "Cats", "text": "Cats purr."},
                         "d2": {"title": "", "text": "Dogs bark."}}
  assert beir.queries == {"q1": "what purrs", "q2": "what barks"}
  assert beir.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2, "d1": 0}}
  files = log.as_dict()["files"]
  assert files[str(root / "corpus.jsonl")]["skipped"] == {
      readers.MALFORMED: 1, readers.MISSING_COLUMN: 1, readers.EMPTY_TEXT: 1}
  assert files[str(root / "qrels" / "train.tsv")]["skipped"] == {
      readers.UNKNOWN_ID: 2, readers.MALFORMED: 1, readers.MISSING_COLUMN: 1}
  assert any(f"{root / 'corpus.jsonl'}:3: malformed" in w for w in _warnings(caplog))
  pairs = list(readers.read_beir_pairs(root, split="train"))
  assert [(p["query"], p["passage"]) for p in pairs] == [
      ("what purrs", "Cats Cats purr."), ("what barks", "Dogs bark.")]
  with pytest.raises(readers.DataError, match=r"qrels/test.tsv not found"):
    readers.read_beir(root, split="test")


# ----------------------------------------------------------------------------
# Builders.


def _config(**data):
  c = configs.default_config()
  c.data.languages = list(LANGS)
  for key, value in data.items():
    c.data[key] = value
  return c


def test_build_ir_triples_matches_reader_and_caches(tmp_path, monkeypatch):
  path = _write(tmp_path / "t.tsv", "q1\tp1\tn1\nq2\tp2\tn2\nbad\n")
  c = _config()
  c.data.ir.update(dict(format="triples", paths=[path], num_negatives=1))
  built = builders.build_ir(c, str(tmp_path / "cache"))
  rows = [built.source[i] for i in range(len(built.source))]
  assert [(r["query"], r["passage"], list(r["negatives"])) for r in rows] == [
      (b"q1", b"p1", [b"n1"]), (b"q2", b"p2", [b"n2"])]
  assert built.stats["rows"] == 2
  assert built.stats["skipped"] == {readers.MISSING_COLUMN: 1}
  # Same inputs: reused without reading the file again, with the same counts.
  monkeypatch.setattr(readers, "read_triples", lambda *a, **k: 1 / 0)
  again = builders.build_ir(c, str(tmp_path / "cache"))
  assert again.data_dir == built.data_dir and again.stats == built.stats
  monkeypatch.undo()
  # A changed file or option is a new build.
  _write(tmp_path / "t.tsv", "q1\tp1\tn1\nq3\tp3\tn3\nq4\tp4\tn4\n")
  changed = builders.build_ir(c, str(tmp_path / "cache"))
  assert changed.data_dir != built.data_dir and len(changed.source) == 3
  c.data.strict = True
  _write(tmp_path / "t.tsv", "q1\tp1\n")
  with pytest.raises(readers.DataError, match=r"t.tsv:1: missing_column"):
    builders.build_ir(c, str(tmp_path / "cache"))


def test_build_errors_name_config_keys(tmp_path):
  c = _config()
  c.data.ir.update(dict(format="squad", paths=[], num_negatives=0))
  with pytest.raises(readers.DataError, match="config.data.ir.paths"):
    builders.build_ir(c, str(tmp_path))
  c.data.ir.update(dict(paths=[str(tmp_path / "missing.json")]))
  with pytest.raises(readers.DataError, match=r"config.data.ir.paths: .*missing.json: no such file"):
    builders.build_ir(c, str(tmp_path))
  c.data.ir.update(dict(format="beir", num_negatives=2))
  with pytest.raises(readers.DataError, match="config.data.ir.num_negatives"):
    builders.build_ir(c, str(tmp_path))
  # Every parallel file in an unknown language: no usable rows in the stream.
  c.data.parallel.paths = [_write(tmp_path / "en-fra.tsv", "source\teng\tfra\nx\ta\tb\n")]
  with pytest.raises(readers.DataError, match="stream 'parallel': no usable rows"):
    builders.build_parallel(c, str(tmp_path))


def test_build_parallel_cap_and_mono(tmp_path):
  tsv = "source\teng\tdeu\n" + "".join(f"s\ten {i}\tde {i}\n" for i in range(10))
  c = _config()
  c.data.parallel.paths = [_write(tmp_path / "en-deu.tsv", tsv),
                           _write(tmp_path / "en-spa.tsv", tsv.replace("deu", "spa"))]
  c.data.parallel.max_pairs_per_language = 4
  built = builders.build_parallel(c, str(tmp_path / "cache"))
  rows = [built.source[i] for i in range(len(built.source))]
  assert [(r["src_lang"], r["tgt_lang"]) for r in rows] == [(0, 1)] * 4 + [(0, 2)] * 4
  assert all(r["tgt"].decode().split()[1] == r["src"].decode().split()[1] for r in rows)
  de, es = _write(tmp_path / "de.txt", "a\n\nb\n"), _write(tmp_path / "es.txt", "c\n")
  c.data.mono.paths = [f"deu:{de}", f"spa:{es}"]
  mono = builders.build_mono(c, str(tmp_path / "cache"))
  assert [(mono.source[i]["text"], mono.source[i]["lang"]) for i in range(3)] == [
      (b"a", 1), (b"b", 1), (b"c", 2)]
  assert mono.stats["skipped"] == {readers.EMPTY_TEXT: 1}


def test_build_real_squad_and_parallel(shared_data, tmp_path):
  squad = shared_data / "squad" / "dev-v1.1.minus_xquad_paragraphs.json"
  c = _config()
  c.data.languages = ["eng", "tha", "vie"]
  c.data.ir.paths = [str(squad)]
  ir = builders.build_ir(c, str(tmp_path))
  assert len(ir.source) == _squad_question_count(squad) - sum(ir.stats["skipped"].values())
  files = [shared_data / "parallel" / f"en-{x}.tsv" for x in ("tha", "vie")]
  c.data.parallel.paths = [str(f) for f in files]
  par = builders.build_parallel(c, str(tmp_path))
  expected = sum(_line_count(f) - 1 for f in files) - sum(par.stats["skipped"].values())
  assert len(par.source) == par.stats["rows"] == expected


def test_build_ir_beir_counts_positive_pairs(tmp_path):
  root = _beir_fixture(tmp_path)
  c = _config()
  c.data.ir.update(dict(format="beir", paths=[str(root)], num_negatives=0))
  built = builders.build_ir(c, str(tmp_path / "cache"))
  # The fixture's qrels, read by hand: q1-d1 (1) and q2-d2 (2) are positive, q2-d1 is 0.
  assert len(built.source) == built.stats["rows"] == 2
  assert "capped" not in built.stats
  assert built.stats["skipped"][readers.UNKNOWN_ID] == 2
  # Documents and queries but no positive judgement: an error naming the folder.
  _write(root / "qrels" / "train.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t0\n")
  with pytest.raises(readers.DataError, match=f"{root}: no usable positive qrels pair"):
    builders.build_ir(c, str(tmp_path / "cache"))


def test_build_parallel_reports_capped(tmp_path):
  tsv = "source\teng\tdeu\n" + "".join(f"s\ten {i}\tde {i}\n" for i in range(10))
  c = _config()
  c.data.parallel.paths = [_write(tmp_path / "en-deu.tsv", tsv)]
  c.data.parallel.max_pairs_per_language = 4
  built = builders.build_parallel(c, str(tmp_path / "cache"))
  assert built.stats["rows"] == 4 and built.stats["capped"] == 10 - 4


_CONCURRENT_BUILD = """
import sys, time
from lair.data import builders
cache_dir, barrier = sys.argv[1], float(sys.argv[2])
features = builders.tfds.features.FeaturesDict({"text": builders.tfds.features.Text()})

def rows(log):
  print("BUILDING", flush=True)
  time.sleep(1.0)  # Both processes are inside the build at once without the lock.
  yield from ({"text": f"row {i}"} for i in range(5))

time.sleep(max(0.0, barrier - time.time()))
built = builders.build_rows("mono", features, rows, files=[], options={}, cache_dir=cache_dir,
                            strict=False)
print("ROWS", len(built.source), sorted(built.source[i]["text"].decode() for i in range(5)))
"""


def test_two_processes_building_one_stream_build_it_once(tmp_path):
  """Runs sharing a cache_dir may build the same stream at the same moment: both get the rows,
  built by one of them (without the lock tfds's final rename failed in the later one)."""
  barrier = time.time() + 8  # Past both interpreters' start-up: they enter the build together.
  procs = [subprocess.Popen([sys.executable, "-c", _CONCURRENT_BUILD, str(tmp_path / "cache"),
                             str(barrier)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for _ in range(2)]
  outputs = [proc.communicate(timeout=300) for proc in procs]
  for proc, (out, err) in zip(procs, outputs):
    assert proc.returncode == 0, err[-2000:]
  want = "ROWS 5 " + str(sorted(f"row {i}" for i in range(5)))
  assert [out.splitlines()[-1] for out, _ in outputs] == [want, want]
  assert sum(out.count("BUILDING") for out, _ in outputs) == 1


# ----------------------------------------------------------------------------
# Bad bytes, missing ids and headers: named at their exact file and line.


def _tsv_with_bad_byte(path: pathlib.Path, lines: int, bad_line: int) -> str:
  """A parallel TSV of `lines` lines (header included) whose line `bad_line` holds byte 0xff."""
  rows = [b"source\teng\tdeu"] + [f"s\ten {i}\tde {i}".encode() for i in range(2, lines + 1)]
  rows[bad_line - 1] = b"s\ten bad\tde \xff bad"
  path.write_bytes(b"\n".join(rows) + b"\n")
  return str(path)


@pytest.mark.parametrize("bad_line", [8, 1500])
def test_invalid_utf8_is_named_at_its_line_and_skipped_outside_strict(tmp_path, caplog,
                                                                      bad_line):
  path = _tsv_with_bad_byte(tmp_path / "en-deu.tsv", 2000, bad_line)
  log = readers.SkipLog()
  rows = list(readers.read_parallel_tsv(path, languages=LANGS, log=log))
  assert len(rows) == 1998  # 1999 pairs, one of them skipped.
  assert log.skipped[path] == {readers.NOT_UTF8: 1}
  assert any(f"{path}:{bad_line}: not_utf8" in w for w in _warnings(caplog))
  with pytest.raises(readers.DataError, match=rf"{path}:{bad_line}: not_utf8"):
    list(readers.read_parallel_tsv(path, languages=LANGS, log=readers.SkipLog(strict=True)))
  # Without a skip log (a reader that cannot skip), the error names the same line.
  with pytest.raises(readers.DataError, match=rf"{path}:{bad_line}: not UTF-8"):
    list(readers.read_lines(path))


def test_invalid_utf8_in_aligned_files_skips_the_pair_and_keeps_the_alignment(tmp_path):
  src = tmp_path / "t.deu-eng.deu"
  tgt = tmp_path / "t.deu-eng.eng"
  src.write_bytes(b"eins\nzwei \xfe\ndrei\n")
  tgt.write_bytes(b"one\ntwo\nthree\n")
  log = readers.SkipLog()
  assert list(readers.iter_aligned_lines(str(src), str(tgt), log=log)) == [
      (1, "eins", "one"), (3, "drei", "three")]
  assert log.skipped[str(src)] == {readers.NOT_UTF8: 1}


def test_non_utf8_squad_json_names_the_file_and_line(tmp_path):
  path = tmp_path / "bad.json"
  path.write_bytes(b'{"data": [\n {"title": "x",\n  "paragraphs": [{"context": "caf\xe9"}]}]}\n')
  with pytest.raises(readers.DataError, match=rf"{path}:3: not UTF-8"):
    list(readers.read_squad(str(path)))


def test_lareqa_questions_without_ids_are_an_error_naming_the_file(tmp_path):
  context = "Berlin is big. Paris is old."
  data = {"data": [{"paragraphs": [{
      "context": context, "sentence_breaks": [[0, 14], [15, 28]],
      "qas": [{"id": "q1", "question": "Big?", "answers": [{"text": "big", "answer_start": 10}]},
              {"question": "Old?", "answers": [{"text": "old", "answer_start": 24}]}]}]}]}
  path = _write(tmp_path / "en.json", json.dumps(data))
  with pytest.raises(readers.DataError,
                     match=rf"{path}: data\[0\]\.paragraphs\[0\]\.qas\[1\] has no 'id'"):
    readers.read_lareqa(path)
  # SQuAD training rows need no ids.
  assert len(list(readers.read_squad(path))) == 2


@pytest.mark.parametrize("header", ["query\tpassage", "query\tpositive\tnegative",
                                    "Question\tPassage\tNegative_1"])
def test_a_triples_header_is_recognised_skipped_and_counted(tmp_path, header):
  path = _write(tmp_path / "t.tsv", f"{header}\nwho\tthe one\tnot\nwhat\tthat\tthis\n")
  log = readers.SkipLog()
  rows = list(readers.read_triples(path, log=log))
  assert [r["query"] for r in rows] == ["who", "what"]
  assert log.skipped[path] == {readers.HEADER: 1}


def test_a_first_line_of_text_is_not_a_header(tmp_path):
  path = _write(tmp_path / "t.tsv", "query about cats\tcats purr\nwho\tthe one\n")
  log = readers.SkipLog()
  assert len(list(readers.read_triples(path, log=log))) == 2
  assert not log.skipped
