"""The train step: embed every input, score the objectives across the mesh, one optimiser update.

Read top to bottom:

1. `embedding_inputs` picks from the batch the texts the objective plan (lair/objectives.py)
   embeds: IR queries/passages/negatives, the two sides of parallel pairs, monolingual text.
2. `embed_streams` embeds them under jit with every batch split along the `data` mesh axis; XLA
   (GSPMD) runs the encoder data parallel and all-gathers FSDP-sharded params where needed.
3. `objective_terms` runs under `shard_map`: each device all-gathers the *candidates* (passages,
   negatives, translations) over `data` and scores the rows it holds against the global batch,
   so every query sees every passage and negative of the global batch. Each term is
   `psum(sum(local per-row losses)) / global_rows`, exactly the single-device mean; the gradient
   is then the single-device gradient too (shard_map's transpose turns all_gather into a
   reduce-scatter and psums the cotangents of the replicated objective params).
4. `loss_and_grads` differentiates the weighted total, either straight through the encoder or,
   with `train.grad_cache_chunk > 0`, with GradCache (Gao et al. 2021): embed the global batch in
   chunks without keeping activations, take the loss's gradient w.r.t. the embeddings, then
   re-run each chunk under a VJP to push that gradient into the params. Activation memory is one
   chunk's instead of the whole batch's where each input spans two chunks or more (an input in
   one chunk keeps its activations as plain backprop does; a start-up warning names it), and
   the result equals the plain gradient.
5. `make_train_step` adds clipping/AdamW (optim.py) and returns the jitted step.

The embedding function is passed in (`embed_fn(params, ids [N, L], mask [N, L], tower, rng) ->
[N, D]`, unnormalised). Every term but EMS's takes L2-normalised embeddings (when
`model.normalize`); the EMS heads take the raw pooled vectors, as EMS does.
"""
import dataclasses
import functools
from typing import Any, Callable, Mapping, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, PartitionSpec as P

from lair import losses
from lair import objectives
from lair import sharding
from lair.models import ems
from lair.models import flops
from lair.models import pooling
from lair.models import retriever

DATA = sharding.DATA_AXIS

EmbedFn = Callable[..., jax.Array]  # (params, ids [N, L], mask [N, L], tower, rng) -> [N, D]


# ------------------------------------------------------------------------------------------------
# 1. What to embed.
# ------------------------------------------------------------------------------------------------


def embedding_inputs(batch: Mapping, plan: objectives.ObjectivePlan
                     ) -> dict[str, tuple[Any, Any, str]]:
  """{input name: (ids [N, L], mask [N, L], tower)} for the inputs of the plan.

  Negatives [B, K, L] are flattened to [B*K, L] (row-major, so a device holding queries i..j
  holds their negatives too). Parallel sentences and monolingual text use the query tower.
  """
  missing = [s for s in plan.streams if s not in batch]
  if missing:
    raise ValueError(f"the batch has no {missing} stream(s), which the objective plan needs "
                     f"(streams present: {sorted(batch)})")
  inputs = {}
  for name in plan.inputs:
    spec = objectives.INPUTS[name]
    ids, mask = batch[spec.stream][spec.ids], batch[spec.stream][spec.mask]
    if name == "negative":
      ids, mask = ids.reshape(-1, ids.shape[-1]), mask.reshape(-1, mask.shape[-1])
    inputs[name] = (ids, mask, spec.tower)
  return inputs


# ------------------------------------------------------------------------------------------------
# 2. Embedding, plain or in GradCache chunks.
# ------------------------------------------------------------------------------------------------


def input_rng(rng, name: str, chunk: int = 0):
  """The dropout rng of one input (and chunk); the same in GradCache's two passes."""
  return jax.random.fold_in(jax.random.fold_in(rng, objectives.INPUT_IDS[name]), chunk)


