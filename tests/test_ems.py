"""EMS's objectives against NumPy transcriptions of the reference code (Mao-KU/EMS model_v2.py).

The references below follow `BilingualModel.forward` and `BertForMaskedLM` line by line:
  label[i].index_fill_(0, ids[i][:len], 1. / len)          (XTR target)
  KLDivLoss(reduction="batchmean")(log_softmax(scores), label)
  BertLaEmbedding: LayerNorm(Embedding(l)), then dropout(emb_dropout = 0.1 in training)
  BertPredictionHeadTransform: LayerNorm(dropout(swish(dense([e_l; u]))))
  decoder: Linear(la_dim + token_dim, vocab, bias=False)
  alignproj: Linear(H, H), ReLU, Linear(H, 128); cosine / T, cross-entropy both ways / 2
  loss = xtr + sentence_alignment_loss_weight (2) * sentalign
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lair import configs
from lair import losses
from lair.models import ems

TOL = dict(rtol=1e-5, atol=1e-5)


def _index_fill_labels(ids, lengths, vocab):
  """EMS: label[i].index_fill_(0, ids[i][:len_i], 1. / len_i), ids without specials/padding."""
  label = np.zeros((len(ids), vocab))
  for i, (row, n) in enumerate(zip(ids, lengths)):
    for t in row[:n]:
      label[i, t] = 1. / n  # index_fill: a repeated id is set again, not added.
  return label


def _kl_div_batchmean(log_probs, target):
  """torch.nn.KLDivLoss(reduction="batchmean"): sum(target * (log target - input)) / batch."""
  total = 0.
  for lp_row, t_row in zip(log_probs, target):
    total += sum(t * (math.log(t) - lp) for t, lp in zip(t_row, lp_row) if t > 0)
  return total / len(target)


def _np_layer_norm(x, p):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-12) * np.asarray(p["scale"], np.float64) + np.asarray(
      p["bias"], np.float64)


def _np_head(params, u, lang):
  """BertForMaskedLM's head (has_la_emb, not share_emb) in eval mode, float64: log-probs [V]."""
  f64 = lambda a: np.asarray(a, np.float64)
  e = _np_layer_norm(f64(params["language_embedding"]["embedding"])[lang],
                     params["language_norm"])
  pre = np.concatenate([e, u.astype(np.float64)]) @ f64(params["dense"]["kernel"]) + f64(
      params["dense"]["bias"])
  h = _np_layer_norm(pre / (1. + np.exp(-pre)), params["norm"])  # swish(x) = x * sigmoid(x)
  logits = h @ f64(params["decoder"]["kernel"])
  top = logits.max()
  return logits - (top + math.log(np.exp(logits - top).sum()))


def _head_params(rng, hidden, vocab, lang_dim=8, num_languages=3):
  head = ems.XtrHead(num_languages=num_languages, vocab_size=vocab, language_dim=lang_dim)
  params = head.init(jax.random.key(1), jnp.zeros((1, hidden)), jnp.zeros((1,), jnp.int32))
  params = jax.tree.map(np.asarray, params["params"])
  # Non-trivial norm parameters so that a missing scale/bias would show.
  params["norm"]["scale"] = rng.uniform(0.5, 1.5, size=hidden + lang_dim).astype(np.float32)
  params["language_norm"]["bias"] = rng.normal(size=lang_dim).astype(np.float32)
  params["dense"]["bias"] = rng.normal(size=hidden + lang_dim).astype(np.float32)
  params["decoder"]["kernel"] = params["decoder"]["kernel"] * 50.  # Peakier, to test the KL.
  return head, params


