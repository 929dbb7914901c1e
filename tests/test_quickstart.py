"""The quickstart end to end, as a user runs it: `bash launch/run.sh` (train, evaluate, export).

Checks what the quickstart promises: it finishes on this CPU in under 5 minutes, prints a
per-language table, and the exported HF directory retrieves across languages. The zero-shot
figure is recomputed independently from the export (sentence-transformers embeddings, NumPy
LAReQA mAP@20 from the raw JSON) and compared with lair's own evaluation; and the parallel-data
losses must beat English-only retrieval training, the claim lair exists for.
"""
import json
import pathlib
import sys

import numpy as np
import pytest

from conftest import run_in_repo

REPO = pathlib.Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "lair" / "data" / "quickstart"
LANGUAGES = ["eng", "deu", "spa", "fra"]
ZERO_SHOT = ["deu", "spa", "fra"]


def _final_metrics(workdir):
  evals = sorted((workdir / "eval").glob("step_*.json"), key=lambda p: int(p.stem.split("_")[1]))
  return json.loads(evals[-1].read_text())["metrics"]


def _lareqa_map20(embed):
  """NumPy LAReQA mAP@20 over the pooled sentences of all languages, straight from the JSON."""
  sentences, questions, answer_of = [], [], {}  # answer_of[(lang, qid)] = pool index
  for lang in LANGUAGES:
    data = json.loads((QUICKSTART / f"{lang}.lareqa.json").read_text())["data"]
    for article in data:
      for para in article["paragraphs"]:
        first = len(sentences)
        sentences.extend(para["sentences"])
        for qa in para["qas"]:
          start = qa["answers"][0]["answer_start"]
          (idx,) = [i for i, (b, e) in enumerate(para["sentence_breaks"]) if b <= start < e]
          answer_of[(lang, qa["id"])] = first + idx
          questions.append((lang, qa["id"], qa["question"]))
  q = embed([text for _, _, text in questions])
  s = embed(sentences)
  ranked = np.argsort(-(q @ s.T), axis=1, kind="stable")[:, :20]
  per_lang = {lang: [] for lang in LANGUAGES}
  for (lang, qid, _), row in zip(questions, ranked):
    relevant = {answer_of[(l, qid)] for l in LANGUAGES}
    hits, precisions = 0, []
    for rank, idx in enumerate(row, start=1):
      if idx in relevant:
        hits += 1
        precisions.append(hits / rank)
    per_lang[lang].append(sum(precisions) / min(len(relevant), 20))
  return {lang: float(np.mean(v)) for lang, v in per_lang.items()}


def test_quickstart_finishes_in_five_minutes_with_a_table(quickstart_run):
  workdir, out, seconds = quickstart_run
  assert seconds < 300, f"the quickstart took {seconds:.0f} s; it must stay under 5 minutes"
  header = next(line for line in out.splitlines() if line.startswith("lareqa"))
  assert header.split() == ["lareqa"] + LANGUAGES + ["mean"]
  assert (workdir / "checkpoints").is_dir()
  assert (workdir / "hf" / "model.safetensors").exists()


def test_exported_model_reproduces_lairs_zero_shot_figure(quickstart_run):
  from sentence_transformers import SentenceTransformer
  workdir, _, _ = quickstart_run
  model = SentenceTransformer(str(workdir / "hf"), device="cpu")
  reference = _lareqa_map20(lambda texts: model.encode(texts, batch_size=128))
  metrics = _final_metrics(workdir)
  for lang in LANGUAGES:
    assert metrics[f"lareqa/map@20/{lang}"] == pytest.approx(reference[lang], abs=2e-3), lang


def test_parallel_losses_beat_english_only_training(quickstart_run, tmp_path):
  workdir, _, _ = quickstart_run
  english_only = tmp_path / "english_only"
  run_in_repo([sys.executable, "-m", "lair.train", "--config=configs/quickstart.py",
               f"--workdir={english_only}", "--config.loss.semantic_weight=0",
               "--config.loss.language_weight=0", "--config.eval.search=exact"], timeout=600)
  with_parallel, ir_only = _final_metrics(workdir), _final_metrics(english_only)
  gain = np.mean([with_parallel[f"lareqa/map@20/{l}"] - ir_only[f"lareqa/map@20/{l}"]
                  for l in ZERO_SHOT])
  assert gain > 0.2, (with_parallel, ir_only)
