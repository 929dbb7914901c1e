"""The train step's parts: GradCache equals plain backprop, chunk layout, inputs, optimiser."""
import dataclasses
import functools
import re

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sharded_check  # pylint: disable=g-bad-import-order  (tests/ is on sys.path)
from lair import configs
from lair import losses
from lair import sharding
from lair.models import pooling
from lair.models import retriever
from lair.train import optim
from lair.train import step as step_lib
from test_sharded import run_check


@pytest.fixture(scope="module")
def grad_cache_results():
  return run_check(["gradcache1:all", "gradcache2:ir"])


@pytest.mark.parametrize("case", ["gradcache1:all", "gradcache2:ir"])
def test_grad_cache_equals_plain_on_8_devices(grad_cache_results, case):
  r = grad_cache_results[case]
  assert r["devices"] == 8
  assert r["loss_error"] < 1e-5, r
  assert r["grad_error"] < 1e-5, r


def test_grad_cache_replays_the_same_dropout():
  """With dropout on, GradCache's gradient is that of the chunked forward it ran.

  The reference embeds chunk i with `input_rng(rng, name, i)` and differentiates straight
  through; if GradCache's second pass drew other dropout masks than its first, they would differ.
  """
  chunk = 8
  lcfg = sharded_check.loss_config(**sharded_check.OBJECTIVES["semantic"])
  rcfg = sharded_check.tiny_rcfg(0.2)
  trainable = sharded_check.init_trainable(rcfg, lcfg)
  batch = sharded_check.random_batch(2)
  rng = jax.random.PRNGKey(5)
  metrics, grads = sharded_check.sharded_loss_and_grads(
      trainable, batch, rng, rcfg=rcfg, lcfg=lcfg, devices=1, grad_cache_chunk=chunk)
  embed_fn = step_lib.make_embed_fn(rcfg)
  par = batch["parallel"]

  def chunked_embed(params, name, ids, mask):
    parts = [embed_fn(params, ids[s:s + chunk], mask[s:s + chunk], "query",
                      step_lib.input_rng(rng, name, s // chunk))
             for s in range(0, ids.shape[0], chunk)]
    return pooling.l2_normalize(jnp.concatenate(parts))

  def loss(trainable):
    x = chunked_embed(trainable["retriever"], "src", par["src_ids"], par["src_mask"])
    y = chunked_embed(trainable["retriever"], "tgt", par["tgt_ids"], par["tgt_mask"])
    return losses.symmetric_semantic_contrastive_loss(x, y, tau=lcfg.tau)

  ref_loss, ref_grads = jax.jit(jax.value_and_grad(loss))(trainable)
  np.testing.assert_allclose(metrics["loss"], ref_loss, rtol=1e-5)
  assert sharded_check.relative_error(grads, ref_grads) < 1e-5


def test_chunk_layout_keeps_rows_on_their_device():
  x = np.arange(2 * 6).reshape(12, 1)  # 2 devices x 6 rows, chunks of 3 rows per device.
  chunks = step_lib.to_chunks(x, axis_size=2, chunk=3)
  assert chunks.shape == (2, 6, 1)
  # Chunk 0 = the first 3 rows of device 0 (rows 0-2) then of device 1 (rows 6-8).
  np.testing.assert_array_equal(chunks[0, :, 0], [0, 1, 2, 6, 7, 8])
  np.testing.assert_array_equal(step_lib.from_chunks(chunks, axis_size=2), x)
  with pytest.raises(ValueError, match="train.grad_cache_chunk=4"):
    step_lib.to_chunks(x, axis_size=2, chunk=4)


def test_embedding_inputs_follow_the_plan():
  batch = sharded_check.random_batch()
  plan = sharded_check.plan_for(sharded_check.loss_config(ir_weight=1.0))
  inputs = step_lib.embedding_inputs(batch, plan)
  assert sorted(inputs) == ["negative", "passage", "query"]
  assert inputs["negative"][0].shape == (sharded_check.B * sharded_check.K, sharded_check.L)
  plan = sharded_check.plan_for(sharded_check.loss_config(
      ir_weight=0.0, language_weight=1.0, language_inputs="mono"))
  assert sorted(step_lib.embedding_inputs(batch, plan)) == ["mono", "src", "tgt"]
  del batch["parallel"]
  with pytest.raises(ValueError, match=r"no \['parallel'\] stream"):
    step_lib.embedding_inputs(batch, plan)


def test_train_step_updates_and_logs_each_term():
  lcfg = sharded_check.loss_config(**sharded_check.OBJECTIVES["all"])
  rcfg = sharded_check.tiny_rcfg(0.0)
  trainable = sharded_check.init_trainable(rcfg, lcfg)
  train_cfg = configs.default_config().train
  train_cfg.update(learning_rate=1e-3, warmup_steps=0, steps=10)
  mask = jax.tree.map(lambda _: True, trainable)
  optimizer, schedule = optim.make_optimizer(train_cfg, mask)
  mesh = sharding.make_mesh(1)
  state = {"step": jnp.int32(0), "params": trainable, "opt_state": optimizer.init(trainable),
           "rng": jax.random.PRNGKey(0)}
  shardings = sharding.state_shardings(state, mesh)
  loss_and_grads = sharded_check.loss_and_grads_fn(lcfg, rcfg, mesh)
  train_step = step_lib.make_train_step(loss_and_grads, optimizer, schedule, shardings, mesh)
  batch = sharding.put_batch(sharded_check.random_batch(), mesh)
  state, metrics = train_step(jax.device_put(state, shardings), batch)
  assert int(state["step"]) == 1
  assert set(metrics) >= {"ir", "semantic", "language", "xtr", "ems_contrastive", "loss",
                          "grad_norm", "learning_rate"}
  weights = sharded_check.plan_for(lcfg).weights
  np.testing.assert_allclose(metrics["loss"], sum(w * metrics[t] for t, w in weights.items()),
                             rtol=1e-6)
  _, metrics2 = train_step(state, batch)
  assert metrics2["loss"] < metrics["loss"]  # One AdamW step on the same batch helps.


def test_weight_decay_and_frozen_embeddings():
  params = {"encoder": {"embeddings": {"word_embeddings": {"embedding": jnp.ones((5, 4))},
                                       "LayerNorm": {"scale": jnp.ones(4), "bias": jnp.ones(4)}},
                        "layer_0": {"intermediate": {"kernel": jnp.ones((4, 4)),
                                                     "bias": jnp.ones(4)}}}}
  decay = optim.weight_decay_mask(params)["encoder"]
  assert decay["layer_0"]["intermediate"] == {"kernel": True, "bias": False}
  assert decay["embeddings"]["LayerNorm"] == {"scale": False, "bias": False}
  assert decay["embeddings"]["word_embeddings"]["embedding"]

  train_cfg = configs.default_config().train
  train_cfg.update(learning_rate=0.1, warmup_steps=0, steps=10, weight_decay=0.5, clip_norm=0.)
  trainable = jax.tree.map(lambda _: True, params)
  trainable["encoder"]["embeddings"]["word_embeddings"]["embedding"] = False
  optimizer, _ = optim.make_optimizer(train_cfg, trainable)
  grads = jax.tree.map(jnp.zeros_like, params)  # Zero gradient: only weight decay moves.
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  new = optax.apply_updates(params, updates)["encoder"]
  lr_decay = 0.1 * 0.5  # AdamW: p -= lr * wd * p when the Adam step is 0.
  np.testing.assert_allclose(new["layer_0"]["intermediate"]["kernel"], 1 - lr_decay)
  np.testing.assert_allclose(new["layer_0"]["intermediate"]["bias"], 1.0)
  np.testing.assert_allclose(new["embeddings"]["LayerNorm"]["scale"], 1.0)
  np.testing.assert_allclose(new["embeddings"]["word_embeddings"]["embedding"], 1.0)  # Frozen.


@pytest.mark.parametrize("decay", ["linear", "cosine", "constant"])
def test_learning_rate_schedule(decay):
  train_cfg = configs.default_config().train
  train_cfg.update(learning_rate=2.0, warmup_steps=10, steps=110, decay=decay)
  schedule = optim.learning_rate_schedule(train_cfg)
  np.testing.assert_allclose(schedule(0), 0.0)
  np.testing.assert_allclose(schedule(5), 1.0)
  np.testing.assert_allclose(schedule(10), 2.0)
  expected_mid = {"linear": 1.0, "cosine": 1.0, "constant": 2.0}[decay]
  np.testing.assert_allclose(schedule(60), expected_mid, rtol=1e-5)
  expected_end = {"linear": 0.0, "cosine": 0.0, "constant": 2.0}[decay]
  np.testing.assert_allclose(schedule(110), expected_end, atol=1e-6)


def test_fsdp_spec_shards_big_arrays_only():
  spec = functools.partial(sharding.fsdp_spec, axis_size=8, min_size=1000)
  assert spec((250000, 384)) == jax.sharding.PartitionSpec("data", None)
  assert spec((250002, 384)) == jax.sharding.PartitionSpec(None, "data")  # 250002 % 8 != 0.
  assert spec((384, 1536)) == jax.sharding.PartitionSpec(None, "data")
  assert spec((384,)) == jax.sharding.PartitionSpec()  # Too small.
  assert spec((1001, 3)) == jax.sharding.PartitionSpec()  # No dimension divisible by 8.


def _frozen_and_rest(params):
  """(the token embedding table, every other leaf as a flat {path: array})."""
  flat = traverse_util.flatten_dict(params)
  key = ("encoder", "embeddings", "word_embeddings", "embedding")
  return flat.pop(key), flat, key


def _lair_frozen_step(rcfg, lcfg, train_cfg, params, *, freeze):
  """lair's jitted train step and its initial state, as loop.py builds them."""
  mesh = sharding.make_mesh(1)
  trainable = {"retriever": params, "objectives": {}}
  mask = {"retriever": retriever.trainable_mask(params, freeze), "objectives": {}}
  optimizer, schedule = optim.make_optimizer(train_cfg, mask)
  state = {"step": jnp.int32(0), "params": trainable, "opt_state": optimizer.init(trainable),
           "rng": jax.random.PRNGKey(0)}
  shardings = sharding.state_shardings(state, mesh)
  loss_and_grads = step_lib.make_loss_and_grads(
      sharded_check.plan_for(lcfg), lcfg,
      step_lib.make_embed_fn(rcfg, freeze_embeddings=freeze), mesh)
  step = step_lib.make_train_step(loss_and_grads, optimizer, schedule, shardings, mesh)
  return step, jax.device_put(state, shardings), mesh


def test_frozen_embeddings_cost_nothing_and_train_as_a_constant_table():
  """model.freeze_embeddings: no optimiser state and no [V, H] gradient for the table, and the
  trained params equal those of plain AdamW on every other param with the table a constant."""
  lcfg = sharded_check.loss_config(ir_weight=1.0)
  rcfg = sharded_check.tiny_rcfg(0.0)
  params = retriever.init_retriever(rcfg, jax.random.PRNGKey(0))
  initial = jax.tree.map(np.array, params)  # Copies: the step donates its state's buffers.
  table, _, key = _frozen_and_rest(initial)
  train_cfg = configs.default_config().train
  train_cfg.update(learning_rate=1e-3, warmup_steps=0, steps=10, clip_norm=0.5)
  train_step, state, mesh = _lair_frozen_step(rcfg, lcfg, train_cfg, params, freeze=True)
  table_shape = (sharded_check.VOCAB, 32)
  assert table.shape == table_shape
  assert table_shape not in [x.shape for x in jax.tree.leaves(state["opt_state"])]

  batch = sharding.put_batch(sharded_check.random_batch(), mesh)
  # Nothing [V, H] is computed: no scatter-add of token gradients into the table's shape
  # (the trainable table, the positive control, has one).
  hlo = train_step.lower(state, batch).compile().as_text()
  scatter = re.compile(r"f32\[97,32\]\{[0-9,]*\} scatter")
  assert not scatter.search(hlo)
  unfrozen_step, unfrozen_state, _ = _lair_frozen_step(rcfg, lcfg, train_cfg, params,
                                                       freeze=False)
  assert scatter.search(unfrozen_step.lower(unfrozen_state, batch).compile().as_text())

  # The reference: plain optax (clip + AdamW without decay on biases/norms) on the other
  # params only, the table closed over as a constant, the loss written out on one device.
  _, rest, _ = _frozen_and_rest(initial)
  schedule = optim.learning_rate_schedule(train_cfg)
  tx = optax.chain(optax.clip_by_global_norm(train_cfg.clip_norm),
                   optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-6,
                               weight_decay=train_cfg.weight_decay,
                               mask=optim.weight_decay_mask))

  def reference_loss(rest):
    full = traverse_util.unflatten_dict({**rest, key: table})
    trainable = {"retriever": full, "objectives": {}}
    return sharded_check.reference_loss(trainable, sharded_check.random_batch(),
                                        jax.random.PRNGKey(0), rcfg=rcfg, lcfg=lcfg)[0]

  @jax.jit
  def reference_step(rest, opt_state):
    grads = jax.grad(reference_loss)(rest)
    updates, opt_state = tx.update(grads, opt_state, rest)
    return optax.apply_updates(rest, updates), opt_state

  opt_state = tx.init(rest)
  for _ in range(3):
    state, _ = train_step(state, batch)
    rest, opt_state = reference_step(rest, opt_state)
  trained_table, trained_rest, _ = _frozen_and_rest(state["params"]["retriever"])
  np.testing.assert_array_equal(trained_table, table)
  moved = 0.0
  for path, want in rest.items():
    np.testing.assert_allclose(trained_rest[path], want, rtol=1e-4, atol=1e-6, err_msg=str(path))
    moved = max(moved, float(np.max(np.abs(want - np.asarray(
        traverse_util.flatten_dict(initial)[path])))))
  assert moved > 1e-3  # Three steps at lr 1e-3 moved the params.


def test_gpu_compiler_options_are_real_xla_options_and_keep_the_maths(monkeypatch):
  """The train step's GPU options name real XLA debug options (XLA rejects unknown ones) and
  leave a computation's values alone; on this CPU the step compiles with none."""
  assert step_lib.compiler_options() == {}
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  options = step_lib.compiler_options()
  assert options
  w = jax.random.normal(jax.random.key(0), (16, 16))
  a, b = jax.random.normal(jax.random.key(1), (8, 16)), jax.random.normal(jax.random.key(2),
                                                                          (4, 16))
  shared_weight = lambda a, b: (jnp.tanh(a @ w), jnp.tanh(b @ w))  # What the dot merger joins.
  with_options = jax.jit(shared_weight, compiler_options=options)(a, b)
  w64, a64, b64 = (np.asarray(x, np.float64) for x in (w, a, b))
  for got, want in zip(with_options, (np.tanh(a64 @ w64), np.tanh(b64 @ w64))):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  with pytest.raises(Exception, match="No such compile option"):
    jax.jit(shared_weight, compiler_options={"xla_gpu_no_such_option": 0})(a, b)


def _grad_cache_temp_bytes(chunk: int) -> int:
  """XLA's temporary memory for one loss-and-grads call of a small encoder (chunk 0: plain)."""
  lcfg = sharded_check.loss_config(**sharded_check.OBJECTIVES["semantic"])
  rcfg = sharded_check.tiny_rcfg(0.1)  # Wider and deeper, so activations outweigh the rest.
  rcfg = dataclasses.replace(rcfg, encoder=dataclasses.replace(
      rcfg.encoder, hidden_size=64, intermediate_size=512, num_layers=4))
  trainable = sharded_check.init_trainable(rcfg, lcfg)
  mesh = sharding.make_mesh(1)
  fn = sharded_check.loss_and_grads_fn(lcfg, rcfg, mesh, chunk)
  batch = sharding.put_batch(sharded_check.random_batch(), mesh)
  compiled = jax.jit(fn).lower(trainable, batch, jax.random.PRNGKey(0)).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def test_grad_cache_holds_one_chunks_activations_and_warns_when_an_input_is_one_chunk(caplog):
  """GradCache's point, read from XLA's compiled memory: plain backprop holds both inputs' 16
  rows (src, tgt) at once, GradCache one chunk of 8 rows; an input in one chunk saves nothing
  (docs/training.md), and the trainer says so."""
  plain, eight = _grad_cache_temp_bytes(0), _grad_cache_temp_bytes(8)
  assert eight < 0.35 * plain, (eight, plain)  # 8 of 32 rows: about a quarter.
  assert "one chunk" not in caplog.text
  _grad_cache_temp_bytes(16)
  assert ("train.grad_cache_chunk=16: src (16 rows), tgt (16 rows) fit in one chunk per device"
          in caplog.text)
