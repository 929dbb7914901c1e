"""The training loop end to end on CPU: loss falls, a stop signal + resume is exact, errors are
named (SIGKILL and resume: tests/test_faults.py).

Runs `python -m lair.train` in subprocesses on tests/tiny_train_config.py (quickstart's data, a
2-layer hidden-32 BERT, 8-row batches), sharing one data cache between runs.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from lair import checkpoint as checkpoint_lib
from lair import configs
from lair import sharding
from lair import workdir as workdir_lib
from lair.errors import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "tests" / "tiny_train_config.py")
STEPS = 50


def train_command(workdir, *overrides, steps=STEPS):
  return [sys.executable, "-m", "lair.train", f"--config={CONFIG}:{steps}",
          f"--workdir={workdir}", *overrides]


def env():
  return dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")


def run_training(workdir, *overrides, steps=STEPS, check=True):
  proc = subprocess.run(train_command(workdir, *overrides, steps=steps), cwd=REPO, env=env(),
                        capture_output=True, text=True, timeout=600)
  if check:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  return proc


def checkpoints(workdir):
  return checkpoint_lib.Checkpoints(str(workdir / "checkpoints"))


def final_params(workdir):
  step, params = checkpoints(workdir).restore_params()
  return step, params


def read_metrics(workdir, kind="loss"):
  """metrics.jsonl rows holding `kind` ("loss": training logs, or an evaluation metric)."""
  with open(workdir / "metrics.jsonl", encoding="utf-8") as f:
    return [row for row in map(json.loads, f) if kind in row]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return f"--config.data.cache_dir={tmp_path_factory.mktemp('data_cache')}"


@pytest.fixture(scope="module")
def unbroken_run(tmp_path_factory, cache):
  workdir = tmp_path_factory.mktemp("unbroken")
  run_training(workdir, cache)
  return workdir


def test_loss_falls_and_logs(unbroken_run):
  rows = read_metrics(unbroken_run)
  assert [r["step"] for r in rows] == list(range(5, STEPS + 1, 5))
  for key in ("loss", "ir", "semantic", "language", "learning_rate", "grad_norm",
              "examples_per_s", "tokens_per_s", "model_tflops_per_s"):
    assert all(np.isfinite(r[key]) for r in rows), key
  assert all(r["model_tflops_per_s"] > 0 for r in rows)
  first, last = np.mean([r["loss"] for r in rows[:2]]), np.mean([r["loss"] for r in rows[-2:]])
  assert last < 0.8 * first, (first, last)
  assert rows[-1]["compiles"] == 1  # One length bucket: the step compiled once.
  assert list((unbroken_run / "tensorboard").glob("events.out.tfevents.*"))
  # Kept checkpoints: the last two (keep_checkpoints=2), the final one included.
  assert checkpoints(unbroken_run).all_steps() == [40, 50]


def test_log_line_gives_the_model_flop_rate_in_a_readable_unit():
  from lair.train import loop  # pylint: disable=g-import-not-at-top
  cpu = loop.summarize_scalars({"loss": 0.5, "examples_per_s": 10, "tokens_per_s": 534,
                                "model_tflops_per_s": 0.0523})
  assert cpu.endswith("| 10 examples/s 534 tokens/s 52.3 GFLOP/s"), cpu
  gpu = loop.summarize_scalars({"loss": 0.5, "examples_per_s": 4000, "tokens_per_s": 600000,
                                "model_tflops_per_s": 263.4, "mfu": 0.266})
  assert gpu.endswith("4,000 examples/s 600,000 tokens/s 263.4 TFLOP/s, MFU 26.6%"), gpu


def test_evaluation_keeps_the_best_params(tmp_path, unbroken_run):
  from lair import export  # pylint: disable=g-import-not-at-top
  key = "tatoeba/acc/mean"
  evals = read_metrics(unbroken_run, key)
  assert [r["step"] for r in evals] == [25, 50]  # eval_every=25, and at the end.
  with open(unbroken_run / "best.json", encoding="utf-8") as f:
    best = json.load(f)
  winner = max(evals, key=lambda r: r[key])
  assert best == {"step": winner["step"], "metric": key, "value": winner[key]}
  best_dir = checkpoint_lib.Checkpoints(str(unbroken_run / "best"))
  assert best_dir.all_steps() == [winner["step"]]
  out = export.export(str(unbroken_run), str(tmp_path / "best_hf"), step="best")
  assert (out / "model.safetensors").exists()


def test_nan_loss_stops_naming_the_step_and_keeps_the_checkpoint(tmp_path, unbroken_run,
                                                                   cache):
  # Resume the finished 50-step run for 10 more steps at a learning rate of 1e30: the first
  # update blows the params up, and the loss of step 51 (0-based) is NaN/Inf. A resume may not
  # change the optimiser, so the copy's config.json says it was started with that rate.
  workdir = tmp_path / "nan"
  shutil.copytree(unbroken_run, workdir)
  saved = json.loads((workdir / "config.json").read_text(encoding="utf-8"))
  saved["train"].update(learning_rate=1e30, warmup_steps=0)
  (workdir / "config.json").write_text(json.dumps(saved), encoding="utf-8")
  proc = run_training(workdir, cache, "--config.train.learning_rate=1e30",
                      "--config.train.warmup_steps=0", steps=STEPS + 10, check=False)
  assert proc.returncode != 0
  message = proc.stderr.strip().splitlines()[-1]
  assert message.startswith("lair.train.loop.NonFiniteLossError: loss is"), proc.stderr[-3000:]
  assert f"at step {STEPS + 1} (0-based)" in message
  assert f'"step": {STEPS + 1}' in message  # The data position of that batch.
  assert f"the last good checkpoint, step {STEPS}, is kept" in message
  assert checkpoints(workdir).latest_step() == STEPS


def test_unknown_config_key_is_named(tmp_path):
  proc = run_training(tmp_path, "--config.train.stepz=3", check=False)
  assert proc.returncode != 0
  assert "--config.train.stepz: unknown config key 'stepz'" in proc.stderr


def test_load_config_overrides():
  config = configs.load_config(f"{CONFIG}:7", ["--config.train.learning_rate=0.5",
                                               "--config.data.languages=eng,deu",
                                               "--config.model.normalize=false"])
  assert config.train.steps == 7 and config.train.learning_rate == 0.5
  assert list(config.data.languages) == ["eng", "deu"] and config.model.normalize is False
  with pytest.raises(ConfigError, match="unknown config key 'nope' in config.model"):
    configs.load_config(CONFIG, ["--config.model.nope=1"])
  with pytest.raises(ConfigError, match="--config.train.steps=abc: expected an integer"):
    configs.load_config(CONFIG, ["--config.train.steps=abc"])


def test_export_loads_in_transformers_and_matches(tmp_path, unbroken_run):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from lair import export  # pylint: disable=g-import-not-at-top
  from lair.models import retriever  # pylint: disable=g-import-not-at-top

  out = export.export(str(unbroken_run), str(tmp_path / "hf"), step=40)
  model = transformers.AutoModel.from_pretrained(out).eval()
  tokenizer = transformers.AutoTokenizer.from_pretrained(out)
  texts = ["Where is the library?", "Wo ist die Bibliothek?", "la biblioteca"]
  tokens = tokenizer(texts, padding=True, return_tensors="pt")
  with torch.no_grad():
    hidden = model(**tokens).last_hidden_state
  mask = tokens["attention_mask"][..., None].float()
  expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()

  # The same texts through lair with the checkpoint's params (step 40, not the latest).
  rcfg, _ = workdir_lib.Workdir(unbroken_run).read_model()
  _, params = checkpoints(unbroken_run).restore_params(40)
  ours = retriever.embed(params["retriever"], tokens["input_ids"].numpy(),
                         tokens["attention_mask"].numpy(), rcfg=rcfg)
  np.testing.assert_allclose(np.asarray(ours), expected, atol=1e-5)


def test_mesh_data_is_checked_against_the_devices(monkeypatch):
  mesh_lib = sharding
  count = len(jax.devices())
  assert mesh_lib.make_mesh(-1).shape["data"] == mesh_lib.make_mesh(count).shape["data"] == count
  for data in (0, -2, count + 1):
    with pytest.raises(ValueError, match=rf"config\.mesh\.data={data}: expected -1 or 1\.\."):
      mesh_lib.make_mesh(data)
  # Several processes: a mesh over fewer devices than all would leave some processes none.
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  for data in (0, -2, count + 1):
    with pytest.raises(ValueError, match=rf"config\.mesh\.data={data}: with 2 processes .* "
                                         rf"expected -1 or {count}"):
      mesh_lib.make_mesh(data)
  assert mesh_lib.make_mesh(-1).shape["data"] == count


def test_best_step_saved_before_a_kill_is_not_saved_twice(tmp_path):
  # Killed after best/ got step 7 but before best.json was written: the resumed run reaches
  # step 7's evaluation again and must not ask orbax to save an existing step.
  from lair.train import loop  # pylint: disable=g-import-not-at-top
  config = configs.default_config()
  config.eval.select_best = "acc"
  params = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
  run = workdir_lib.Workdir(tmp_path)
  best = checkpoint_lib.Checkpoints(run.best_dir, keep=1, create=True)
  try:
    best.save_params(7, params)
    best.wait()
    loop.keep_if_best(config, {"acc": 0.5}, {"params": params}, 7, best, run)
    assert best.all_steps() == [7]
  finally:
    best.close()
  with open(tmp_path / "best.json", encoding="utf-8") as f:
    assert json.load(f) == {"step": 7, "metric": "acc", "value": 0.5}
  _, restored = checkpoint_lib.Checkpoints(run.best_dir).restore_params()
  np.testing.assert_array_equal(restored["w"], params["w"])


def test_final_evaluation_lost_to_a_kill_is_run_on_restart(tmp_path, unbroken_run, cache):
  # Killed after the final checkpoint (step 50) but before the final evaluation wrote its
  # results: the restart has no step to train, yet must still evaluate step 50.
  workdir = tmp_path / "no_final_eval"
  shutil.copytree(unbroken_run, workdir)
  results = workdir / "eval" / f"step_{STEPS}.json"
  with open(results, encoding="utf-8") as f:
    expected = json.load(f)
  results.unlink()
  proc = run_training(workdir, cache)
  assert f"evaluation at step {STEPS}:" in proc.stdout
  with open(results, encoding="utf-8") as f:
    assert json.load(f) == expected  # Same params, same sets: the unbroken run's numbers.
  assert checkpoints(workdir).all_steps() == [40, 50]  # Nothing trained.


def test_export_errors_name_the_missing_file_or_key(tmp_path, unbroken_run):
  from lair import export  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  shutil.copytree(unbroken_run, workdir)
  shutil.rmtree(workdir / "best")
  with pytest.raises(FileNotFoundError, match=r"--step best: .* config\.eval\.select_best"):
    export.export(str(workdir), str(tmp_path / "out"), step="best")
  assert not (workdir / "best").exists()  # Not created as a side effect.
  (workdir / "best").mkdir()  # An empty best/ (a run killed before its first best).
  with pytest.raises(FileNotFoundError, match=r"config\.eval\.select_best"):
    export.export(str(workdir), str(tmp_path / "out"), step="best")
  # A config.json without the prompt keys (older runs): no prompts, no KeyError.
  config = json.loads((workdir / "config.json").read_text(encoding="utf-8"))
  del config["model"]["query_prefix"], config["model"]["passage_prefix"]
  (workdir / "config.json").write_text(json.dumps(config), encoding="utf-8")
  assert export.read_prompts(workdir_lib.Workdir(workdir)) == {"query": "", "passage": ""}
  (workdir / "config.json").unlink()
  with pytest.raises(FileNotFoundError, match=rf"{workdir / 'config.json'} not found"):
    export.export(str(workdir), str(tmp_path / "out"), step=40)


def test_stop_signal_saves_exits_75_and_the_rerun_resumes_exactly(tmp_path, unbroken_run,
                                                                  cache):
  """SIGTERM when batch 24 is asked for, and again while the checkpoint it asked for is being
  written: step 25 (no checkpoint step: checkpoint_every=10) finishes, its checkpoint is saved
  whole, the exit code is 75, and the same command resumes from it and ends with the unbroken
  run's params, bit for bit. Step 25 is an evaluation step (eval_every=25): the stop skips that
  evaluation, and the resume makes it up with the unbroken run's results."""
  stop_at = 25
  workdir = tmp_path / "stopped"
  command = train_command(workdir, cache)
  command[1:3] = [str(REPO / "tests" / "train_and_signal.py")]
  proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                        env=dict(env(), LAIR_SIGNAL_AT_BATCH=str(stop_at - 1),
                                 LAIR_SIGNAL_AGAIN_IN_SAVE="1"))
  assert proc.returncode == 75, proc.stdout[-2000:] + proc.stderr[-3000:]
  assert "received SIGTERM: stopping after this step" in proc.stdout
  assert "received SIGTERM again: still saving" in proc.stdout
  assert (f"stopped by SIGTERM at step {stop_at}: checkpoint saved in "
          f"{workdir / 'checkpoints'}/{stop_at}") in proc.stdout
  assert checkpoints(workdir).latest_step() == stop_at
  assert not (workdir / "eval" / "step_25.json").exists()
  resumed = run_training(workdir, cache)
  assert f"resumed from {workdir / 'checkpoints'}/{stop_at}" in resumed.stdout
  step, params = final_params(workdir)
  _, ref_params = final_params(unbroken_run)
  assert step == STEPS
  jax.tree.map(np.testing.assert_array_equal, params, ref_params)
  for n in (25, STEPS):
    stopped = json.loads((workdir / "eval" / f"step_{n}.json").read_text())["metrics"]
    unbroken = json.loads((unbroken_run / "eval" / f"step_{n}.json").read_text())["metrics"]
    assert stopped == unbroken, n
  key = "tatoeba/acc/mean"
  assert [r["step"] for r in read_metrics(workdir, key)] == [25, STEPS]


