"""Retrieval metrics, pure NumPy, one value per query.

Every ranking metric takes `ranked [Q, K]` (candidate indices, best first; -1 pads a short list)
and `qrels`, a sequence of Q mappings {candidate index: relevance grade}; a grade <= 0 is not
relevant. Each returns a `[Q]` float64 vector so callers can average per language or overall.

Definitions (they match pytrec_eval / trec_eval where trec_eval has the measure):
  * nDCG@k: gain = grade (linear, as trec_eval's ndcg_cut and BEIR), discount 1 / log2(rank + 1),
    normalised by the ideal ordering of the query's judged grades truncated at k.
  * MRR@k: 1 / rank of the first relevant candidate within the top k, else 0.
  * Recall@k: relevant candidates in the top k / all relevant candidates.
  * MAP@k (LAReQA's mAP@k, as in the lareqa/XTREME-R evaluation code `average_precision_at_k`):
    AP@k = sum_{i <= k, rank i relevant} P@i / min(|R|, k). trec_eval's map_cut_k divides by
    |R| instead; the two agree whenever |R| <= k (XQuAD-R: |R| = number of pool languages <= 20).
"""
from typing import Mapping, Sequence

import numpy as np

Qrels = Sequence[Mapping[int, float]]


def relevance_grades(ranked: np.ndarray, qrels: Qrels) -> np.ndarray:
  """Grades of the ranked candidates: `[Q, K]` float64 (0 for unjudged and for -1 padding)."""
  ranked = np.asarray(ranked)
  if ranked.ndim != 2 or ranked.shape[0] != len(qrels):
    raise ValueError(f"ranked must be [Q, K] with Q = len(qrels) = {len(qrels)}, "
                     f"got shape {ranked.shape}")
  grades = np.zeros(ranked.shape, np.float64)
  for i, (row, rel) in enumerate(zip(ranked, qrels)):
    grades[i] = [max(float(rel.get(int(c), 0.0)), 0.0) if c >= 0 else 0.0 for c in row]
  return grades


def _num_relevant(qrels: Qrels) -> np.ndarray:
  """`[Q]` number of candidates with a positive grade."""
  return np.array([sum(1 for g in rel.values() if g > 0) for rel in qrels], np.float64)


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
  """num / den, 0 where den is 0 (a query without relevant candidates scores 0)."""
  return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def ndcg_at_k(ranked: np.ndarray, qrels: Qrels, k: int) -> np.ndarray:
  """nDCG@k per query, `[Q]`."""
  gains = relevance_grades(ranked, qrels)[:, :k]
  discounts = 1.0 / np.log2(np.arange(2, k + 2))
  dcg = (gains * discounts[:gains.shape[1]]).sum(axis=1)
  ideal = np.zeros((len(qrels), k))
  for i, rel in enumerate(qrels):
    best = sorted((g for g in rel.values() if g > 0), reverse=True)[:k]
    ideal[i, :len(best)] = best
  return _safe_divide(dcg, (ideal * discounts).sum(axis=1))


def mrr_at_k(ranked: np.ndarray, qrels: Qrels, k: int) -> np.ndarray:
  """Reciprocal rank of the first relevant candidate within the top k, `[Q]`."""
  hits = relevance_grades(ranked, qrels)[:, :k] > 0
  first = np.argmax(hits, axis=1)
  return np.where(hits.any(axis=1), 1.0 / (first + 1.0), 0.0)


def recall_at_k(ranked: np.ndarray, qrels: Qrels, k: int) -> np.ndarray:
  """Fraction of the relevant candidates found in the top k, `[Q]`."""
  hits = relevance_grades(ranked, qrels)[:, :k] > 0
  return _safe_divide(hits.sum(axis=1).astype(np.float64), _num_relevant(qrels))


def map_at_k(ranked: np.ndarray, qrels: Qrels, k: int) -> np.ndarray:
  """LAReQA's average precision at k per query, `[Q]` (see the module docstring)."""
  hits = (relevance_grades(ranked, qrels)[:, :k] > 0).astype(np.float64)
  precision = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)
  return _safe_divide((precision * hits).sum(axis=1), np.minimum(_num_relevant(qrels), k))


def top1_accuracy(nearest: np.ndarray, expected: np.ndarray) -> float:
  """Bitext retrieval accuracy: the fraction of rows whose nearest candidate is the expected one.

  Args:
    nearest: `[N]` index of each source sentence's best-scoring target.
    expected: `[N]` index of its translation.
  """
  nearest, expected = np.asarray(nearest), np.asarray(expected)
  if nearest.shape != expected.shape:
    raise ValueError(f"nearest {nearest.shape} and expected {expected.shape} differ in shape")
  return float(np.mean(nearest == expected)) if nearest.size else 0.0


RANKING_METRICS = {"ndcg": ndcg_at_k, "mrr": mrr_at_k, "recall": recall_at_k, "map": map_at_k}


def ranking_metrics(ranked: np.ndarray, qrels: Qrels, names: Sequence[str]) -> dict:
  """Per-query vectors for names like "ndcg@10", "map@20": {name: [Q]}."""
  out = {}
  for name in names:
    kind, _, k = name.partition("@")
    if kind not in RANKING_METRICS or not k.isdigit():
      raise ValueError(f"unknown metric {name!r}: expected one of "
                       f"{sorted(RANKING_METRICS)} followed by @k, e.g. 'ndcg@10'")
    if int(k) > np.shape(ranked)[1]:
      raise ValueError(f"metric {name!r} needs the top {k} but only {np.shape(ranked)[1]} "
                       "were retrieved (raise config.eval.top_k)")
    out[name] = RANKING_METRICS[kind](ranked, qrels, int(k))
  return out


# ------------------------------------------------------------------------------------------------
# Language bias of a multilingual pool (LAReQA).
# ------------------------------------------------------------------------------------------------


def own_language_share(ranked: np.ndarray, query_langs, candidate_langs, k: int) -> np.ndarray:
  """`[Q]`: the share of each query's top k that is in the query's own language.

  `ranked [Q, K]` candidate indices (-1 padding counts as another language); `query_langs [Q]`
  and `candidate_langs [N]` language codes.
  """
  top = np.asarray(ranked)[:, :k]
  langs = np.asarray(candidate_langs, dtype=object)
  same = np.where(top >= 0, langs[np.maximum(top, 0)] == np.asarray(query_langs,
                                                                    dtype=object)[:, None], False)
  return same.sum(axis=1) / float(k)


def unbiased_own_share(qrels: Qrels, query_langs, candidate_langs) -> np.ndarray:
  """`[Q]`: the share of each query's relevant candidates in its own language.

  What `own_language_share` would be for a retriever with no preference for a language and
  its relevant candidates first (XQuAD-R: one answer per pool language, 1 / #languages).
  """
  langs = np.asarray(candidate_langs, dtype=object)
  out = np.zeros(len(qrels))
  for i, (rel, lang) in enumerate(zip(qrels, query_langs)):
    hits = [c for c, g in rel.items() if g > 0]
    out[i] = np.mean([langs[c] == lang for c in hits]) if hits else 0.0
  return out


def recall_in_language(ranked: np.ndarray, qrels: Qrels, candidate_langs, language: str,
                       k: int) -> np.ndarray:
  """`[Q]`: recall@k of each query's relevant candidates that are in `language` (NaN: none)."""
  langs = np.asarray(candidate_langs, dtype=object)
  restricted = [{c: g for c, g in rel.items() if langs[c] == language} for rel in qrels]
  has = _num_relevant(restricted) > 0
  return np.where(has, recall_at_k(ranked, restricted, k), np.nan)
