"""Language-bias diagnostics against computations written out here (NumPy, plain loops).

The LAReQA bias block on a hand-built pool whose answers are known, the language-ID probe at
chance and near 1.0, the language loss's identity/noise split, and the start-up warning for
z sentences of one language.
"""
import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from lair import configs
from lair import losses
from lair import objectives
from lair.evaluate import evaluators
from lair.train import loop


def _pool():
  """2 question languages x 2 questions, a pool of 3 sentences per language.

  Question i (in either language) has its answer at sentence i of each language:
  en pool 0, 1, 2 ; de pool 3, 4, 5.
  """
  return evaluators.LareqaPool(
      questions=["q0", "q1", "f0", "f1"], question_langs=["en", "en", "de", "de"],
      sentences=[f"s{i}" for i in range(6)], sentence_langs=["en"] * 3 + ["de"] * 3,
      relevant=[{0: 1, 3: 1}, {1: 1, 4: 1}, {0: 1, 3: 1}, {1: 1, 4: 1}])


def test_bias_block_on_a_hand_built_pool():
  pool = _pool()
  # Top 4 of each question: en q0 sees only English; en q1 finds both answers; de f0 only
  # German but its German answer; de f1 everything but its German answer.
  ranked = np.array([[0, 1, 2, -1], [4, 1, 0, 3], [3, 4, 5, -1], [1, 0, 2, 5]])
  got = evaluators.language_bias(ranked, pool, 4, "x/bias")
  # Written out by hand.
  own = {"q0": 3 / 4, "q1": 2 / 4, "f0": 3 / 4, "f1": 1 / 4}
  assert got["x/bias/own_share@4/en"] == pytest.approx((own["q0"] + own["q1"]) / 2)
  assert got["x/bias/own_share@4/de"] == pytest.approx((own["f0"] + own["f1"]) / 2)
  assert got["x/bias/unbiased_share/en"] == pytest.approx(0.5)  # One answer per language.
  assert got["x/bias/own_excess@4/en"] == pytest.approx(0.625 - 0.5)
  assert got["x/bias/own_excess@4/de"] == pytest.approx(0.5 - 0.5)
  assert got["x/bias/own_excess@4/mean"] == pytest.approx(0.0625)
  # recall@4 of the answers in language a, for questions of language q.
  assert got["x/bias/recall@4->en/en"] == pytest.approx((1 + 1) / 2)  # q0: 0 yes; q1: 1 yes.
  assert got["x/bias/recall@4->de/en"] == pytest.approx((0 + 1) / 2)  # q0: 3 no; q1: 4 yes.
  assert got["x/bias/recall@4->en/de"] == pytest.approx((0 + 1) / 2)  # f0: 0 no; f1: 1 yes.
  assert got["x/bias/recall@4->de/de"] == pytest.approx((1 + 0) / 2)  # f0: 3 yes; f1: 4 no.


def test_bias_block_of_an_unbiased_retriever_has_no_excess():
  pool = _pool()
  ranked = np.array([[0, 3, 1, 4], [1, 4, 2, 5], [3, 0, 4, 1], [4, 1, 5, 2]])
  got = evaluators.language_bias(ranked, pool, 4, "x/bias")
  assert got["x/bias/own_excess@4/mean"] == pytest.approx(0.0)
  for a, q in itertools.product(["en", "de"], repeat=2):
    assert got[f"x/bias/recall@4->{a}/{q}"] == 1.0


def _probe_accuracy(x, labels, num_classes):
  """The probe's protocol written out: fit on even rows, test on odd rows, per class mean."""
  weights = evaluators.fit_linear_probe(x[0::2], labels[0::2], num_classes)
  test, truth = x[1::2], labels[1::2]
  predicted = np.argmax(np.c_[test, np.ones(len(test))] @ weights, axis=1)
  return np.mean([np.mean(predicted[truth == c] == c) for c in range(num_classes)])


