"""Text to padded token ids: one tokenizer call and one bucket rule, for training and evaluation.

Texts are prefixed (e5's "query: " / "passage: "), tokenized with the model's tokenizer (its
special tokens added), truncated to a maximum length and padded to the smallest *bucket* length
that holds the longest row, so jitted functions compile once per bucket.
"""
from typing import Optional, Sequence

import numpy as np


def bucket_lengths(buckets: Sequence[int], max_len: int) -> list[int]:
  """The lengths a field may be padded to: the buckets below `max_len`, then `max_len`."""
  return sorted({b for b in buckets if 0 < b < max_len} | {max_len})


def pad_token_id(tokenizer) -> int:
  """The tokenizer's padding id (XLM-R: 1, BERT: 0)."""
  pad = getattr(tokenizer, "pad_token_id", None)
  if pad is None and hasattr(tokenizer, "token_to_id"):
    pad = next((tokenizer.token_to_id(t) for t in ("<pad>", "[PAD]")
                if tokenizer.token_to_id(t) is not None), None)
  if pad is None:
    raise ValueError(f"tokenizer {type(tokenizer).__name__} has no padding token")
  return int(pad)


def tokenize(tokenizer, texts: Sequence[str], max_len: int, prefix: str = "") -> list[list[int]]:
  """Token ids of `prefix + text` (with the tokenizer's special tokens), cut at `max_len`.

  Accepts a `transformers` tokenizer (callable) or a `tokenizers.Tokenizer` (`encode_batch`).
  """
  texts = [prefix + t for t in texts]
  if hasattr(tokenizer, "encode_batch") and not callable(tokenizer):
    ids = [e.ids for e in tokenizer.encode_batch(texts)]
    # Keep the closing special token when cutting: [CLS] a b ... [SEP] -> [CLS] a ... [SEP].
    return [x if len(x) <= max_len else x[:max_len - 1] + x[-1:] for x in ids]
  return tokenizer(texts, truncation=True, max_length=max_len, padding=False)["input_ids"]


def pad_to_bucket(token_ids: Sequence[Sequence[int]], lengths: Sequence[int], pad_id: int, *,
                  num_rows: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
  """Pads rows to the smallest of `lengths` that fits the longest row.

  Args:
    token_ids: N rows of token ids, each at most max(lengths) long.
    lengths: allowed padded lengths, ascending (`bucket_lengths`).
    pad_id: the tokenizer's pad token id.
    num_rows: pad to this many rows (>= N) by repeating row 0, for fixed-shape batches; a row of
      all padding would be a text of no token (mean pooling divides by its token count).

  Returns:
    ids [num_rows or N, L] int32 (pad_id after each row) and mask [.., L] int32 (1 on tokens).
  """
  longest = max((len(t) for t in token_ids), default=1)
  length = next(b for b in lengths if b >= longest)
  rows = len(token_ids) if num_rows is None else num_rows
  ids = np.full((rows, length), pad_id, np.int32)
  mask = np.zeros((rows, length), np.int32)
  for i in range(rows):
    row = token_ids[i if i < len(token_ids) else 0]
    ids[i, :len(row)] = row
    mask[i, :len(row)] = 1
  return ids, mask


class Tokenize:
  """`tokenize` then `pad_to_bucket` with one tokenizer and one set of buckets."""

  def __init__(self, tokenizer, buckets: Sequence[int]):
    self.tokenizer = tokenizer
    self.buckets = list(buckets)
    self.pad_id = pad_token_id(tokenizer)

  def __call__(self, texts: Sequence[str], max_len: int, prefix: str = "", *,
               num_rows: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """texts [N] -> ids, mask [N (or num_rows), L], L the bucket of the longest (cut) row."""
    return pad_to_bucket(tokenize(self.tokenizer, texts, max_len, prefix),
                         bucket_lengths(self.buckets, max_len), self.pad_id, num_rows=num_rows)