def embed_streams(embed_fn: EmbedFn, params, inputs: Mapping, rng) -> dict:
  """{name: [N, D]} embeddings of every input, in one pass each."""
  return {name: embed_fn(params, ids, mask, tower, input_rng(rng, name))
          for name, (ids, mask, tower) in inputs.items()}


def chunk_layout(rows: int, axis_size: int, chunk: int) -> tuple[int, int]:
  """(num_chunks, rows per device per chunk) for GradCache over `rows` global rows."""
  local = rows // axis_size
  per_device = min(chunk, local)
  if local % per_device:
    raise ValueError(f"config key train.grad_cache_chunk={chunk}: each device holds {local} "
                     f"rows of an input, which chunks of {per_device} do not divide")
  return local // per_device, per_device


def to_chunks(x, axis_size: int, chunk: int):
  """[N, ...] split along `data` -> [num_chunks, axis_size * c, ...].

  Chunk i holds the i-th c rows of every device, so each chunk stays split along `data`
  without moving rows between devices.
  """
  n, c = chunk_layout(x.shape[0], axis_size, chunk)
  rest = x.shape[1:]
  return x.reshape(axis_size, n, c, *rest).swapaxes(0, 1).reshape(n, axis_size * c, *rest)


def from_chunks(y, axis_size: int):
  """Inverse of `to_chunks`: [num_chunks, axis_size * c, ...] -> [N, ...]."""
  n, rows = y.shape[:2]
  rest = y.shape[2:]
  c = rows // axis_size
  return y.reshape(n, axis_size, c, *rest).swapaxes(0, 1).reshape(n * rows, *rest)


def single_chunk_inputs(inputs: Mapping, axis_size: int, chunk: int) -> dict:
  """{name: rows per device} of the inputs GradCache embeds in one chunk (rows <= chunk)."""
  return {name: ids.shape[0] // axis_size for name, (ids, _, _) in inputs.items()
          if chunk_layout(ids.shape[0], axis_size, chunk)[0] == 1}


def _chunked(inputs: Mapping, axis_size: int, chunk: int):
  return {name: (to_chunks(ids, axis_size, chunk), to_chunks(mask, axis_size, chunk), tower)
          for name, (ids, mask, tower) in inputs.items()}


def embed_chunked(embed_fn: EmbedFn, params, chunks: Mapping, rng, axis_size: int) -> dict:
  """GradCache's first pass: embeddings of every input, chunk by chunk, no activations kept."""
  params = jax.lax.stop_gradient(params)
  out = {}
  for name, (ids, mask, tower) in chunks.items():
    def body(_, xs, name=name, tower=tower):
      i, ids_i, mask_i = xs
      return None, embed_fn(params, ids_i, mask_i, tower, input_rng(rng, name, i))
    _, emb = jax.lax.scan(body, None, (jnp.arange(ids.shape[0]), ids, mask))
    out[name] = from_chunks(emb, axis_size)
  return out


def backprop_chunked(embed_fn: EmbedFn, params, chunks: Mapping, emb_grads: Mapping, rng,
                     axis_size: int, chunk: int):
  """GradCache's second pass: sum over chunks of VJP(embed chunk)(d loss / d embeddings)."""
  grads = jax.tree.map(jnp.zeros_like, params)
  for name, (ids, mask, tower) in chunks.items():
    cotangents = to_chunks(emb_grads[name], axis_size, chunk)

    def body(acc, xs, name=name, tower=tower):
      i, ids_i, mask_i, cot_i = xs
      _, vjp = jax.vjp(lambda p: embed_fn(p, ids_i, mask_i, tower, input_rng(rng, name, i)),
                       params)
      return jax.tree.map(jnp.add, acc, vjp(cot_i)[0]), None

    grads, _ = jax.lax.scan(body, grads, (jnp.arange(ids.shape[0]), ids, mask, cotangents))
  return grads


