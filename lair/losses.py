"""lair's training objectives, as pure JAX functions.

Convention (docs/design.md, "Losses"): every loss returns a PER-ROW loss vector over the rows the
caller holds, scored against the candidates it is given, and the caller averages. On one device
the rows are the whole batch and the candidates are the whole batch. Under `shard_map` a device
passes its local rows, the all-gathered global candidates and `positive_index`, the global index of
each local row's positive; `psum(sum(rows)) / global_rows` is then exactly the single-device mean.

Contrastive inputs are L2-normalised embeddings: a similarity is a dot product, divided by the
temperature `tau`. Logits and softmaxes are computed in float32 whatever the embedding dtype.

This module is math on arrays only. Which terms a run trains comes from `lair/objectives.py`;
the heads EMS trains (XTR, projection) are Flax modules in `lair/models/ems.py`; composing them
is the train step's job.
"""
from typing import Sequence

import jax
import jax.numpy as jnp

# Dot products of embeddings are the logits: full float32 precision even on accelerators whose
# default matmul precision is lower (TF32 / bf16 passes).
_HIGHEST = jax.lax.Precision.HIGHEST

LANGUAGE_FORMS = ("uniform_ce", "squared_gap")
# Which sentences a parallel sentence's translation competes with (config loss.semantic_negatives).
SEMANTIC_NEGATIVES = ("other_side", "both_sides")


def _similarities(a, b):
  """Dot products `a @ b.T` in float32. a: [n, D], b: [m, D] -> [n, m]."""
  return jnp.matmul(a.astype(jnp.float32), b.astype(jnp.float32).T, precision=_HIGHEST)


def _default_positive_index(positive_index, num_rows: int):
  """`positive_index` as int32 [num_rows]; `None` means row i's positive is candidate i."""
  if positive_index is None:
    return jnp.arange(num_rows, dtype=jnp.int32)
  return jnp.asarray(positive_index, jnp.int32)


def infonce_rows(anchors, candidates, *, positive_index=None, tau: float, margin: float = 0.):
  """Cross-entropy of each anchor picking its positive among all candidates.

  Args:
    anchors: [b, D] the rows this caller holds (L2-normalised).
    candidates: [C, D] every candidate (L2-normalised), globally gathered under shard_map.
    positive_index: [b] int, index into `candidates` of each anchor's positive; default
      `arange(b)`.
    tau: temperature; logits are `s / tau`.
    margin: additive margin subtracted from the positive's similarity before dividing by tau
      (LaBSE's additive margin softmax): its logit is `(s - margin) / tau`.

  Returns:
    [b] float32: `logsumexp(logits_i) - logits_i[positive_index[i]]`.
  """
  positive_index = _default_positive_index(positive_index, anchors.shape[0])
  sims = _similarities(anchors, candidates)  # [b, C]
  is_positive = jax.nn.one_hot(positive_index, sims.shape[1], dtype=jnp.float32)  # [b, C]
  logits = (sims - margin * is_positive) / tau
  positive_logit = jnp.sum(logits * is_positive, axis=1)
  return jax.nn.logsumexp(logits, axis=1) - positive_logit


def retrieval_infonce(q, p, n=None, *, positive_index=None, tau: float, margin: float = 0.):
  """DPR-style retrieval InfoNCE: each query picks its passage among all passages and negatives.

  Every query scores against every positive passage and every hard negative of the (global)
  batch; the hard negatives are flattened into extra candidates after the positives, so the
  target index of a query is its positive's index in `p`.

  Args:
    q: [b, D] query embeddings this caller holds.
    p: [B, D] positive passage embeddings of the whole (global) batch.
    n: optional [B, K, D] hard negative embeddings, K per passage.
    positive_index: [b] int index into `p` of each query's positive; default `arange(b)`.
    tau: temperature.
    margin: additive margin on the positive logit, `(s - margin) / tau`.

  Returns:
    [b] float32 per-query loss.
  """
  candidates = p if n is None else jnp.concatenate(
      [p.astype(jnp.float32), n.reshape(-1, n.shape[-1]).astype(jnp.float32)], axis=0)
  return infonce_rows(q, candidates, positive_index=positive_index, tau=tau, margin=margin)


