"""Encoder, pooling and retriever behaviour against NumPy references and invariants.

Parity with PyTorch `transformers` is in test_hf.py; here: pooling maths, padding invariance,
dropout, bfloat16 compute, the retriever's params layout and `build_from_config`.
"""
import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from lair import configs
from lair.models import bert
from lair.models import build
from lair.models import flops
from lair.models import pooling
from lair.models import retriever

CONFIG = bert.EncoderConfig(vocab_size=50, hidden_size=32, num_layers=2, num_heads=4,
                            intermediate_size=64, max_position_embeddings=32, pad_token_id=0)


def padded_batch(rng=0, lengths=(7, 3, 5, 1), max_len=8, vocab=50, pad_id=0):
  """Random ids [B, L] (never pad inside a row) and mask [B, L], right-padded to max_len."""
  rng = np.random.default_rng(rng)
  ids = rng.integers(2, vocab, (len(lengths), max_len)).astype(np.int32)
  mask = (np.arange(max_len)[None] < np.array(lengths)[:, None]).astype(np.int32)
  return np.where(mask == 1, ids, pad_id).astype(np.int32), mask


def test_pool_matches_numpy():
  rng = np.random.default_rng(0)
  hidden = rng.normal(size=(3, 5, 4)).astype(np.float32)
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], np.int32)
  np.testing.assert_allclose(pooling.pool(hidden, mask, "cls"), hidden[:, 0])
  mean = pooling.pool(hidden, mask, "mean")
  np.testing.assert_allclose(mean[0], hidden[0, :3].mean(0), rtol=1e-6)
  np.testing.assert_allclose(mean[1], hidden[1].mean(0), rtol=1e-6)
  np.testing.assert_array_equal(mean[2], np.zeros(4))  # All-pad row: zeros, not NaN.
  with pytest.raises(ValueError, match="'max'.*expected one of"):
    pooling.pool(hidden, mask, "max")


def test_l2_normalize_and_heads_match_numpy():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(4, 6)).astype(np.float32)
  np.testing.assert_allclose(pooling.l2_normalize(x),
                             x / np.linalg.norm(x, axis=1, keepdims=True), rtol=1e-6)
  np.testing.assert_array_equal(pooling.l2_normalize(np.zeros((1, 3))), np.zeros((1, 3)))
  head = pooling.init_head("mlp", 6, 3, jax.random.key(0))
  h = x @ np.asarray(head["dense_0"]["kernel"]) + np.asarray(head["dense_0"]["bias"])
  from scipy import special  # pylint: disable=g-import-not-at-top
  h = 0.5 * h * (1 + special.erf(h / np.sqrt(2)))  # Exact GELU.
  ref = h @ np.asarray(head["dense_1"]["kernel"]) + np.asarray(head["dense_1"]["bias"])
  np.testing.assert_allclose(pooling.apply_head(head, x), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model_type,pad_id", [("bert", 0), ("xlm-roberta", 1)])
def test_padding_does_not_change_real_tokens(model_type, pad_id):
  """Extra padding (and what sits in padded slots' ids) leaves real positions unchanged."""
  config = dataclasses.replace(CONFIG, model_type=model_type, pad_token_id=pad_id)
  params = bert.init_encoder(config, jax.random.key(0))
  ids, mask = padded_batch(pad_id=pad_id)
  encode = jax.jit(bert.encode, static_argnames=("config", "train"))
  short = encode(params, ids, mask, config=config)
  longer_ids = np.concatenate([ids, np.full((4, 6), pad_id, np.int32)], 1)
  longer = encode(params, longer_ids, np.pad(mask, ((0, 0), (0, 6))), config=config)
  real = mask.astype(bool)
  np.testing.assert_allclose(np.asarray(longer)[:, :8][real], np.asarray(short)[real],
                             atol=1e-5)
  # Each row alone (no padding at all) gives the same states as inside the padded batch.
  for row, n in enumerate(mask.sum(1)):
    alone = encode(params, ids[row:row + 1, :n], mask[row:row + 1, :n], config=config)
    np.testing.assert_allclose(alone[0], np.asarray(short)[row, :n], atol=1e-5)


def test_dropout_needs_rng_and_is_deterministic_given_one():
  params = bert.init_encoder(CONFIG, jax.random.key(0))
  ids, mask = padded_batch()
  with pytest.raises(ValueError, match="needs an `rng`"):
    bert.encode(params, ids, mask, config=CONFIG, train=True)
  a = bert.encode(params, ids, mask, config=CONFIG, train=True, rng=jax.random.key(1))
  b = bert.encode(params, ids, mask, config=CONFIG, train=True, rng=jax.random.key(1))
  c = bert.encode(params, ids, mask, config=CONFIG, train=True, rng=jax.random.key(2))
  evaluated = bert.encode(params, ids, mask, config=CONFIG)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c) and not np.allclose(a, evaluated)
  no_dropout = dataclasses.replace(CONFIG, hidden_dropout=0.0, attention_dropout=0.0)
  np.testing.assert_allclose(bert.encode(params, ids, mask, config=no_dropout, train=True),
                             evaluated, atol=1e-6)


