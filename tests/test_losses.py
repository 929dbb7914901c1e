"""lair.losses against independent float64 NumPy references written here with plain loops."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lair import configs
from lair import losses

TOL = dict(rtol=1e-5, atol=1e-5)


def _unit_rows(rng, *shape):
  x = rng.normal(size=shape)
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _np_log_sum_exp(values):
  top = max(values)
  return top + math.log(sum(math.exp(v - top) for v in values))


def _np_ce(anchor, candidates, target, tau, margin=0.):
  """-log softmax of candidate `target`, scoring `anchor` by dot product, with margin."""
  logits = []
  for c, candidate in enumerate(candidates):
    s = float(np.dot(anchor.astype(np.float64), candidate.astype(np.float64)))
    logits.append((s - (margin if c == target else 0.)) / tau)
  return _np_log_sum_exp(logits) - logits[target]


def _np_infonce(q, p, n=None, tau=0.05, margin=0., positive_index=None):
  candidates = list(p) + ([] if n is None else [v for row in n for v in row])
  positive_index = range(len(q)) if positive_index is None else positive_index
  return np.array([_np_ce(q[i], candidates, t, tau, margin) for i, t in enumerate(positive_index)])


@pytest.mark.parametrize("num_negatives,margin", [(0, 0.), (0, 0.3), (2, 0.), (3, 0.2)])
def test_retrieval_infonce_matches_numpy(num_negatives, margin):
  rng = np.random.default_rng(num_negatives)
  q, p = _unit_rows(rng, 6, 16), _unit_rows(rng, 6, 16)
  n = _unit_rows(rng, 6, num_negatives, 16) if num_negatives else None
  got = losses.retrieval_infonce(q, p, n, tau=0.07, margin=margin)
  assert got.shape == (6,) and got.dtype == jnp.float32
  np.testing.assert_allclose(got, _np_infonce(q, p, n, tau=0.07, margin=margin), **TOL)


def test_margin_raises_the_loss_by_making_the_positive_harder():
  rng = np.random.default_rng(1)
  q, p = _unit_rows(rng, 5, 8), _unit_rows(rng, 5, 8)
  plain = losses.retrieval_infonce(q, p, tau=0.1)
  with_margin = losses.retrieval_infonce(q, p, tau=0.1, margin=0.2)
  assert np.all(np.asarray(with_margin) > np.asarray(plain))


def test_passage_to_query_infonce_matches_numpy():
  rng = np.random.default_rng(2)
  q, p = _unit_rows(rng, 7, 12), _unit_rows(rng, 7, 12)
  got = losses.passage_to_query_infonce(p, q, tau=0.05, margin=0.1)
  np.testing.assert_allclose(got, _np_infonce(p, q, tau=0.05, margin=0.1), **TOL)


def test_semantic_contrastive_loss_matches_numpy_both_ways():
  rng = np.random.default_rng(3)
  x, y = _unit_rows(rng, 8, 16), _unit_rows(rng, 8, 16)
  x_to_y = _np_infonce(x, y, tau=0.05)
  y_to_x = _np_infonce(y, x, tau=0.05)
  np.testing.assert_allclose(losses.semantic_contrastive_loss(x, y, tau=0.05), x_to_y, **TOL)
  np.testing.assert_allclose(losses.semantic_contrastive_loss(y, x, tau=0.05), y_to_x, **TOL)
  np.testing.assert_allclose(losses.symmetric_semantic_contrastive_loss(x, y, tau=0.05),
                             0.5 * (x_to_y.mean() + y_to_x.mean()), **TOL)


def test_bfloat16_inputs_are_scored_in_float32():
  rng = np.random.default_rng(4)
  q, p = _unit_rows(rng, 4, 8), _unit_rows(rng, 4, 8)
  got = losses.retrieval_infonce(jnp.asarray(q, jnp.bfloat16), jnp.asarray(p, jnp.bfloat16),
                                 tau=0.05)
  assert got.dtype == jnp.float32
  q16 = np.asarray(jnp.asarray(q, jnp.bfloat16).astype(jnp.float32))
  p16 = np.asarray(jnp.asarray(p, jnp.bfloat16).astype(jnp.float32))
  np.testing.assert_allclose(got, _np_infonce(q16, p16, tau=0.05), **TOL)


def test_row_slices_with_positive_offsets_equal_the_full_computation():
  """What the sharded step relies on: local rows vs gathered candidates, global positive ids."""
  rng = np.random.default_rng(5)
  q, p, n = _unit_rows(rng, 8, 16), _unit_rows(rng, 8, 16), _unit_rows(rng, 8, 2, 16)
  u_x, u_y = rng.normal(size=(8, 24)).astype(np.float32), rng.normal(size=(8, 24)).astype(np.float32)
  proj = losses.init_ems_projection(jax.random.key(0), 24, 8)
  full_fns = {
      "ir": lambda rows, idx: losses.retrieval_infonce(
          q[rows], p, n, positive_index=idx, tau=0.05, margin=0.1),
      "p2q": lambda rows, idx: losses.passage_to_query_infonce(
          p[rows], q, positive_index=idx, tau=0.05),
      "semantic": lambda rows, idx: losses.semantic_contrastive_loss(
          q[rows], p, positive_index=idx, tau=0.05),
      "ems": lambda rows, idx: losses.ems_sentence_contrastive_loss(
          proj, u_x[rows], u_y, positive_index=idx, tau=0.1),
      "language": lambda rows, idx: losses.language_contrastive_loss(
          q[rows], p, n[:, 0], tau=0.05),
  }
  for name, fn in full_fns.items():
    full = fn(slice(0, 8), None)
    shards = [fn(slice(lo, hi), np.arange(lo, hi)) for lo, hi in [(0, 3), (3, 4), (4, 8)]]
    np.testing.assert_allclose(np.concatenate(shards), full, rtol=1e-6, atol=1e-6, err_msg=name)


def _np_language(z, x, y, tau, form):
  out = []
  for zi in z.astype(np.float64):
    terms = []
    for xj, yj in zip(x.astype(np.float64), y.astype(np.float64)):
      sx, sy = float(zi @ xj), float(zi @ yj)
      if form == "uniform_ce":
        a, b = sx / tau, sy / tau
        lse = _np_log_sum_exp([a, b])
        terms.append(-0.5 * ((a - lse) + (b - lse)))
      else:
        terms.append((sx - sy) ** 2)
    out.append(np.mean(terms))
  return np.array(out)


@pytest.mark.parametrize("form", losses.LANGUAGE_FORMS)
def test_language_contrastive_loss_matches_numpy(form):
  rng = np.random.default_rng(6)
  z, x, y = _unit_rows(rng, 5, 16), _unit_rows(rng, 7, 16), _unit_rows(rng, 7, 16)
  got = losses.language_contrastive_loss(z, x, y, tau=0.05, form=form)
  assert got.shape == (5,)
  np.testing.assert_allclose(got, _np_language(z, x, y, 0.05, form), **TOL)


def _equidistant_inputs(rng):
  """z in the hyperplane e_last = 0; y_j is x_j mirrored across it, so s(z, x_j) == s(z, y_j)."""
  z = _unit_rows(rng, 4, 8)
  z[:, -1] = 0.
  x = _unit_rows(rng, 3, 8)
  y = x.copy()
  y[:, -1] = -x[:, -1]
  return z, x, y


@pytest.mark.parametrize("form", losses.LANGUAGE_FORMS)
def test_language_loss_is_minimal_with_zero_gradient_when_equidistant(form):
  z, x, y = _equidistant_inputs(np.random.default_rng(7))
  minimum = math.log(2.) if form == "uniform_ce" else 0.
  mean_loss = lambda z, x, y: jnp.mean(losses.language_contrastive_loss(z, x, y, tau=0.05, form=form))
  np.testing.assert_allclose(losses.language_contrastive_loss(z, x, y, tau=0.05, form=form),
                             np.full(4, minimum), rtol=1e-6, atol=1e-6)
  for grad in jax.grad(mean_loss, argnums=(0, 1, 2))(z, x, y):
    np.testing.assert_array_equal(grad, np.zeros_like(grad))
  # Moving z off the hyperplane makes it closer to one language: loss and gradient appear.
  z_off = z.copy()
  z_off[:, -1] = 0.3
  assert float(mean_loss(z_off, x, y)) > minimum + 1e-4
  for grad in jax.grad(mean_loss, argnums=(0, 1, 2))(z_off, x, y):
    assert float(jnp.max(jnp.abs(grad))) > 1e-4


def test_language_loss_rejects_unknown_form():
  z = np.zeros((1, 2), np.float32)
  with pytest.raises(ValueError, match="loss.language_form"):
    losses.language_contrastive_loss(z, z, z, tau=0.05, form="nope")


def _np_bag(ids, mask, vocab, special):
  bag = np.zeros((len(ids), vocab))
  for i, (row, row_mask) in enumerate(zip(ids, mask)):
    types = {int(t) for t, m in zip(row, row_mask) if m and int(t) not in special}
    for t in types:
      bag[i, t] = 1. / len(types)
  return bag


def test_bag_of_tokens_excludes_padding_and_special_ids():
  # 0 = CLS, 2 = SEP, 1 = PAD (XLM-R style); padding positions also carry a real id (7) to check
  # that the mask, not the id, excludes them.
  ids = np.array([[0, 5, 6, 5, 2, 7, 7],
                  [0, 9, 2, 1, 1, 1, 1],
                  [0, 2, 1, 1, 1, 1, 1]], np.int32)
  mask = np.array([[1, 1, 1, 1, 1, 0, 0],
                   [1, 1, 1, 0, 0, 0, 0],
                   [1, 1, 0, 0, 0, 0, 0]], np.int32)
  got = np.asarray(losses.bag_of_tokens(ids, mask, 10, special_ids=(0, 1, 2)))
  expected = np.zeros((3, 10))
  expected[0, [5, 6]] = 0.5  # The repeated 5 is one type; pad 7 is out.
  expected[1, 9] = 1.
  np.testing.assert_allclose(got, expected, atol=0)
  np.testing.assert_allclose(got, _np_bag(ids, mask, 10, {0, 1, 2}), atol=0)


def _np_layer_norm(x, p):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-12) * np.asarray(p["scale"], np.float64) + np.asarray(p["bias"], np.float64)


def _np_xtr_row(params, u, lang, target_bag):
  """KL(target || p(. | u, lang)) for one sentence, the head written out in float64."""
  f64 = lambda a: np.asarray(a, np.float64)
  e = _np_layer_norm(f64(params["language_embedding"])[lang], params["language_norm"])
  pre = np.concatenate([e, u.astype(np.float64)]) @ f64(params["dense"]["kernel"]) + f64(
      params["dense"]["bias"])
  h = _np_layer_norm(pre / (1. + np.exp(-pre)), params["norm"])
  logits = h @ f64(params["decoder"]["kernel"])
  log_p = logits - _np_log_sum_exp(list(logits))
  return sum(q * (math.log(q) - lp) for q, lp in zip(target_bag, log_p) if q > 0)


def test_xtr_loss_matches_numpy_kl():
  rng = np.random.default_rng(8)
  b, hidden, vocab, special = 4, 16, 50, (0, 1, 2)
  params = losses.init_xtr_head(jax.random.key(1), hidden, num_languages=3, vocab_size=vocab,
                                lang_dim=8)
  # Non-trivial norm parameters so that a missing scale/bias would show.
  params["norm"]["scale"] = jnp.asarray(rng.uniform(0.5, 1.5, size=hidden + 8), jnp.float32)
  params["language_norm"]["bias"] = jnp.asarray(rng.normal(size=8), jnp.float32)
  params["dense"]["bias"] = jnp.asarray(rng.normal(size=hidden + 8), jnp.float32)
  params["decoder"]["kernel"] = params["decoder"]["kernel"] * 50.  # Peakier, to test the KL.
  u_x, u_y = rng.normal(size=(b, hidden)).astype(np.float32), rng.normal(size=(b, hidden)).astype(np.float32)
  x_ids = rng.integers(0, vocab, size=(b, 9)).astype(np.int32)
  y_ids = rng.integers(0, vocab, size=(b, 11)).astype(np.int32)
  x_mask = (np.arange(9)[None] < rng.integers(2, 10, size=(b, 1))).astype(np.int32)
  y_mask = (np.arange(11)[None] < rng.integers(2, 12, size=(b, 1))).astype(np.int32)
  x_lang, y_lang = np.array([0, 0, 1, 2], np.int32), np.array([1, 2, 0, 0], np.int32)

  got = losses.xtr_loss(params, u_x, u_y, x_ids, x_mask, y_ids, y_mask, x_lang, y_lang,
                        special_ids=special)
  q_x = _np_bag(x_ids, x_mask, vocab, set(special))
  q_y = _np_bag(y_ids, y_mask, vocab, set(special))
  expected = [_np_xtr_row(params, u_x[i], y_lang[i], q_y[i])
              + _np_xtr_row(params, u_y[i], x_lang[i], q_x[i]) for i in range(b)]
  assert got.shape == (b,)
  np.testing.assert_allclose(got, expected, **TOL)
  # Per-row: a slice of the pairs gives the same rows.
  part = losses.xtr_loss(params, u_x[1:3], u_y[1:3], x_ids[1:3], x_mask[1:3], y_ids[1:3],
                         y_mask[1:3], x_lang[1:3], y_lang[1:3], special_ids=special)
  np.testing.assert_allclose(part, got[1:3], rtol=1e-6)


def test_xtr_head_shapes_and_gradients_reach_every_parameter():
  params = losses.init_xtr_head(jax.random.key(2), 12, num_languages=4, vocab_size=30)
  assert params["language_embedding"].shape == (4, 128)
  assert params["dense"]["kernel"].shape == (140, 140)
  assert params["decoder"]["kernel"].shape == (140, 30) and "bias" not in params["decoder"]
  ids = np.array([[3, 4, 5, 0]], np.int32)
  mask = np.array([[1, 1, 1, 0]], np.int32)
  u = np.ones((1, 12), np.float32)
  grads = jax.grad(lambda prm: losses.xtr_loss(prm, u, -u, ids, mask, ids, mask,
                                               np.array([0]), np.array([3]))[0])(params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    if "language_embedding" not in jax.tree_util.keystr(path):  # Only rows 0 and 3 get gradient.
      assert float(jnp.max(jnp.abs(g))) > 0, jax.tree_util.keystr(path)


def test_ems_sentence_contrastive_loss_matches_numpy():
  rng = np.random.default_rng(9)
  hidden = 20
  proj = losses.init_ems_projection(jax.random.key(3), hidden, 6)
  proj["dense1"]["bias"] = jnp.asarray(rng.normal(size=hidden) * 0.01, jnp.float32)
  proj["dense2"]["bias"] = jnp.asarray(rng.normal(size=6) * 0.01, jnp.float32)
  u_x, u_y = rng.normal(size=(6, hidden)).astype(np.float32), rng.normal(size=(6, hidden)).astype(np.float32)

  def np_project(u):
    f64 = lambda a: np.asarray(a, np.float64)
    h = np.maximum(u.astype(np.float64) @ f64(proj["dense1"]["kernel"]) + f64(proj["dense1"]["bias"]), 0)
    return h @ f64(proj["dense2"]["kernel"]) + f64(proj["dense2"]["bias"])

  zx, zy = np_project(u_x), np_project(u_y)
  cos = lambda a, b: a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
  expected = []
  for i in range(6):
    logits = [cos(zx[i], zy[j]) / 0.1 for j in range(6)]
    expected.append(_np_log_sum_exp(logits) - logits[i])
  got = losses.ems_sentence_contrastive_loss(proj, u_x, u_y, tau=0.1)
  np.testing.assert_allclose(got, expected, **TOL)


def test_active_terms_follow_config_weights():
  config = configs.default_config()
  assert losses.active_terms(config.loss) == {"ir": 1.0}
  config.loss.semantic_weight = 0.5
  config.loss.xtr_weight = 1.0
  config.loss.ems_contrastive_weight = 2.0
  assert losses.active_terms(config.loss) == {
      "ir": 1.0, "semantic": 0.5, "xtr": 1.0, "ems_contrastive": 2.0}
  config.loss.language_form = "cosine"
  with pytest.raises(ValueError, match="config.loss.language_form"):
    losses.active_terms(config.loss)
  with pytest.raises(KeyError, match="config.loss.ir_weight"):
    losses.active_terms(ml_collections.ConfigDict({"tau": 0.05}))