def test_bag_of_tokens_ems_target_is_index_fill_of_one_over_length():
  # 0 = CLS, 2 = SEP, 1 = PAD (XLM-R style); padding positions also carry a real id (7) to check
  # that the mask, not the id, excludes them.
  ids = np.array([[0, 5, 6, 5, 2, 7, 7],
                  [0, 9, 2, 1, 1, 1, 1],
                  [0, 2, 1, 1, 1, 1, 1]], np.int32)
  mask = np.array([[1, 1, 1, 1, 1, 0, 0],
                   [1, 1, 1, 0, 0, 0, 0],
                   [1, 1, 0, 0, 0, 0, 0]], np.int32)
  got = np.asarray(losses.bag_of_tokens(ids, mask, 10, special_ids=(0, 1, 2), target="ems"))
  # EMS's input_ids carry no CLS/SEP here, so its ids and len are the real tokens only.
  content = [[5, 6, 5], [9], []]
  expected = _index_fill_labels(content, [len(c) for c in content], 10)
  np.testing.assert_allclose(got, expected, atol=0)
  assert got[0, 5] == pytest.approx(1 / 3) and got[0].sum() == pytest.approx(2 / 3)
  types = np.asarray(losses.bag_of_tokens(ids, mask, 10, special_ids=(0, 1, 2), target="types"))
  np.testing.assert_allclose(types[0, [5, 6]], [0.5, 0.5])
  np.testing.assert_allclose(types.sum(axis=1), [1, 1, 0])
  with pytest.raises(ValueError, match="config.loss.xtr_target"):
    losses.bag_of_tokens(ids, mask, 10, target="nope")


def test_xtr_loss_matches_ems_kl_div_batchmean():
  rng = np.random.default_rng(8)
  b, hidden, vocab = 4, 16, 50
  head, params = _head_params(rng, hidden, vocab)
  u_x, u_y = (rng.normal(size=(b, hidden)).astype(np.float32) for _ in range(2))
  x_lang, y_lang = np.array([0, 0, 1, 2], np.int32), np.array([1, 2, 0, 0], np.int32)
  lengths_x, lengths_y = rng.integers(1, 9, size=b), rng.integers(1, 11, size=b)
  x_ids = rng.integers(3, vocab, size=(b, 9)).astype(np.int32)
  y_ids = rng.integers(3, vocab, size=(b, 11)).astype(np.int32)
  x_ids[:, 1] = x_ids[:, 0]  # Repeats, where index_fill differs from a count.
  x_mask = (np.arange(9)[None] < lengths_x[:, None]).astype(np.int32)
  y_mask = (np.arange(11)[None] < lengths_y[:, None]).astype(np.int32)

  apply = lambda u, lang: head.apply({"params": params}, u, lang, train=False)
  bag = lambda ids, mask: losses.bag_of_tokens(ids, mask, vocab, target="ems")
  got = losses.xtr_loss(apply(u_x, y_lang), apply(u_y, x_lang), bag(x_ids, x_mask),
                        bag(y_ids, y_mask))
  # EMS: pred_scores1 from sentence 1 with tgt_la1 (the other side's language) against label1,
  # the bag of sentence 2; the loss is the sum of the two batch means.
  label1 = _index_fill_labels(y_ids, lengths_y, vocab)
  label2 = _index_fill_labels(x_ids, lengths_x, vocab)
  scores1 = np.stack([_np_head(params, u_x[i], y_lang[i]) for i in range(b)])
  scores2 = np.stack([_np_head(params, u_y[i], x_lang[i]) for i in range(b)])
  expected = _kl_div_batchmean(scores1, label1) + _kl_div_batchmean(scores2, label2)
  assert got.shape == (b,)
  np.testing.assert_allclose(float(jnp.mean(got)), expected, **TOL)


def test_xtr_head_drops_out_the_language_embedding_only():
  rng = np.random.default_rng(4)
  head, params = _head_params(rng, 12, 30)
  u = rng.normal(size=(64, 12)).astype(np.float32)
  lang = np.zeros((64,), np.int32)
  key = jax.random.key(0)
  evaluate = head.apply({"params": params}, u, lang, train=False)
  trained = head.apply({"params": params}, u, lang, train=True, rngs={"dropout": key})
  assert float(jnp.max(jnp.abs(trained - evaluate))) > 1e-3
  # Dropout 0 in training, or a language embedding that is zero after its LayerNorm (so dropout
  # has nothing to drop), gives the evaluation output: no other dropout in the head.
  no_dropout = ems.XtrHead(num_languages=3, vocab_size=30, language_dim=8, language_dropout=0.)
  np.testing.assert_allclose(
      no_dropout.apply({"params": params}, u, lang, train=True, rngs={"dropout": key}),
      evaluate, rtol=1e-6)
  zeroed = jax.tree.map(np.copy, params)
  zeroed["language_norm"] = {"scale": np.zeros(8, np.float32), "bias": np.zeros(8, np.float32)}
  np.testing.assert_allclose(
      head.apply({"params": zeroed}, u, lang, train=True, rngs={"dropout": key}),
      head.apply({"params": zeroed}, u, lang, train=False), rtol=1e-6)
  assert configs.default_config().loss.ems_language_dropout == 0.1  # EMS's emb_dropout.


