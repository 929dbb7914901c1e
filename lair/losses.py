"""lair's training objectives, as pure JAX functions.

Convention (docs/design.md, "Losses"): every loss returns a PER-ROW loss vector over the rows the
caller holds, scored against the candidates it is given, and the caller averages. On one device
the rows are the whole batch and the candidates are the whole batch. Under `shard_map` a device
passes its local rows, the all-gathered global candidates and `positive_index`, the global index of
each local row's positive; `psum(sum(rows)) / global_rows` is then exactly the single-device mean.

Contrastive inputs are L2-normalised embeddings: a similarity is a dot product, divided by the
temperature `tau`. Logits and softmaxes are computed in float32 whatever the embedding dtype.

Which terms a run trains, and with what weight, comes from `config.loss` (see `active_terms`);
composing them is the trainer's job.
"""
from typing import Mapping, Optional, Sequence

import jax
import jax.numpy as jnp

from lair.models import pooling

# Dot products of embeddings are the logits: full float32 precision even on accelerators whose
# default matmul precision is lower (TF32 / bf16 passes).
_HIGHEST = jax.lax.Precision.HIGHEST

LANGUAGE_FORMS = ("uniform_ce", "squared_gap")


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


def symmetric_semantic_contrastive_loss(x, y, *, tau: float):
  """The scalar symmetric semantic contrastive loss on full arrays (one device).

  Args:
    x: [B, D] embeddings of one side of B parallel pairs.
    y: [B, D] embeddings of their translations.
    tau: temperature.

  Returns:
    scalar float32: `(mean_i CE(x_i -> y) + mean_i CE(y_i -> x)) / 2`.
  """
  return 0.5 * (jnp.mean(semantic_contrastive_loss(x, y, tau=tau))
                + jnp.mean(semantic_contrastive_loss(y, x, tau=tau)))


