"""Orbax checkpoints of a run: save, restore (falling back past damaged ones), restore params only.

A checkpoint at step N is `DIR/N/` with three items:
  params: {"retriever": ..., "objectives": ...} (what export and evaluation need),
  train:  {"step", "opt_state", "rng"} (the rest of the train state),
  data:   the input pipeline's position (JSON, from `get_state()`), plus "fingerprint": one
          float per params leaf (its sum), checked on restore so that a file garbled in a way
          the storage layer does not notice is still caught.
`DIR` is `Workdir.checkpoints_dir` (every train.checkpoint_every steps) or `Workdir.best_dir` (the
params item alone, of the best evaluation).

A checkpoint that cannot be restored (a missing, truncated or garbled file, bad metadata) is
reported with its step and the reason and moved aside to `DIR.damaged/N`, and the next older one
is tried; nothing is deleted.
"""
import os
import shutil
from typing import Any, Optional

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from lair import errors
from lair import sharding


class CheckpointError(errors.UserError, RuntimeError):
  """No checkpoint of a folder could be restored; the message lists each one and why."""


def split_state(state: dict) -> tuple[Any, dict]:
  """state -> (params item, train item)."""
  return state["params"], {k: v for k, v in state.items() if k != "params"}


def abstract_like(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs with shardings: the restore target (arrays land where they belong)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


@jax.jit
def _leaf_sums(params):
  return [jnp.sum(x.astype(jnp.float32)) for x in jax.tree.leaves(params)]


def fingerprint(params: Any) -> list[float]:
  """One float32 sum per params leaf (global arrays: the same on every process)."""
  return [float(s) for s in jax.device_get(_leaf_sums(params))]


def _fingerprints_match(saved: list, restored: list) -> bool:
  # Sums over another device layout may round differently; a garbled byte moves them far more.
  return len(saved) == len(restored) and bool(np.allclose(saved, restored, rtol=1e-5, atol=1e-6))


class Checkpoints:
  """Saves every N steps (and at the end), keeps the last K, restores the newest intact one.

  Args:
    directory: the folder of numbered checkpoints (`Workdir.checkpoints_dir` or `.best_dir`).
    keep: how many to keep (older ones are deleted as new ones are saved).
    create: make the folder when it is missing; readers pass False, so that looking at a run
      never creates anything in it.
  """

  def __init__(self, directory: str, *, keep: int = 3, create: bool = False):
    self.directory = os.path.abspath(directory)
    self._keep = keep
    self.manager = None
    if create or os.path.isdir(self.directory):
      self._open(create)

  def _open(self, create: bool) -> None:
    options = ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=create)
    handlers = {"params": ocp.StandardCheckpointHandler(),
                "train": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()}
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step() if self.manager else None

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps()) if self.manager else []

  def save(self, step: int, state: dict, data_state: dict) -> None:
    params, train = split_state(state)
    data = dict(data_state, fingerprint=fingerprint(params))
    self.manager.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params), train=ocp.args.StandardSave(train),
        data=ocp.args.JsonSave(data)))

  def save_params(self, step: int, params: Any) -> None:
    """Saves the params item alone (the best checkpoint needs no optimiser state)."""
    self.manager.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params)),
                      force=True)

  def restore(self, step: int, state: dict, shardings: dict) -> tuple[dict, dict]:
    """(state, data_state) at `step`, shaped and placed like `state`/`shardings`.

    Raises whatever orbax raises for a damaged checkpoint, or ValueError when the params
    fingerprint does not match what was saved.
    """
    params, train = split_state(state)
    params_sh, train_sh = split_state(shardings)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_like(params, params_sh)),
        train=ocp.args.StandardRestore(abstract_like(train, train_sh)),
        data=ocp.args.JsonRestore()))
    data = dict(restored["data"])
    saved = data.pop("fingerprint", None)
    if saved is not None and not _fingerprints_match(saved, fingerprint(restored["params"])):
      raise ValueError("the params read back do not match the sums saved with them "
                       "(a garbled file)")
    return dict(restored["train"], params=restored["params"]), data

  def restore_latest(self, state: dict, shardings: dict):
    """(step, state, data_state) of the newest checkpoint that restores, or None when none exist.

    A damaged one is reported and moved to `DIR.damaged/N`; all processes agree on each
    attempt (one that fails anywhere fails everywhere). Raises CheckpointError when every
    checkpoint is damaged, listing them.
    """
    tried = []
    for step in reversed(self.all_steps()):
      reason = None
      try:
        restored, data = self.restore(step, state, shardings)
      except Exception as e:  # pylint: disable=broad-except  (orbax/tensorstore raise many kinds)
        reason = f"{type(e).__name__}: {_first_line(e)}"
      if sharding.all_processes_agree(reason is None):
        if tried:
          self._set_aside([s for s, _ in tried])
          print(f"resumed from {self.directory}/{step}, the newest intact checkpoint; "
                f"damaged ones moved to {self.directory}.damaged/", flush=True)
        return step, restored, data
      reason = reason or "another process could not restore it"
      print(f"checkpoint {self.directory}/{step} cannot be restored ({reason}); trying the "
            f"previous one", flush=True)
      tried.append((step, reason))
    if tried:
      listed = "; ".join(f"step {s}: {r}" for s, r in tried)
      raise CheckpointError(f"{self.directory}: no checkpoint can be restored ({listed}). "
                            f"Nothing was changed; remove the folder to start the run afresh")
    return None

  def _set_aside(self, steps: list[int]) -> None:
    """Moves damaged checkpoints out of the manager's sight (process 0), then reopens it."""
    self.wait()
    sharding.barrier("lair: checkpoints restored")
    if jax.process_index() == 0:
      aside = self.directory + ".damaged"
      os.makedirs(aside, exist_ok=True)
      for step in steps:
        target = os.path.join(aside, str(step))
        shutil.rmtree(target, ignore_errors=True)
        os.rename(os.path.join(self.directory, str(step)), target)
        logging.warning("moved damaged checkpoint %d to %s", step, target)
    sharding.barrier("lair: damaged checkpoints set aside")
    self.manager.close()
    self._open(create=True)

  def restore_params(self, step: Optional[int] = None) -> tuple[int, Any]:
    """(step, params item as host numpy arrays), without the optimiser state.

    For export and evaluation: works on any device count, whatever mesh saved it. Without
    `step`, the newest checkpoint whose params restore (a damaged newer one is reported and
    skipped, not moved).
    """
    steps = self.all_steps()
    if step is not None and step not in steps:
      raise FileNotFoundError(f"{self.directory}: no checkpoint at step {step} "
                              f"(saved steps: {steps})")
    candidates = [step] if step is not None else list(reversed(steps))
    if not candidates:
      raise FileNotFoundError(f"{self.directory}: no checkpoint saved yet")
    tried = []
    for candidate in candidates:
      try:
        return candidate, self._restore_params(candidate)
      except Exception as e:  # pylint: disable=broad-except
        reason = f"{type(e).__name__}: {_first_line(e)}"
        if step is not None:
          raise CheckpointError(f"{self.directory}/{step} cannot be restored ({reason})") from e
        print(f"checkpoint {self.directory}/{candidate} cannot be restored ({reason}); trying "
              f"the previous one", flush=True)
        tried.append(f"step {candidate}: {reason}")
    raise CheckpointError(f"{self.directory}: no checkpoint can be restored ({'; '.join(tried)})")

  def _restore_params(self, step: int):
    metadata = self.manager.item_metadata(step)["params"]
    # An explicit target sharding: left out, orbax rebuilds the saving mesh, whose devices (on
    # another host count, e.g. ids 0 and 2048 of a 2-process run) this process may not have.
    one_device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    as_numpy = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one_device),
                            metadata)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(as_numpy)))
    return jax.tree.map(np.asarray, restored["params"])

  def wait(self) -> None:
    if self.manager:
      self.manager.wait_until_finished()

  def close(self) -> None:
    if self.manager:
      self.manager.close()


def _first_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return text[0][:300] if text else ""


def restore_run_params(run, step=None) -> tuple[int, Any]:
  """(step, params item) of a training run: checkpoint `step` (default the newest), or "best".

  `run` is a `lair.workdir.Workdir`. "best" is the params of the best evaluation, kept when
  the run's config.eval.select_best names a metric.
  """
  if step == "best":
    best = Checkpoints(run.best_dir, keep=1)
    if not best.all_steps():
      raise FileNotFoundError(
          f"--step best: {run.best_dir} holds no best params; the run kept none (training keeps "
          f"them when config.eval.select_best names a metric of config.eval.sets)")
    return best.restore_params()
  if not os.path.isdir(run.checkpoints_dir):
    raise FileNotFoundError(f"{run.root}: no checkpoints/ folder; expected the workdir of a "
                            f"`python -m lair.train` run")
  return Checkpoints(run.checkpoints_dir).restore_params(step)


def parse_step(text: Optional[str]):
  """A --step flag: None, an int, or "best"; ValueError otherwise."""
  if text in (None, ""):
    return None
  if text == "best":
    return text
  if not str(text).isdigit():
    raise errors.ConfigError(f"--step={text}: expected a step number or 'best'")
  return int(text)
