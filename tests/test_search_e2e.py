"""From a trained run to answers, as a user runs it: train the quickstart, index its multilingual
LAReQA sentences, search them in German, mine hard negatives, train on them.

The answers are found straight from the LAReQA JSON (answer_start inside sentence_breaks), not
through lair's readers. Every command runs as a subprocess, `python -m lair.X`.
"""
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from lair import api

REPO = pathlib.Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "lair" / "data" / "quickstart"
LANGUAGES = ["eng", "deu", "spa", "fra"]


def _run(args, timeout=600):
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=timeout)
  assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
  return proc.stdout


def _lareqa():
  """(corpus documents, {question id: set of answer document ids}, German questions)."""
  docs, answers, german = [], {}, []
  for lang in LANGUAGES:
    data = json.loads((QUICKSTART / f"{lang}.lareqa.json").read_text(encoding="utf-8"))["data"]
    paragraphs = [p for article in data for p in article["paragraphs"]]
    for p_index, para in enumerate(paragraphs):
      for s_index, sentence in enumerate(para["sentences"]):
        docs.append({"id": f"{lang}-{p_index}-{s_index}", "text": sentence, "lang": lang})
      for qa in para["qas"]:
        start = qa["answers"][0]["answer_start"]
        (s_index,) = [i for i, (b, e) in enumerate(para["sentence_breaks"]) if b <= start < e]
        answers.setdefault(qa["id"], set()).add(f"{lang}-{p_index}-{s_index}")
        if lang == "deu":
          german.append((qa["id"], qa["question"]))
  return docs, answers, german


@pytest.fixture(scope="module")
def run(tmp_path_factory, quickstart_run):
  root = tmp_path_factory.mktemp("e2e")
  workdir = quickstart_run[0]  # The trained quickstart (conftest.py), as a user has it.
  docs, answers, german = _lareqa()
  corpus = root / "corpus.jsonl"
  corpus.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs),
                    encoding="utf-8")
  out = _run(["lair.index", f"--workdir={workdir}", f"--corpus={corpus}",
              f"--out={root / 'index'}"])
  assert f"indexed {len(docs)} documents" in out
  german = german[:8]
  out = _run(["lair.search", f"--index={root / 'index'}", "--k=10", "--format=jsonl",
              *[q for _, q in german]])
  return {"root": root, "workdir": workdir, "index": root / "index", "docs": docs,
          "answers": answers, "german": german,
          "results": [json.loads(line) for line in out.splitlines()]}


def test_a_german_question_finds_its_answer_in_every_language(run):
  questions = [q for _, q in run["german"]]
  assert [r["query"] for r in run["results"]] == questions
  for (qid, question), result in zip(run["german"], run["results"]):
    top4 = result["hits"][:4]
    answers = run["answers"][qid]
    assert top4[0]["id"] in answers, (question, top4)
    found = {h["lang"] for h in top4 if h["id"] in answers}
    assert len(found) >= 3, (question, top4)  # The answer in several languages, at the top.
  # The readable table shows each hit's language.
  table = _run(["lair.search", f"--index={run['index']}", "--k=4", questions[0]])
  assert {line.split()[3] for line in table.strip().splitlines()[2:]} & {"eng", "spa", "fra"}


def test_the_reloaded_index_answers_as_the_fresh_one(run):
  """What lair.search reads from disk equals an index embedded afresh in this process."""
  questions = [q for _, q in run["german"]]
  from_disk = [result["hits"] for result in run["results"]]
  fresh = api.build_index(api.load_retriever(str(run["workdir"])), run["docs"])
  assert fresh.info["model"] == api.load_index(str(run["index"])).info["model"]
  for disk_hits, fresh_hits in zip(from_disk, fresh.search(questions, k=10)):
    assert [h["id"] for h in disk_hits] == [h.id for h in fresh_hits]
    np.testing.assert_allclose([h["score"] for h in disk_hits], [h.score for h in fresh_hits],
                               atol=1e-5)


def test_mined_negatives_train_with_num_negatives(run):
  mined = run["root"] / "mined.jsonl"
  out = _run(["lair.mine", f"--workdir={run['workdir']}", f"--out={mined}", "--num_negatives=3",
              "--skip_top=1"])
  assert "training set: 1500 queries" in out
  rows = [json.loads(line) for line in mined.read_text(encoding="utf-8").splitlines()]
  assert len(rows) > 1400
  for row in rows:
    assert len(row["neg"]) == 3 and not set(row["neg"]) & set(row["pos"])
  trained = run["root"] / "trained_on_mined"
  log = _run(["lair.train", "--config=configs/quickstart.py", f"--workdir={trained}",
              "--config.data.ir.format=jsonl", f"--config.data.ir.paths={mined}",
              "--config.data.ir.num_negatives=3", "--config.train.steps=3",
              "--config.train.log_every=1", "--config.eval.sets=[]",
              "--config.loss.semantic_weight=0", "--config.loss.language_weight=0"])
  # describe_shapes: the IR stream's queries, passages (one shape when equal) and [32, 3, L]
  # negatives.
  assert re.search(r"\(ir 32x\d+( \+ 32x\d+)? \+ 32x3x\d+", log), log
  metrics = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
  assert [m["step"] for m in metrics] == [1, 2, 3]
  # Each query scores the batch's 32 positives and its 32 x 3 negatives.
  assert all(m["ir_candidates"] == 32 * 4 and np.isfinite(m["loss"]) for m in metrics)
