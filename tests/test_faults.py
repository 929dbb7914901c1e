"""Fault injection: kills, damaged checkpoints, changed configs, unsafe exports, --hf vs --workdir.

Each test injects one fault into a tiny run (tests/tiny_train_config.py, 12 steps, checkpoints
at 4, 8 and 12) and checks what lair did and that nothing was lost: a run killed anywhere and
restarted ends with the unbroken run's params bit for bit; a damaged newest checkpoint is set
aside and the previous one resumes to the same end; a refused resume leaves the workdir
byte-identical. Each test adds a row to the table printed after the run (conftest.py).
"""
import hashlib
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

import conftest  # pylint: disable=g-bad-import-order  (tests/ is on sys.path)
from lair import checkpoint as checkpoint_lib
from lair import files

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "tests" / "tiny_train_config.py")
STEPS = 12
FLAGS = ["--config.train.checkpoint_every=4", "--config.train.keep_checkpoints=3",
         "--config.eval.sets=[]", "--config.eval.select_best=", "--config.train.log_every=4"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
  """One data cache and one persistent XLA cache for every run of the module."""
  root = tmp_path_factory.mktemp("faults_shared")
  return {"cache": root / "data", "xla": root / "xla"}


def _env(shared, **extra):
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu",
             JAX_COMPILATION_CACHE_DIR=str(shared["xla"]), **extra)
  env.pop("XLA_FLAGS", None)
  return env


def train(shared, workdir, *flags, script=None, env=None, check=True):
  """`python -m lair.train` (or a test script standing in for it) on the tiny config."""
  command = ([sys.executable, "-m", "lair.train"] if script is None
             else [sys.executable, str(REPO / "tests" / script)])
  command += [f"--config={CONFIG}:{STEPS}", f"--workdir={workdir}",
              f"--config.data.cache_dir={shared['cache']}", *FLAGS, *flags]
  proc = subprocess.run(command, cwd=REPO, env=_env(shared, **(env or {})), capture_output=True,
                        text=True, timeout=600)
  if check:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  return proc


def final_params(workdir):
  return checkpoint_lib.Checkpoints(str(workdir / "checkpoints")).restore_params()


def assert_same_params(workdir, reference):
  step, params = final_params(workdir)
  ref_step, ref_params = final_params(reference)
  assert step == ref_step == STEPS
  jax.tree.map(np.testing.assert_array_equal, params, ref_params)


def tree_digest(folder: pathlib.Path) -> dict:
  """{relative path: sha256} of every file under `folder` (byte-identical check)."""
  return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(folder.rglob("*")) if p.is_file()}


def record(fault: str, did: str, lost: str = "nothing") -> None:
  conftest.FAULT_TABLE.append((fault, did, lost))


