"""Exact search against NumPy, ScaNN against exact search on real multilingual embeddings."""
import time

import jax
import ml_collections
import numpy as np
import pytest

from lair.evaluate import encode
from lair.evaluate import search

# Pool: the non-English side of these Tatoeba pairs (1,000 sentences each, 10k in all);
# queries: English sentences whose translations sit in the pool (cross-lingual, like LAReQA).
POOL_LANGUAGES = ("deu", "fra", "spa", "ita", "rus", "por", "nld", "pol", "tur", "jpn")
QUERY_LANGUAGES = ("deu", "jpn")
QUERIES_PER_LANGUAGE = 250
MAX_LEN = 24  # Tokens: 90% of these sentences fit (with "query: "); keeps the encode short.


def _numpy_top_k(queries, db, k):
  scores = queries @ db.T
  ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  return np.take_along_axis(scores, ids, axis=1), ids


def test_exact_search_matches_numpy_across_chunks():
  rng = np.random.default_rng(0)
  db = rng.normal(size=(700, 16)).astype(np.float32)
  queries = rng.normal(size=(600, 16)).astype(np.float32)  # > 2 chunks of 256, last one short.
  scores, ids = search.exact_search(queries, db, 7)
  want_scores, want_ids = _numpy_top_k(queries.astype(np.float64), db.astype(np.float64), 7)
  np.testing.assert_array_equal(ids, want_ids)
  np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)


def test_exact_search_clips_k_to_the_pool():
  db = np.eye(3, dtype=np.float32)
  scores, ids = search.exact_search(db[[2, 0]], db, 10)
  assert ids.shape == (2, 3)
  np.testing.assert_array_equal(ids[:, 0], [2, 0])
  np.testing.assert_allclose(scores[:, 0], [1.0, 1.0])


@pytest.mark.parametrize("n", [1, 2, 300, 4_999, 5_000, 5_001, 8_000, 10_000, 123_457,
                               4_000_000])
def test_scann_settings_are_valid_for_any_pool(n):
  s = search.scann_settings(n, 20)
  assert 1 <= s["num_leaves_to_search"] <= s["num_leaves"] <= n
  assert s["num_leaves"] <= s["training_sample_size"] <= n
  assert s["reorder"] >= 20
  if n <= 5_000:  # Pruning a small pool saves little: every leaf is searched.
    assert s["num_leaves_to_search"] == s["num_leaves"]


