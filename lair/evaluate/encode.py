"""Embedding lists of texts with a retriever tower, batch-sharded over every device (and host).

Texts are tokenized once, sorted by length and cut into fixed-size batches padded to a length
bucket, so the jitted embedding compiles once per bucket. Each batch is a global array sharded
over the `data` mesh axis; every host holds the same texts, feeds its devices' rows and reads
back the replicated `[B, D]` result, so all hosts end with the same `[N, D]` matrix.
"""
import functools
import time
from typing import Callable, Optional, Sequence

from absl import logging
import jax
import numpy as np
from jax.sharding import Mesh

from lair import sharding
from lair.data import tokenize as tokenize_lib
from lair.models import retriever

_LOG_EVERY_S = 30.0  # Progress lines (count, sentences/s) on long encodes.


def length_sorted_batches(ids: Sequence[Sequence[int]], *, batch_size: int,
                          buckets: Sequence[int], pad_id: int):
  """Yields `(rows [b] int, input_ids [batch_size, L], mask [batch_size, L])` int32 batches.

  Rows are visited longest first, so each batch pads to the smallest bucket that holds its
  longest row; the last batch is filled up to `batch_size` (tokenize.pad_to_bucket); `rows`
  names the real rows only.
  """
  order = np.argsort([-len(x) for x in ids], kind="stable")
  for start in range(0, len(order), batch_size):
    rows = order[start:start + batch_size]
    input_ids, mask = tokenize_lib.pad_to_bucket([ids[r] for r in rows], buckets, pad_id,
                                                 num_rows=batch_size)
    yield rows, input_ids, mask


@functools.partial(jax.jit, static_argnames=("embed_fn", "rcfg", "tower", "out_sharding"))
def _embed_batch(params, input_ids, mask, *, embed_fn, rcfg, tower, out_sharding):
  """`[B, L]` ids and mask -> `[B, D]` embeddings, replicated on every device.

  Module-level with hashable static arguments, so repeated evaluations (every N training
  steps) reuse the compiled function instead of tracing a fresh closure.
  """
  out = embed_fn(params, input_ids, mask, rcfg=rcfg, tower=tower, train=False)
  return jax.lax.with_sharding_constraint(out, out_sharding)


def make_text_encoder(params, rcfg, tokenizer, *, batch_size: int, max_len: int,
                      prefix: str = "", tower: str = "query",
                      buckets: Sequence[int] = (16, 32, 64, 128),
                      embed_fn: Optional[Callable] = None,
                      mesh: Optional[Mesh] = None) -> Callable[[Sequence[str]], np.ndarray]:
  """Returns `encode(texts) -> [N, D] float32`, the retriever's embeddings of `prefix + text`.

  Args:
    params: retriever params (`{"encoder": ...}` or the two towers; see docs/design.md).
    rcfg: the `RetrieverConfig` the params belong to.
    tokenizer: the HF tokenizer of the encoder.
    batch_size: global rows per step; rounded up to a multiple of the device count.
    max_len: token cut-off (including special tokens).
    prefix: prepended to every text (e5: "query: " / "passage: ").
    tower: "query" or "passage" (the same encoder when towers are shared).
    buckets: padded lengths; batches pad to the smallest one that fits
      (see `tokenize.bucket_lengths`).
    embed_fn: `embed(params, ids, mask, *, rcfg, tower)`; defaults to lair.models.retriever.embed.
    mesh: a mesh with a `data` axis; defaults to all devices (`sharding.make_mesh`).
  """
  embed_fn = embed_fn or retriever.embed
  mesh = mesh or sharding.make_mesh()
  num_shards = mesh.shape[sharding.DATA_AXIS]
  batch_size = -(-batch_size // num_shards) * num_shards
  rows_sharding, replicated = sharding.data_sharded(mesh), sharding.replicated(mesh)
  params = jax.tree.map(
      lambda x: x if isinstance(x, jax.Array) else jax.device_put(x, replicated), params)
  # The training pipeline's buckets, so evaluation pads to the same shapes.
  lengths = tokenize_lib.bucket_lengths(buckets, max_len)
  pad_id = tokenize_lib.pad_token_id(tokenizer)

  def to_global(x: np.ndarray) -> jax.Array:
    # Every host holds the whole batch; each device takes its rows.
    return jax.make_array_from_callback(x.shape, rows_sharding, lambda index: x[index])

  def encode(texts: Sequence[str]) -> np.ndarray:
    ids = tokenize_lib.tokenize(tokenizer, texts, max_len, prefix)
    out = None
    start, last_log, done = time.time(), time.time(), 0
    for rows, input_ids, mask in length_sorted_batches(ids, batch_size=batch_size,
                                                       buckets=lengths, pad_id=pad_id):
      emb = _embed_batch(params, to_global(input_ids), to_global(mask), embed_fn=embed_fn,
                         rcfg=rcfg, tower=tower, out_sharding=replicated)
      emb = np.asarray(emb.addressable_data(0), np.float32)
      if out is None:
        out = np.zeros((len(ids), emb.shape[-1]), np.float32)
      out[rows] = emb[:len(rows)]
      done += len(rows)
      if time.time() - last_log > _LOG_EVERY_S:
        last_log = time.time()
        logging.info("encoded %d / %d texts (%.1f sentences/s)", done, len(ids),
                     done / (last_log - start))
    if out is None:
      return np.zeros((0, getattr(rcfg, "embedding_dim", 0)), np.float32)
    if len(ids) > batch_size:
      logging.info("encoded %d texts in %.1fs (%.1f sentences/s)", len(ids),
                   time.time() - start, len(ids) / max(time.time() - start, 1e-9))
    return out

  return encode