# ------------------------------------------------------------------------------------------------
# 3. The objectives, per device under shard_map.
# ------------------------------------------------------------------------------------------------


def _gather(x):
  """Local rows [b, ...] -> the global batch [B, ...], same order on every device."""
  return jax.lax.all_gather(x, DATA, axis=0, tiled=True)


def _global_mean(rows):
  """psum(sum(local rows)) / global rows: the single-device mean of the per-row losses."""
  return jax.lax.psum(jnp.sum(rows), DATA) / jax.lax.psum(rows.shape[0], DATA)


def _positive_index(local_rows: int):
  """[b] global index of each local row among the gathered candidates."""
  return jax.lax.axis_index(DATA) * local_rows + jnp.arange(local_rows)


def _symmetric(one_direction, x, y, *, own_side_negatives: bool = False):
  """Mean of both directions of a contrastive loss on local x, y [b, D].

  With `own_side_negatives`, each direction also gets its anchors' own side, gathered, as a third
  argument (losses.semantic_contrastive_loss_both_sides).
  """
  idx = _positive_index(x.shape[0])
  x_all, y_all = _gather(x), _gather(y)
  own = lambda side_all: (side_all,) if own_side_negatives else ()
  return 0.5 * (_global_mean(one_direction(x, y_all, *own(x_all), positive_index=idx))
                + _global_mean(one_direction(y, x_all, *own(y_all), positive_index=idx)))


def objective_terms(emb: Mapping, extras: Mapping, objective_params: Mapping, rng, *,
                    plan: objectives.ObjectivePlan, loss_cfg, normalize: bool,
                    special_ids: Sequence[int]) -> dict:
  """Every active term's global mean, on one device's rows (call under shard_map over `data`).

  Args:
    emb: {input name: [b_name, D]} this device's (unnormalised) embeddings.
    extras: this device's parallel token ids/masks and language ids (XTR, diagnostics).
    objective_params: replicated {"xtr_head", "ems_projection"} as the active terms need.
    rng: the step's key (dropout in the XTR head; folded with the device index).
    plan: the objective plan (lair/objectives.py).
    loss_cfg: config.loss (temperatures, margins, forms).
    normalize: L2-normalise embeddings for the contrastive terms (config.model.normalize).
    special_ids: token ids XTR leaves out of its bags of tokens.

  The terms (each a global mean over rows):
    ir: query -> (all passages + all hard negatives) InfoNCE; with loss.ir_bidirectional the
      mean of that and passage -> all queries.
    semantic: mean of both directions, src -> all tgt and tgt -> all src (with
      loss.semantic_negatives="both_sides", each also against all other rows of its own side).
    language: z (plan.language_z) against all parallel pairs.
    xtr: EMS token reconstruction per parallel pair (no candidates to gather).
    ems_contrastive: EMS's projected contrastive loss, mean of both directions.

  Returns:
    {term: scalar} (unweighted), "loss" (the weighted total) and "ir_candidates" (how many
    candidates each query was scored against: the global B * (1 + K)).
  """
  unit = {name: pooling.l2_normalize(x) if normalize else x for name, x in emb.items()}
  tau = loss_cfg.tau
  out = {}
  if plan.has("ir"):
    q, p = unit["query"], unit["passage"]
    b, dim = q.shape
    idx = _positive_index(b)
    p_all = _gather(p)
    n_all = None
    if "negative" in unit:
      n_all = _gather(unit["negative"].reshape(b, -1, dim))  # [B, K, D]
    out["ir"] = _global_mean(losses.retrieval_infonce(
        q, p_all, n_all, positive_index=idx, tau=tau, margin=loss_cfg.ir_margin))
    if loss_cfg.ir_bidirectional:
      out["ir"] = 0.5 * (out["ir"] + _global_mean(losses.passage_to_query_infonce(
          p, _gather(q), positive_index=idx, tau=tau, margin=loss_cfg.ir_margin)))
    candidates = p_all.shape[0] + (0 if n_all is None else n_all.shape[0] * n_all.shape[1])
    out["ir_candidates"] = jnp.float32(candidates)
  if plan.has("semantic"):
    both_sides = loss_cfg.get("semantic_negatives", "other_side") == "both_sides"
    one_direction = (losses.semantic_contrastive_loss_both_sides if both_sides
                     else losses.semantic_contrastive_loss)
    out["semantic"] = _symmetric(functools.partial(one_direction, tau=tau), unit["src"],
                                 unit["tgt"], own_side_negatives=both_sides)
  if plan.has("language"):
    z = jnp.concatenate([unit[name] for name in plan.language_z], axis=0)
    x, y = _gather(unit["src"]), _gather(unit["tgt"])
    if loss_cfg.language_stop_pairs:
      x, y = jax.lax.stop_gradient(x), jax.lax.stop_gradient(y)
    out["language"] = _global_mean(losses.language_contrastive_loss(
        z, x, y, tau=loss_cfg.language_tau or tau, form=loss_cfg.language_form))
    out.update(_language_split(z, x, y, extras, emb, plan))
  if plan.has("xtr"):
    out["xtr"] = _global_mean(_xtr_rows(objective_params["xtr_head"], emb, extras, rng,
                                        loss_cfg=loss_cfg, special_ids=special_ids))
  if plan.has("ems_contrastive"):
    project = ems.EmsProjection(loss_cfg.ems_projection_dim)
    z_src, z_tgt = (project.apply({"params": objective_params["ems_projection"]}, emb[n])
                    for n in ("src", "tgt"))
    out["ems_contrastive"] = _symmetric(
        functools.partial(losses.ems_sentence_contrastive_loss, tau=loss_cfg.ems_tau),
        z_src, z_tgt)
  out["loss"] = sum(weight * out[name] for name, weight in plan.weights.items())
  return out