def passage_to_query_infonce(p, q, *, positive_index=None, tau: float, margin: float = 0.):
  """The bidirectional term: each passage picks its query among all queries.

  Args:
    p: [b, D] positive passage embeddings this caller holds.
    q: [B, D] query embeddings of the whole (global) batch.
    positive_index: [b] int index into `q` of each passage's query; default `arange(b)`.
    tau: temperature.
    margin: additive margin on the positive logit.

  Returns:
    [b] float32 per-passage loss.
  """
  return infonce_rows(p, q, positive_index=positive_index, tau=tau, margin=margin)


def semantic_contrastive_loss(x, y, *, positive_index=None, tau: float):
  """One direction of the semantic contrastive loss (Hu et al. 2023): x_i picks y_i among all y.

  The full loss is symmetric; the step calls this both ways, `(x, y)` and `(y, x)`, and averages
  the two means (`symmetric_semantic_contrastive_loss` does that on full arrays).

  Args:
    x: [b, D] embeddings of the rows this caller holds (e.g. English sides of parallel pairs).
    y: [B, D] embeddings of all translations (globally gathered under shard_map).
    positive_index: [b] int index into `y` of each row's translation; default `arange(b)`.
    tau: temperature.

  Returns:
    [b] float32 per-row loss.
  """
  return infonce_rows(x, y, positive_index=positive_index, tau=tau)


def semantic_contrastive_loss_both_sides(x, y, x_all, *, positive_index=None, tau: float):
  """One direction with both sides as negatives: x_i picks y_i among all y and all other x.

  With `semantic_contrastive_loss` an English x_i only ever competes with sentences of the other
  side, so nothing asks its translation to beat other *English* sentences; a retriever can then
  keep ranking its own language first (LAReQA's language bias, own_excess in lair's bias block).
  Here the other rows of x's own side are negatives too (SimCLR's 2B - 2 negatives).

  Args:
    x: [b, D] embeddings of the rows this caller holds.
    y: [B, D] all translations (globally gathered under shard_map).
    x_all: [B, D] all rows of x's side (globally gathered); x_all[positive_index[i]] is x_i
      itself, which is left out.
    positive_index: [b] int index of each row's translation in `y` (and of itself in `x_all`);
      default `arange(b)`.
    tau: temperature.

  Returns:
    [b] float32 per-row loss: `logsumexp([s(x_i, y); s(x_i, x_all without i)] / tau)
    - s(x_i, y_i) / tau`.
  """
  positive_index = _default_positive_index(positive_index, x.shape[0])
  to_y = _similarities(x, y) / tau  # [b, B]
  itself = jax.nn.one_hot(positive_index, x_all.shape[0], dtype=jnp.bool_)  # [b, B]
  to_x = jnp.where(itself, -jnp.inf, _similarities(x, x_all) / tau)  # [b, B]
  positive_logit = jnp.take_along_axis(to_y, positive_index[:, None], axis=1)[:, 0]
  return jax.nn.logsumexp(jnp.concatenate([to_y, to_x], axis=1), axis=1) - positive_logit


def symmetric_semantic_contrastive_loss(x, y, *, tau: float, negatives: str = "other_side"):
  """The scalar symmetric semantic contrastive loss on full arrays (one device).

  Args:
    x: [B, D] embeddings of one side of B parallel pairs.
    y: [B, D] embeddings of their translations.
    tau: temperature.
    negatives: "other_side" (`semantic_contrastive_loss`) | "both_sides"
      (`semantic_contrastive_loss_both_sides`); config key `loss.semantic_negatives`.

  Returns:
    scalar float32: `(mean_i CE(x_i -> y) + mean_i CE(y_i -> x)) / 2`.
  """
  if negatives == "other_side":
    return 0.5 * (jnp.mean(semantic_contrastive_loss(x, y, tau=tau))
                  + jnp.mean(semantic_contrastive_loss(y, x, tau=tau)))
  if negatives == "both_sides":
    return 0.5 * (jnp.mean(semantic_contrastive_loss_both_sides(x, y, x, tau=tau))
                  + jnp.mean(semantic_contrastive_loss_both_sides(y, x, y, tau=tau)))
  raise ValueError(f"loss.semantic_negatives={negatives!r}: expected one of "
                   f"{SEMANTIC_NEGATIVES}")


