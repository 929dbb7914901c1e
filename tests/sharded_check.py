"""Compares lair's sharded loss/gradients with an independent single-device computation.

Run by tests/test_sharded.py and tests/test_train_step.py in a subprocess, since the device count
is fixed when jax starts:  XLA_FLAGS=--xla_force_host_platform_device_count=8 python
tests/sharded_check.py CASES...  Prints one JSON object: for each case, the relative error of the
loss and of the gradients (max over leaves of ||a - b|| / ||b||) and the step's metrics.

The reference embeds the whole global batch on one device with `retriever.embed` and applies the
loss functions of lair/losses.py to full arrays (`positive_index` = arange), averaging with
`jnp.mean`: no shard_map, no gathers, no chunking.
"""
import dataclasses
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from lair import configs
from lair import losses
from lair import objectives
from lair import sharding
from lair.models import bert
from lair.models import ems
from lair.models import pooling
from lair.models import retriever
from lair.train import step as step_lib

VOCAB, B, K, P_PAIRS, M, L = 97, 16, 2, 16, 8, 12
LANGUAGES = 3
SPECIAL_IDS = (0, 1, 2)

# Objective weights per case; every case also checks the per-term metrics.
OBJECTIVES = {
    "ir": dict(ir_weight=1.0, ir_margin=0.1, ir_bidirectional=True),
    "semantic": dict(ir_weight=0.0, semantic_weight=1.0),
    "language": dict(ir_weight=0.0, language_weight=1.0, language_inputs="ir+mono"),
    # The pair behind stop_gradient (only z moves) and the term's own temperature.
    "language_stop_pairs": dict(ir_weight=0.0, language_weight=1.0, language_inputs="ir+mono",
                                language_stop_pairs=True, language_tau=0.1),
    "xtr": dict(ir_weight=0.0, xtr_weight=1.0),
    "ems_contrastive": dict(ir_weight=0.0, ems_contrastive_weight=1.0),
    "all": dict(ir_weight=1.0, semantic_weight=0.5, language_weight=0.3, xtr_weight=0.2,
                ems_contrastive_weight=0.4, language_inputs="mono", language_form="squared_gap",
                semantic_negatives="both_sides"),
}


def loss_config(**weights):
  cfg = configs.default_config().loss
  # No dropout in the XTR head: a reference on one device cannot draw each device's masks.
  cfg.update(ems_language_embedding_dim=8, ems_projection_dim=16, ems_language_dropout=0.0,
             **weights)
  return cfg


def plan_for(lcfg) -> objectives.ObjectivePlan:
  """The objective plan of `lcfg` with every stream of `random_batch` available."""
  config = configs.default_config()
  config.loss = lcfg
  config.data.ir.update(paths=["ir.tsv"], num_negatives=K)
  config.data.mono.paths = ["eng:mono.txt"]
  return objectives.plan_objectives(config)


def tiny_rcfg(dropout: float, **kw):
  enc = bert.EncoderConfig(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=2,
                           intermediate_size=64, max_position_embeddings=64,
                           hidden_dropout=dropout, attention_dropout=dropout)
  return retriever.RetrieverConfig(encoder=enc, **kw)


def random_batch(seed: int = 0):
  """A global batch in design.md's structure with ragged (right-padded) lengths."""
  rs = np.random.RandomState(seed)

  def texts(*shape):
    ids = rs.randint(3, VOCAB, size=(*shape, L)).astype(np.int32)
    lengths = rs.randint(2, L + 1, size=shape)
    mask = (np.arange(L) < lengths[..., None]).astype(np.int32)
    ids[..., 0] = 2  # A CLS-like special token, left out of XTR's bags.
    return ids * mask, mask

  qi, qm = texts(B)
  pi, pm = texts(B)
  ni, nm = texts(B, K)
  si, sm = texts(P_PAIRS)
  ti, tm = texts(P_PAIRS)
  mi, mm = texts(M)
  return {
      "ir": dict(query_ids=qi, query_mask=qm, passage_ids=pi, passage_mask=pm,
                 negative_ids=ni, negative_mask=nm),
      "parallel": dict(src_ids=si, src_mask=sm, tgt_ids=ti, tgt_mask=tm,
                       src_lang=np.zeros(P_PAIRS, np.int32),
                       tgt_lang=rs.randint(1, LANGUAGES, P_PAIRS).astype(np.int32)),
      "mono": dict(ids=mi, mask=mm, lang=rs.randint(0, LANGUAGES, M).astype(np.int32)),
  }


