"""The training input pipeline: tokenized, bucket-padded, host-sharded, resumable batches.

`TrainBatches(config, tokenizer, seed=...)` yields numpy batches (docs/design.md):

  {"ir":       {"query_ids", "query_mask": [B, Lq], "passage_ids", "passage_mask": [B, Lp],
                optional "negative_ids", "negative_mask": [B, K, Lp]},
   "parallel": {"src_ids", "src_mask", "tgt_ids", "tgt_mask": [P, L], "src_lang", "tgt_lang": [P]},
   "mono":     {"ids", "mask": [M, L], "lang": [M]}}     (all int32)

with B, P, M this host's share of train.batch_size, train.parallel_batch_size and
train.mono_batch_size. The streams present are exactly the objective plan's
(`lair.objectives.plan_objectives(config).streams`): those whose texts an active loss embeds.

Order. Each stream visits its rows in a fresh permutation every epoch, drawn from
(seed, stream, epoch), forever. Global batch t of a stream holds the rows at
positions [t*G, (t+1)*G) of that endless sequence; host h of n takes positions
[t*G + h*G/n, t*G + (h+1)*G/n). So the state is just the step, and the n hosts'
slices concatenated are exactly the one-host batch.

Shapes. Text is tokenized with the model's HF tokenizer (config.model.query_prefix on
IR queries, passage_prefix on passages and negatives; parallel and monolingual
sentences take query_prefix, as multilingual-e5 asks for symmetric tasks), truncated
to config.data.max_{query,passage,sentence}_len and padded to the smallest of
config.data.length_buckets (capped at that max) that fits the longest row of the
field in the *global* batch: every host pads to the same length, which
`jax.make_array_from_process_local_data` needs. Each host therefore tokenizes the
whole global batch (cheap next to the model) and keeps its slice.
"""
import functools
from typing import Iterator, Optional, Sequence

import numpy as np

from lair import objectives
from lair.data import builders
from lair.data.tokenize import Tokenize

STREAMS = objectives.STREAMS