def _xtr_rows(head_params, emb: Mapping, extras: Mapping, rng, *, loss_cfg,
              special_ids: Sequence[int]):
  """[b] EMS token reconstruction of this device's pairs, both ways (losses.xtr_loss)."""
  vocab_size = head_params["decoder"]["kernel"].shape[1]
  head = ems.xtr_head(loss_cfg, head_params["language_embedding"]["embedding"].shape[0],
                      vocab_size)
  rng = jax.random.fold_in(rng, jax.lax.axis_index(DATA))  # Each device's rows their own draw.
  rng_xy, rng_yx = jax.random.split(rng)
  apply = functools.partial(head.apply, {"params": head_params}, train=True)
  log_p_y = apply(emb["src"], extras["tgt_lang"], rngs={"dropout": rng_xy})
  log_p_x = apply(emb["tgt"], extras["src_lang"], rngs={"dropout": rng_yx})
  bag = functools.partial(losses.bag_of_tokens, vocab_size=vocab_size, special_ids=special_ids,
                          target=loss_cfg.get("xtr_target", "ems"))
  return losses.xtr_loss(log_p_y, log_p_x, bag(extras["src_ids"], extras["src_mask"]),
                         bag(extras["tgt_ids"], extras["tgt_mask"]))


def _language_split(z, x, y, extras: Mapping, emb: Mapping,
                    plan: objectives.ObjectivePlan) -> dict:
  """The language loss's squared gap split into identity and noise (diagnostics, no gradient).

  "language_identity": the part of mean((s(z,x) - s(z,y))^2) explained by the languages of z, x
  and y; "language_noise": the rest, pair-specific. A term doing its job has identity well
  above zero at first and shrinking; one that sees mostly noise has identity near zero.
  """
  z_lang = jnp.concatenate([
      extras["mono_lang"] if name == "mono"
      else jnp.full((emb[name].shape[0],), plan.ir_language_id, jnp.int32)
      for name in plan.language_z])
  sums = losses.language_gap_sums(
      jax.lax.stop_gradient(z), jax.lax.stop_gradient(x), jax.lax.stop_gradient(y), z_lang,
      _gather(extras["src_lang"]), _gather(extras["tgt_lang"]), plan.num_languages)
  identity, noise = losses.language_identity_and_noise(*(jax.lax.psum(v, DATA) for v in sums))
  return {"language_identity": identity, "language_noise": noise}