def test_bfloat16_compute_is_close_to_float32():
  params = bert.init_encoder(CONFIG, jax.random.key(0))
  ids, mask = padded_batch()
  rcfg32 = retriever.RetrieverConfig(encoder=CONFIG)
  rcfg16 = retriever.RetrieverConfig(encoder=dataclasses.replace(CONFIG, dtype="bfloat16"))
  hidden16 = bert.encode(params, ids, mask, config=rcfg16.encoder)
  assert hidden16.dtype == jnp.float32  # The residual stream and LayerNorm stay float32.
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  # The matmuls (and only they) run in bfloat16: every dot_general of the forward pass has
  # bfloat16 operands, and no LayerNorm, softmax or residual op does.
  jaxpr = jax.make_jaxpr(functools.partial(bert.encode, config=rcfg16.encoder))(params, ids, mask)
  dots = [e for e in _equations(jaxpr.jaxpr) if e.primitive.name == "dot_general"]
  assert dots and all(v.aval.dtype == jnp.bfloat16 for e in dots for v in e.invars)
  reductions = [e for e in _equations(jaxpr.jaxpr) if e.primitive.name in ("reduce_max",
                                                                           "reduce_sum")]
  assert reductions and all(v.aval.dtype == jnp.float32 for e in reductions for v in e.invars)
  e32 = retriever.embed({"encoder": params}, ids, mask, rcfg=rcfg32)
  e16 = retriever.embed({"encoder": params}, ids, mask, rcfg=rcfg16)
  assert e16.dtype == jnp.float32
  assert np.min(np.sum(np.asarray(e32) * np.asarray(e16), -1)) > 0.99  # Cosine (unit vectors).
  np.testing.assert_allclose(e16, e32, atol=0.05)