def _decode(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _ir_batch(rows: list[dict], tokenize: Tokenize, config) -> dict:
  data, model = config.data, config.model
  q_ids, q_mask = tokenize([_decode(r["query"]) for r in rows], data.max_query_len,
                           model.query_prefix)
  passages = [_decode(r["passage"]) for r in rows]
  k = int(data.ir.num_negatives)
  # Negatives share the passages' length Lp: pad all B * (1 + K) passages together.
  negatives = [_decode(n) for r in rows for n in r["negatives"]] if k else []
  p_ids, p_mask = tokenize(passages + negatives, data.max_passage_len, model.passage_prefix)
  batch = {"query_ids": q_ids, "query_mask": q_mask,
           "passage_ids": p_ids[:len(rows)], "passage_mask": p_mask[:len(rows)]}
  if k:
    shape = (len(rows), k, p_ids.shape[-1])
    batch["negative_ids"] = p_ids[len(rows):].reshape(shape)
    batch["negative_mask"] = p_mask[len(rows):].reshape(shape)
  return batch


def _parallel_batch(rows: list[dict], tokenize: Tokenize, config) -> dict:
  n = len(rows)
  # Both sides share one length L so that a step may embed them together.
  texts = [_decode(r["src"]) for r in rows] + [_decode(r["tgt"]) for r in rows]
  ids, mask = tokenize(texts, config.data.max_sentence_len, config.model.query_prefix)
  return {"src_ids": ids[:n], "src_mask": mask[:n], "tgt_ids": ids[n:], "tgt_mask": mask[n:],
          "src_lang": np.array([r["src_lang"] for r in rows], np.int32),
          "tgt_lang": np.array([r["tgt_lang"] for r in rows], np.int32)}


def _mono_batch(rows: list[dict], tokenize: Tokenize, config) -> dict:
  ids, mask = tokenize([_decode(r["text"]) for r in rows], config.data.max_sentence_len,
                       config.model.query_prefix)
  return {"ids": ids, "mask": mask, "lang": np.array([r["lang"] for r in rows], np.int32)}


_MAKE_BATCH = {"ir": _ir_batch, "parallel": _parallel_batch, "mono": _mono_batch}
_BUILD = {"ir": builders.build_ir, "parallel": builders.build_parallel,
          "mono": builders.build_mono}
_BATCH_SIZE_KEY = {"ir": "batch_size", "parallel": "parallel_batch_size",
                   "mono": "mono_batch_size"}


def build_streams(config, cache_dir: Optional[str],
                  streams: Sequence[str]) -> dict[str, builders.BuiltStream]:
  """{name: BuiltStream} of `streams`, built (or reused) under config.data.cache_dir or
  `cache_dir`."""
  cache_dir = config.data.cache_dir or cache_dir
  if not cache_dir:
    raise ValueError("config.data.cache_dir is empty and no cache folder was given: "
                     "nowhere to write the array_record files")
  return {name: _BUILD[name](config, cache_dir) for name in streams}


# The text fields of each stream's rows (lists hold several texts: the IR negatives).
_TEXT_FIELDS = {"ir": ("query", "passage", "negatives"), "parallel": ("src", "tgt"),
                "mono": ("text",)}
_READ_CHUNK = 4096  # Rows per random-access read of a built stream.


def named_streams(config, plan: objectives.ObjectivePlan) -> tuple[str, ...]:
  """The plan's streams and every other stream whose data config.data names."""
  data = config.data
  named = {"ir": bool(data.ir.paths), "parallel": bool(data.parallel.paths),
           "mono": bool(data.mono.paths) or bool(data.mono.get("from_parallel", 0))}
  return tuple(s for s in STREAMS if s in plan.streams or named[s])


def stream_texts(config, *, cache_dir: Optional[str] = None,
                 plan: Optional[objectives.ObjectivePlan] = None) -> Iterator[str]:
  """Every text of the run's data, in a fixed order: what a tokenizer trained on the fly learns.

  The rows of every stream the config names data for (`named_streams`: a stream whose loss
  weight is 0 too, so that runs comparing loss settings on the same data share one
  tokenizer), as the builders write them (the caches TrainBatches then reuses), so caps,
  held-out rows and skipped lines are those of training: IR queries, passages and negatives;
  both sides of the parallel pairs; the monolingual sentences.
  """
  streams = named_streams(config, plan or objectives.plan_objectives(config))
  for name, built in build_streams(config, cache_dir, streams).items():
    source = built.source
    for start in range(0, len(source), _READ_CHUNK):
      for row in source.__getitems__(list(range(start, min(start + _READ_CHUNK, len(source))))):
        for field in _TEXT_FIELDS[name]:
          value = row.get(field)
          if value is None:
            continue
          for text in ([value] if isinstance(value, (bytes, str)) else list(value)):
            yield _decode(text)


@functools.lru_cache(maxsize=8)  # A step reuses its epoch's permutation (read-only).
def epoch_permutation(seed: int, stream: str, epoch: int, num_rows: int) -> np.ndarray:
  """The order [num_rows] in which `stream` visits its rows in `epoch`."""
  order = np.random.default_rng([seed, STREAMS.index(stream), epoch]).permutation(num_rows)
  order.setflags(write=False)  # Cached and shared.
  return order


def global_positions(step: int, batch_size: int, num_rows: int, seed: int,
                     stream: str) -> np.ndarray:
  """Row indices [batch_size] of global batch `step`: positions [step*G, (step+1)*G) of
  the endless sequence of epoch permutations."""
  positions = np.arange(step * batch_size, (step + 1) * batch_size)
  epochs, offsets = np.divmod(positions, num_rows)
  rows = np.empty(batch_size, np.int64)
  for epoch in np.unique(epochs):
    perm = epoch_permutation(seed, stream, int(epoch), num_rows)
    rows[epochs == epoch] = perm[offsets[epochs == epoch]]
  return rows


class TrainBatches:
  """Endless, deterministic, host-sharded training batches with a resumable position.

  Attributes:
    streams: the active stream names, in batch order.
    stats: per stream, the builders' counts {"rows", "skipped": {reason: n}, "files"}.
  """

  def __init__(self, config, tokenizer, *, seed: int, process_index: int = 0,
               process_count: int = 1, cache_dir: Optional[str] = None,
               plan: Optional[objectives.ObjectivePlan] = None):
    """Builds (or reuses) the array_record caches of the plan's streams.

    Args:
      config: the run config (data, train batch sizes, model prefixes).
      tokenizer: the model's HF tokenizer.
      seed: the epoch permutations' seed.
      process_index, process_count: this host's slice of every global batch.
      cache_dir: where the caches go (config.data.cache_dir wins when set).
      plan: the objective plan (default: `plan_objectives(config)`).
    """
    self.config = config
    self.seed = int(seed)
    self.process_index, self.process_count = int(process_index), int(process_count)
    self.streams = list((plan or objectives.plan_objectives(config)).streams)
    self.global_batch = {}
    for name in self.streams:
      size = int(config.train[_BATCH_SIZE_KEY[name]])
      if size <= 0 or size % self.process_count:
        raise ValueError(f"config.train.{_BATCH_SIZE_KEY[name]}={size}: expected a positive "
                         f"multiple of the process count {self.process_count}")
      self.global_batch[name] = size
    built = build_streams(config, cache_dir, self.streams)
    self._sources = {name: b.source for name, b in built.items()}
    self.stats = {name: b.stats for name, b in built.items()}
    self._tokenize = Tokenize(tokenizer, config.data.length_buckets)
    self.step = 0

  def __iter__(self) -> Iterator[dict]:
    return self

  def __next__(self) -> dict:
    batch = {name: self._stream_batch(name, self.step) for name in self.streams}
    self.step += 1
    return batch

  def _stream_batch(self, name: str, step: int) -> dict:
    """This host's slice of global batch `step` of stream `name`, tokenized and padded."""
    size = self.global_batch[name]
    source = self._sources[name]
    indices = global_positions(step, size, len(source), self.seed, name)
    rows = source.__getitems__([int(i) for i in indices])
    batch = _MAKE_BATCH[name](rows, self._tokenize, self.config)
    local = size // self.process_count
    start = self.process_index * local
    return {key: value[start:start + local] for key, value in batch.items()}

  def get_state(self) -> dict:
    """A JSON-able position: the next step, and what it is valid for."""
    return {"step": self.step, "seed": self.seed,
            "rows": {name: len(s) for name, s in self._sources.items()},
            "global_batch": dict(self.global_batch)}

  def set_state(self, state: dict) -> None:
    """Resumes at `state` (from `get_state`); the next batch is the one that would follow."""
    mine = self.get_state()
    for key in ("seed", "rows", "global_batch"):
      if state.get(key) != mine[key]:
        raise ValueError(f"input pipeline state has {key}={state.get(key)} but this pipeline "
                         f"has {mine[key]}: it was saved with other data or config")
    self.step = int(state["step"])


def config_errors(config, plan: objectives.ObjectivePlan) -> list[str]:
  """What is wrong with `config.data` and the batch sizes of the plan's streams (one per line).

  Input files are checked for existence here, so that a run with a missing file stops before it
  writes anything.
  """
  data = config.data
  errors = []
  for key in ("max_query_len", "max_passage_len", "max_sentence_len"):
    if int(data[key]) <= 0:
      errors.append(f"config.data.{key}={data[key]}: expected a positive integer")
  if not data.length_buckets or any(int(b) <= 0 for b in data.length_buckets):
    errors.append(f"config.data.length_buckets={list(data.length_buckets)}: expected positive "
                  f"integers")
  if not data.languages:
    errors.append("config.data.languages is empty: expected ISO 639-3 codes, e.g. ['eng']")
  for stream in plan.streams:
    key = _BATCH_SIZE_KEY[stream]
    if int(config.train[key]) <= 0:
      errors.append(f"config.train.{key}={config.train[key]}: expected a positive integer "
                    f"(the {stream!r} stream is read)")
    errors += builders.config_errors(config, stream)
  return errors