def _extras(batch: Mapping, plan: objectives.ObjectivePlan) -> dict:
  """The per-row arrays the terms read besides embeddings: token bags and language ids."""
  extras = {}
  if plan.has("xtr") or plan.has("language"):
    extras.update(src_lang=batch["parallel"]["src_lang"], tgt_lang=batch["parallel"]["tgt_lang"])
  if plan.has("xtr"):
    extras.update({k: batch["parallel"][k] for k in ("src_ids", "src_mask", "tgt_ids",
                                                      "tgt_mask")})
  if "mono" in plan.language_z:
    extras["mono_lang"] = batch["mono"]["lang"]
  return extras


# ------------------------------------------------------------------------------------------------
# 4. Loss and gradients.
# ------------------------------------------------------------------------------------------------


def make_loss_and_grads(plan: objectives.ObjectivePlan, loss_cfg, embed_fn: EmbedFn, mesh: Mesh,
                        *, normalize: bool = True, grad_cache_chunk: int = 0,
                        special_ids: Sequence[int] = ()):
  """fn(trainable, batch, rng) -> (metrics, grads), to be called under jit.

  `trainable` is {"retriever": params, "objectives": params}; `batch` holds global arrays split
  along `data` (sharding.put_batch); metrics are the per-term means, "loss" and "ir_candidates".
  """
  terms_fn = functools.partial(objective_terms, plan=plan, loss_cfg=loss_cfg,
                               normalize=normalize, special_ids=tuple(special_ids))
  sharded_terms = jax.shard_map(terms_fn, mesh=mesh, in_specs=(P(DATA), P(DATA), P(), P()),
                                out_specs=P())
  axis_size = mesh.shape[DATA]

  def loss_from_embeddings(emb, objective_params, extras, rng):
    # The objectives' own dropout (the XTR head) draws from a key no embedded input uses.
    terms_rng = jax.random.fold_in(rng, len(objectives.INPUT_IDS))
    metrics = sharded_terms(emb, extras, objective_params, terms_rng)
    return metrics["loss"], metrics

  def plain(trainable, batch, rng):
    inputs = embedding_inputs(batch, plan)
    extras = _extras(batch, plan)

    def total(trainable):
      emb = embed_streams(embed_fn, trainable["retriever"], inputs, rng)
      return loss_from_embeddings(emb, trainable["objectives"], extras, rng)

    (_, metrics), grads = jax.value_and_grad(total, has_aux=True)(trainable)
    return metrics, grads

  def grad_cache(trainable, batch, rng):
    inputs = embedding_inputs(batch, plan)
    extras = _extras(batch, plan)
    whole = single_chunk_inputs(inputs, axis_size, grad_cache_chunk)
    if whole:
      # Measured on CPU: with one chunk there is no loop left to bound memory, and the compiled
      # step holds those inputs' activations as plain backprop does (e5-small at batch 32:
      # 8.0 GB with one chunk per input, 7.7 GB plain, 4.0 GB with two chunks); optimization
      # barriers between the inputs did not change that.
      logging.warning(
          "train.grad_cache_chunk=%d: %s fit in one chunk per device, so GradCache saves no "
          "activation memory on them; a chunk of at most half their rows does", grad_cache_chunk,
          ", ".join(f"{name} ({rows} rows)" for name, rows in whole.items()))
    chunks = _chunked(inputs, axis_size, grad_cache_chunk)
    emb = embed_chunked(embed_fn, trainable["retriever"], chunks, rng, axis_size)
    (_, metrics), (emb_grads, objective_grads) = jax.value_and_grad(
        loss_from_embeddings, argnums=(0, 1), has_aux=True)(emb, trainable["objectives"], extras,
                                                              rng)
    retriever_grads = backprop_chunked(embed_fn, trainable["retriever"], chunks, emb_grads, rng,
                                       axis_size, grad_cache_chunk)
    return metrics, {"retriever": retriever_grads, "objectives": objective_grads}

  return grad_cache if grad_cache_chunk > 0 else plain