def test_bfloat16_activations_are_close_to_float32():
  """activation_dtype="bfloat16": the residual stream is bfloat16, LayerNorm statistics float32.

  Stated tolerance on this tiny random model: embeddings within cosine 0.99 of float32's and
  gradients within 5% (relative L2) of float32's.
  """
  params = bert.init_encoder(CONFIG, jax.random.key(0))
  ids, mask = padded_batch()
  bf16 = dataclasses.replace(CONFIG, dtype="bfloat16", activation_dtype="bfloat16")
  hidden = bert.encode(params, ids, mask, config=bf16)
  assert hidden.dtype == jnp.float32  # Cast back for pooling and the losses.
  hidden_shape = ids.shape + (CONFIG.hidden_size,)

  def equations(config):
    jaxpr = jax.make_jaxpr(functools.partial(bert.encode, config=config))(params, ids, mask)
    return list(_equations(jaxpr.jaxpr))

  def bf16_hidden_adds(eqns):  # [B, L, H] adds in bfloat16 (Dense biases and residual sums).
    return [e for e in eqns if e.primitive.name == "add"
            and e.outvars[0].aval.shape == hidden_shape
            and e.outvars[0].aval.dtype == jnp.bfloat16]

  # Against bfloat16 matmuls alone, both residual sums of every layer move to bfloat16.
  eqns = equations(bf16)
  f32_stream = equations(dataclasses.replace(bf16, activation_dtype="float32"))
  assert (len(bf16_hidden_adds(eqns)) - len(bf16_hidden_adds(f32_stream))
          == 2 * CONFIG.num_layers)
  # LayerNorm's mean and variance and the softmax reduce in float32.
  reductions = [e for e in eqns if e.primitive.name in ("reduce_max", "reduce_sum")]
  assert reductions and all(v.aval.dtype == jnp.float32 for e in reductions for v in e.invars)
  rcfg32 = retriever.RetrieverConfig(encoder=CONFIG)
  rcfg16 = retriever.RetrieverConfig(encoder=bf16)
  e32 = retriever.embed({"encoder": params}, ids, mask, rcfg=rcfg32)
  e16 = retriever.embed({"encoder": params}, ids, mask, rcfg=rcfg16)
  assert np.min(np.sum(np.asarray(e32) * np.asarray(e16), -1)) > 0.99
  no_dropout = dict(hidden_dropout=0.0, attention_dropout=0.0)
  rng = jax.random.key(1)
  g32 = jax.grad(_projected_loss(dataclasses.replace(CONFIG, **no_dropout), ids, mask, rng))(
      params)
  g16 = jax.grad(_projected_loss(dataclasses.replace(bf16, **no_dropout), ids, mask, rng))(
      params)
  flat32, flat16 = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)]) for g in (g32, g16))
  assert np.linalg.norm(flat16 - flat32) < 0.05 * np.linalg.norm(flat32)


def test_input_longer_than_positions_is_an_error():
  params = bert.init_encoder(CONFIG, jax.random.key(0))
  ids = np.ones((1, 33), np.int32)
  with pytest.raises(ValueError, match="length 33 exceeds.*32"):
    bert.encode(params, ids, ids, config=CONFIG)


def test_unsupported_model_type_lists_supported():
  with pytest.raises(ValueError, match=r"'t5'.*\['bert', 'roberta', 'xlm-roberta'\]"):
    dataclasses.replace(CONFIG, model_type="t5")


@pytest.mark.parametrize("shared,projection", [(True, ""), (False, "linear"), (True, "mlp")])
def test_retriever_layout_and_embed(shared, projection):
  rcfg = retriever.RetrieverConfig(encoder=CONFIG, projection=projection,
                                   projection_dim=16 if projection else 0, shared_towers=shared)
  params = retriever.init_retriever(rcfg, jax.random.key(0))
  towers = {"encoder"} if shared else {"query_encoder", "passage_encoder"}
  assert set(params) == towers | ({"head"} if projection else set())
  ids, mask = padded_batch()
  embed = jax.jit(retriever.embed, static_argnames=("rcfg", "tower", "train"))
  q = embed(params, ids, mask, rcfg=rcfg, tower="query")
  p = embed(params, ids, mask, rcfg=rcfg, tower="passage")
  assert q.shape == (4, rcfg.embedding_dim) and q.dtype == jnp.float32
  np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, rtol=1e-5)
  assert np.allclose(q, p) == shared  # Separate towers are independently initialised.


def test_init_retriever_copies_imported_encoder_into_both_towers():
  enc = bert.init_encoder(CONFIG, jax.random.key(3))
  rcfg = retriever.RetrieverConfig(encoder=CONFIG, shared_towers=False)
  params = retriever.init_retriever(rcfg, jax.random.key(0), enc)
  for tower in ("query_encoder", "passage_encoder"):
    jax.tree.map(np.testing.assert_array_equal, params[tower], enc)


def test_shared_tower_init_keeps_the_seeds_encoder_and_head():
  # The shared encoder and the head draw the keys they always did (split(rng, 3)[0] and [2]),
  # so seeds reproduce; they match the separate-towers init's query tower and head.
  key = jax.random.key(5)
  shared = retriever.RetrieverConfig(encoder=CONFIG, projection="linear", projection_dim=8)
  separate = dataclasses.replace(shared, shared_towers=False)
  params = retriever.init_retriever(shared, key)
  reference = retriever.init_retriever(separate, key)
  assert set(params) == {"encoder", "head"}
  jax.tree.map(np.testing.assert_array_equal, params["encoder"], reference["query_encoder"])
  jax.tree.map(np.testing.assert_array_equal, params["encoder"],
               bert.init_encoder(CONFIG, jax.random.split(key, 3)[0]))
  jax.tree.map(np.testing.assert_array_equal, params["head"], reference["head"])


