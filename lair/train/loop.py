"""The training loop: check the config, build, resume, step, log, checkpoint, evaluate.

`train(config, workdir)` reads top to bottom:
  1. `validate` checks the whole config (files included) before anything is written; a workdir
     that holds a run is compared with it (`check_resume`): a config that disagrees with the
     saved one on anything but the keys a resume may change stops the run, naming the keys;
  2. mesh, tokenizer and model (retriever params + the EMS heads the objectives need); a fresh
     run writes its config and model files, a resumed one reads them;
  3. optimiser, the train state and its layout on the mesh; the input pipeline; a restore of the
     newest intact checkpoint (a damaged one is reported and skipped);
  4. the loop: one jitted step per batch, a finite-loss check, logs every `log_every` steps,
     a checkpoint every `checkpoint_every` steps and at the end, evaluation every `eval_every`
     steps (and at the end) when `config.eval.sets` is not empty, keeping the params of the
     best one in `workdir/best` when `config.eval.select_best` names a metric. A scheduler's
     signal (`train.stop_signals`) ends the run after the current step with a checkpoint and
     exit code PREEMPTED_EXIT_CODE, for the scheduler to requeue it.
Every random draw comes from `config.seed`; a run killed and restarted in the same workdir
continues from its last checkpoint and ends with the same params as an unbroken run.
"""
import json
import signal
import sys
import threading
import time
from typing import Any, Iterator, Mapping, Optional

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from lair import checkpoint as checkpoint_lib
from lair import errors
from lair import objectives
from lair import sharding
from lair import workdir as workdir_lib
from lair.data import pipeline
from lair.evaluate import evaluators
from lair.evaluate import run as eval_run
from lair.models import build
from lair.models import ems
from lair.models import flops as flops_lib
from lair.models import retriever
from lair.train import optim
from lair.train import step as step_lib

# Exit status of a run stopped by a scheduler's signal after saving a checkpoint: EX_TEMPFAIL
# ("try again later"), for SLURM / Kubernetes to requeue on (see launch/).
PREEMPTED_EXIT_CODE = 75

