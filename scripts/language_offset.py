r"""How much of a retriever's language bias is a constant shift per language? (docs/results.md)

    python scripts/language_offset.py runs/ablation/ir_sem_bs_hn_s0
    python scripts/language_offset.py runs/ablation/ir_sem_bs_hn_s0 runs/ablation/ir_sem_bs_hn_s1

Embeds the full XQuAD-R development pool (every LAReQA file in SHARED/xquad-r) with the model
(a training run's latest step, or an HF folder; several: their parameters averaged, a "soup" of
seeds) and prints mAP@20 per question language and the own-language excess@20, exact search:

  as trained      the embeddings as they are (the figure training evaluations report);
  pool means      each embedding minus (its language's mean - the mean over languages), the means
                  taken per side (questions, sentences) from the pool itself: what removing a
                  constant per-language vector would give where those means are right;
  other text      the same with each language's mean taken from other text of that language
                  (the first ROWS newstest rows per language of SHARED/parallel), i.e. what a
                  served model could do without the pool.

XQuAD-R's five pools translate the same paragraphs, so there the pool means differ by language
alone; that is why they are the upper bound of the shift's share, not a method to ship.
"""
import argparse
import csv
import dataclasses
import glob
import os
import pathlib
import sys

import jax
import numpy as np

from lair import api
from lair.evaluate import evaluators
from lair.evaluate import metrics

REPO = pathlib.Path(__file__).resolve().parent.parent
K = 20
PARALLEL_CODES = {"de": "deu", "es": "spa", "ru": "rus", "zh": "zho"}  # en: the English sides.


def load_model(paths):
  """One retriever; with several paths, the first one's with every path's parameters averaged."""
  models = [api.load_retriever(p) for p in paths]
  if len(models) == 1:
    return models[0]
  params = jax.tree.map(lambda *leaves: sum(leaves) / len(leaves), *[m.params for m in models])
  # Every setting of the first run kept; its cached encoders hold its own params, so not those.
  return dataclasses.replace(models[0], params=params, source={"soup": list(paths)},
                             _encoders={})


def newstest_sentences(shared: pathlib.Path, rows: int) -> dict:
  """{language: sentences}: the first `rows` newstest rows of each pool language's parallel file
  (English: the English sides, rows / 4 of each file)."""
  out = {"en": []}
  for lang, code in PARALLEL_CODES.items():
    path = shared / "parallel" / f"en-{code}.tsv"
    with open(path, encoding="utf-8", newline="") as f:
      found = [r for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
               if "newstest" in r[0]][:rows]
    if not found:
      sys.exit(f"{path}: no newstest rows (first column) to take {lang} text from")
    out[lang] = [r[2] for r in found]
    out["en"] += [r[1] for r in found[:rows // 4]]
  return out


def shifted(x: np.ndarray, langs: np.ndarray, means: dict) -> np.ndarray:
  """`x [N, D]` minus (mean of its language - mean over languages), per row."""
  centre = np.mean(list(means.values()), axis=0)
  return x - np.stack([means[l] - centre for l in langs])


def report(name: str, q, p, pool) -> None:
  q = q / np.linalg.norm(q, axis=1, keepdims=True)
  p = p / np.linalg.norm(p, axis=1, keepdims=True)
  ranked = np.argsort(-(q @ p.T), axis=1)[:, :K]
  ap = metrics.map_at_k(ranked, pool.relevant, K)
  excess = (metrics.own_language_share(ranked, pool.question_langs, pool.sentence_langs, K)
            - metrics.unbiased_own_share(pool.relevant, pool.question_langs, pool.sentence_langs))
  langs = np.asarray(pool.question_langs)
  per = {l: ap[langs == l].mean() for l in dict.fromkeys(pool.question_langs)}
  print(f"| {name} | {np.mean(list(per.values())):.4f} | "
        + " | ".join(f"{v:.3f}" for v in per.values()) + f" | {excess.mean():.3f} |", flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("models", nargs="+", help="training run folders or HF folders")
  parser.add_argument("--shared", default=os.environ.get(
      "LAIR_SHARED_DATA", str(REPO.parent / "shared" / "data")))
  parser.add_argument("--rows", type=int, default=400,
                      help="newstest rows per language for the 'other text' means")
  args = parser.parse_args()
  shared = pathlib.Path(args.shared)
  paths = sorted(glob.glob(str(shared / "xquad-r" / "*.json")))
  if not paths:
    sys.exit(f"{shared / 'xquad-r'}: no LAReQA .json files (set --shared or LAIR_SHARED_DATA)")
  pool = evaluators.load_lareqa({"name": "xquad-r", "kind": "lareqa", "paths": paths})
  model = load_model(args.models)
  q = model.encode(pool.questions, kind="query", progress=True)
  p = model.encode(pool.sentences, kind="passage", progress=True)
  other = newstest_sentences(shared, args.rows)
  q_langs, p_langs = np.asarray(pool.question_langs), np.asarray(pool.sentence_langs)
  langs = list(dict.fromkeys(pool.question_langs))
  missing = sorted(set(langs) - set(other))
  if missing:
    sys.exit(f"no newstest text for pool languages {missing} (known: {sorted(other)})")

  print(f"| {' + '.join(args.models)} | mAP@{K} | " + " | ".join(langs)
        + f" | own excess@{K} |\n|---|---|" + "---|" * len(langs) + "---|")
  report("as trained", q, p, pool)
  report("pool means", shifted(q, q_langs, {l: q[q_langs == l].mean(0) for l in langs}),
         shifted(p, p_langs, {l: p[p_langs == l].mean(0) for l in langs}), pool)
  q_other = {l: model.encode(other[l], kind="query").mean(0) for l in langs}
  p_other = {l: model.encode(other[l], kind="passage").mean(0) for l in langs}
  report("other text", shifted(q, q_langs, q_other), shifted(p, p_langs, p_other), pool)


if __name__ == "__main__":
  main()
