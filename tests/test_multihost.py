"""Multi-host training on one machine: 2 processes x 1 CPU device vs 1 process x 2 devices.

Two `bash launch/run.sh` processes (LAIR_COORDINATOR / LAIR_NUM_PROCESSES / LAIR_PROCESS_ID,
gloo CPU collectives) train tests/tiny_train_config.py in one workdir; the reference is one
process with the same global mesh (XLA_FLAGS=--xla_force_host_platform_device_count=2). Same
seed and global batch, so the same math: the losses and final params must agree. Every process
runs under a deadline and is SIGKILLed past it (SIGTERM is caught by JAX's preemption notifier),
so a hung collective fails the test instead of hanging CI.
"""
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from lair import configs
from lair import checkpoint as checkpoint_lib
from lair import workdir as workdir_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "tests" / "tiny_train_config.py")
STEPS = 12
# Checkpoints at 4, 8 and 12; logs at 5, 10 and 12; one Tatoeba evaluation at the end.
OVERRIDES = ["--config.train.checkpoint_every=4", "--config.train.eval_every=0",
             "--config.train.keep_checkpoints=3"]
DEADLINE_S = 180  # A 2-process run takes 30-50 s on 2 busy cores.
COMPILATION_CACHE = None  # Set by the compilation_cache fixture.


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
  """One persistent XLA cache for the module's runs: the killed and the resumed 2-process runs
  load the step the first one compiled (compiling is most of a tiny run's time on 2 cores)."""
  global COMPILATION_CACHE
  COMPILATION_CACHE = str(tmp_path_factory.mktemp("xla_cache"))
  yield


def base_env(**extra):
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
             PYTHON=sys.executable, JAX_COMPILATION_CACHE_DIR=COMPILATION_CACHE, **extra)
  for key in ("XLA_FLAGS", "LAIR_COORDINATOR", "LAIR_NUM_PROCESSES", "LAIR_PROCESS_ID",
              "LAIR_DIE_AT_BATCH", *[k for k in env if k.startswith("SLURM_")]):
    if key not in extra:
      env.pop(key, None)
  return env


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_processes(commands_and_envs, out_dir: pathlib.Path,
                  ok_codes=(0,)) -> list[tuple[int, str]]:
  """Runs the processes together; [(returncode, stdout + stderr)] in order.

  When one fails (exits with a code not in `ok_codes` or prints a Python traceback) or the
  deadline passes, all are SIGKILLed: a peer of a failed process waits in a collective for
  minutes, and the failed one itself waits for its peers at the distributed shutdown barrier.
  """
  out_dir.mkdir(parents=True, exist_ok=True)
  logs = [open(out_dir / f"process_{i}.log", "w+", encoding="utf-8")
          for i in range(len(commands_and_envs))]
  # Own process groups: killing one ends launch/run.sh's python child along with its bash.
  procs = [subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
           for (command, env), log in zip(commands_and_envs, logs)]
  deadline = time.time() + DEADLINE_S
  while any(p.poll() is None for p in procs):
    failed = (any(p.returncode not in (None, *ok_codes) for p in procs)
              or any("Traceback (most recent call last)" in printed(log) for log in logs))
    if failed or time.time() > deadline:
      time.sleep(5 if failed else 0)  # Let a failing peer print its own error first.
      for p in procs:
        if p.poll() is None:
          os.killpg(p.pid, signal.SIGKILL)
      break
    time.sleep(0.2)
  results = []
  for p, log in zip(procs, logs):
    p.wait()
    log.seek(0)
    results.append((p.returncode, log.read()))
    log.close()
  return results


def printed(log) -> str:
  """What a process has written to its log so far."""
  with open(log.name, encoding="utf-8", errors="replace") as f:
    return f.read()


def multihost_commands(workdir, port, *extra_flags, script=None, die_at=None):
  """Two hosts of one run: `bash launch/run.sh` (train + export on process 0), or `script`."""
  flags = [f"--config={CONFIG}:{STEPS}", f"--workdir={workdir}", *OVERRIDES, *extra_flags]
  command = (["bash", str(REPO / "launch" / "run.sh"), *flags] if script is None
             else [sys.executable, str(script), *flags])
  extra = dict(LAIR_COORDINATOR=f"127.0.0.1:{port}", LAIR_NUM_PROCESSES="2")
  if die_at is not None:
    extra["LAIR_DIE_AT_BATCH"] = str(die_at)
  return [(command, base_env(LAIR_PROCESS_ID=str(i), **extra)) for i in range(2)]