def reference_loss(trainable, batch, rng, *, rcfg, lcfg, normalize=True):
  """The objective on one device, written out plainly on the whole global batch."""
  raw = jax.tree.map(jnp.asarray, batch)
  params, heads = trainable["retriever"], trainable["objectives"]
  raw_cfg = dataclasses.replace(rcfg, normalize=False)

  def emb(name, ids, mask, tower):
    return retriever.embed(params, ids, mask, rcfg=raw_cfg, tower=tower, train=True,
                           rng=step_lib.input_rng(rng, name))

  unit = pooling.l2_normalize if normalize else (lambda x: x)
  ir, par, mono = raw["ir"], raw["parallel"], raw["mono"]
  q = emb("query", ir["query_ids"], ir["query_mask"], "query")
  p = emb("passage", ir["passage_ids"], ir["passage_mask"], "passage")
  n = emb("negative", ir["negative_ids"].reshape(B * K, L), ir["negative_mask"].reshape(B * K, L),
          "passage").reshape(B, K, -1)
  x = emb("src", par["src_ids"], par["src_mask"], "query")
  y = emb("tgt", par["tgt_ids"], par["tgt_mask"], "query")
  z_mono = emb("mono", mono["ids"], mono["mask"], "query")
  tau = lcfg.tau
  terms = {}
  terms["ir"] = jnp.mean(losses.retrieval_infonce(unit(q), unit(p), unit(n), tau=tau,
                                                  margin=lcfg.ir_margin))
  if lcfg.ir_bidirectional:
    terms["ir"] = 0.5 * (terms["ir"] + jnp.mean(losses.passage_to_query_infonce(
        unit(p), unit(q), tau=tau, margin=lcfg.ir_margin)))
  terms["semantic"] = losses.symmetric_semantic_contrastive_loss(
      unit(x), unit(y), tau=tau, negatives=lcfg.semantic_negatives)
  sources = {"ir": [q, p], "mono": [z_mono], "ir+mono": [q, p, z_mono]}[lcfg.language_inputs]
  z = jnp.concatenate([unit(s) for s in sources])
  pair_x, pair_y = unit(x), unit(y)
  if lcfg.language_stop_pairs:
    pair_x, pair_y = jax.lax.stop_gradient(pair_x), jax.lax.stop_gradient(pair_y)
  terms["language"] = jnp.mean(losses.language_contrastive_loss(
      z, pair_x, pair_y, tau=lcfg.language_tau or tau, form=lcfg.language_form))
  if "xtr_head" in heads:
    head = ems.xtr_head(lcfg, LANGUAGES, VOCAB)
    log_p = lambda u, lang: head.apply({"params": heads["xtr_head"]}, u, lang)
    bag = lambda ids, mask: losses.bag_of_tokens(ids, mask, VOCAB, SPECIAL_IDS,
                                                 target=lcfg.xtr_target)
    terms["xtr"] = jnp.mean(losses.xtr_loss(
        log_p(x, par["tgt_lang"]), log_p(y, par["src_lang"]),
        bag(par["src_ids"], par["src_mask"]), bag(par["tgt_ids"], par["tgt_mask"])))
  if "ems_projection" in heads:
    project = lambda u: ems.EmsProjection(lcfg.ems_projection_dim).apply(
        {"params": heads["ems_projection"]}, u)
    zx, zy = project(x), project(y)
    terms["ems_contrastive"] = 0.5 * (
        jnp.mean(losses.ems_sentence_contrastive_loss(zx, zy, tau=lcfg.ems_tau))
        + jnp.mean(losses.ems_sentence_contrastive_loss(zy, zx, tau=lcfg.ems_tau)))
  weights = plan_for(lcfg).weights
  total = sum(w * terms[name] for name, w in weights.items())
  return total, {name: terms[name] for name in weights}