def language_contrastive_loss(z, x, y, *, tau: float, form: str = "uniform_ce"):
  """Language contrastive loss (Hu et al. 2023): no sentence should look closer to one language.

  For each non-parallel sentence z and each parallel pair (x_j, y_j), z should be equally similar
  to both sides of the pair, so that similarity carries no language identity.

  The paper's equation could not be checked; this is our reading of it. With
  `a_j = s(z, x_j) / tau` and `b_j = s(z, y_j) / tau`:

    form="uniform_ce": `-(1/2) [log softmax(a_j, b_j)_a + log softmax(a_j, b_j)_b]`, i.e. the
      cross-entropy of the two-way softmax against the uniform target (1/2, 1/2); equal to
      `logsumexp(a_j, b_j) - (a_j + b_j) / 2`, minimal (= log 2, with zero gradient) exactly
      when `a_j == b_j`.
    form="squared_gap": `(s(z, x_j) - s(z, y_j))^2` (no tau), minimal (= 0) at the same place.

  Both are averaged over the J pairs.

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


# ------------------------------------------------------------------------------------------------
# EMS (Mao et al., "EMS: Efficient and Effective Massively Multilingual Sentence Embedding");
# follows the reference code Mao-KU/EMS modeling/model_v2.py (BertForMaskedLM, BilingualModel).
# ------------------------------------------------------------------------------------------------

_LAYER_NORM_EPS = 1e-12  # As EMS's BertLayerNorm.


def _layer_norm(x, params):
  """LayerNorm over the last axis. x: [..., F]; params: {"scale": [F], "bias": [F]}."""
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + _LAYER_NORM_EPS) * params["scale"] + params["bias"]


def _norm_init(features: int):
  return {"scale": jnp.ones((features,), jnp.float32), "bias": jnp.zeros((features,), jnp.float32)}


def init_xtr_head(rng, hidden: int, num_languages: int, vocab_size: int, lang_dim: int = 128):
  """Parameters of the EMS cross-lingual token reconstruction (XTR) head.

  As EMS's `has_la_emb and not share_emb` head: a language embedding (with its LayerNorm), a
  dense transform of `[e_l; u]` that keeps its width `lang_dim + hidden`, a LayerNorm, and a
  bias-free decoder onto the vocabulary.

  Args:
    rng: a PRNG key.
    hidden: H, width of the sentence embeddings fed to the head.
    num_languages: rows of the language table (`len(config.data.languages)`).
    vocab_size: V, the tokenizer's vocabulary size.
    lang_dim: width of the language embedding (`config.loss.ems_language_embedding_dim`).

  Returns:
    {"language_embedding": [num_languages, lang_dim], "language_norm": {scale, bias},
     "dense": {"kernel": [lang_dim + H, lang_dim + H], "bias"}, "norm": {scale, bias},
     "decoder": {"kernel": [lang_dim + H, V]}}, all float32.
  """
  width = lang_dim + hidden
  k_lang, k_dense, k_dec = jax.random.split(rng, 3)
  return {
      "language_embedding": 0.02 * jax.random.normal(
          k_lang, (num_languages, lang_dim), jnp.float32),
      "language_norm": _norm_init(lang_dim),
      "dense": pooling.dense_init(k_dense, width, width),
      "norm": _norm_init(width),
      "decoder": pooling.dense_init(k_dec, width, vocab_size, bias=False),
  }


def xtr_log_probs(head_params, u, target_lang):
  """log p(. | u, l): the XTR head's distribution over the vocabulary.

  `h = LayerNorm(swish(W1 [e_l; u] + b1))`, `log p = log_softmax(W_out h)`, with
  `e_l = LayerNorm(E[l])` the target language's embedding.

  Args:
    head_params: from `init_xtr_head`.
    u: [b, H] sentence embeddings.
    target_lang: [b] int language ids of the sentences to reconstruct.

  Returns:
    [b, V] float32 log-probabilities.
  """
  e_l = _layer_norm(head_params["language_embedding"][target_lang], head_params["language_norm"])
  features = jnp.concatenate([e_l, u.astype(jnp.float32)], axis=-1)  # [b, lang_dim + H]
  dense = head_params["dense"]
  h = jax.nn.swish(jnp.matmul(features, dense["kernel"], precision=_HIGHEST) + dense["bias"])
  h = _layer_norm(h, head_params["norm"])
  logits = jnp.matmul(h, head_params["decoder"]["kernel"], precision=_HIGHEST)
  return jax.nn.log_softmax(logits, axis=-1)


def bag_of_tokens(ids, mask, vocab_size: int, special_ids: Sequence[int] = ()):
  """The normalised bag of token TYPES of each sentence: XTR's reconstruction target.

  Each distinct token type of a sentence gets probability 1 / (number of distinct types);
  repeats do not weigh more (EMS fills each type present with one value). Padding
  (`mask == 0`) and `special_ids` (CLS/SEP/BOS/EOS/PAD...) are left out. A sentence with no
  remaining token gets an all-zero row (its KL term is then 0).

  Args:
    ids: [b, L] int token ids.
    mask: [b, L] 1 for real tokens, 0 for padding.
    vocab_size: V.
    special_ids: token ids to exclude.

  Returns:
    [b, V] float32, rows summing to 1 (or 0).
  """
  keep = mask.astype(bool)
  for special in special_ids:
    keep = keep & (ids != special)
  rows = jnp.broadcast_to(jnp.arange(ids.shape[0])[:, None], ids.shape)
  counts = jnp.zeros((ids.shape[0], vocab_size), jnp.float32).at[rows, ids].add(
      keep.astype(jnp.float32))
  present = (counts > 0).astype(jnp.float32)
  return present / jnp.maximum(jnp.sum(present, axis=1, keepdims=True), 1.)


def _kl_rows(target, log_probs):
  """KL(target || p) per row. target: [b, V] probabilities; log_probs: [b, V] -> [b]."""
  return jnp.sum(jax.scipy.special.xlogy(target, target) - target * log_probs, axis=1)


def xtr_loss(head_params, u_x, u_y, x_ids, x_mask, y_ids, y_mask, x_lang, y_lang, *,
             special_ids: Sequence[int] = ()):
  """EMS cross-lingual token reconstruction, per parallel pair.

  `KL(q_y || p(. | u_x, l_y)) + KL(q_x || p(. | u_y, l_x))`: each side's sentence embedding,
  told the other side's language, predicts the bag of token types of the translation. Rows are
  independent, so under shard_map each device passes just its own pairs.

  Args:
    head_params: from `init_xtr_head`.
    u_x: [b, H] sentence embeddings of the source sides (EMS uses the unnormalised mean pool).
    u_y: [b, H] sentence embeddings of the target sides.
    x_ids, x_mask: [b, Lx] int token ids and attention mask of the source sides.
    y_ids, y_mask: [b, Ly] of the target sides.
    x_lang, y_lang: [b] int language ids (indexing `config.data.languages`).
    special_ids: token ids left out of the bags (e.g. `tokenizer.all_special_ids`).

  Returns:
    [b] float32 per-pair loss.
  """
  vocab_size = head_params["decoder"]["kernel"].shape[1]
  q_x = bag_of_tokens(x_ids, x_mask, vocab_size, special_ids)
  q_y = bag_of_tokens(y_ids, y_mask, vocab_size, special_ids)
  return (_kl_rows(q_y, xtr_log_probs(head_params, u_x, y_lang))
          + _kl_rows(q_x, xtr_log_probs(head_params, u_y, x_lang)))


def init_ems_projection(rng, hidden: int, projection_dim: int = 128):
  """Parameters of EMS's sentence projection `z = W2 relu(W1 u + b1) + b2`.

  Args:
    rng: a PRNG key.
    hidden: H, width of the sentence embeddings.
    projection_dim: output width (`config.loss.ems_projection_dim`).

  Returns:
    {"dense1": {"kernel": [H, H], "bias": [H]}, "dense2": {"kernel": [H, P], "bias": [P]}}.
  """
  k1, k2 = jax.random.split(rng)
  return {"dense1": pooling.dense_init(k1, hidden, hidden),
          "dense2": pooling.dense_init(k2, hidden, projection_dim)}


def ems_project(projection_params, u):
  """EMS's projection, L2-normalised so that dot products are cosines. u: [b, H] -> [b, P]."""
  d1, d2 = projection_params["dense1"], projection_params["dense2"]
  h = jax.nn.relu(jnp.matmul(u.astype(jnp.float32), d1["kernel"], precision=_HIGHEST) + d1["bias"])
  z = jnp.matmul(h, d2["kernel"], precision=_HIGHEST) + d2["bias"]
  # EMS's nn.CosineSimilarity clamps each norm at 1e-8.
  return z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-8)


