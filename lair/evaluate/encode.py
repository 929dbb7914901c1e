"""Embedding lists of texts with a retriever tower: batched, length-sorted, split over hosts.

Texts are tokenized once, sorted by length and cut into fixed-size batches padded to a length
bucket, so the jitted embedding compiles once per bucket. With several processes each one
embeds only its contiguous share of the texts on its own devices (a mesh of its local
devices: no cross-host traffic per batch), and the shares are all-gathered at the end, so every
process returns the same `[N, D]` matrix and evaluation time falls with the number of hosts.
"""
import functools
import sys
import time
from typing import Callable, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh
import tqdm

from lair import sharding
from lair.data import tokenize as tokenize_lib
from lair.models import retriever

_LOG_EVERY_S = 30.0  # Progress lines (count, sentences/s) on long encodes, off a terminal.


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
                      mesh: Optional[Mesh] = None, split_over_processes: bool = True,
                      stats: Optional[dict] = None) -> Callable[[Sequence[str]], np.ndarray]:
  """Returns `encode(texts) -> [N, D] float32`, the retriever's embeddings of `prefix + text`.

  Args:
    params: retriever params (`{"encoder": ...}` or the two towers; see docs/design.md); global
      arrays of a training mesh are fine (`sharding.to_local` makes them this process's).
    rcfg: the `RetrieverConfig` the params belong to.
    tokenizer: the HF tokenizer of the encoder.
    batch_size: rows per step on this process; rounded up to a multiple of its device count.
    max_len: token cut-off (including special tokens).
    prefix: prepended to every text (e5: "query: " / "passage: ").
    tower: "query" or "passage" (the same encoder when towers are shared).
    buckets: padded lengths; batches pad to the smallest one that fits
      (see `tokenize.bucket_lengths`).
    embed_fn: `embed(params, ids, mask, *, rcfg, tower)`; defaults to lair.models.retriever.embed.
    mesh: a mesh with a `data` axis over this process's devices (default: all of them).
    split_over_processes: each process embeds its share of the texts (False: all of them).
    stats: a dict whose "texts" and "seconds" this process's encodes add to.
  """
  embed_fn = embed_fn or retriever.embed
  mesh = mesh or sharding.make_local_mesh()
  num_shards = mesh.shape[sharding.DATA_AXIS]
  batch_size = -(-batch_size // num_shards) * num_shards
  rows_sharding, replicated = sharding.data_sharded(mesh), sharding.replicated(mesh)
  params = jax.device_put(sharding.to_local(params), replicated)
  # The training pipeline's buckets, so evaluation pads to the same shapes.
  lengths = tokenize_lib.bucket_lengths(buckets, max_len)
  pad_id = tokenize_lib.pad_token_id(tokenizer)
  stats = {} if stats is None else stats

  def encode_here(texts: Sequence[str]) -> np.ndarray:
    """[len(texts), D] on this process's devices."""
    ids = tokenize_lib.tokenize(tokenizer, texts, max_len, prefix)
    out = np.zeros((len(ids), rcfg.embedding_dim), np.float32)
    start = last_log = time.time()
    done = 0  # Counted here: a disabled tqdm bar (off a terminal) does not count its updates.
    shown = jax.process_index() == 0 and len(ids) > batch_size
    bar = tqdm.tqdm(total=len(ids), unit=" texts", leave=False, dynamic_ncols=True,
                    disable=not (shown and sys.stderr.isatty()))
    for rows, input_ids, mask in length_sorted_batches(ids, batch_size=batch_size,
                                                       buckets=lengths, pad_id=pad_id):
      emb = _embed_batch(params, jax.device_put(input_ids, rows_sharding),
                         jax.device_put(mask, rows_sharding), embed_fn=embed_fn, rcfg=rcfg,
                         tower=tower, out_sharding=replicated)
      out[rows] = np.asarray(emb.addressable_data(0), np.float32)[:len(rows)]
      done += len(rows)
      bar.update(len(rows))
      if shown and bar.disable and time.time() - last_log > _LOG_EVERY_S:
        last_log = time.time()
        print(f"  encoded {done} / {len(ids)} texts ({done / (last_log - start):.1f}/s)",
              flush=True)
    bar.close()
    stats["texts"] = stats.get("texts", 0) + len(ids)
    stats["seconds"] = stats.get("seconds", 0.0) + time.time() - start
    return out

  def encode(texts: Sequence[str]) -> np.ndarray:
    texts = list(texts)
    if not split_over_processes:
      return encode_here(texts)
    start, stop = sharding.process_share(len(texts))
    return sharding.gather_shares(encode_here(texts[start:stop]), len(texts))

  return encode
