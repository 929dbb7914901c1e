"""lair.evaluate.metrics against pytrec_eval (trec_eval) and NumPy references written here."""
import numpy as np
import pytest

from lair.evaluate import metrics

pytrec_eval = pytest.importorskip("pytrec_eval")

NUM_QUERIES, POOL, DEPTH = 40, 60, 30


def _random_run(seed, graded):
  """Random scores over a pool and random qrels (some queries with many relevant, some with 1)."""
  rng = np.random.default_rng(seed)
  scores = rng.normal(size=(NUM_QUERIES, POOL))  # Continuous: no ties, so rankings are unique.
  ranked = np.argsort(-scores, axis=1)[:, :DEPTH]
  qrels = []
  for q in range(NUM_QUERIES):
    n_rel = int(rng.integers(1, 25))
    docs = rng.choice(POOL, size=n_rel, replace=False)
    grades = rng.integers(1, 4, size=n_rel) if graded else np.ones(n_rel, int)
    qrels.append({int(d): int(g) for d, g in zip(docs, grades)})
  return scores, ranked, qrels


def _trec_eval(scores, ranked, qrels, measures):
  """Runs pytrec_eval on the top-DEPTH run; {measure: [Q]}."""
  run = {f"q{q}": {f"d{d}": float(scores[q, d]) for d in ranked[q]} for q in range(NUM_QUERIES)}
  judged = {f"q{q}": {f"d{d}": g for d, g in rel.items()} for q, rel in enumerate(qrels)}
  out = pytrec_eval.RelevanceEvaluator(judged, set(measures)).evaluate(run)
  return lambda name: np.array([out[f"q{q}"][name] for q in range(NUM_QUERIES)])


@pytest.mark.parametrize("graded", [False, True])
@pytest.mark.parametrize("k", [1, 5, 10, 20])
def test_ndcg_recall_match_trec_eval(graded, k):
  scores, ranked, qrels = _random_run(k + 100 * graded, graded)
  trec = _trec_eval(scores, ranked, qrels, {f"ndcg_cut.{k}", f"recall.{k}"})
  np.testing.assert_allclose(metrics.ndcg_at_k(ranked, qrels, k), trec(f"ndcg_cut_{k}"), atol=1e-6)
  np.testing.assert_allclose(metrics.recall_at_k(ranked, qrels, k), trec(f"recall_{k}"), atol=1e-6)


@pytest.mark.parametrize("k", [1, 5, 10])
def test_mrr_at_k_matches_trec_eval_recip_rank_on_the_cut_run(k):
  # trec_eval's recip_rank has no cutoff: evaluate it on the run truncated at k.
  scores, ranked, qrels = _random_run(7 + k, graded=False)
  trec = _trec_eval(scores, ranked[:, :k], qrels, {"recip_rank"})
  np.testing.assert_allclose(metrics.mrr_at_k(ranked, qrels, k), trec("recip_rank"), atol=1e-6)


def _lareqa_ap_reference(relevant, ranked, k):
  """LAReQA / XTREME-R AP@k, written as a plain loop: P@i summed at hits, / min(|R|, k)."""
  score, hits = 0.0, 0
  for i, doc in enumerate(ranked[:k]):
    if doc in relevant:
      hits += 1
      score += hits / (i + 1)
  return score / min(len(relevant), k)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_map_at_k_matches_lareqa_definition(k):
  _, ranked, qrels = _random_run(30 + k, graded=False)
  expected = [_lareqa_ap_reference(set(rel), list(row), k) for row, rel in zip(ranked, qrels)]
  np.testing.assert_allclose(metrics.map_at_k(ranked, qrels, k), expected, atol=1e-6)


def test_map_at_k_equals_trec_map_cut_when_relevant_set_fits_in_k():
  # trec_eval's map_cut_k divides by |R|, LAReQA by min(|R|, k): equal when |R| <= k.
  scores, ranked, qrels = _random_run(5, graded=False)
  small = [dict(list(rel.items())[:5]) for rel in qrels]
  trec = _trec_eval(scores, ranked, small, {"map_cut.20"})
  np.testing.assert_allclose(metrics.map_at_k(ranked, small, 20), trec("map_cut_20"), atol=1e-6)


def test_padding_and_unjudged_count_as_misses():
  ranked = np.array([[3, -1, -1], [-1, -1, -1]])
  qrels = [{3: 1, 4: 1}, {0: 1}]
  np.testing.assert_allclose(metrics.recall_at_k(ranked, qrels, 3), [0.5, 0.0])
  np.testing.assert_allclose(metrics.mrr_at_k(ranked, qrels, 3), [1.0, 0.0])
  np.testing.assert_allclose(metrics.map_at_k(ranked, qrels, 3), [0.5, 0.0])


def test_top1_accuracy_and_metric_names():
  assert metrics.top1_accuracy(np.array([0, 2, 2]), np.arange(3)) == pytest.approx(2 / 3)
  _, ranked, qrels = _random_run(1, graded=False)
  out = metrics.ranking_metrics(ranked, qrels, ["ndcg@10", "map@20"])
  assert set(out) == {"ndcg@10", "map@20"} and out["ndcg@10"].shape == (NUM_QUERIES,)
  with pytest.raises(ValueError, match="raise config.eval.top_k"):
    metrics.ranking_metrics(ranked, qrels, ["recall@100"])
  with pytest.raises(ValueError, match="unknown metric"):
    metrics.ranking_metrics(ranked, qrels, ["precision@5"])