def relative_error(a, b):
  """max over leaves of ||a - b|| / ||b||, each ||b|| floored at 1e-4 of the whole tree's norm.

  The floor keeps leaves whose true gradient is 0 (attention key biases: softmax is invariant to
  them) from dividing float32 noise by ~0.
  """
  diffs = [float(np.linalg.norm(np.asarray(u) - np.asarray(v)))
           for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
  norms = [float(np.linalg.norm(np.asarray(v))) for v in jax.tree.leaves(b)]
  floor = 1e-4 * float(np.sqrt(sum(n * n for n in norms)))
  return max((d / max(n, floor, 1e-30) for d, n in zip(diffs, norms)), default=0.0)


def loss_and_grads_fn(lcfg, rcfg, mesh, grad_cache_chunk=0):
  """lair's loss-and-grads function (unjitted) for these objectives on `mesh`."""
  return step_lib.make_loss_and_grads(
      plan_for(lcfg), lcfg, step_lib.make_embed_fn(rcfg), mesh, normalize=rcfg.normalize,
      grad_cache_chunk=grad_cache_chunk, special_ids=SPECIAL_IDS)


def sharded_loss_and_grads(trainable, batch, rng, *, rcfg, lcfg, devices, grad_cache_chunk=0,
                           fsdp=False):
  """lair's path: a `devices`-wide mesh, batch put with put_batch, jitted loss_and_grads."""
  mesh = sharding.make_mesh(devices)
  fn = loss_and_grads_fn(lcfg, rcfg, mesh, grad_cache_chunk)
  layout = sharding.state_shardings(trainable, mesh, fsdp=fsdp, min_size=1000)
  trainable = jax.device_put(trainable, layout)
  metrics, grads = jax.jit(fn)(trainable, sharding.put_batch(batch, mesh), rng)
  return jax.device_get(metrics), jax.device_get(grads)


def init_trainable(rcfg, lcfg, seed=0):
  rng = jax.random.PRNGKey(seed)
  return {"retriever": retriever.init_retriever(rcfg, rng),
          "objectives": ems.init_heads(
              plan_for(lcfg).weights, lcfg, jax.random.fold_in(rng, 1),
              embedding_dim=rcfg.embedding_dim, num_languages=LANGUAGES, vocab_size=VOCAB)}


def compare(name, *, lcfg, rcfg, devices, **kw):
  """One case: lair's path against the reference; errors and metrics as a JSON-able dict."""
  trainable = init_trainable(rcfg, lcfg)
  batch = random_batch()
  rng = jax.random.PRNGKey(7)
  metrics, grads = sharded_loss_and_grads(trainable, batch, rng, rcfg=rcfg, lcfg=lcfg,
                                          devices=devices, **kw)
  (ref_loss, ref_terms), ref_grads = jax.jit(jax.value_and_grad(
      lambda t: reference_loss(t, batch, rng, rcfg=rcfg, lcfg=lcfg), has_aux=True))(trainable)
  return name, {
      "loss": float(metrics["loss"]), "reference_loss": float(ref_loss),
      "loss_error": abs(float(metrics["loss"]) - float(ref_loss)) / abs(float(ref_loss)),
      "term_error": max(abs(float(metrics[t]) - float(v)) / abs(float(v))
                        for t, v in ref_terms.items()),
      "grad_error": relative_error(grads, ref_grads),
      "grad_norm": float(np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(ref_grads)))),
      "ir_candidates": float(metrics.get("ir_candidates", -1)),
      "devices": devices,
  }


def grad_cache_compare(name, *, lcfg, rcfg, devices, chunk):
  """GradCache against lair's plain path (same mesh), so dropout must be off."""
  trainable = init_trainable(rcfg, lcfg)
  batch = random_batch(1)
  rng = jax.random.PRNGKey(3)
  plain_m, plain_g = sharded_loss_and_grads(trainable, batch, rng, rcfg=rcfg, lcfg=lcfg,
                                            devices=devices)
  cache_m, cache_g = sharded_loss_and_grads(trainable, batch, rng, rcfg=rcfg, lcfg=lcfg,
                                            devices=devices, grad_cache_chunk=chunk)
  return name, {
      "loss_error": abs(float(cache_m["loss"]) - float(plain_m["loss"])) / abs(
          float(plain_m["loss"])),
      "grad_error": relative_error(cache_g, plain_g), "devices": devices, "chunk": chunk}


def main(cases):
  devices = jax.device_count()
  results = {}
  for case in cases:
    kind, _, objective = case.partition(":")
    lcfg = loss_config(**OBJECTIVES[objective])
    if kind == "sharded":  # Dropout on: threefry bits do not depend on the sharding.
      name, r = compare(case, lcfg=lcfg, rcfg=tiny_rcfg(0.1), devices=devices)
    elif kind == "single":
      name, r = compare(case, lcfg=lcfg, rcfg=tiny_rcfg(0.1), devices=1)
    elif kind == "fsdp":
      name, r = compare(case, lcfg=lcfg, rcfg=tiny_rcfg(0.1, shared_towers=False,
                                                        projection="linear", projection_dim=24),
                        devices=devices, fsdp=True)
    elif kind.startswith("gradcache"):  # gradcache1, gradcache2: rows per device per chunk.
      name, r = grad_cache_compare(case, lcfg=lcfg, rcfg=tiny_rcfg(0.0), devices=devices,
                                   chunk=int(kind[len("gradcache"):]))
    else:
      raise ValueError(f"unknown case {case!r}")
    results[name] = r
  print(json.dumps(results))


if __name__ == "__main__":
  main(sys.argv[1:])