# ------------------------------------------------------------------------------------------------
# 5. The jitted train step.
# ------------------------------------------------------------------------------------------------


def compiler_options() -> dict:
  """XLA options for the train step on the current backend (jax.jit's `compiler_options`).

  GPU: XLA's dot merger joins matmuls that share an operand into one matmul over the
  concatenation of the others. With one encoder for queries and passages every dense layer's
  weight is shared by both towers, so each layer's [tokens, H] and [tokens, 4H] activations are
  copied into concatenations, forward and backward; those copies cost more than the merge saves.
  Threshold 0 turns the merger off: the base-shape bfloat16 step went from 69 to 63 ms on an H200
  (docs/training.md). Elsewhere: XLA's defaults.
  """
  if jax.default_backend() == "gpu":
    return {"xla_gpu_dot_merger_threshold_mb": 0}
  return {}


def make_train_step(loss_and_grads, optimizer: optax.GradientTransformation,
                    schedule: Callable, state_sharding, mesh: Mesh):
  """jit(step)(state, batch) -> (state, metrics).

  state: {"step": int32 [], "params": trainable, "opt_state", "rng": the run's base key}. Each
  step's rng is `fold_in(rng, step)`, so a resumed run draws the same dropout as an unbroken one.
  """
  def step(state, batch):
    rng = jax.random.fold_in(state["rng"], state["step"])
    metrics, grads = loss_and_grads(state["params"], batch, rng)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics = dict(metrics, grad_norm=optax.global_norm(grads),
                   learning_rate=schedule(state["step"]))
    new_state = dict(state, step=state["step"] + 1, params=params, opt_state=opt_state)
    return new_state, metrics

  return jax.jit(step, out_shardings=(state_sharding, sharding.replicated(mesh)),
                 donate_argnums=0, compiler_options=compiler_options())


def shape_signature(batch: Mapping) -> tuple:
  """The shapes that decide whether the step compiles again: ((path, shape), ...)."""
  leaves = jax.tree_util.tree_flatten_with_path(batch)[0]
  return tuple((jax.tree_util.keystr(path), tuple(x.shape)) for path, x in leaves)


def model_flops(batch: Mapping, plan: objectives.ObjectivePlan, encoder_config) -> float:
  """Model FLOPs of one training step on `batch` (lair/models/flops.py: forward + backward).

  Counts every input the plan embeds at its padded shape [N, L]; the objectives' own work
  (similarities, the EMS heads) is small next to the encoder and left out.
  """
  return sum(flops.encoder_flops(encoder_config, *ids.shape, train=True)
             for ids, _, _ in embedding_inputs(batch, plan).values())


def make_embed_fn(rcfg, *, train: bool = True, freeze_embeddings: bool = False) -> EmbedFn:
  """embed_fn for the step: lair's retriever `embed`, unnormalised (the step normalises).

  With `freeze_embeddings` the token embedding tables are stop-gradiented: XLA then computes
  no [V, H] gradient for them at all (the optimiser gives frozen leaves no update and no state).
  """
  raw = dataclasses.replace(rcfg, normalize=False)

  def embed_fn(params, ids, mask, tower, rng):
    if freeze_embeddings:
      params = retriever.stop_frozen_gradients(params)
    return retriever.embed(params, ids, mask, rcfg=raw, tower=tower, train=train, rng=rng)

  return embed_fn