def language_contrastive_loss(z, x, y, *, tau: float, form: str = "uniform_ce"):
  """Language contrastive loss (Hu et al. 2023): no sentence should look closer to one language.

  For each non-parallel sentence z and each parallel pair (x_j, y_j), z should be equally similar
  to both sides of the pair, so that similarity carries no language identity. z must be
  *multilingual* non-parallel text: with z of one language, most of what the term penalises is
  pair-specific noise rather than language identity (`language_gap_split` measures both).

  Our reading of the paper's equation (the paper's text could not be checked from here; this is
  the one place that says so). With `a_j = s(z, x_j) / tau` and `b_j = s(z, y_j) / tau`:

    form="uniform_ce": `-(1/2) [log softmax(a_j, b_j)_a + log softmax(a_j, b_j)_b]`, i.e. the
      cross-entropy of the two-way softmax against the uniform target (1/2, 1/2); equal to
      `logsumexp(a_j, b_j) - (a_j + b_j) / 2`, minimal (= log 2, with zero gradient) exactly
      when `a_j == b_j`.
    form="squared_gap": `(s(z, x_j) - s(z, y_j))^2` (no tau), minimal (= 0) at the same place.

  Both are averaged over the J pairs. The step adds what a careful reproduction needs: the
  term's own temperature (`loss.language_tau`), its weight (`loss.language_weight`), and an
  optional stop-gradient through the pair (`loss.language_stop_pairs`: only z moves).

  Args:
    z: [m, D] embeddings of the non-parallel sentences this caller holds.
    x: [J, D] embeddings of one side of the parallel pairs.
    y: [J, D] embeddings of the other side.
    tau: temperature (unused by "squared_gap").
    form: "uniform_ce" | "squared_gap" (config key `loss.language_form`).

  Returns:
    [m] float32 per-sentence loss.
  """
  s_x = _similarities(z, x)  # [m, J]
  s_y = _similarities(z, y)  # [m, J]
  if form == "uniform_ce":
    # logsumexp(a, b) - (a + b) / 2 == log(2 cosh(t)) with t = (a - b) / 2, written so that
    # at a == b the value is log 2 and the gradient (tanh(t) / 2) is exactly 0 in floating point.
    t = jnp.abs(s_x - s_y) / (2. * tau)
    per_pair = t + jnp.log1p(jnp.exp(-2. * t))
  elif form == "squared_gap":
    per_pair = jnp.square(s_x - s_y)
  else:
    raise ValueError(f"loss.language_form={form!r}: expected one of {LANGUAGE_FORMS}")
  return jnp.mean(per_pair, axis=1)


def language_gap_sums(z, x, y, z_lang, x_lang, y_lang, num_languages: int):
  """Per-cell sums of the language loss's gap `g = s(z, x_j) - s(z, y_j)`, for diagnostics.

  A cell is (z's language, x's language, y's language). What is the same for every entry of a
  cell (its mean gap) is language identity; what varies inside it is pair-specific noise.
  `language_identity_and_noise` turns the sums (added over devices) into the two numbers.

  Args:
    z: [m, D], x, y: [J, D] unit embeddings (as the loss sees them).
    z_lang: [m] int language ids (-1: unknown, its own cell); x_lang, y_lang: [J] int.
    num_languages: L, the number of language ids.

  Returns:
    (count, sum of g, sum of g^2), each [(L + 1)^3] float32.
  """
  gap = _similarities(z, x) - _similarities(z, y)  # [m, J]
  size = num_languages + 1
  z_id, x_id, y_id = (jnp.where(l < 0, num_languages, l) for l in (z_lang, x_lang, y_lang))
  cell = (z_id[:, None] * size + x_id[None, :]) * size + y_id[None, :]  # [m, J]
  seg = lambda v: jax.ops.segment_sum(v.reshape(-1), cell.reshape(-1), num_segments=size ** 3)
  return seg(jnp.ones_like(gap)), seg(gap), seg(jnp.square(gap))


def language_identity_and_noise(count, total, squares):
  """(identity, noise) from `language_gap_sums`: mean(g^2) = identity + noise.

  identity: sum over cells of n_c * mean_c(g)^2 / N, the part of the squared gap that the
    languages involved explain; noise: the squared gap's variance inside cells.
  """
  n = jnp.maximum(jnp.sum(count), 1.)
  identity = jnp.sum(jnp.where(count > 0, jnp.square(total) / jnp.maximum(count, 1.), 0.)) / n
  return identity, jnp.sum(squares) / n - identity


