"""Embedding lists of texts with a retriever tower, batch-sharded over every device (and host).

Texts are tokenized once, sorted by length and cut into fixed-size batches padded to a length
bucket, so the jitted embedding compiles once per bucket. Each batch is a global array sharded
over the `data` mesh axis; every host holds the same texts, feeds its devices' rows and reads
back the replicated `[B, D]` result, so all hosts end with the same `[N, D]` matrix.
"""
import functools
import time
from typing import Callable, List, Optional, Sequence

from absl import logging
import jax
import numpy as np
from jax.sharding import Mesh

from lair.data import pipeline
from lair.train import mesh as mesh_lib

_LOG_EVERY_S = 30.0  # Progress lines (count, sentences/s) on long encodes.


def tokenize(tokenizer, texts: Sequence[str], max_len: int) -> List[List[int]]:
  """Token ids (with the tokenizer's special tokens), truncated to `max_len`.

  Accepts a `transformers` tokenizer (callable) or a `tokenizers.Tokenizer` (`encode_batch`).
  """
  texts = list(texts)
  if hasattr(tokenizer, "encode_batch") and not callable(tokenizer):
    ids = [e.ids for e in tokenizer.encode_batch(texts)]
    # Keep the closing special token when cutting: [CLS] a b ... [SEP] -> [CLS] a ... [SEP].
    return [x if len(x) <= max_len else x[:max_len - 1] + x[-1:] for x in ids]
  return tokenizer(texts, truncation=True, max_length=max_len)["input_ids"]


def pad_token_id(tokenizer) -> int:
  """The tokenizer's padding id (XLM-R: 1, BERT: 0)."""
  pad = getattr(tokenizer, "pad_token_id", None)
  if pad is None and hasattr(tokenizer, "token_to_id"):
    pad = next((tokenizer.token_to_id(t) for t in ("<pad>", "[PAD]")
                if tokenizer.token_to_id(t) is not None), None)
  if pad is None:
    raise ValueError(f"tokenizer {type(tokenizer).__name__} has no padding token")
  return int(pad)


def pad_batches(ids: Sequence[Sequence[int]], *, batch_size: int, buckets: Sequence[int],
                pad_id: int):
  """Yields `(rows [b] int, input_ids [batch_size, L], mask [batch_size, L])` int32 batches.

  Rows are visited longest first, so each batch pads to the smallest bucket that holds its
  longest row; the last batch repeats its first row to fill `batch_size` (a padding row of all
  zeros would make mean pooling divide by zero); `rows` names the real rows only.
  """
  order = np.argsort([-len(x) for x in ids], kind="stable")
  for start in range(0, len(order), batch_size):
    rows = order[start:start + batch_size]
    longest = max(len(ids[r]) for r in rows)
    length = next((b for b in buckets if b >= longest), buckets[-1])
    input_ids = np.full((batch_size, length), pad_id, np.int32)
    mask = np.zeros((batch_size, length), np.int32)
    for slot in range(batch_size):
      row = ids[rows[slot] if slot < len(rows) else rows[0]][:length]
      input_ids[slot, :len(row)] = row
      mask[slot, :len(row)] = 1
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
      (see `pipeline.bucket_lengths`).
    embed_fn: `embed(params, ids, mask, *, rcfg, tower)`; defaults to lair.models.retriever.embed.
    mesh: a mesh with a `data` axis; defaults to all devices (`lair.train.mesh.make_mesh`).
  """
  if embed_fn is None:
    from lair.models.retriever import embed as embed_fn  # pylint: disable=g-import-not-at-top
  mesh = mesh or mesh_lib.make_mesh()
  num_shards = mesh.shape["data"]
  batch_size = -(-batch_size // num_shards) * num_shards
  rows_sharding, replicated = mesh_lib.data_sharded(mesh), mesh_lib.replicated(mesh)
  params = jax.tree.map(
      lambda x: x if isinstance(x, jax.Array) else jax.device_put(x, replicated), params)
  # The training pipeline's buckets, so evaluation pads to the same shapes.
  lengths = pipeline.bucket_lengths(buckets, max_len)
  pad_id = pad_token_id(tokenizer)

  def to_global(x: np.ndarray) -> jax.Array:
    # Every host holds the whole batch; each device takes its rows.
    return jax.make_array_from_callback(x.shape, rows_sharding, lambda index: x[index])

  def encode(texts: Sequence[str]) -> np.ndarray:
    ids = tokenize(tokenizer, [prefix + t for t in texts], max_len)
    out = None
    start, last_log, done = time.time(), time.time(), 0
    for rows, input_ids, mask in pad_batches(ids, batch_size=batch_size, buckets=lengths,
                                             pad_id=pad_id):
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
