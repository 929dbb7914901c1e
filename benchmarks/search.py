r"""Exact vs ScaNN top-k search as lair's evaluator runs them: recall@k, queries/s, build time.

For each pool size: `lair.evaluate.search.exact_search` (JAX matmul + top-k, what
`eval.search="exact"` runs) and `scann_search` with the evaluator's automatic settings
(`scann_settings`, config.eval.scann all 0), on the same pool and queries, one after the other.
Recall@k is the mean fraction of the exact top-k that ScaNN returns; the speed-up is ScaNN's
queries/s over exact search's (search only; ScaNN's build time is printed beside it).

Pools: synthetic clustered unit vectors (`clustered_unit_vectors`: topics, subtopics, points;
queries drawn alike), and, with `--real FILE.npy`, real embeddings [N, D] (queries are held-out
rows of the file; `--encode-real N` writes such a file of N multilingual-e5-small embeddings of
shared/data sentences first).

  python benchmarks/search.py                       # 100k and 1M x 384, 1000 queries
  python benchmarks/search.py --sizes 100000 --sweep  # also other leaf fractions / reorders
  python benchmarks/search.py --real emb.npy        # and real embeddings
  python benchmarks/search.py --quick               # 20k only: checks the script runs

Targets (the issue): at 1M, recall@10 >= 0.97 at >= 40x exact queries/s; small pools near-exact.
"""
import argparse
import os
import pathlib
import platform
import sys
import time

import ml_collections
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from lair.evaluate import search  # pylint: disable=g-import-not-at-top,wrong-import-position


def clustered_unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
  """[n, dim] float32 unit vectors with topics, subtopics and points, like sentence embeddings.

  n / 5000 topic centres (random unit vectors); n / 50 subtopic centres, each its topic's
  centre plus noise of norm 0.6 (cosine ~0.86 to it); points, their subtopic's centre plus
  noise of norm 0.35 (~0.94). So a point's nearest neighbours are mostly its subtopic's and
  then its topic's. `seed` draws the points; the centres are the same for every seed, so
  queries (another seed) come from the pool's distribution.
  """
  centres_rng, rng = np.random.default_rng(0), np.random.default_rng(seed)

  def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)

  topics = unit(centres_rng.standard_normal((max(n // 5000, 8), dim), np.float32))
  num_sub = max(n // 50, 64)
  subtopics = unit(topics[centres_rng.integers(len(topics), size=num_sub)]
                   + 0.6 * unit(centres_rng.standard_normal((num_sub, dim), np.float32)))
  out = np.empty((n, dim), np.float32)
  for start in range(0, n, 100_000):  # Chunks bound the memory of the temporaries.
    m = min(100_000, n - start)
    x = subtopics[rng.integers(num_sub, size=m)]
    out[start:start + m] = unit(x + 0.35 * unit(rng.standard_normal((m, dim), np.float32)))
  return out


def recall(found: np.ndarray, exact: np.ndarray) -> float:
  """Mean over queries of |found top-k & exact top-k| / k."""
  k = exact.shape[1]
  return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, exact)]))


def timed(fn, *args, **kw):
  start = time.perf_counter()
  out = fn(*args, **kw)
  return time.perf_counter() - start, out


def run_pool(name: str, pool: np.ndarray, queries: np.ndarray, k: int, sweep: bool,
             results: list) -> None:
  """Prints (and appends to `results`) exact vs ScaNN on one pool."""
  n = pool.shape[0]
  search.exact_search(queries[:8], pool, k)  # Compiles the exact path (not timed).
  exact_s, (_, exact_ids) = timed(search.exact_search, queries, pool, k)
  exact_qps = len(queries) / exact_s
  print(f"\n{name}: pool {n:,} x {pool.shape[1]}, {len(queries)} queries, k={k}")
  print(f"  exact (JAX matmul + top-k, all cores): {exact_qps:9.1f} queries/s", flush=True)
  s = search.scann_settings(n, k)
  build_s, searcher = timed(lambda *a: search.build_scann(*a)[0], pool, k)
  searcher.search_batched(queries[:8], final_num_neighbors=k)  # Warm-up.
  variants = [("auto", s["num_leaves_to_search"], s["reorder"])]
  if sweep:  # The same tree and codes, other leaves / re-ranked candidates at query time.
    variants += [(f"leaves {f:.1%} reorder {r}", max(1, round(f * s["num_leaves"])), r)
                 for f in (0.005, 0.01, 0.02, 0.05, 0.1, 0.2) for r in (100, 200, 300)]
  for label, leaves, reorder in variants:
    ids = None
    for method in ("search_batched", "search_batched_parallel"):
      search_s, (ids, _) = timed(getattr(searcher, method), queries, final_num_neighbors=k,
                                 leaves_to_search=leaves, pre_reorder_num_neighbors=reorder)
      r, qps = recall(np.asarray(ids), exact_ids), len(queries) / search_s
      threads = "1 thread " if method == "search_batched" else "all cores"
      print(f"  ScaNN {label:25s} {threads}  recall@{k} {r:.4f}  {qps:9.1f} queries/s  "
            f"{qps / exact_qps:6.1f}x exact  (leaves {leaves}/{s['num_leaves']}, reorder "
            f"{reorder}; build {build_s:.1f}s)", flush=True)
      results.append(dict(pool=name, n=n, settings=label, method=method, recall=r, qps=qps,
                          exact_qps=exact_qps, speedup=qps / exact_qps, build_s=build_s,
                          num_leaves=s["num_leaves"], num_leaves_to_search=leaves,
                          reorder=reorder))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", default="100000,1000000", help="Synthetic pool sizes.")
  parser.add_argument("--dim", type=int, default=384)
  parser.add_argument("--queries", type=int, default=1000)
  parser.add_argument("--k", type=int, default=10)
  parser.add_argument("--real", default="", help="Real embeddings [N, D] (.npy), or empty.")
  parser.add_argument("--sweep", action="store_true",
                      help="Also other leaf fractions and reorder sizes than the automatic.")
  parser.add_argument("--quick", action="store_true", help="One 20k pool, 200 queries.")
  args = parser.parse_args()
  if args.quick or os.environ.get("LAIR_BENCH_QUICK"):
    args.sizes, args.queries = "20000", 200
  print(f"{platform.processor() or platform.machine()}, os.cpu_count()={os.cpu_count()}, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
  results = []
  for n in [int(x) for x in args.sizes.split(",") if x]:
    pool = clustered_unit_vectors(n, args.dim, seed=1)
    queries = clustered_unit_vectors(args.queries, args.dim, seed=2)
    run_pool(f"synthetic-{n // 1000}k", pool, queries, args.k, args.sweep, results)
    del pool
  if args.real:
    emb = np.load(args.real).astype(np.float32)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    order = np.random.default_rng(0).permutation(len(emb))
    queries, pool = emb[order[:args.queries]], emb[order[args.queries:]]
    run_pool(f"real {pathlib.Path(args.real).name}", pool, queries, args.k, args.sweep, results)
  print("\nsummary (automatic settings):")
  for r in results:
    if r["settings"] == "auto" and r["method"] == "search_batched_parallel":
      print(f"  {r['pool']:>20s}: recall@{args.k} {r['recall']:.4f} at {r['speedup']:.1f}x exact "
            f"queries/s ({r['qps']:.0f} vs {r['exact_qps']:.0f}), build {r['build_s']:.1f}s")


if __name__ == "__main__":
  main()