def clustered_pool(n, dim, seed):
  """[n, dim] unit vectors: topics, subtopics of ~50 points around them, points around those.

  Written here apart from benchmarks/search.py. The topic centres are the same for every seed;
  the subtopics depend on n, so queries drawn with another seed and n share the pool's topics but
  sit off its subtopic clusters (harder for a tree than queries from the pool itself).
  """
  centres, rng = np.random.default_rng(0), np.random.default_rng(seed)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  topics = unit(centres.normal(size=(max(n // 5000, 8), dim)))
  subtopics = unit(topics[centres.integers(len(topics), size=n // 50)]
                   + 0.6 * unit(centres.normal(size=(n // 50, dim))))
  x = subtopics[rng.integers(len(subtopics), size=n)]
  return unit(x + 0.35 * unit(rng.normal(size=(n, dim)))).astype(np.float32)


@pytest.mark.parametrize("n", [3_000, 40_000])
def test_scann_automatic_settings_recall_exact_top10(n):
  """The evaluator's automatic ScaNN settings on a generated pool: near-exact when small, and
  recall@10 >= 0.97 of exact search while searching a fraction of the leaves when larger."""
  pool = clustered_pool(n, 96, seed=1)
  queries = clustered_pool(300, 96, seed=2)
  _, exact_ids = _numpy_top_k(queries, pool, 10)
  _, scann_ids = search.scann_search(queries, pool, 10)
  recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact_ids, scann_ids)])
  settings = search.scann_settings(n, 10)
  print(f"n={n}: recall@10 {recall:.4f} searching {settings['num_leaves_to_search']} of "
        f"{settings['num_leaves']} leaves")
  assert recall >= (0.99 if n <= 5_000 else 0.97)
  if n > 5_000:
    assert settings["num_leaves_to_search"] < settings["num_leaves"] / 2


def test_scann_settings_respect_the_config():
  cfg = ml_collections.ConfigDict(dict(
      num_leaves=40, num_leaves_to_search=10, training_sample_size=2_000, reorder=300,
      dimensions_per_block=4, anisotropic_quantization_threshold=0.3))
  assert search.scann_settings(10_000, 10, cfg) == dict(
      num_leaves=40, num_leaves_to_search=10, training_sample_size=2_000,
      dimensions_per_block=4, anisotropic_quantization_threshold=0.3, reorder=300)
  # k above the configured reorder: at least k candidates are re-ranked.
  assert search.scann_settings(10_000, 500, cfg)["reorder"] == 500
  # More leaves to search than there are: all of them.
  cfg = ml_collections.ConfigDict(dict(num_leaves=40, num_leaves_to_search=100))
  assert search.scann_settings(10_000, 10, cfg)["num_leaves_to_search"] == 40


def test_search_dispatch():
  rng = np.random.default_rng(1)
  db = rng.normal(size=(50, 8)).astype(np.float32)
  q = rng.normal(size=(5, 8)).astype(np.float32)
  _, exact_ids = search.exact_search(q, db, 3)
  np.testing.assert_array_equal(search.search(q, db, 3, method="auto", exact_below=100)[1],
                                exact_ids)
  with pytest.raises(ValueError, match="config.eval.search"):
    search.search(q, db, 3, method="faiss")


@pytest.fixture(scope="module")
def tatoeba_embeddings(shared_data, e5_small_dir):
  """(queries [500, 384], pool [10000, 384]) from multilingual-e5-small via lair's encoder."""
  from lair.models import hf, retriever  # pylint: disable=g-import-not-at-top
  enc_cfg, enc_params, tokenizer = hf.load_hf(str(e5_small_dir))
  rcfg = retriever.RetrieverConfig(encoder=enc_cfg)
  params = retriever.init_retriever(rcfg, jax.random.PRNGKey(0), encoder_params=enc_params)
  encode_texts = encode.make_text_encoder(params, rcfg, tokenizer, batch_size=128,
                                          max_len=MAX_LEN, buckets=(8, 16), prefix="query: ")

  def lines(lang, side):
    path = shared_data / "tatoeba" / f"tatoeba.{lang}-eng.{side}"
    return path.read_text(encoding="utf-8").splitlines()

  pool = [s for lang in POOL_LANGUAGES for s in lines(lang, lang)]
  queries = [s for lang in QUERY_LANGUAGES for s in lines(lang, "eng")[:QUERIES_PER_LANGUAGE]]
  start = time.time()
  emb = encode_texts(pool + queries)
  print(f"encoded {len(pool) + len(queries)} sentences in {time.time() - start:.1f}s")
  return emb[len(pool):], emb[:len(pool)]


def test_scann_recalls_exact_top10_on_real_embeddings(tatoeba_embeddings):
  queries, pool = tatoeba_embeddings
  assert pool.shape[0] >= 10_000
  _, exact_ids = _numpy_top_k(queries, pool, 10)
  _, scann_ids = search.scann_search(queries, pool, 10)  # Default settings, scaled to the pool.
  recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact_ids, scann_ids)])
  print(f"ScaNN recall@10 of exact top-10: {recall:.4f}")
  assert recall >= 0.95
  # And the embeddings are real: against its own language's block of the pool, an English
  # query's nearest sentence is its translation (the Tatoeba task). Across the whole pool the
  # first hits are often translations of the same sentence into other languages.
  for i, lang in enumerate(QUERY_LANGUAGES):
    block = POOL_LANGUAGES.index(lang) * 1000
    rows = slice(i * QUERIES_PER_LANGUAGE, (i + 1) * QUERIES_PER_LANGUAGE)
    nearest = np.argmax(queries[rows] @ pool[block:block + 1000].T, axis=1)
    accuracy = np.mean(nearest == np.arange(QUERIES_PER_LANGUAGE))
    print(f"eng->{lang} top-1 accuracy: {accuracy:.3f}")
    assert accuracy > 0.75  # Measured: deu 0.96, jpn 0.84 (max_len 24 cuts some jpn).
