"""lair.losses against independent float64 NumPy references written here with plain loops."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def test_semantic_loss_with_both_sides_as_negatives_matches_numpy():
  # Each sentence picks its translation among all translations and all *other* sentences of its
  # own side: 2B - 1 candidates, written out as a list here.
  rng = np.random.default_rng(4)
  x, y = _unit_rows(rng, 6, 16), _unit_rows(rng, 6, 16)

  def np_rows(a, b):
    return np.array([_np_ce(a[i], list(b) + [a[j] for j in range(len(a)) if j != i], i, 0.05)
                     for i in range(len(a))])

  x_to_y, y_to_x = np_rows(x, y), np_rows(y, x)
  np.testing.assert_allclose(
      losses.semantic_contrastive_loss_both_sides(x, y, x, tau=0.05), x_to_y, **TOL)
  np.testing.assert_allclose(losses.symmetric_semantic_contrastive_loss(
      x, y, tau=0.05, negatives="both_sides"), 0.5 * (x_to_y.mean() + y_to_x.mean()), **TOL)
  # Rows 2..3 of a gathered batch: the positive index picks both the translation and the self
  # to leave out.
  np.testing.assert_allclose(losses.semantic_contrastive_loss_both_sides(
      x[2:4], y, x, positive_index=jnp.array([2, 3]), tau=0.05), x_to_y[2:4], **TOL)
  # An own-language sentence closer than the translation now costs; with other_side it cannot.
  x_near = x.copy()
  x_near[1] = x[0]  # Row 1's side holds a copy of row 0.
  both = losses.semantic_contrastive_loss_both_sides(x_near, y, x_near, tau=0.05)
  other = losses.semantic_contrastive_loss(x_near, y, tau=0.05)
  assert float(both[0]) > float(other[0]) + 1.0
  with pytest.raises(ValueError, match="loss.semantic_negatives"):
    losses.symmetric_semantic_contrastive_loss(x, y, tau=0.05, negatives="all")


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
  z_x, z_y = _unit_rows(rng, 8, 24), _unit_rows(rng, 8, 24)
  full_fns = {
      "ir": lambda rows, idx: losses.retrieval_infonce(
          q[rows], p, n, positive_index=idx, tau=0.05, margin=0.1),
      "p2q": lambda rows, idx: losses.passage_to_query_infonce(
          p[rows], q, positive_index=idx, tau=0.05),
      "semantic": lambda rows, idx: losses.semantic_contrastive_loss(
          q[rows], p, positive_index=idx, tau=0.05),
      "ems": lambda rows, idx: losses.ems_sentence_contrastive_loss(
          z_x[rows], z_y, positive_index=idx, tau=0.1),
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