def test_a_short_run_prints_no_preparation_lines_native_logs_or_tracebacks(tmp_path):
  # A fresh data cache, so the tfds builds (which print by default) happen in this run.
  proc = run_training(tmp_path / "quiet", f"--config.data.cache_dir={tmp_path / 'cache'}",
                      "--config.eval.sets=[]", "--config.eval.select_best=", steps=3)
  printed = proc.stdout + proc.stderr
  for noise in ("Downloading and preparing", "Subsequent calls will reuse", "Traceback",
                "I0000", "Some weights of"):
    assert noise not in printed, (noise, printed[-3000:])
  assert "data ir: 1500 rows" in proc.stdout and "[####################] 3/3" in proc.stdout


@pytest.mark.parametrize("override, says", [
    ("--config.data.ir.paths=/nonexistent/train.json",
     "config.data.ir.paths: /nonexistent/train.json: no such file"),
    ("--config.model.hf_path=/nonexistent/model",
     "config.model.hf_path='/nonexistent/model': no such folder"),
    ("--config.train.batch_size=-4", "config.train.batch_size=-4: expected a positive integer"),
])
def test_a_fixable_error_is_one_line_and_a_hint_and_leaves_no_workdir(tmp_path, override, says):
  workdir = tmp_path / "never_made"
  proc = run_training(workdir, override, check=False)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert "lair.train: error: the config has problems" in proc.stderr
  if "hf_path" in override:
    assert "hint: --config.model.hf_path must be a local Hugging Face model folder" in proc.stderr
  assert not workdir.exists()


@pytest.mark.parametrize("command", ["train", "evaluate", "export", "index", "search", "mine"])
def test_help_prints_the_commands_usage_and_exits_zero(command, capsys):
  import importlib  # pylint: disable=g-import-not-at-top
  from lair import cli  # pylint: disable=g-import-not-at-top
  module = importlib.import_module(
      f"lair.{command}.__main__" if command in ("train", "evaluate") else f"lair.{command}")
  cli.run(module.main, [f"lair/{command}.py", "--help"])  # Returns: no SystemExit, status 0.
  out = capsys.readouterr().out
  assert f"python -m lair.{command}" in out and "--config.KEY=VALUE" in out, out
  assert module.__doc__.strip() in out