def test_projection_dim_without_head_or_negative_is_an_error():
  with pytest.raises(ValueError, match=r"model\.projection_dim=16 needs a head"):
    retriever.RetrieverConfig(encoder=CONFIG, projection_dim=16)
  with pytest.raises(ValueError, match=r"model\.projection_dim=-4 is negative"):
    retriever.RetrieverConfig(encoder=CONFIG, projection="linear", projection_dim=-4)
  assert retriever.RetrieverConfig(encoder=CONFIG, projection="mlp").embedding_dim == (
      CONFIG.hidden_size)  # 0: the head keeps the hidden size.


def test_trainable_mask_freezes_only_word_embeddings():
  rcfg = retriever.RetrieverConfig(encoder=CONFIG, projection="linear", shared_towers=False)
  params = retriever.init_retriever(rcfg, jax.random.key(0))
  assert all(jax.tree.leaves(retriever.trainable_mask(params, False)))
  mask = retriever.trainable_mask(params, True)
  assert jax.tree.structure(mask) == jax.tree.structure(params)
  for tower in ("query_encoder", "passage_encoder"):
    assert not mask[tower]["embeddings"]["word_embeddings"]["embedding"]
    assert mask[tower]["embeddings"]["position_embeddings"]["embedding"]
  # Used as the trainer does: frozen leaves get no update.
  tx = optax.multi_transform({True: optax.sgd(1.0), False: optax.set_to_zero()},
                             jax.tree.map(bool, mask))
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert not np.any(updates["query_encoder"]["embeddings"]["word_embeddings"]["embedding"])
  assert np.all(updates["query_encoder"]["layer_0"]["output"]["kernel"] == -1)


class _Tokenizer:
  """The two things build_from_config reads from a tokenizer."""

  def __init__(self, size, pad_token_id):
    self.size, self.pad_token_id = size, pad_token_id

  def __len__(self):
    return self.size


def test_build_from_config_random_init():
  model_cfg = configs.default_config().model
  model_cfg.encoder.hidden_size = 32
  model_cfg.encoder.num_heads = 2
  model_cfg.encoder.model_type = "xlm-roberta"
  model_cfg.dtype = "bfloat16"
  model_cfg.projection, model_cfg.projection_dim = "linear", 8
  rcfg, params, tok = build.build_from_config(model_cfg, tokenizer=_Tokenizer(77, 1),
                                                  rng=jax.random.key(0))
  assert tok is not None and rcfg.encoder.vocab_size == 77 and rcfg.encoder.pad_token_id == 1
  assert rcfg.encoder.dtype == "bfloat16" and rcfg.embedding_dim == 8
  assert params["encoder"]["embeddings"]["word_embeddings"]["embedding"].shape == (77, 32)
  ids, mask = padded_batch(vocab=77, pad_id=1)
  assert retriever.embed(params, ids, mask, rcfg=rcfg).shape == (4, 8)


def test_build_from_config_errors():
  model_cfg = configs.default_config().model
  with pytest.raises(ValueError, match="model.encoder.vocab_size=0.*no tokenizer"):
    build.build_from_config(model_cfg, rng=jax.random.key(0))
  model_cfg.encoder.vocab_size = 50
  with pytest.raises(ValueError, match="model.encoder.vocab_size.*60 tokens.*vocab_size=50"):
    build.build_from_config(model_cfg, tokenizer=_Tokenizer(60, 0), rng=jax.random.key(0))
  model_cfg.pooling = "max"
  with pytest.raises(ValueError, match="model.pooling='max'"):
    build.build_from_config(model_cfg, tokenizer=_Tokenizer(50, 0), rng=jax.random.key(0))