def describe(results) -> str:
  return "\n".join(f"--- process {i} (rc {rc}):\n{out[-3000:]}"
                   for i, (rc, out) in enumerate(results))


def loss_rows(workdir):
  with open(workdir / "metrics.jsonl", encoding="utf-8") as f:
    return [row for row in map(json.loads, f) if "loss" in row]


def eval_rows(workdir):
  with open(workdir / "metrics.jsonl", encoding="utf-8") as f:
    return [row for row in map(json.loads, f) if "loss" not in row]


def final_params(workdir):
  return checkpoint_lib.Checkpoints(str(workdir / "checkpoints")).restore_params()


def assert_same_training(workdir, reference):
  """Same losses at the same steps, and the same final params, to 1e-5."""
  rows, ref_rows = loss_rows(workdir), loss_rows(reference)
  assert [r["step"] for r in rows] == [r["step"] for r in ref_rows] == [5, 10, STEPS]
  for row, ref in zip(rows, ref_rows):
    for key in ("loss", "ir", "semantic", "language", "grad_norm", "ir_candidates"):
      np.testing.assert_allclose(row[key], ref[key], rtol=1e-5, atol=1e-5, err_msg=key)
  step, params = final_params(workdir)
  ref_step, ref_params = final_params(reference)
  assert step == ref_step == STEPS
  assert jax.tree.structure(params) == jax.tree.structure(ref_params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
               params, ref_params)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
  """One process, two simulated devices: the mesh the two hosts make together."""
  workdir = tmp_path_factory.mktemp("one_process")
  env = base_env(XLA_FLAGS="--xla_force_host_platform_device_count=2")
  command = [sys.executable, "-m", "lair.train", f"--config={CONFIG}:{STEPS}",
             f"--workdir={workdir}", *OVERRIDES]
  [(rc, out)] = run_processes([(command, env)], workdir / "logs")
  assert rc == 0, out[-4000:]
  assert "on a mesh of {'data': 2} devices" in out
  return workdir


@pytest.fixture(scope="module")
def two_host_run(tmp_path_factory):
  """Two processes of `launch/run.sh`, one CPU device each, from an empty workdir.

  Both start with no tokenizer and no data cache: process 0 builds them, the others wait and
  reuse them (loop.process_zero_first), so the shared workdir is not raced.
  """
  workdir = tmp_path_factory.mktemp("two_processes")
  results = run_processes(multihost_commands(workdir, free_port()), workdir / "logs")
  assert [rc for rc, _ in results] == [0, 0], describe(results)
  return workdir, [out for _, out in results]


def test_two_hosts_train_like_one_process(two_host_run, reference_run):
  workdir, outputs = two_host_run
  for out in outputs:
    assert "on a mesh of {'data': 2} devices" in out  # 2 processes x 1 device: one global mesh.
    assert "Rank" in out and "connected to 1 peer ranks" in out  # gloo collectives.
  assert_same_training(workdir, reference_run)
  # The evaluation at the end ran on both hosts (it is jitted on the global params) and agrees.
  assert eval_rows(workdir) and eval_rows(workdir) == eval_rows(reference_run)


def test_only_process_zero_writes_logs_eval_and_export(two_host_run):
  workdir, (out0, out1) = two_host_run
  # Each step is logged once (two writers would append every row twice).
  assert [r["step"] for r in loss_rows(workdir)] == [5, 10, STEPS]
  assert (workdir / "eval" / f"step_{STEPS}.json").exists()
  assert f"[####################] {STEPS}/{STEPS}" in out0 and "evaluation at step" in out0
  assert "] 5/" not in out1 and "evaluation at step" not in out1 and "so far" not in out1
  # The best evaluation's params (config.eval.select_best) were kept, and best.json written once.
  with open(workdir / "best.json", encoding="utf-8") as f:
    assert json.load(f)["step"] == STEPS
  # Process 0 alone exports (launch/run.sh runs lair.export on both), from the 2-process
  # checkpoint.
  assert f"exported step {STEPS} of {workdir}" in out0 and "exported" not in out1
  assert (workdir / "hf" / "model.safetensors").exists()