def test_xtr_head_shapes_and_gradients_reach_every_parameter():
  head = ems.XtrHead(num_languages=4, vocab_size=30)
  params = head.init(jax.random.key(2), jnp.zeros((1, 12)), jnp.zeros((1,), jnp.int32))["params"]
  assert params["language_embedding"]["embedding"].shape == (4, 128)
  assert params["dense"]["kernel"].shape == (140, 140)
  assert params["decoder"]["kernel"].shape == (140, 30) and "bias" not in params["decoder"]
  ids = np.array([[3, 4, 5, 0]], np.int32)
  mask = np.array([[1, 1, 1, 0]], np.int32)
  u = np.ones((1, 12), np.float32)
  target = losses.bag_of_tokens(ids, mask, 30)

  def loss(prm):
    apply = lambda v, lang: head.apply({"params": prm}, v, np.array([lang]))
    return losses.xtr_loss(apply(u, 3), apply(-u, 0), target, target)[0]

  for path, g in jax.tree_util.tree_leaves_with_path(jax.grad(loss)(params)):
    if "language_embedding" not in jax.tree_util.keystr(path):  # Only rows 0 and 3 get gradient.
      assert float(jnp.max(jnp.abs(g))) > 0, jax.tree_util.keystr(path)


def test_ems_sentence_contrastive_loss_matches_alignproj_cosine():
  rng = np.random.default_rng(9)
  hidden = 20
  project = ems.EmsProjection(6)
  proj = jax.tree.map(np.asarray, project.init(jax.random.key(3), jnp.zeros((1, hidden)))["params"])
  proj["dense1"]["bias"] = (rng.normal(size=hidden) * 0.01).astype(np.float32)
  proj["dense2"]["bias"] = (rng.normal(size=6) * 0.01).astype(np.float32)
  u_x, u_y = (rng.normal(size=(6, hidden)).astype(np.float32) for _ in range(2))

  def np_project(u):
    f64 = lambda a: np.asarray(a, np.float64)
    h = np.maximum(u.astype(np.float64) @ f64(proj["dense1"]["kernel"]) + f64(
        proj["dense1"]["bias"]), 0)
    return h @ f64(proj["dense2"]["kernel"]) + f64(proj["dense2"]["bias"])

  zx, zy = np_project(u_x), np_project(u_y)
  cos = lambda a, b: a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
  sim = np.array([[cos(zx[i], zy[j]) / 0.1 for j in range(6)] for i in range(6)])
  ce = lambda s: np.mean([np.log(np.exp(row).sum()) - row[i] for i, row in enumerate(s)])
  expected = (ce(sim) + ce(sim.T)) / 2  # EMS: (CE(sim) + CE(sim_t)) / 2.
  z_x, z_y = (project.apply({"params": proj}, u) for u in (u_x, u_y))
  got = 0.5 * (jnp.mean(losses.ems_sentence_contrastive_loss(z_x, z_y, tau=0.1))
               + jnp.mean(losses.ems_sentence_contrastive_loss(z_y, z_x, tau=0.1)))
  np.testing.assert_allclose(float(got), expected, **TOL)


def test_ems_config_weighs_the_contrastive_loss_twice():
  from configs import ems_small  # pylint: disable=g-import-not-at-top  (repo root on sys.path)
  config = ems_small.get_config("xtr_cl")
  assert (config.loss.xtr_weight, config.loss.ems_contrastive_weight) == (1.0, 2.0)
  assert config.loss.xtr_target == "ems" and config.loss.ems_language_dropout == 0.1
