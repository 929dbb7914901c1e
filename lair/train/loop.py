"""The training loop: build everything from the config, resume, step, log, checkpoint, evaluate.

`train(config, workdir)` reads top to bottom:
  1. mesh, tokenizer and model (retriever params + the EMS heads the objectives need);
  2. optimiser, the train state and its layout on the mesh;
  3. the input pipeline, and a restore from `workdir/checkpoints` when one is there;
  4. the loop: one jitted step per batch, a finite-loss check, logs every `log_every` steps,
     a checkpoint every `checkpoint_every` steps and at the end, evaluation every `eval_every`
     steps (and at the end) when `config.eval.sets` is not empty, keeping the params of the
     best one in `workdir/best` when `config.eval.select_best` names a metric.
Every random draw comes from `config.seed`; a run killed and restarted in the same workdir
continues from its last checkpoint and ends with the same params as an unbroken run.
"""
import json
import os
import sys
import time
from typing import Any, Iterator, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from lair.models import retriever
from lair.train import checkpoint as checkpoint_lib
from lair.train import mesh as mesh_lib
from lair.train import optim
from lair.train import step as step_lib


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or Inf; the message names the step and the batch."""


# ------------------------------------------------------------------------------------------------
# 1-2. Model, optimiser, train state.
# ------------------------------------------------------------------------------------------------


def make_tokenizer(config, workdir: str):
  """The tokenizer to build the model with, or None.

  None with model.hf_path (build_from_config loads the model's own); else the one this workdir
  saved (a resumed run), else one trained on config.tokenizer.train_files, else None
  (model.encoder.vocab_size must then be set; build_from_config checks).
  """
  if config.model.hf_path:
    return None
  saved = os.path.join(workdir, "tokenizer")
  if os.path.isdir(saved):
    import transformers  # pylint: disable=g-import-not-at-top
    return transformers.AutoTokenizer.from_pretrained(saved)
  if config.tokenizer.train_files:
    from lair import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
    return tokenizer_lib.train_tokenizer(list(config.tokenizer.train_files),
                                         config.tokenizer.vocab_size)
  return None


def init_train_state(config, rcfg, retriever_params, *, vocab_size: int):
  """(state, optimizer, schedule) at step 0.

  state: {"step": 0, "params": {"retriever", "objectives"}, "opt_state", "rng": the dropout
  key}; the retriever was initialised from PRNGKey(seed), the EMS heads from fold_in(.., 1).
  """
  rng = jax.random.PRNGKey(config.seed)
  objective_params = step_lib.init_objective_params(
      config.loss, jax.random.fold_in(rng, 1), embedding_dim=rcfg.embedding_dim,
      num_languages=len(config.data.languages), vocab_size=vocab_size)
  params = {"retriever": retriever_params, "objectives": objective_params}
  trainable = {"retriever": retriever.trainable_mask(retriever_params,
                                                     config.model.freeze_embeddings),
               "objectives": jax.tree.map(lambda _: True, objective_params)}
  optimizer, schedule = optim.make_optimizer(config.train, trainable)
  state = {"step": jnp.zeros((), jnp.int32), "params": params,
           "opt_state": optimizer.init(params), "rng": jax.random.fold_in(rng, 2)}
  return state, optimizer, schedule


# ------------------------------------------------------------------------------------------------
# Logging: stdout with a progress bar, workdir/metrics.jsonl, TensorBoard.
# ------------------------------------------------------------------------------------------------


class MetricWriter:
  """Writes scalars to stdout, metrics.jsonl and TensorBoard (process 0 only)."""

  def __init__(self, workdir: str, total_steps: int, *, resumed_step: int = 0):
    self.total_steps = total_steps
    self.active = jax.process_index() == 0
    self.jsonl = self.tensorboard = None
    if self.active:
      path = os.path.join(workdir, "metrics.jsonl")
      drop_rows_after(path, resumed_step)
      self.jsonl = open(path, "a", encoding="utf-8")
      try:
        import tensorboardX  # pylint: disable=g-import-not-at-top
        # purge_step: TensorBoard hides the events a killed run wrote after its checkpoint.
        self.tensorboard = tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"),
                                                      purge_step=resumed_step or None)
      except ImportError:
        print("tensorboardX is not installed: no TensorBoard events", file=sys.stderr)

  def progress(self, step: int) -> str:
    filled = int(20 * step / max(self.total_steps, 1))
    return f"[{'#' * filled}{'.' * (20 - filled)}] {step}/{self.total_steps}"

  def write(self, step: int, scalars: Mapping[str, float], *, echo: bool = True) -> None:
    """Logs `scalars` at `step`; echo=False keeps them off stdout (evaluation prints a table)."""
    if not self.active or not scalars:
      return
    if echo:
      text = " ".join(f"{k}={v:.4g}" for k, v in scalars.items())
      print(f"{self.progress(step)} {text}", flush=True)
    self.jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
    self.jsonl.flush()
    if self.tensorboard is not None:
      for key, value in scalars.items():
        self.tensorboard.add_scalar(key, value, step)
      self.tensorboard.flush()

  def close(self) -> None:
    if self.jsonl is not None:
      self.jsonl.close()
    if self.tensorboard is not None:
      self.tensorboard.close()


def drop_rows_after(path: str, step: int) -> None:
  """Keeps the metrics.jsonl rows up to `step`: a resumed run logs the steps after it again."""
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    rows = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
  with open(path, "w", encoding="utf-8") as f:
    f.writelines(rows)


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


def keep_if_best(config, results: Mapping[str, float], state, step: int,
                 best: checkpoint_lib.Checkpoints, workdir: str) -> None:
  """Saves the params as workdir/best/ when config.eval.select_best improved (higher wins).

  Every lair metric (mAP, MRR, recall, nDCG, accuracy) is better when higher.
  """
  key = config.eval.select_best
  if not key or not results:
    return
  if key not in results:
    raise KeyError(f"config.eval.select_best={key!r} is not a metric of the evaluation; "
                   f"it has: {sorted(results)}")
  path = os.path.join(workdir, "best.json")
  previous = None
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      previous = json.load(f)
  if previous is not None and previous["metric"] == key and results[key] <= previous["value"]:
    return
  # A run killed after this save but before best.json was written comes back here with the same
  # step (and, resuming exactly, the same params): orbax refuses to save an existing step again.
  if step not in best.all_steps():
    best.save_params(step, state["params"])
    best.wait()
  if jax.process_index() == 0:
    with open(path, "w", encoding="utf-8") as f:
      json.dump({"step": step, "metric": key, "value": float(results[key])}, f)
    print(f"best {key} so far: {results[key]:.4f} at step {step} (saved in {best.directory})",
          flush=True)


def maybe_evaluate(config, state, rcfg, tokenizer, workdir: str, step: int) -> dict:
  """Runs config.eval.sets (if any) on the current params; {} when there is nothing to run."""
  if not config.eval.sets:
    return {}
  from lair.evaluate import run as eval_run  # pylint: disable=g-import-not-at-top
  return eval_run.run_evaluations(config, state["params"]["retriever"], rcfg, tokenizer,
                                  workdir=workdir, step=step)


def final_evaluation_pending(config, workdir: str, first: int, total: int) -> bool:
  """Whether the end-of-run evaluation is still to do.

  Always after training steps; else (a restart of a run whose final checkpoint was saved)
  when config.eval.sets is set and workdir/eval/step_{total}.json is missing: the run was
  killed between that checkpoint and the end of the final evaluation.
  """
  if first < total:
    return True
  if not config.eval.sets:
    return False
  from lair.evaluate import run as eval_run  # pylint: disable=g-import-not-at-top
  missing = not os.path.exists(eval_run.results_path(workdir, total))
  if jax.process_count() > 1:
    # The evaluation runs on every process, and process 0 writes the file: all follow its view.
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    missing = bool(multihost_utils.broadcast_one_to_all(np.asarray(missing)))
  return missing


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
  """
  os.makedirs(workdir, exist_ok=True)
  mesh = mesh_lib.make_mesh(config.mesh.data)

  def build_model():
    tokenizer = make_tokenizer(config, workdir)
    rcfg, retriever_params, tokenizer = retriever.build_from_config(
        config.model, tokenizer=tokenizer, rng=jax.random.PRNGKey(config.seed))
    checkpoint_lib.save_model_files(workdir, config, rcfg, tokenizer)
    return rcfg, retriever_params, tokenizer

  # Process 0 trains and saves the tokenizer; the others load that one (make_tokenizer).
  rcfg, retriever_params, tokenizer = process_zero_first("lair: model files", build_model)

  state, optimizer, schedule = init_train_state(config, rcfg, retriever_params,
                                                vocab_size=rcfg.encoder.vocab_size)
  shardings = mesh_lib.state_shardings(state, mesh, fsdp=config.mesh.fsdp,
                                       min_size=config.mesh.fsdp_min_size)
  state = jax.device_put(state, shardings)
  print(f"model: {summarize_params(state['params'])} on a mesh of {dict(mesh.shape)} devices",
        flush=True)

  if batches is None:
    from lair.data import pipeline  # pylint: disable=g-import-not-at-top
    # Process 0 writes the array_record caches; the others reuse them (two tfds builds of one
    # folder at once collide).
    batches = process_zero_first("lair: data caches", lambda: pipeline.TrainBatches(
        config, tokenizer, seed=config.seed, process_index=jax.process_index(),
        process_count=jax.process_count(), workdir=workdir))
    for name, stats in batches.stats.items():  # Skips are warned row by row; this is the total.
      capped = f", capped {stats['capped']}" if stats.get("capped") else ""
      print(f"data {name}: {stats['rows']} rows, skipped {stats['skipped'] or 'none'}{capped}",
            flush=True)
  checkpoints = checkpoint_lib.Checkpoints(workdir, keep=config.train.keep_checkpoints)
  best = checkpoint_lib.Checkpoints(workdir, keep=1, folder="best")
  last_checkpoint = checkpoints.latest_step()
  if last_checkpoint is not None:
    state, data_state = checkpoints.restore(last_checkpoint, state, shardings)
    batches.set_state(data_state)
    print(f"resumed from {checkpoints.directory}/{last_checkpoint}", flush=True)

  special_ids = tuple(getattr(tokenizer, "all_special_ids", ()) or ())
  loss_and_grads = step_lib.make_loss_and_grads(
      config.loss, step_lib.make_embed_fn(rcfg, train=True), mesh, normalize=rcfg.normalize,
      grad_cache_chunk=config.train.grad_cache_chunk, special_ids=special_ids)
  train_step = step_lib.make_train_step(loss_and_grads, optimizer, schedule, shardings, mesh)

  total = config.train.steps
  first = int(state["step"])
  writer = MetricWriter(workdir, total, resumed_step=first)
  compiled_shapes = set()
  pending = None  # (step, metrics, data position) whose loss is checked one step late.
  scalars = {}
  examples = tokens = 0
  tick = time.time()
  try:
    for step in range(first, total):
      data_state = batches.get_state()
      host_batch = next(batches)
      signature = step_lib.shape_signature(host_batch)
      if signature not in compiled_shapes:
        compiled_shapes.add(signature)
        print(f"compiling the train step for batch shapes #{len(compiled_shapes)}: "
              f"{dict(signature)}", flush=True)
      state, metrics = train_step(state, mesh_lib.put_batch(host_batch, mesh))
      # Checking the previous step's loss here lets this step run while the host waits.
      if pending is not None:
        check_finite(*pending, last_checkpoint)
      pending = (step, metrics, data_state)
      n_examples, n_tokens = batch_counts(host_batch)
      examples += n_examples * jax.process_count()
      tokens += n_tokens * jax.process_count()

      done = step + 1
      log_now = done % config.train.log_every == 0 or done == total
      save_now = done % config.train.checkpoint_every == 0 or done == total
      eval_now = bool(config.train.eval_every) and done % config.train.eval_every == 0
      if log_now or save_now or eval_now:
        check_finite(*pending, last_checkpoint)
        pending = None
      if log_now:
        elapsed = max(time.time() - tick, 1e-9)
        scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
        scalars.update(examples_per_s=examples / elapsed, tokens_per_s=tokens / elapsed,
                       compiles=len(compiled_shapes))
        writer.write(done, scalars)
        examples = tokens = 0
        tick = time.time()
      if save_now:
        checkpoints.save(done, state, batches.get_state())
        last_checkpoint = done
      if eval_now and done != total:
        results = maybe_evaluate(config, state, rcfg, tokenizer, workdir, done)
        writer.write(done, results, echo=False)
        keep_if_best(config, results, state, done, best, workdir)
        # Evaluation time is not training throughput: restart the clock and the counts at once.
        examples = tokens = 0
        tick = time.time()
    if pending is not None:
      check_finite(*pending, last_checkpoint)
    if final_evaluation_pending(config, workdir, first, total):
      results = maybe_evaluate(config, state, rcfg, tokenizer, workdir, total)
      writer.write(total, results, echo=False)
      keep_if_best(config, results, state, total, best, workdir)
  finally:
    checkpoints.wait()
    checkpoints.close()
    best.close()
    writer.close()
  return {"state": state, "rcfg": rcfg, "tokenizer": tokenizer, "metrics": scalars}


def process_zero_first(name: str, build):
  """build() on process 0, then, after a barrier named `name`, on every other process.

  For what process 0 writes to the shared workdir and the others then read (the tokenizer,
  the data caches): built at once by every host, they would be raced.
  """
  if jax.process_count() == 1:
    return build()
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  result = build() if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices(name)
  return result if jax.process_index() == 0 else build()


def initialize_distributed() -> None:
  """jax.distributed.initialize from LAIR_COORDINATOR / LAIR_NUM_PROCESSES / LAIR_PROCESS_ID."""
  coordinator = os.environ.get("LAIR_COORDINATOR")
  if coordinator:
    # CPU hosts all-reduce over gloo (the default in jax 0.10; earlier ones had none, and a
    # multi-process CPU step then fails to compile its collectives).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator,
                               num_processes=int(os.environ["LAIR_NUM_PROCESSES"]),
                               process_id=int(os.environ["LAIR_PROCESS_ID"]))


def summarize_params(params: Any) -> str:
  """"1,234 params": the size of a params tree, for the start-up log."""
  return f"{sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)):,} params"