def test_each_host_feeds_its_slice_of_the_global_batch(two_host_run):
  """The pipeline's batches for hosts 0 and 1 of 2 concatenate to the one-host batch."""
  from lair.data import pipeline  # pylint: disable=g-import-not-at-top
  from lair.train import loop  # pylint: disable=g-import-not-at-top

  workdir, _ = two_host_run
  config = configs.load_config(f"{CONFIG}:{STEPS}", OVERRIDES)
  run = workdir_lib.Workdir(workdir)
  tokenizer = loop.make_tokenizer(config, run)  # The one process 0 saved.

  def batches(index, count):
    it = pipeline.TrainBatches(config, tokenizer, seed=config.seed, process_index=index,
                               process_count=count, cache_dir=run.data_dir)
    it.set_state(dict(it.get_state(), step=STEPS - 2))  # Any position will do.
    return [next(it) for _ in range(2)]

  whole, host0, host1 = batches(0, 1), batches(0, 2), batches(1, 2)
  for full, part0, part1 in zip(whole, host0, host1):
    assert full.keys() == part0.keys() == part1.keys() == {"ir", "parallel", "mono"}
    for stream, fields in full.items():
      for key, value in fields.items():
        rows = value.shape[0]
        assert part0[stream][key].shape[0] == part1[stream][key].shape[0] == rows // 2
        np.testing.assert_array_equal(
            np.concatenate([part0[stream][key], part1[stream][key]]), value,
            err_msg=f"{stream}/{key}")
        # The halves differ: each host has its own rows, not a copy of the other's.
        if key.endswith("ids"):
          assert not np.array_equal(part0[stream][key], part1[stream][key]), f"{stream}/{key}"


def test_killed_hosts_resume_to_the_same_params(tmp_path, reference_run):
  """Both hosts SIGKILL themselves at batch 10 (after the step-8 checkpoint was started) and
  restart with the same command: they resume from the last committed checkpoint and end like
  the unbroken one-process run."""
  workdir = tmp_path / "killed"
  die = REPO / "tests" / "train_and_die.py"
  # No evaluation (the other tests check it), and the data cache the reference built: quicker.
  flags = ["--config.eval.sets=[]", "--config.eval.select_best=", f"--config.data.cache_dir={reference_run / 'data'}"]
  results = run_processes(multihost_commands(workdir, free_port(), *flags, script=die,
                                             die_at=10), tmp_path / "killed_logs")
  # Process 0 kills itself; process 1 either does too or is ended when its peer vanishes.
  assert results[0][0] == -signal.SIGKILL and results[1][0] != 0, describe(results)
  killed_at = checkpoint_lib.Checkpoints(str(workdir / "checkpoints")).latest_step()
  assert killed_at in (4, 8), describe(results)
  print(f"killed after the checkpoint at step {killed_at}; process 1 ended with {results[1][0]}")
  results = run_processes(multihost_commands(workdir, free_port(), *flags, script=die,
                                             die_at=10**6), tmp_path / "resumed_logs")
  assert [rc for rc, _ in results] == [0, 0], describe(results)
  for _, out in results:
    assert f"resumed from {workdir / 'checkpoints'}/{killed_at}" in out
  assert_same_training(workdir, reference_run)


# ------------------------------------------------------------------------------------------------
# Clusters: SLURM through launch/slurm.sbatch, scheduler signals, host-sharded evaluation.
# ------------------------------------------------------------------------------------------------

QUICK = ["--config.eval.sets=[]", "--config.eval.select_best="]  # Evaluation has its own tests.

FAKE_SRUN = r"""#!/usr/bin/env bash
# Stands in for srun on one machine: starts SLURM_NTASKS copies of the command with the variables
# srun sets in each task, waits for them, and exits with the highest status.
set -u
while [[ "$1" == --* ]]; do shift; done  # srun's own options.
echo "$*" > "$FAKE_SLURM_LOG/srun_command"
if [[ -n "${FAKE_SRUN_STATUS:-}" ]]; then exit "$FAKE_SRUN_STATUS"; fi
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_STEP_NODELIST=localhost SLURM_STEP_NUM_NODES=1 \
  SLURM_STEP_TASKS_PER_NODE=$SLURM_NTASKS setsid "$@" > "$FAKE_SLURM_LOG/task_$i.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || { s=$?; (( s > status )) && status=$s; }; done
exit $status
"""