# Keys a resumed run may change: how long it runs, how it logs, saves and evaluates, how it is
# laid out on devices. Anything else (model, loss, optimiser, data) changes what the saved state
# means, so a resume that changes it is refused.
RESUMABLE_KEYS = ("train.steps", "train.log_every", "train.checkpoint_every",
                  "train.keep_checkpoints", "train.eval_every", "train.grad_cache_chunk",
                  "train.stop_signals", "eval.", "mesh.", "model.dtype", "model.activation_dtype",
                  "model.attention", "model.remat", "data.cache_dir", "data.strict")


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or Inf; the message names the step and the batch."""


# ------------------------------------------------------------------------------------------------
# 1. The config, checked before anything is written.
# ------------------------------------------------------------------------------------------------


def validate(config) -> objectives.ObjectivePlan:
  """The objective plan of `config`; ConfigError listing every key at fault otherwise."""
  plan = objectives.plan_objectives(config)
  problems = (build.config_errors(config.model) + pipeline.config_errors(config, plan)
              + optim.config_errors(config.train) + sharding.config_errors(config.mesh)
              + evaluators.config_errors(config.eval))
  bad_signals = [n for n in config.train.stop_signals
                 if not isinstance(getattr(signal, str(n), None), signal.Signals)]
  if bad_signals:
    problems.append(f"config.train.stop_signals={list(config.train.stop_signals)}: {bad_signals} "
                    f"are not signal names; expected names like SIGTERM, SIGINT, SIGUSR1")
  if (not config.model.hf_path and int(config.tokenizer.vocab_size) <= 5
      and (config.tokenizer.train_files or not int(config.model.encoder.vocab_size))):
    problems.append(f"config.tokenizer.vocab_size={config.tokenizer.vocab_size}: expected more "
                    f"than the 5 special tokens")
  if problems:
    hint = build.HF_PATH_HINT if any("model.hf_path" in p for p in problems) else ""
    raise errors.ConfigError("the config has problems:\n  " + "\n  ".join(problems), hint=hint)
  warning = language_z_warning(config, plan)
  if warning:
    print(warning, flush=True)
  return plan


def language_z_warning(config, plan: objectives.ObjectivePlan) -> str:
  """The start-up warning for a language loss whose z sentences hold one language ("" if not)."""
  if not plan.z_is_monolingual():
    return ""
  held = list(plan.z_languages) or ["one unknown language"]
  return (f"warning: the language loss's z sentences are all in {', '.join(held)} "
          f"(config.loss.language_inputs={config.loss.language_inputs!r}, "
          f"config.data.ir.language={config.data.ir.language!r}, config.data.mono.paths="
          f"{list(config.data.mono.paths)}, config.data.mono.from_parallel="
          f"{config.data.mono.from_parallel}): with z of one language the term cannot remove "
          f"language identity. Give it multilingual non-parallel text: "
          f"config.data.mono.from_parallel=N (N sentences per language held out of the "
          f"parallel data) and/or config.data.mono.paths=xxx:FILE,... with "
          f"config.loss.language_inputs='mono' or 'ir+mono'")


def _flat(config, prefix: str = "") -> dict:
  out = {}
  for key, value in config.items():
    if hasattr(value, "items") and not isinstance(value, (list, tuple)):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value.to_dict() if hasattr(value, "to_dict") else value
  return out


def _comparable(value):
  return json.loads(json.dumps(value, sort_keys=True, default=str))


def check_resume(run: workdir_lib.Workdir, config) -> list[str]:
  """The keys on which `config` differs from the run saved in `run` (all resumable), or raises.

  A key outside RESUMABLE_KEYS that differs is a ConfigError naming each such key with both
  values; nothing in the workdir is touched.
  """
  saved, wanted = _flat(run.read_config()), _flat(config)
  changed = sorted(k for k in set(saved) | set(wanted)
                   if _comparable(saved.get(k)) != _comparable(wanted.get(k)))
  refused = [k for k in changed if not k.startswith(RESUMABLE_KEYS)]
  if refused:
    listed = "; ".join(f"{k}: saved {saved.get(k)!r}, now {wanted.get(k)!r}" for k in refused)
    raise errors.ConfigError(
        f"{run.root} holds a run with another config ({listed}). Nothing was changed.",
        hint="resume with the run's own values (its config.json), or start a new run with "
             "another --workdir")
  return changed


# ------------------------------------------------------------------------------------------------
# 2-3. Model, optimiser, train state.
# ------------------------------------------------------------------------------------------------


def make_tokenizer(config, run: workdir_lib.Workdir):
  """The tokenizer to build the model with, or None.

  None with model.hf_path (build_from_config loads the model's own); else the one this workdir
  saved (a resumed run), else one trained on config.tokenizer.train_files; else, when
  model.encoder.vocab_size is 0 (take the tokenizer's), one trained on the texts of the run's
  own training streams (pipeline.stream_texts, which builds the data caches the run then
  reuses); else None (a model of model.encoder.vocab_size ids without a tokenizer).
  """
  if config.model.hf_path:
    return None
  if run.is_run():
    return run.read_model()[1]
  from lair import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top  (slow)
  if config.tokenizer.train_files:
    return tokenizer_lib.train_tokenizer(list(config.tokenizer.train_files),
                                         config.tokenizer.vocab_size)
  if not int(config.model.encoder.vocab_size):
    return tokenizer_lib.train_tokenizer(
        texts=pipeline.stream_texts(config, cache_dir=run.data_dir),
        vocab_size=config.tokenizer.vocab_size)
  return None


def init_train_state(config, plan: objectives.ObjectivePlan, rcfg, retriever_params, *,
                     vocab_size: int):
  """(state, optimizer, schedule) at step 0.

  state: {"step": 0, "params": {"retriever", "objectives"}, "opt_state", "rng": the dropout
  key}; the retriever was initialised from PRNGKey(seed), the EMS heads from fold_in(.., 1).
  """
  rng = jax.random.PRNGKey(config.seed)
  objective_params = ems.init_heads(
      plan.weights, config.loss, jax.random.fold_in(rng, 1), embedding_dim=rcfg.embedding_dim,
      num_languages=len(config.data.languages), vocab_size=vocab_size)
  params = {"retriever": retriever_params, "objectives": objective_params}
  trainable = {"retriever": retriever.trainable_mask(retriever_params,
                                                     config.model.freeze_embeddings),
               "objectives": jax.tree.map(lambda _: True, objective_params)}
  optimizer, schedule = optim.make_optimizer(config.train, trainable)
  state = {"step": jnp.zeros((), jnp.int32), "params": params,
           "opt_state": optimizer.init(params), "rng": jax.random.fold_in(rng, 2)}
  return state, optimizer, schedule


def summarize_params(params: Any) -> str:
  """"1,234 params": the size of a params tree, for the start-up log."""
  return f"{sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)):,} params"


# ------------------------------------------------------------------------------------------------
# Logging: stdout, workdir/metrics.jsonl, TensorBoard.
# ------------------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
  """"1h02m", "3m05s", "42s"."""
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else
                                                  f"{secs}s")


# TensorBoard groups a tag's charts by what comes before its first "/"; metrics.jsonl keeps the
# plain names. Evaluation metrics ("lareqa/map@20/deu") are grouped already; any other training
# scalar is an objective term or a part of one ("ir", "language_identity"): "loss/...".
_TENSORBOARD_TAGS = {
    "loss": "loss/total", "learning_rate": "optimizer/learning_rate",
    "grad_norm": "optimizer/grad_norm", "examples_per_s": "throughput/examples_per_s",
    "tokens_per_s": "throughput/tokens_per_s",
    "model_tflops_per_s": "throughput/model_tflops_per_s", "mfu": "throughput/mfu",
    "compiles": "train/compiles",
    "ir_candidates": "train/ir_candidates"}


def tensorboard_tag(name: str) -> str:
  """The TensorBoard tag of a metrics.jsonl scalar: "ir" -> "loss/ir", "loss" -> "loss/total"."""
  if "/" in name:
    return name
  return _TENSORBOARD_TAGS.get(name, f"loss/{name}")


class MetricWriter:
  """Writes scalars to stdout, metrics.jsonl and TensorBoard (process 0 only).

  On a terminal a progress bar (tqdm) moves every step; log lines (every train.log_every steps,
  with the elapsed time and an ETA) print above it, and alone when stdout is a log file.
  """

  def __init__(self, run: workdir_lib.Workdir, total_steps: int, *, resumed_step: int = 0):
    self.total_steps = total_steps
    self.started = time.time()
    self.active = jax.process_index() == 0
    self.jsonl = self.tensorboard = None
    self.bar = tqdm.tqdm(total=total_steps, initial=resumed_step, unit="step",
                         dynamic_ncols=True, leave=False,
                         disable=not (self.active and sys.stdout.isatty()))
    if self.active:
      run.keep_metrics_up_to(resumed_step)
      self.jsonl = open(run.metrics_jsonl, "a", encoding="utf-8")
      try:
        import tensorboardX  # pylint: disable=g-import-not-at-top
        # purge_step: TensorBoard hides the events a killed run wrote after its checkpoint.
        self.tensorboard = tensorboardX.SummaryWriter(run.tensorboard_dir,
                                                      purge_step=resumed_step or None)
      except ImportError:
        print("tensorboardX is not installed: no TensorBoard events", file=sys.stderr)

  def progress(self, step: int, eta_s: Optional[float] = None) -> str:
    """"[#####...............] 50/200 1m05s, ETA 3m10s"."""
    filled = int(20 * step / max(self.total_steps, 1))
    eta = f", ETA {_duration(eta_s)}" if eta_s is not None and step < self.total_steps else ""
    return (f"[{'#' * filled}{'.' * (20 - filled)}] {step}/{self.total_steps} "
            f"{_duration(time.time() - self.started)}{eta}")

  def print(self, text: str, *, every_process: bool = False) -> None:
    """A line above the progress bar (or alone); every_process: also on the other hosts, for
    lines each host's own log needs (why that process exited)."""
    if every_process and not self.active:
      print(text, flush=True)
    if self.active:
      if self.bar.disable:
        print(text, flush=True)
      else:
        self.bar.write(text)

  def step_done(self) -> None:
    self.bar.update(1)

  def write(self, step: int, scalars: Mapping[str, float], *, echo: bool = True,
            eta_s: Optional[float] = None) -> None:
    """Logs `scalars` at `step`; echo=False keeps them off stdout (evaluation prints a table)."""
    if not self.active or not scalars:
      return
    if echo:
      self.print(f"{self.progress(step, eta_s)} {summarize_scalars(scalars)}")
    self.jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
    self.jsonl.flush()
    if self.tensorboard is not None:
      for key, value in scalars.items():
        self.tensorboard.add_scalar(tensorboard_tag(key), value, step)
      self.tensorboard.flush()

  def close(self) -> None:
    self.bar.close()
    if self.jsonl is not None:
      self.jsonl.close()
    if self.tensorboard is not None:
      self.tensorboard.close()


def summarize_scalars(scalars: Mapping[str, float]) -> str:
  """The log line's text: "loss=0.35 (ir 0.0006 semantic 0.0001 language 0.6958) lr=1.8e-06
  grad_norm=0.08 | 263 examples/s 4,484 tokens/s 52.3 GFLOP/s" (model FLOPs, lair/models/flops.py;
  ", MFU 26.6%" after it where the chip's peak is known); every scalar is in metrics.jsonl."""
  terms = [f"{name} {scalars[name]:.4g}" for name in (*objectives.WEIGHT_KEYS,
                                                      "language_identity", "language_noise")
           if name in scalars]
  text = f"loss={scalars['loss']:.4g}" if "loss" in scalars else ""
  text += f" ({' '.join(terms)})" if terms else ""
  for key, short in (("learning_rate", "lr"), ("grad_norm", "grad_norm")):
    if key in scalars:
      text += f" {short}={scalars[key]:.2g}"
  if "examples_per_s" in scalars:
    text += (f" | {scalars['examples_per_s']:,.0f} examples/s "
             f"{scalars['tokens_per_s']:,.0f} tokens/s")
  if "model_tflops_per_s" in scalars:  # CPUs run at GFLOP/s, GPUs at hundreds of TFLOP/s.
    rate = scalars["model_tflops_per_s"]
    text += f" {rate:.1f} TFLOP/s" if rate >= 1 else f" {rate * 1e3:.1f} GFLOP/s"
  if "mfu" in scalars:  # Only where the chip's peak is known (lair/models/flops.py).
    text += f", MFU {scalars['mfu']:.1%}"
  return text.strip()


class Throughput:
  """Examples, tokens and steps per second since the last reset, compile time left out.

  A step whose batch shapes are new is compiled first; it is timed on its own (waiting for its
  result) and neither its time nor its rows count, so the rates and the ETA are the steady ones.
  """

  def __init__(self):
    self.reset()

  def reset(self) -> None:
    self.start, self.excluded = time.time(), 0.0
    self.examples = self.tokens = self.steps = self.model_flops = 0

  def add(self, examples: int, tokens: int, model_flops: float = 0.0) -> None:
    """One step's rows, real tokens and model FLOPs (lair/models/flops.py), all hosts'."""
    self.examples, self.tokens, self.steps = (self.examples + examples, self.tokens + tokens,
                                              self.steps + 1)
    self.model_flops += model_flops

  def exclude(self, seconds: float) -> None:
    self.excluded += seconds

  def rates(self) -> dict:
    seconds = max(time.time() - self.start - self.excluded, 1e-9)
    return {"examples_per_s": self.examples / seconds, "tokens_per_s": self.tokens / seconds,
            "steps_per_s": self.steps / seconds, "model_flops_per_s": self.model_flops / seconds}


def describe_shapes(batch: Mapping) -> str:
  """"ir 32x16 + 32x32, parallel 32x32, mono 32x16": rows x length of each stream's texts."""
  parts = []
  for name, stream in batch.items():
    shapes = dict.fromkeys("x".join(map(str, np.shape(v))) for k, v in stream.items()
                           if k.endswith("ids"))
    parts.append(f"{name} {' + '.join(shapes)}")
  return ", ".join(parts)


def batch_counts(batch: Mapping) -> tuple[int, int]:
  """(examples, tokens) of this host's batch: rows of every stream and real tokens in them."""
  examples = tokens = 0
  for stream in batch.values():
    masks = [v for k, v in stream.items() if k.endswith("mask")]
    examples += int(np.asarray(masks[0]).shape[0]) if masks else 0
    tokens += sum(int(np.asarray(m).sum()) for m in masks)
  return examples, tokens


def check_finite(step: int, metrics: Mapping, data_state: Mapping, last_checkpoint) -> None:
  """Raises NonFiniteLossError naming the step, the batch and the last good checkpoint."""
  loss = float(metrics["loss"])
  if np.isfinite(loss):
    return
  terms = {k: float(v) for k, v in metrics.items() if k not in ("learning_rate",)}
  kept = ("no checkpoint was saved yet" if last_checkpoint is None
          else f"the last good checkpoint, step {last_checkpoint}, is kept")
  raise NonFiniteLossError(
      f"loss is {loss} at step {step} (0-based), on the input batch at data position "
      f"{json.dumps(data_state, sort_keys=True)}; terms: {terms}. The run stopped; {kept}.")


# ------------------------------------------------------------------------------------------------
# Evaluation and the best params.
# ------------------------------------------------------------------------------------------------


def keep_if_best(config, results: Mapping[str, float], state, step: int,
                 best: Optional[checkpoint_lib.Checkpoints],
                 run: workdir_lib.Workdir) -> None:
  """Saves the params in workdir/best/ when config.eval.select_best improved (higher wins).

  Every lair metric (mAP, MRR, recall, nDCG, accuracy) is better when higher.
  """
  key = config.eval.select_best
  if not key or not results or best is None:
    return
  if key not in results:
    raise errors.ConfigError(f"config.eval.select_best={key!r} is not a metric of the "
                             f"evaluation; it has: {sorted(results)}")
  previous = run.read_best()
  if previous is not None and previous["metric"] == key and results[key] <= previous["value"]:
    return
  # A run killed after this save but before best.json was written comes back here with the same
  # step (and, resuming exactly, the same params): orbax refuses to save an existing step again.
  if step not in best.all_steps():
    best.save_params(step, state["params"])
    best.wait()
  if jax.process_index() == 0:
    run.write_best(step, key, results[key])
    print(f"best {key} so far: {results[key]:.4f} at step {step} (saved in {best.directory})",
          flush=True)


def final_evaluation_pending(config, run: workdir_lib.Workdir, first: int, total: int) -> bool:
  """Whether the end-of-run evaluation is still to do.

  Always after training steps; else (a restart of a run whose final checkpoint was saved)
  when config.eval.sets is set and workdir/eval/step_{total}.json is missing: the run was
  killed between that checkpoint and the end of the final evaluation.
  """
  if first < total:
    return True
  if not config.eval.sets:
    return False
  # The evaluation runs on every process, and process 0 writes the file: all follow its view.
  return bool(sharding.broadcast_from_zero(run.read_eval(total) is None))


def resumed_evaluation_pending(config, run: workdir_lib.Workdir, first: int, total: int) -> bool:
  """Whether a resume at step `first` owes the evaluation of step `first` (train.eval_every).

  A stop signal skips the evaluation of the step it stops at, and a kill can land between a
  checkpoint and the end of that step's evaluation; the loop restarts after that step, so the
  evaluation (and its say in best/) would be lost without this. The end-of-run evaluation is
  final_evaluation_pending's.
  """
  every = config.train.eval_every
  if not config.eval.sets or not every or first == 0 or first >= total or first % every:
    return False
  return bool(sharding.broadcast_from_zero(run.read_eval(first) is None))


# ------------------------------------------------------------------------------------------------
# Stopping on a scheduler's signal.
# ------------------------------------------------------------------------------------------------


class StopSignals:
  """Turns the signals of `train.stop_signals` into a request to stop after the current step.

  The first signal is recorded (the loop saves a checkpoint and exits with PREEMPTED_EXIT_CODE);
  a second one while that happens is reported and ignored, so the save is not cut short; a third
  ends the process as the signal would (the checkpoint on disk stays intact: orbax writes each
  one to a temporary folder first).
  """

  def __init__(self, names):
    self.signals = [getattr(signal, n) for n in names]
    self.received: Optional[int] = None
    self._count = 0
    self._previous = {}

  def __enter__(self) -> "StopSignals":
    if threading.current_thread() is threading.main_thread():
      for sig in self.signals:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def _handle(self, signum, frame) -> None:
    del frame
    self._count += 1
    name = signal.Signals(signum).name
    if self._count == 1:
      self.received = signum
      print(f"received {name}: stopping after this step with a checkpoint", flush=True)
    elif self._count == 2:
      print(f"received {name} again: still saving the checkpoint (a third signal ends the "
            f"process at once)", flush=True)
    else:
      signal.signal(signum, signal.SIG_DFL)
      signal.raise_signal(signum)

  def requested(self) -> bool:
    """Whether any process received a stop signal (a collective on several processes)."""
    return sharding.any_process(self.received is not None)


# ------------------------------------------------------------------------------------------------
# The loop.
# ------------------------------------------------------------------------------------------------


def train(config, workdir: str, *, batches: Optional[Iterator[dict]] = None) -> dict:
  """Trains `config` in `workdir` (resuming from its checkpoints); returns the final state.

  Args:
    config: a config from lair/configs.py.
    workdir: where checkpoints, logs, the model files and evaluations go.
    batches: host-local numpy batches with get_state()/set_state(); by default
      lair.data.pipeline.TrainBatches over the config's data.

  Returns:
    {"state": the final train state, "rcfg": ..., "tokenizer": ..., "metrics": last scalars}.

  Raises:
    SystemExit(PREEMPTED_EXIT_CODE) after saving a checkpoint, on a stop signal.
  """
  # 1. Nothing is written before the config is known to be good and to fit the saved run.
  plan = validate(config)
  run = workdir_lib.Workdir(workdir)
  resumed_run = run.is_run()
  changed_keys = check_resume(run, config) if resumed_run else []
  mesh = sharding.make_mesh(config.mesh.data)

  # 2. The model. A fresh run's process 0 writes the config and model files (the tokenizer it
  # trained) before the other processes build theirs from them.
  def build_model():
    tokenizer = make_tokenizer(config, run)
    rcfg, retriever_params, tokenizer = build.build_from_config(
        config.model, tokenizer=tokenizer, rng=jax.random.PRNGKey(config.seed))
    if not resumed_run and jax.process_index() == 0:
      run.write_config(config)
      run.write_model(rcfg, tokenizer)
    return rcfg, retriever_params, tokenizer

  rcfg, retriever_params, tokenizer = sharding.process_zero_first("lair: model files",
                                                                  build_model)
  state, optimizer, schedule = init_train_state(config, plan, rcfg, retriever_params,
                                                vocab_size=rcfg.encoder.vocab_size)
  shardings = sharding.state_shardings(state, mesh, fsdp=config.mesh.fsdp,
                                       min_size=config.mesh.fsdp_min_size)
  state = jax.device_put(state, shardings)
  print(f"model: {summarize_params(state['params'])} on a mesh of {dict(mesh.shape)} devices",
        flush=True)

  # 3. Data, and the newest intact checkpoint.
  if batches is None:
    # Process 0 writes the array_record caches; the others reuse them (two tfds builds of one
    # folder at once collide).
    batches = sharding.process_zero_first("lair: data caches", lambda: pipeline.TrainBatches(
        config, tokenizer, seed=config.seed, process_index=jax.process_index(),
        process_count=jax.process_count(), cache_dir=run.data_dir, plan=plan))
    for name, stats in batches.stats.items():  # Skips are warned row by row; this is the total.
      extra = "".join(f", {key} {stats[key]}" for key in ("capped", "held_out") if stats.get(key))
      print(f"data {name}: {stats['rows']} rows, skipped {stats['skipped'] or 'none'}{extra}",
            flush=True)
  checkpoints = checkpoint_lib.Checkpoints(run.checkpoints_dir,
                                           keep=config.train.keep_checkpoints, create=True)
  best = (checkpoint_lib.Checkpoints(run.best_dir, keep=1, create=True)
          if config.eval.select_best else None)
  restored = checkpoints.restore_latest(state, shardings)
  last_checkpoint = None
  if restored is not None:
    last_checkpoint, state, data_state = restored
    if last_checkpoint > config.train.steps:
      # Else the loop would run no step and label step N's params as the final step's.
      raise errors.ConfigError(
          f"config.train.steps={config.train.steps} is below the step of the run's checkpoint "
          f"{checkpoints.directory}/{last_checkpoint}",
          hint=f"pass --config.train.steps={last_checkpoint} or more to resume this run, or a "
          f"new --workdir")
    batches.set_state(data_state)
    print(f"resumed from {checkpoints.directory}/{last_checkpoint}", flush=True)
  if changed_keys and jax.process_index() == 0:
    run.write_config(config)  # Only resumable keys differ, and the state is restored.
    print(f"resumed with changed {', '.join(changed_keys)}", flush=True)

  special_ids = tuple(getattr(tokenizer, "all_special_ids", ()) or ())
  loss_and_grads = step_lib.make_loss_and_grads(
      plan, config.loss,
      step_lib.make_embed_fn(rcfg, train=True,
                             freeze_embeddings=config.model.freeze_embeddings), mesh,
      normalize=rcfg.normalize, grad_cache_chunk=config.train.grad_cache_chunk,
      special_ids=special_ids)
  train_step = step_lib.make_train_step(loss_and_grads, optimizer, schedule, shardings, mesh)

  # 4. The loop.
  total = config.train.steps
  first = int(state["step"])
  writer = MetricWriter(run, total, resumed_step=first)
  compiled_shapes = set()
  pending = None  # (step, metrics, data position) whose loss is checked one step late.
  scalars = {}
  throughput = Throughput()
  stop = StopSignals(config.train.stop_signals)
  # Device peak for utilisation (lair/models/flops.py's table); None on CPUs and unknown chips.
  peak = flops_lib.peak_flops(jax.devices()[0].device_kind, config.model.dtype)

  def evaluate(step: int) -> None:
    """config.eval.sets on the current params; best params first, eval/step_N.json last.

    The results file marks the evaluation done (final_evaluation_pending,
    resumed_evaluation_pending), so it is written after the best params and best.json: a kill
    in between repeats the evaluation on restart.
    """
    writer.print(f"evaluating {', '.join(dict(s)['name'] for s in config.eval.sets)} at step "
                 f"{step}")
    results = eval_run.run_evaluations(config, state["params"]["retriever"], rcfg, tokenizer,
                                       workdir=None, step=step)
    keep_if_best(config, results, state, step, best, run)
    writer.write(step, results, echo=False)
    if jax.process_index() == 0:
      run.write_eval(step, results)

  try:
    with stop:
      if resumed_evaluation_pending(config, run, first, total):
        evaluate(first)
      for step in range(first, total):
        data_state = batches.get_state()
        host_batch = next(batches)
        signature = step_lib.shape_signature(host_batch)
        started = time.time()
        new_shapes = signature not in compiled_shapes
        if new_shapes:
          compiled_shapes.add(signature)
          writer.print(f"compiling the train step for batch shapes #{len(compiled_shapes)} "
                       f"({describe_shapes(host_batch)})")
          logging.debug("batch shapes #%d: %s", len(compiled_shapes), dict(signature))
        state, metrics = train_step(state, sharding.put_batch(host_batch, mesh))
        if new_shapes:  # Compile time is not training time: wait, and leave this step out.
          jax.block_until_ready(metrics["loss"])
          throughput.exclude(time.time() - started)
        # Checking the previous step's loss here lets this step run while the host waits.
        if pending is not None:
          check_finite(*pending, last_checkpoint)
        pending = (step, metrics, data_state)
        if not new_shapes:
          n_examples, n_tokens = batch_counts(host_batch)
          flops = step_lib.model_flops(host_batch, plan, rcfg.encoder)
          throughput.add(n_examples * jax.process_count(), n_tokens * jax.process_count(),
                         flops * jax.process_count())
        writer.step_done()

        done = step + 1
        stopping = stop.requested()
        log_now = done % config.train.log_every == 0 or done == total
        save_now = done % config.train.checkpoint_every == 0 or done == total or stopping
        eval_now = (bool(config.train.eval_every) and done % config.train.eval_every == 0
                    and not stopping)
        if log_now or save_now or eval_now:
          check_finite(*pending, last_checkpoint)
          pending = None
        if log_now:
          scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
          rates = throughput.rates()
          scalars.update(examples_per_s=rates["examples_per_s"],
                         tokens_per_s=rates["tokens_per_s"],
                         model_tflops_per_s=rates["model_flops_per_s"] / 1e12,
                         compiles=len(compiled_shapes))
          if peak:
            scalars["mfu"] = rates["model_flops_per_s"] / (peak * jax.device_count())
          eta = (total - done) / rates["steps_per_s"] if throughput.steps else None
          writer.write(done, scalars, eta_s=eta)
          throughput.reset()
        if save_now:
          checkpoints.save(done, state, batches.get_state())
          last_checkpoint = done
        if stopping:
          checkpoints.wait()
          name = signal.Signals(stop.received).name if stop.received else "a peer's signal"
          writer.print(f"stopped by {name} at step {done}: checkpoint saved in "
                       f"{checkpoints.directory}/{done}; exiting with code {PREEMPTED_EXIT_CODE} "
                       f"(rerun the same command to resume)", every_process=True)
          raise SystemExit(PREEMPTED_EXIT_CODE)
        if eval_now and done != total:
          evaluate(done)
          throughput.reset()  # Evaluation time is not training throughput.
      if pending is not None:
        check_finite(*pending, last_checkpoint)
      if config.eval.sets and final_evaluation_pending(config, run, first, total):
        evaluate(total)
  finally:
    checkpoints.wait()
    checkpoints.close()
    if best is not None:
      best.close()
    writer.close()
  return {"state": state, "rcfg": rcfg, "tokenizer": tokenizer, "metrics": scalars}