def test_build_from_config_hf_path(tmp_path):
  """hf_path imports the checkpoint (and its tokenizer) through load_hf."""
  import test_hf  # pylint: disable=g-import-not-at-top  (the tiny-checkpoint builder)
  directory, _, tokenizer = test_hf.save_checkpoint(tmp_path, "bert")
  model_cfg = configs.default_config().model
  model_cfg.hf_path = str(directory)
  model_cfg.shared_towers = False
  rcfg, params, tok = build.build_from_config(model_cfg, rng=jax.random.key(0))
  assert len(tok) == len(tokenizer) and rcfg.encoder.hidden_size == 48
  jax.tree.map(np.testing.assert_array_equal, params["query_encoder"],
               params["passage_encoder"])
  assert isinstance(model_cfg, ml_collections.ConfigDict)


def _equations(jaxpr):
  """Every equation of `jaxpr` and of the jaxprs nested in it (jit, remat, custom_jvp, ...)."""
  for eqn in jaxpr.eqns:
    yield eqn
    for param in eqn.params.values():
      for sub in (param if isinstance(param, (list, tuple)) else [param]):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          yield from _equations(sub.jaxpr)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          yield from _equations(sub)


def _projected_loss(config, ids, mask, rng=None):
  """params -> sum(hidden * R) for a fixed random R [B, L, H]: a loss every state moves.

  (A sum of squares would not do: LayerNorm's output has a fixed norm.)
  """
  r = jax.random.normal(jax.random.key(9), (*ids.shape, config.hidden_size))
  train = rng is not None
  return lambda p: jnp.sum(bert.encode(p, ids, mask, config=config, train=train, rng=rng) * r)


@pytest.mark.parametrize("options", [dict(attention="dot_product"), dict(remat="full"),
                                     dict(remat="dots"),
                                     dict(attention="dot_product", remat="dots")])
def test_fused_attention_and_remat_equal_the_reference(options):
  """Values and gradients of the speed options equal the einsum path's (float32, CPU)."""
  config = dataclasses.replace(CONFIG, hidden_dropout=0.0, attention_dropout=0.0)
  fast = dataclasses.replace(config, **options)
  params = bert.init_encoder(config, jax.random.key(0))
  ids, mask = padded_batch(lengths=(7, 3, 5, 1, 0))  # The last row is all padding.
  ref_hidden = bert.encode(params, ids, mask, config=config)
  np.testing.assert_allclose(bert.encode(params, ids, mask, config=fast), ref_hidden,
                             rtol=1e-5, atol=1e-5)
  rng = jax.random.key(1)  # train=True, no dropout: exercises the training code path.
  ref_loss, ref_grads = jax.jit(jax.value_and_grad(_projected_loss(config, ids, mask, rng)))(
      params)
  loss, grads = jax.jit(jax.value_and_grad(_projected_loss(fast, ids, mask, rng)))(params)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), grads,
               ref_grads)
  assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(ref_grads)) > 1e-2