def _fake_slurm(tmp_path) -> dict:
  """A PATH with fake srun / scontrol and the variables sbatch sets in the batch script."""
  bin_dir, log_dir = tmp_path / "bin", tmp_path / "slurm_logs"
  bin_dir.mkdir()
  log_dir.mkdir()
  (bin_dir / "srun").write_text(FAKE_SRUN)
  (bin_dir / "scontrol").write_text(f'#!/usr/bin/env bash\necho "$*" >> {log_dir}/scontrol\n')
  for tool in ("srun", "scontrol"):
    (bin_dir / tool).chmod(0o755)
  return base_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FAKE_SLURM_LOG=str(log_dir),
                  SLURM_JOB_ID=str(4000 + os.getpid() % 1000), SLURM_NTASKS="2",
                  SLURM_JOB_NAME="lair-test", SLURM_JOB_NODELIST="localhost",
                  JAX_COORDINATOR_PORT=str(free_port()))


def test_sbatch_file_under_a_fake_srun_trains_like_one_process(tmp_path, reference_run):
  """launch/slurm.sbatch run as sbatch would, srun replaced by a local stand-in: 2 tasks with
  only SLURM_* variables (no LAIR_*) find each other through JAX's SLURM detection, train, and
  end with the params of the 1-process, 2-device run; process 0 exports."""
  env = _fake_slurm(tmp_path)
  workdir = tmp_path / "slurm_run"
  command = ["bash", str(REPO / "launch" / "slurm.sbatch"), f"--config={CONFIG}:{STEPS}",
             *OVERRIDES, f"--config.data.cache_dir={reference_run / 'data'}"]
  [(rc, out)] = run_processes([(command, dict(env, LAIR_WORKDIR=str(workdir)))],
                              tmp_path / "sbatch")
  tasks = [(tmp_path / "slurm_logs" / f"task_{i}.log").read_text() for i in range(2)]
  assert rc == 0, out + "\n".join(t[-3000:] for t in tasks)
  for i, task in enumerate(tasks):
    assert f"cluster: slurm; process {i} of 2" in task, task[-3000:]
  assert "launch/run.sh" in (tmp_path / "slurm_logs" / "srun_command").read_text()
  assert_same_training(workdir, reference_run)
  assert (workdir / "hf" / "model.safetensors").exists()
  assert not (tmp_path / "slurm_logs" / "scontrol").exists()  # Finished: nothing requeued.


def test_sbatch_file_requeues_a_run_stopped_by_a_signal(tmp_path):
  env = dict(_fake_slurm(tmp_path), FAKE_SRUN_STATUS="75", LAIR_WORKDIR=str(tmp_path / "w"))
  proc = subprocess.run(["bash", str(REPO / "launch" / "slurm.sbatch")], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=60)
  assert proc.returncode == 75, proc.stdout + proc.stderr
  assert (tmp_path / "slurm_logs" / "scontrol").read_text().split() == [
      "requeue", env["SLURM_JOB_ID"]]


@pytest.mark.parametrize("signalled", ["1", "0,1"])
def test_stop_signal_saves_one_step_on_every_host_and_resumes_exactly(tmp_path, reference_run,
                                                                       signalled):
  """SIGTERM to one host (or both) when batch 6 is asked for: both finish step 6, agree, save
  checkpoint 7 and exit 75; the same command then resumes and ends like an unbroken run (the
  resume is checked once, after the signal to one host: what it restores is the same)."""
  workdir = tmp_path / "stopped"
  script = REPO / "tests" / "train_and_signal.py"
  flags = [*QUICK, f"--config.data.cache_dir={reference_run / 'data'}"]
  commands = multihost_commands(workdir, free_port(), *flags, script=script)
  for _, env in commands:
    env.update(LAIR_SIGNAL_AT_BATCH="6", LAIR_SIGNAL_PROCESSES=signalled)
  results = run_processes(commands, tmp_path / "stopped_logs", ok_codes=(0, 75))
  assert [rc for rc, _ in results] == [75, 75], describe(results)
  for i, (_, out) in enumerate(results):
    cause = "SIGTERM" if str(i) in signalled.split(",") else "a peer's signal"
    assert f"stopped by {cause} at step 7: checkpoint saved" in out, out[-3000:]
  assert checkpoint_lib.Checkpoints(str(workdir / "checkpoints")).latest_step() == 7
  if signalled != "1":
    return
  commands = multihost_commands(workdir, free_port(), *flags, script=script)
  for _, env in commands:
    env.update(LAIR_SIGNAL_AT_BATCH=str(10**6))
  results = run_processes(commands, tmp_path / "resumed_logs")
  assert [rc for rc, _ in results] == [0, 0], describe(results)
  assert all(f"resumed from {workdir / 'checkpoints'}/7" in out for _, out in results)
  assert_same_training(workdir, reference_run)