def ems_sentence_contrastive_loss(projection_params, u_x, u_y, *, positive_index=None,
                                  tau: float = 0.1):
  """One direction of EMS's sentence contrastive loss: x_i picks y_i, cosine of projections / tau.

  EMS's L_CL is the mean of both directions; like `semantic_contrastive_loss` the step calls this
  as `(u_x, u_y_all)` and `(u_y, u_x_all)` and averages the two means.

  Args:
    projection_params: from `init_ems_projection`.
    u_x: [b, H] sentence embeddings of the rows this caller holds.
    u_y: [B, H] sentence embeddings of all translations (globally gathered under shard_map).
    positive_index: [b] int index into `u_y` of each row's translation; default `arange(b)`.
    tau: temperature (`config.loss.ems_tau`, 0.1 in EMS).

  Returns:
    [b] float32 per-row loss.
  """
  return infonce_rows(ems_project(projection_params, u_x), ems_project(projection_params, u_y),
                      positive_index=positive_index, tau=tau)


# Objective name -> the `config.loss` key holding its weight.
_WEIGHT_KEYS = {
    "ir": "ir_weight",
    "semantic": "semantic_weight",
    "language": "language_weight",
    "xtr": "xtr_weight",
    "ems_contrastive": "ems_contrastive_weight",
}


def active_terms(loss_config: Mapping) -> dict:
  """The objectives a run trains: {name: weight} for every term whose weight is nonzero.

  Names: "ir" (retrieval_infonce, plus passage_to_query_infonce when `loss.ir_bidirectional`),
  "semantic", "language", "xtr", "ems_contrastive".

  Args:
    loss_config: `config.loss`.

  Returns:
    dict name -> float weight, in the order above; weight-0 terms are absent.
  """
  for name, key in _WEIGHT_KEYS.items():
    if key not in loss_config:
      raise KeyError(f"config.loss.{key} is missing: lair/configs.py defines it (term {name!r})")
    if float(loss_config[key]) < 0:
      raise ValueError(f"config.loss.{key}={loss_config[key]}: expected a weight >= 0")
  if loss_config.get("language_form", "uniform_ce") not in LANGUAGE_FORMS:
    raise ValueError(f"config.loss.language_form={loss_config['language_form']!r}: "
                     f"expected one of {LANGUAGE_FORMS}")
  return {name: float(loss_config[key]) for name, key in _WEIGHT_KEYS.items()
          if float(loss_config[key]) != 0}