def test_attention_matches_numpy_masked_softmax():
  """Both attention functions against a NumPy masked softmax; a fully padded row is uniform."""
  rng = np.random.default_rng(0)
  q, k, v = (rng.normal(size=(3, 5, 2, 4)).astype(np.float32) for _ in range(3))
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], np.int32)
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / 2.0  # sqrt(head_dim = 4)
  logits = np.where(mask[:, None, None, :] == 1, logits, -np.inf)
  logits[2] = 0.0  # No real key: every key weighs the same.
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  want = np.einsum("bhqk,bkhd->bqhd", probs, v)
  np.testing.assert_allclose(bert.einsum_attention(q, k, v, mask), want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(bert.fused_attention(q, k, v, mask), want, rtol=1e-5, atol=1e-6)


def test_fused_attention_training_with_attention_dropout_runs_the_reference():
  """dot_product has no attention dropout: such a training pass is the einsum path's, exactly."""
  config = dataclasses.replace(CONFIG, hidden_dropout=0.1, attention_dropout=0.2)
  params = bert.init_encoder(config, jax.random.key(0))
  ids, mask = padded_batch()
  rng = jax.random.key(3)
  fused = dataclasses.replace(config, attention="dot_product")
  np.testing.assert_array_equal(
      bert.encode(params, ids, mask, config=fused, train=True, rng=rng),
      bert.encode(params, ids, mask, config=config, train=True, rng=rng))


def test_speed_options_are_checked_and_round_trip_through_model_json():
  with pytest.raises(ValueError, match=r"model.attention='flash'.*'einsum', 'dot_product'"):
    dataclasses.replace(CONFIG, attention="flash")
  with pytest.raises(ValueError, match=r"model.remat='all'.*'full', 'dots'"):
    dataclasses.replace(CONFIG, remat="all")
  with pytest.raises(ValueError, match=r"model.activation_dtype='float16'.*'bfloat16'"):
    dataclasses.replace(CONFIG, activation_dtype="float16")
  rcfg = retriever.RetrieverConfig(encoder=dataclasses.replace(
      CONFIG, attention="dot_product", remat="dots", dtype="bfloat16",
      activation_dtype="bfloat16"))
  saved = json.loads(json.dumps(dataclasses.asdict(rcfg)))
  assert retriever.RetrieverConfig.from_dict(saved) == rcfg
  # A model.json written before these fields existed loads with the reference defaults.
  for key in ("attention", "remat", "activation_dtype"):
    del saved["encoder"][key]
  old = retriever.RetrieverConfig.from_dict(saved).encoder
  assert (old.attention, old.remat, old.activation_dtype) == ("einsum", "", "float32")
  # config.model -> EncoderConfig, and config_errors names the key.
  model_cfg = configs.default_config().model
  model_cfg.update(attention="dot_product", remat="full", activation_dtype="bfloat16")
  rcfg, _, _ = build.build_from_config(model_cfg, tokenizer=_Tokenizer(40, 0),
                                       rng=jax.random.key(0))
  assert (rcfg.encoder.attention, rcfg.encoder.remat, rcfg.encoder.activation_dtype) == (
      "dot_product", "full", "bfloat16")
  model_cfg.update(attention="flash", remat="all")
  assert build.config_errors(model_cfg) == [
      "config.model.attention='flash': expected one of ('einsum', 'dot_product')",
      "config.model.remat='all': expected one of ('', 'full', 'dots')"]


def test_flop_count_matches_a_hand_count_and_the_programs_matmuls():
  """flops.encoder_flops on a tiny encoder: a hand count, and the dot_generals JAX runs."""
  config = bert.EncoderConfig(vocab_size=20, hidden_size=8, num_layers=2, num_heads=2,
                              intermediate_size=12, max_position_embeddings=16,
                              hidden_dropout=0.0, attention_dropout=0.0)
  rows, length = 3, 5
  # By hand, one layer, one text (2 FLOPs per multiply-add):
  #   Q, K, V, output: 4 matmuls [5, 8] x [8, 8]        4 * 2*5*8*8  = 2560
  #   scores: 2 heads x [5, 4] x [4, 5]                  2 * 2*5*4*5  =  400
  #   probs @ V: 2 heads x [5, 5] x [5, 4]               2 * 2*5*5*4  =  400
  #   FFN: [5, 8] x [8, 12] and [5, 12] x [12, 8]        2 * 2*5*8*12 = 1920
  per_layer_text = 2560 + 400 + 400 + 1920
  forward = 3 * 2 * per_layer_text  # 3 texts, 2 layers: 31,680
  assert flops.encoder_flops(config, rows, length, train=False) == forward
  assert flops.encoder_flops(config, rows, length, train=True) == 3 * forward

  def matmul_flops(fn, *args):
    total = 0
    for eqn in _equations(jax.make_jaxpr(fn)(*args).jaxpr):
      if eqn.primitive.name == "dot_general":
        (contract, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval.shape
        total += 2 * np.prod(eqn.outvars[0].aval.shape) * np.prod([lhs[d] for d in contract])
    return total

  params = bert.init_encoder(config, jax.random.key(0))
  ids, mask = padded_batch(lengths=(5, 2, 4), max_len=length, vocab=20)
  loss = _projected_loss(config, ids, mask)
  assert matmul_flops(loss, params) == forward
  # The backward pass takes both inputs' gradients of every matmul: twice the forward.
  assert matmul_flops(jax.value_and_grad(loss), params) == 3 * forward
  assert flops.peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
  assert flops.peak_flops("cpu", "float32") is None