def _embedded_counts(outputs) -> list[int]:
  counts = []
  for out in outputs:
    match = re.search(r"evaluation: process \d+ of \d+ embedded (\d+) texts", out)
    assert match, out[-3000:]
    counts.append(int(match[1]))
  return counts


def test_host_sharded_evaluation_equals_one_process(tmp_path, reference_run):
  """`lair.evaluate --workdir` on 2 hosts: each embeds its own half of the quickstart's LAReQA
  and Tatoeba texts, and the metrics equal the 1-process evaluation to 1e-5."""
  from configs import quickstart  # pylint: disable=g-import-not-at-top
  sets = f"--config.eval.sets={[dict(s) for s in quickstart.get_config().eval.sets]!r}"
  outputs, results = {}, {}
  for hosts in (1, 2):
    workdir = tmp_path / f"eval_{hosts}"
    shutil.copytree(reference_run, workdir, ignore=shutil.ignore_patterns("eval", "logs"))
    command = [sys.executable, "-m", "lair.evaluate", f"--workdir={workdir}", sets,
               "--config.eval.search=exact"]
    port = free_port()
    commands = [(command, base_env(**({} if hosts == 1 else dict(
        LAIR_COORDINATOR=f"127.0.0.1:{port}", LAIR_NUM_PROCESSES="2", LAIR_PROCESS_ID=str(i)))))
                for i in range(hosts)]
    started = time.time()
    runs = run_processes(commands, tmp_path / f"eval_logs_{hosts}")
    print(f"evaluation with {hosts} process(es): {time.time() - started:.1f}s")
    assert [rc for rc, _ in runs] == [0] * hosts, describe(runs)
    outputs[hosts] = [out for _, out in runs]
    with open(workdir / "eval" / f"evaluate_step_{STEPS}.json", encoding="utf-8") as f:
      results[hosts] = json.load(f)["metrics"]
  assert results[1].keys() == results[2].keys() and len(results[1]) > 20
  for key, value in results[1].items():
    np.testing.assert_allclose(results[2][key], value, rtol=1e-5, atol=1e-5, err_msg=key)
  [total] = _embedded_counts(outputs[1])
  halves = _embedded_counts(outputs[2])
  assert sum(halves) == total and abs(halves[0] - halves[1]) <= 4, (total, halves)


@pytest.mark.parametrize("spelling", ["=", " "])
def test_run_sh_trains_and_exports_the_same_workdir_in_either_flag_spelling(tmp_path, spelling):
  """launch/run.sh with --config/--workdir given as FLAG=VALUE or FLAG VALUE: lair.train and
  lair.export get the same folder (a stand-in python records each command it is given)."""
  log = tmp_path / "commands.txt"
  fake = tmp_path / "python"
  fake.write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\n')
  fake.chmod(0o755)
  flags = [f"--config{spelling}configs/quickstart.py:3", f"--workdir{spelling}{tmp_path / 'w'}",
           "--config.train.steps=3"]
  proc = subprocess.run(["bash", str(REPO / "launch" / "run.sh"),
                         *(part for flag in flags for part in flag.split(" "))],
                        env=dict(os.environ, PYTHON=str(fake)), capture_output=True, text=True,
                        timeout=60)
  assert proc.returncode == 0, proc.stderr
  train, export = log.read_text().splitlines()
  assert train == (f"-m lair.train --config=configs/quickstart.py:3 --workdir={tmp_path / 'w'} "
                   f"--config.train.steps=3")
  assert export == (f"-m lair.export --workdir={tmp_path / 'w'} --out={tmp_path / 'w'}/hf "
                    f"--overwrite")
  proc = subprocess.run(["bash", str(REPO / "launch" / "run.sh"), "--workdir"],
                        env=dict(os.environ, PYTHON=str(fake)), capture_output=True, text=True,
                        timeout=60)
  assert proc.returncode == 2 and "--workdir needs a value" in proc.stderr