def test_linear_probe_is_at_chance_without_language_and_near_one_with_an_offset():
  rng = np.random.default_rng(0)
  n, dim, langs = 600, 32, 4
  labels = np.repeat(np.arange(langs), n // langs)
  rng.shuffle(labels)
  content = rng.normal(size=(n, dim))
  chance = _probe_accuracy(content, labels, langs)
  assert abs(chance - 1 / langs) < 0.08, chance
  offsets = rng.normal(size=(langs, dim)) * 1.5
  assert _probe_accuracy(content + offsets[labels], labels, langs) > 0.97
  # The closed form against NumPy's least squares on the same ridge system.
  feats = np.c_[content, np.ones(n)]
  ridge = np.linalg.lstsq(np.r_[feats, np.sqrt(1.0) * np.eye(dim + 1)],
                          np.r_[np.eye(langs)[labels], np.zeros((dim + 1, langs))], rcond=None)[0]
  np.testing.assert_allclose(evaluators.fit_linear_probe(content, labels, langs), ridge,
                             atol=1e-8)


def test_language_gap_split_matches_a_numpy_decomposition():
  rng = np.random.default_rng(1)
  unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
  z, x, y = (unit(rng.normal(size=(n, 8))).astype(np.float32) for n in (10, 6, 6))
  z_lang = rng.integers(-1, 3, size=10)
  x_lang, y_lang = np.zeros(6, int), rng.integers(1, 3, size=6)
  sums = losses.language_gap_sums(z, x, y, jnp.asarray(z_lang), jnp.asarray(x_lang),
                                  jnp.asarray(y_lang), 3)
  identity, noise = losses.language_identity_and_noise(*sums)
  # Reference: group the gaps by (z, x, y) language, identity = between-cell, noise = within.
  cells = {}
  for i in range(10):
    for j in range(6):
      gap = float(z[i].astype(np.float64) @ x[j] - z[i].astype(np.float64) @ y[j])
      cells.setdefault((z_lang[i], x_lang[j], y_lang[j]), []).append(gap)
  gaps = np.concatenate([np.asarray(v) for v in cells.values()])
  ref_identity = sum(len(v) * np.mean(v) ** 2 for v in cells.values()) / gaps.size
  ref_noise = sum(np.sum((np.asarray(v) - np.mean(v)) ** 2) for v in cells.values()) / gaps.size
  assert float(identity) == pytest.approx(ref_identity, rel=1e-4, abs=1e-6)
  assert float(noise) == pytest.approx(ref_noise, rel=1e-4, abs=1e-6)
  assert float(identity + noise) == pytest.approx(np.mean(gaps ** 2), rel=1e-4)


def _language_config(language_inputs, mono_specs=(), from_parallel=0):
  c = configs.default_config()
  c.data.languages = ["eng", "deu", "spa"]
  c.data.ir.paths = ["ir.json"]
  c.data.mono.paths = list(mono_specs)
  c.data.mono.from_parallel = from_parallel
  c.loss.update(dict(ir_weight=1.0, semantic_weight=1.0, language_weight=0.3,
                     language_inputs=language_inputs))
  return c


@pytest.mark.parametrize("language_inputs, mono, from_parallel, warns", [
    ("ir", (), 0, True),  # English IR text only.
    ("mono", ("deu:d.txt",), 0, True),  # One monolingual file.
    ("ir+mono", ("deu:d.txt",), 0, False),  # English + German.
    ("mono", (), 200, False),  # Held out of the parallel data: every language.
    ("mono", ("deu:d.txt", "spa:s.txt"), 0, False),
])
def test_startup_warning_fires_for_single_language_z_only(language_inputs, mono, from_parallel,
                                                          warns):
  config = _language_config(language_inputs, mono, from_parallel)
  plan = objectives.plan_objectives(config)
  assert plan.z_is_monolingual() == warns
  message = loop.language_z_warning(config, plan)
  assert bool(message) == warns
  if warns:
    assert "config.loss.language_inputs" in message and "config.data.mono.from_parallel" in message