# ------------------------------------------------------------------------------------------------
# EMS (Mao et al., "EMS: Efficient and Effective Massively Multilingual Sentence Embedding");
# follows the reference code Mao-KU/EMS modeling/model_v2.py (BilingualModel.forward). The heads
# that produce the inputs below are in lair/models/ems.py.
# ------------------------------------------------------------------------------------------------

XTR_TARGETS = ("ems", "types")


def bag_of_tokens(ids, mask, vocab_size: int, special_ids: Sequence[int] = (), *,
                  target: str = "ems"):
  """XTR's reconstruction target: the bag of token types of each sentence.

  target="ems" (EMS's code: `label.index_fill_(0, ids[:len], 1 / len)`): every token type present
    gets 1 / n, n the sentence's number of tokens; a repeated token does not add up, so a
    sentence with repeats has a row summing to (#types / n) < 1, as in EMS.
  target="types": every type present gets 1 / #types, a proper distribution (rows sum to 1).

  Padding (`mask == 0`) and `special_ids` (CLS/SEP/BOS/EOS/PAD...) are left out, of the types
  and of n. A sentence with no remaining token gets an all-zero row (its KL term is then 0).

  Args:
    ids: [b, L] int token ids.
    mask: [b, L] 1 for real tokens, 0 for padding.
    vocab_size: V.
    special_ids: token ids to exclude.
    target: "ems" | "types" (`config.loss.xtr_target`).

  Returns:
    [b, V] float32.
  """
  if target not in XTR_TARGETS:
    raise ValueError(f"config.loss.xtr_target={target!r}: expected one of {XTR_TARGETS}")
  keep = mask.astype(bool)
  for special in special_ids:
    keep = keep & (ids != special)
  rows = jnp.broadcast_to(jnp.arange(ids.shape[0])[:, None], ids.shape)
  counts = jnp.zeros((ids.shape[0], vocab_size), jnp.float32).at[rows, ids].add(
      keep.astype(jnp.float32))
  present = (counts > 0).astype(jnp.float32)
  if target == "ems":
    length = jnp.sum(keep.astype(jnp.float32), axis=1, keepdims=True)
  else:
    length = jnp.sum(present, axis=1, keepdims=True)
  return present / jnp.maximum(length, 1.)


def _kl_rows(target, log_probs):
  """sum_v target * (log target - log p) per row, as torch's KLDivLoss (target 0 adds 0).

  target: [b, V] non-negative; log_probs: [b, V] -> [b].
  """
  return jnp.sum(jax.scipy.special.xlogy(target, target) - target * log_probs, axis=1)


def xtr_loss(log_p_y_given_x, log_p_x_given_y, target_x, target_y):
  """EMS cross-lingual token reconstruction, per parallel pair.

  `KL(q_y || p(. | u_x, l_y)) + KL(q_x || p(. | u_y, l_x))`: each side's sentence embedding,
  told the other side's language, predicts the bag of tokens of the translation. EMS averages
  each KL over the batch (KLDivLoss "batchmean"); the caller's mean over rows does that.

  Args:
    log_p_y_given_x: [b, V] the XTR head's log-probabilities from the source embeddings and the
      target language (`ems.XtrHead`).
    log_p_x_given_y: [b, V] from the target embeddings and the source language.
    target_x, target_y: [b, V] `bag_of_tokens` of the source and target sentences.

  Returns:
    [b] float32 per-pair loss.
  """
  return _kl_rows(target_y, log_p_y_given_x) + _kl_rows(target_x, log_p_x_given_y)


def ems_sentence_contrastive_loss(z_x, z_y, *, positive_index=None, tau: float = 0.1):
  """One direction of EMS's sentence contrastive loss: x_i picks y_i, cosine / tau.

  EMS's L_CL is the mean of both directions; like `semantic_contrastive_loss` the step calls this
  as `(z_x, z_y_all)` and `(z_y, z_x_all)` and averages the two means.

  Args:
    z_x: [b, P] projected unit vectors (`ems.EmsProjection`) of the rows this caller holds.
    z_y: [B, P] projected unit vectors of all translations (gathered under shard_map).
    positive_index: [b] int index into `z_y` of each row's translation; default `arange(b)`.
    tau: temperature (`config.loss.ems_tau`, 0.1 in EMS).

  Returns:
    [b] float32 per-row loss.
  """
  return infonce_rows(z_x, z_y, positive_index=positive_index, tau=tau)
