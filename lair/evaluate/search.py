"""Maximum inner product search: exact (JAX matmul + top-k) or ScaNN, top-k per query.

Both paths return `(scores [Q, k] float32, ids [Q, k] int64)`, best first. Embeddings are L2
normalised by the retriever, so the inner product is the cosine.
"""
import contextlib
import functools
import math
import os
import sys
import tempfile
from typing import Optional, Tuple

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

_EXACT_CHUNK = 256  # Queries per exact-search call: a fixed shape, so it compiles once per pool.
_SEARCH_ALL_BELOW = 5000  # ScaNN's default searches every leaf of smaller pools.


@functools.partial(jax.jit, static_argnames="k")
def _top_k_inner_product(queries: jax.Array, db: jax.Array, *, k: int):
  """`queries [C, D]`, `db [N, D]` -> top-k `(scores [C, k], ids [C, k])`."""
  scores = jnp.dot(queries, db.T, precision=jax.lax.Precision.HIGHEST)
  return jax.lax.top_k(scores, k)


def exact_search(queries: np.ndarray, db: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
  """Brute-force top-k by inner product.

  Args:
    queries: `[Q, D]` float.
    db: `[N, D]` float, the candidate pool.
    k: neighbours per query; clipped to N.

  Returns:
    `(scores [Q, k'], ids [Q, k'])` with k' = min(k, N), best first.
  """
  queries, db = np.asarray(queries, np.float32), np.asarray(db, np.float32)
  k = min(k, db.shape[0])
  db_device = jnp.asarray(db)
  scores, ids = [], []
  for start in range(0, queries.shape[0], _EXACT_CHUNK):
    chunk = queries[start:start + _EXACT_CHUNK]
    padded = np.zeros((_EXACT_CHUNK, queries.shape[1]), np.float32)
    padded[:len(chunk)] = chunk
    s, i = _top_k_inner_product(jnp.asarray(padded), db_device, k=k)
    scores.append(np.asarray(s)[:len(chunk)])
    ids.append(np.asarray(i)[:len(chunk)])
  if not scores:
    return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
  return np.concatenate(scores), np.concatenate(ids).astype(np.int64)


def scann_settings(num_candidates: int, k: int,
                   cfg: Optional[ml_collections.ConfigDict] = None) -> dict:
  """ScaNN settings from `config.eval.scann`, with 0 meaning "scale to the pool".

  num_leaves ~ sqrt(N). num_leaves_to_search: every leaf of pools up to _SEARCH_ALL_BELOW
  (5k) points, where pruning saves little, then a fraction (5000 / N)^0.75 of them: 60 of 100
  leaves at 10k, 34 of 316 at 100k, 19 of 1000 at 1M. The points scored per query grow as
  N^0.25 while exact search's grow as N. reorder (config default 300): AH candidates re-ranked
  exactly, max(reorder, k) of them; this, more than the leaves, sets recall on clustered pools.
  Measured (benchmarks/search.py, docs/training.md "Speed"): recall@10 of exact search 0.99 on
  1M clustered unit vectors x 384 (reorder 100: 0.90 whatever the leaves), 0.983 on the 10k
  cross-lingual Tatoeba pool of tests/test_search.py (multilingual pools cluster by language, so
  a cross-lingual query's neighbours sit in other leaves than the query: there, with reorder
  100, a tenth of the leaves gave 0.77 and half 0.97-0.98). The tree trains on the whole pool up
  to 100k points.
  """
  cfg = cfg or ml_collections.ConfigDict()
  n = num_candidates
  num_leaves = int(cfg.get("num_leaves", 0)) or max(1, int(round(math.sqrt(n))))
  num_leaves = min(num_leaves, n)
  fraction = min(1.0, (_SEARCH_ALL_BELOW / n) ** 0.75)
  to_search = int(cfg.get("num_leaves_to_search", 0)) or max(8, math.ceil(num_leaves * fraction))
  sample = int(cfg.get("training_sample_size", 0)) or min(n, 100_000)
  return dict(
      num_leaves=num_leaves,
      num_leaves_to_search=min(to_search, num_leaves),
      training_sample_size=max(min(sample, n), num_leaves),
      dimensions_per_block=int(cfg.get("dimensions_per_block", 2)),
      anisotropic_quantization_threshold=float(
          cfg.get("anisotropic_quantization_threshold", 0.2)),
      reorder=max(int(cfg.get("reorder", 300)), k))


def build_scann(db: np.ndarray, k: int, cfg: Optional[ml_collections.ConfigDict] = None):
  """(ScaNN searcher over `db` [N, D], its `scann_settings`): tree + AH + exact re-ranking.

  The searcher is ScaNN's own object: `searcher.serialize(dir)` saves it and
  `scann_ops_pybind.load_searcher(dir)` reads it back (lair.index keeps it that way).
  """
  from scann import scann_ops_pybind  # Imported here: only this path needs it.
  db = np.asarray(db, np.float32)
  s = scann_settings(db.shape[0], min(k, db.shape[0]), cfg)
  logging.info("ScaNN over %d candidates: %s", db.shape[0], s)
  # Unit-norm rows (normalised retrievers) partition better with spherical k-means.
  spherical = bool(np.allclose(np.linalg.norm(db, axis=1), 1.0, atol=1e-3))
  with native_stderr_to_log():
    searcher = (
        scann_ops_pybind.builder(db, min(k, db.shape[0]), "dot_product")
        .tree(num_leaves=s["num_leaves"], num_leaves_to_search=s["num_leaves_to_search"],
              training_sample_size=s["training_sample_size"], spherical=spherical)
        .score_ah(s["dimensions_per_block"],
                  anisotropic_quantization_threshold=s["anisotropic_quantization_threshold"])
        .reorder(s["reorder"])
        .build())
  return searcher, s


def search_scann(searcher, queries: np.ndarray, k: int, *, num_candidates: int,
                 reorder: int) -> Tuple[np.ndarray, np.ndarray]:
  """Top-k of `queries` [Q, D] with a `build_scann` searcher over `num_candidates` points.

  At least `k` candidates are re-ranked exactly (the searcher's `reorder` or more).
  Returns `(scores [Q, k'], ids [Q, k'])`, k' = min(k, num_candidates), best first.
  """
  queries = np.asarray(queries, np.float32)
  k = min(k, num_candidates)
  if not len(queries):
    return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
  # Every core, as exact search uses them (the same results as search_batched); ScaNN runs one
  # task per batch (256 queries by default), so smaller batches keep every core busy.
  batch_size = max(1, min(256, -(-len(queries) // (os.cpu_count() or 1))))
  ids, scores = searcher.search_batched_parallel(queries, final_num_neighbors=k,
                                                 pre_reorder_num_neighbors=max(reorder, k),
                                                 batch_size=batch_size)
  return np.asarray(scores, np.float32), np.asarray(ids, np.int64)


def scann_search(queries: np.ndarray, db: np.ndarray, k: int,
                 cfg: Optional[ml_collections.ConfigDict] = None
                 ) -> Tuple[np.ndarray, np.ndarray]:
  """Approximate top-k: ScaNN tree + asymmetric hashing + exact re-ranking.

  Args, returns: as `exact_search`; `cfg` is `config.eval.scann`.
  """
  searcher, s = build_scann(db, k, cfg)
  return search_scann(searcher, queries, k, num_candidates=db.shape[0], reorder=s["reorder"])


@contextlib.contextmanager
def native_stderr_to_log():
  """Sends what C++ code writes to stderr meanwhile to absl's log at debug level.

  ScaNN's C++ core logs each tree build ("Size of sampled dataset ...") straight to file
  descriptor 2 and has no switch to turn that off; lair keeps it out of the terminal.
  """
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile(mode="w+b") as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      text = captured.read().decode("utf-8", "replace").strip()
      if text:
        logging.debug("ScaNN: %s", text)


def search(queries: np.ndarray, db: np.ndarray, k: int, *, method: str = "auto",
           exact_below: int = 20000, scann_config: Optional[ml_collections.ConfigDict] = None
           ) -> Tuple[np.ndarray, np.ndarray]:
  """Top-k by `method` ("exact", "scann", or "auto": exact for pools under `exact_below`)."""
  if method == "auto":
    method = "exact" if db.shape[0] < exact_below else "scann"
  if method == "exact":
    return exact_search(queries, db, k)
  if method == "scann":
    return scann_search(queries, db, k, scann_config)
  raise ValueError(f"config.eval.search must be 'auto', 'exact' or 'scann', got {method!r}")
