"""Checkpoints (orbax) and the model files a workdir keeps for export and evaluation.

A checkpoint at step N is `workdir/checkpoints/N/` with three items:
  params: {"retriever": ..., "objectives": ...} (what export and evaluation need),
  train:  {"step", "opt_state", "rng"} (the rest of the train state),
  data:   the input pipeline's position (JSON, from `get_state()`).
With config.eval.select_best, `workdir/best/N/` holds the params item of the best evaluation so
far and `workdir/best.json` says which step and value. Beside them, written once per run: `workdir/config.json` (the whole run config),
`workdir/model.json` (the RetrieverConfig) and `workdir/tokenizer/`.
"""
import dataclasses
import json
import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from lair.models import bert
from lair.models import retriever

def split_state(state: dict) -> tuple[Any, dict]:
  """state -> (params item, train item)."""
  return state["params"], {k: v for k, v in state.items() if k != "params"}


def abstract_like(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs with shardings: the restore target (arrays land where they belong)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


class Checkpoints:
  """Saves every N steps (and at the end), keeps the last K, restores the latest or step N.

  `folder="best"` holds the params of the best evaluation so far (config.eval.select_best).
  """

  def __init__(self, workdir: str, *, keep: int = 3, folder: str = "checkpoints"):
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    self.directory = os.path.join(os.path.abspath(workdir), folder)
    handlers = {"params": ocp.StandardCheckpointHandler(),
                "train": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()}
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: dict, data_state: dict) -> None:
    params, train = split_state(state)
    self.manager.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params), train=ocp.args.StandardSave(train),
        data=ocp.args.JsonSave(data_state)))

  def save_params(self, step: int, params: Any) -> None:
    """Saves the params item alone (the best checkpoint needs no optimiser state)."""
    self.manager.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params)),
                      force=True)

  def restore(self, step: int, state: dict, shardings: dict) -> tuple[dict, dict]:
    """(state, data_state) at `step`, shaped and placed like `state`/`shardings`."""
    params, train = split_state(state)
    params_sh, train_sh = split_state(shardings)
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(abstract_like(params, params_sh)),
          train=ocp.args.StandardRestore(abstract_like(train, train_sh)),
          data=ocp.args.JsonRestore()))
    except ValueError as e:
      raise ValueError(f"{self.directory}/{step}: the checkpoint does not fit this config's "
                       f"train state (were model, loss or optimiser keys changed?): {e}") from e
    return dict(restored["train"], params=restored["params"]), restored["data"]

  def restore_params(self, step: Optional[int] = None) -> tuple[int, Any]:
    """(step, params item as host numpy arrays), without the optimiser state.

    For export and evaluation: works on any device count, whatever mesh saved it.
    """
    step = self.latest_step() if step is None else step
    if step is None or step not in self.all_steps():
      raise FileNotFoundError(f"{self.directory}: no checkpoint at step {step} "
                              f"(saved steps: {self.all_steps()})")
    metadata = self.manager.item_metadata(step)["params"]
    # An explicit target sharding: left out, orbax rebuilds the saving mesh, whose devices (on
    # another host count, e.g. ids 0 and 2048 of a 2-process run) this process may not have.
    one_device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    as_numpy = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one_device),
                            metadata)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(as_numpy)))
    return step, jax.tree.map(np.asarray, restored["params"])

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


# ------------------------------------------------------------------------------------------------
# The files that let export/evaluation rebuild the model without the training code path.
# ------------------------------------------------------------------------------------------------


def save_model_files(workdir: str, config, rcfg: retriever.RetrieverConfig, tokenizer) -> None:
  """Writes workdir/config.json, workdir/model.json and workdir/tokenizer/ (process 0 only)."""
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
    f.write(config.to_json_best_effort(indent=1, sort_keys=True))
  with open(os.path.join(workdir, "model.json"), "w", encoding="utf-8") as f:
    json.dump(dataclasses.asdict(rcfg), f, indent=1, sort_keys=True)
  if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
    tokenizer.save_pretrained(os.path.join(workdir, "tokenizer"))


def load_model_files(workdir: str) -> tuple[retriever.RetrieverConfig, Any]:
  """(RetrieverConfig, tokenizer or None) saved by `save_model_files`."""
  path = os.path.join(workdir, "model.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir!r} a lair training workdir?")
  with open(path, encoding="utf-8") as f:
    fields = json.load(f)
  rcfg = retriever.RetrieverConfig(encoder=bert.EncoderConfig(**fields.pop("encoder")), **fields)
  tokenizer_dir = os.path.join(workdir, "tokenizer")
  tokenizer = None
  if os.path.isdir(tokenizer_dir):
    import transformers  # pylint: disable=g-import-not-at-top  (slow; only export needs it)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
  return rcfg, tokenizer
