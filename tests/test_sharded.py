"""The sharded step on 8 simulated devices equals a plain single-device computation.

tests/sharded_check.py runs in a subprocess (the device count is fixed when jax starts) and
compares lair's shard_map path (embeddings split along `data`, candidates all-gathered) against
a reference that embeds the whole global batch on one device and averages the per-row losses
with jnp.mean, with dropout on: the IR term with its options, the language term with its own
options, and all five terms at once (each term's value checked on its own) with FSDP-sharded
separate towers. One compile per case is most of this file's time, so the other single terms
(semantic, xtr, ems_contrastive) are checked inside the all-terms case.
"""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from sharded_check import B, K  # pylint: disable=g-bad-import-order

TESTS = pathlib.Path(__file__).resolve().parent
SHARDED_OBJECTIVES = ["ir", "language_stop_pairs"]


def run_check(cases, devices=8):
  """Runs sharded_check.py with `devices` CPU devices; returns its JSON results."""
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu", PYTHONPATH=f"{TESTS.parent}{os.pathsep}{TESTS}")
  proc = subprocess.run([sys.executable, str(TESTS / "sharded_check.py"), *cases],
                        capture_output=True, text=True, env=env, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def results():
  return run_check([f"sharded:{name}" for name in SHARDED_OBJECTIVES] + ["fsdp:all"])


@pytest.mark.parametrize("objective", SHARDED_OBJECTIVES)
def test_sharded_equals_single_device(results, objective):
  r = results[f"sharded:{objective}"]
  assert r["devices"] == 8
  assert r["loss_error"] < 1e-5, r
  assert r["term_error"] < 1e-5, r
  assert r["grad_error"] < 1e-5, r
  assert r["grad_norm"] > 0, r


def test_each_query_sees_the_global_batch(results):
  # 8 devices hold 2 queries each, yet every query is scored against all B passages and B*K
  # hard negatives of the global batch.
  assert results["sharded:ir"]["ir_candidates"] == B * (1 + K)


def test_fsdp_sharded_params_all_objectives(results):
  # Separate towers and a projection head, params over 1000 elements sharded along `data`; all
  # five terms at once, the language term on monolingual z only (the IR rows are in the batch
  # but must not join z).
  r = results["fsdp:all"]
  assert r["loss_error"] < 1e-5, r
  assert r["term_error"] < 1e-5, r
  assert r["grad_error"] < 1e-5, r