@pytest.fixture(scope="module")
def reference(shared, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("faults_reference")
  train(shared, workdir)
  return workdir


# ------------------------------------------------------------------------------------------------
# Kills.
# ------------------------------------------------------------------------------------------------


# Seeded random batches: seed 1 draws batch 3 (before the first checkpoint, 4), seed 5 batch 10
# (after checkpoints 4 and 8 were asked for); two seeds keep the suite within the CI budget.
@pytest.mark.parametrize("seed", [1, 5])
def test_sigkill_at_a_random_step_then_restart_is_bitwise_equal(shared, reference, tmp_path,
                                                                seed):
  die_at = random.Random(seed).randrange(1, STEPS)
  workdir = tmp_path / "killed"
  proc = train(shared, workdir, script="train_and_die.py",
               env={"LAIR_DIE_AT_BATCH": str(die_at)}, check=False)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
  resumed_from = checkpoint_lib.Checkpoints(str(workdir / "checkpoints")).latest_step()
  train(shared, workdir)
  assert_same_params(workdir, reference)
  # Steps logged after the last checkpoint before the kill are logged again by the restart,
  # and only by it: each step once, in order.
  with open(workdir / "metrics.jsonl", encoding="utf-8") as f:
    logged = [row["step"] for row in map(json.loads, f) if "loss" in row]
  assert logged == list(range(4, STEPS + 1, 4))
  restart = (f"restart resumed from step {resumed_from}" if resumed_from
             else "no checkpoint yet: restart started afresh")
  record(f"SIGKILL at batch {die_at} (seed {seed})", f"{restart}, ended bitwise-equal")


# The first save (no checkpoint to fall back on) and a later one (the previous one is kept).
@pytest.mark.parametrize("save, seed", [(1, 0), (2, 1)])
def test_sigkill_while_a_checkpoint_is_written_then_restart_is_bitwise_equal(
    shared, reference, tmp_path, save, seed):
  workdir = tmp_path / "killed_in_save"
  proc = train(shared, workdir, script="train_and_die.py",
               env={"LAIR_DIE_IN_SAVE": str(save), "LAIR_DIE_SEED": str(seed)}, check=False)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
  kept = checkpoint_lib.Checkpoints(str(workdir / "checkpoints")).all_steps()
  resumed = train(shared, workdir)
  assert_same_params(workdir, reference)
  started = "resumed from" in resumed.stdout
  record(f"SIGKILL during checkpoint save #{save} (seed {seed})",
         f"complete checkpoints after the kill: {kept}; restart "
         f"{'resumed' if started else 'started afresh'}, ended bitwise-equal")


# ------------------------------------------------------------------------------------------------
# A damaged newest checkpoint.
# ------------------------------------------------------------------------------------------------


def _params_data_file(step_dir: pathlib.Path) -> pathlib.Path:
  return max((p for p in (step_dir / "params").rglob("*") if p.is_file() and p.parent.name == "d"),
             key=lambda p: p.stat().st_size)


def _truncate(step_dir):
  path = _params_data_file(step_dir)
  with open(path, "r+b") as f:
    f.truncate(path.stat().st_size // 2)


def _garble(step_dir):
  path = _params_data_file(step_dir)
  data = bytearray(path.read_bytes())
  middle = len(data) // 2
  data[middle:middle + 64] = bytes(random.Random(0).randrange(256) for _ in range(64))
  path.write_bytes(bytes(data))


DAMAGE = {
    "truncated params data file": _truncate,
    "garbled params data file": _garble,
    "deleted train/_METADATA": lambda d: (d / "train" / "_METADATA").unlink(),
    "deleted data/metadata": lambda d: (d / "data" / "metadata").unlink(),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(shared, reference, tmp_path,
                                                                  damage):
  workdir = tmp_path / "damaged"
  shutil.copytree(reference, workdir)
  DAMAGE[damage](workdir / "checkpoints" / str(STEPS))
  proc = train(shared, workdir)
  assert f"checkpoint {workdir / 'checkpoints'}/{STEPS} cannot be restored" in proc.stdout
  assert f"resumed from {workdir / 'checkpoints'}/8" in proc.stdout, proc.stdout[-3000:]
  assert (workdir / "checkpoints.damaged" / str(STEPS)).is_dir()  # Set aside, not deleted.
  assert_same_params(workdir, reference)
  reason = proc.stdout.split("cannot be restored (", 1)[1].split(")", 1)[0][:70]
  record(f"{damage} in checkpoint {STEPS}",
         f"reported ({reason}...), moved to checkpoints.damaged/, resumed from 8, ended equal")


def test_every_checkpoint_damaged_is_an_error_listing_them(shared, reference, tmp_path):
  workdir = tmp_path / "all_damaged"
  shutil.copytree(reference, workdir)
  for step in (4, 8, 12):
    (workdir / "checkpoints" / str(step) / "train" / "_METADATA").unlink()
  before = tree_digest(workdir)
  proc = train(shared, workdir, check=False)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert "no checkpoint can be restored (step 12:" in proc.stderr
  assert "step 8:" in proc.stderr and "step 4:" in proc.stderr
  assert tree_digest(workdir) == before
  record("every checkpoint damaged", "stopped with one error listing steps 12, 8, 4 and why",
         "nothing (workdir byte-identical)")


# ------------------------------------------------------------------------------------------------
# A resume with another config.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("override, key", [
    ("--config.model.encoder.hidden_size=64", "model.encoder.hidden_size"),
    ("--config.loss.semantic_weight=0.5", "loss.semantic_weight"),
    ("--config.train.learning_rate=0.01", "train.learning_rate"),
])
def test_resume_with_a_changed_config_fails_and_changes_nothing(shared, reference, tmp_path,
                                                                override, key):
  workdir = tmp_path / "changed"
  shutil.copytree(reference, workdir)
  before = tree_digest(workdir)
  proc = train(shared, workdir, override, check=False)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert f"holds a run with another config ({key}: saved" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert tree_digest(workdir) == before
  record(f"resume with {override}", f"refused before writing, naming {key}",
         "nothing (workdir byte-identical)")


def test_a_resume_may_extend_the_run(shared, reference, tmp_path):
  workdir = tmp_path / "extended"
  shutil.copytree(reference, workdir)
  proc = train(shared, workdir, f"--config.train.steps={STEPS + 4}")
  assert "resumed with changed train.steps" in proc.stdout
  assert json.loads((workdir / "config.json").read_text())["train"]["steps"] == STEPS + 4
  assert checkpoint_lib.Checkpoints(str(workdir / "checkpoints")).latest_step() == STEPS + 4


def test_a_resume_below_the_checkpoint_step_is_refused(shared, reference, tmp_path):
  """train.steps lowered under the newest checkpoint: no step would run and that checkpoint's
  params would be labelled the final step's; refused, the workdir byte-identical."""
  workdir = tmp_path / "shortened"
  shutil.copytree(reference, workdir)
  before = tree_digest(workdir)
  proc = train(shared, workdir, f"--config.train.steps={STEPS - 4}", check=False)
  assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
  assert (f"config.train.steps={STEPS - 4} is below the step of the run's checkpoint "
          f"{workdir / 'checkpoints'}/{STEPS}") in proc.stderr
  assert f"--config.train.steps={STEPS} or more" in proc.stderr
  assert tree_digest(workdir) == before
  record("resume with train.steps below the checkpoint", "refused, naming both steps",
         "nothing (workdir byte-identical)")


def test_a_folder_replacement_killed_between_its_renames_is_put_back(tmp_path):
  """replace_folder killed after moving the old folder aside and before moving the new one in:
  the next call restores the old folder first, so a failing rewrite still leaves it whole."""
  target = tmp_path / "tokenizer"
  (tmp_path / ".tokenizer.old").mkdir()
  (tmp_path / ".tokenizer.old" / "vocab.txt").write_text("old\n")
  (tmp_path / ".tokenizer.tmp").mkdir()  # The complete new one, never renamed in.

  def fail(folder):
    raise OSError("disk full")

  with pytest.raises(OSError, match="disk full"):
    files.replace_folder(str(target), fail)
  assert (target / "vocab.txt").read_text() == "old\n"
  files.replace_folder(str(target), lambda folder: (pathlib.Path(folder) / "vocab.txt")
                       .write_text("new\n"))
  assert (target / "vocab.txt").read_text() == "new\n"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer"]
  record("folder swap killed between its renames", "old folder put back on the next write")


# ------------------------------------------------------------------------------------------------
# Export.
# ------------------------------------------------------------------------------------------------


def _export(shared, *flags):
  return subprocess.run([sys.executable, "-m", "lair.export", *flags], cwd=REPO,
                        env=_env(shared), capture_output=True, text=True, timeout=300)


def test_export_refuses_a_non_empty_folder_and_replaces_it_whole_with_overwrite(
    shared, reference, tmp_path):
  out = tmp_path / "out"
  (out / "2_Dense").mkdir(parents=True)
  (out / "README.md").write_text("an older export\n")
  before = tree_digest(out)
  proc = _export(shared, f"--workdir={reference}", f"--out={out}")
  assert proc.returncode == 2 and "the folder exists and is not empty" in proc.stderr
  assert "--overwrite" in proc.stderr and tree_digest(out) == before
  # Not a model folder (no config.json): --overwrite does not delete it either.
  proc = _export(shared, f"--workdir={reference}", f"--out={out}", "--overwrite")
  assert proc.returncode == 2 and "holds no config.json" in proc.stderr, proc.stderr[-2000:]
  assert tree_digest(out) == before
  (out / "config.json").write_text("{}\n")
  proc = _export(shared, f"--workdir={reference}", f"--out={out}", "--overwrite")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert not (out / "2_Dense").exists() and not (out / "README.md").exists()
  assert (out / "model.safetensors").exists()
  record("export into a non-empty folder", "refused; with --overwrite a model folder is replaced "
         "whole (stale 2_Dense/, README.md gone), any other folder refused")


@pytest.mark.parametrize("target, says", [("run", "is inside the run"),
                                          ("run/checkpoints", "is inside the run"),
                                          ("run/config.json", "is inside the run"),
                                          (".", "holds the run"),
                                          ("other", "is another lair training run")])
def test_export_refuses_the_runs_own_files(shared, reference, tmp_path, target, says):
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  shutil.copytree(reference, tmp_path / "other")
  (tmp_path / "config.json").write_text("{}\n")  # So only the run check can refuse ".".
  before = tree_digest(tmp_path)
  proc = _export(shared, f"--workdir={workdir}", f"--out={tmp_path / target}", "--overwrite")
  assert proc.returncode == 2 and says in proc.stderr, proc.stderr[-2000:]
  assert tree_digest(tmp_path) == before
  where = {".": "the folder holding WORKDIR", "other": "another run"}.get(
      target, target.replace("run", "WORKDIR", 1))
  record(f"export --out={where}", "refused even with --overwrite",
         "nothing (folder byte-identical)")


# ------------------------------------------------------------------------------------------------
# Evaluating an export through --hf.
# ------------------------------------------------------------------------------------------------


def test_hf_evaluation_of_a_cls_pooled_linear_head_export_equals_workdir(shared, tmp_path):
  """A run with cls pooling and a linear head (to 24 dims), evaluated from its workdir and from
  its export: the export's sentence-transformers modules give the same model."""
  workdir = tmp_path / "cls_head"
  train(shared, workdir, "--config.model.pooling=cls", "--config.model.projection=linear",
        "--config.model.projection_dim=24", "--config.model.query_prefix=q: ",
        "--config.model.passage_prefix=p: ", "--config.train.steps=4")
  out = tmp_path / "export"
  assert _export(shared, f"--workdir={workdir}", f"--out={out}").returncode == 0
  quick = REPO / "lair" / "data" / "quickstart"
  sets = ["--lareqa=" + ",".join(str(quick / f"{l}.lareqa.json") for l in ("eng", "deu")),
          "--tatoeba=" + str(quick / "tatoeba.deu-eng"), "--config.eval.search=exact"]
  results = {}
  # The HF folder is scored with the run's lengths and buckets (tiny_train_config), so that both
  # paths pad alike: a 4-step model has near-ties that float noise would reorder.
  same_shapes = ["--config.data.max_query_len=32", "--config.data.max_passage_len=32",
                 "--config.data.max_sentence_len=32", "--config.data.length_buckets=[32]",
                 "--config.eval.batch_size=128"]
  for name, source in (("workdir", f"--workdir={workdir}"), ("hf", f"--hf={out}")):
    eval_dir = tmp_path / f"eval_{name}"
    flags = [source] + ([f"--workdir={eval_dir}", *same_shapes] if name == "hf" else [])
    proc = subprocess.run([sys.executable, "-m", "lair.evaluate", *flags, *sets], cwd=REPO,
                          env=_env(shared), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = (workdir / "eval" / "evaluate_step_4.json") if name == "workdir" else (
        eval_dir / "eval" / "eval.json")
    results[name] = json.loads(path.read_text())["metrics"]
  assert results["workdir"].keys() == results["hf"].keys()
  for key, value in results["workdir"].items():
    np.testing.assert_allclose(results["hf"][key], value, atol=1e-4, err_msg=key)
  record("evaluate an export (cls pooling + linear head + prompts) via --hf",
         f"the export's modules read back: {len(results['hf'])} metrics equal --workdir's "
         f"to 1e-4")
