"""The run directory: every path under it, and how its files are written and read.

A `python -m lair.train` workdir holds:

    config.json          the whole run config (lair/configs.py's schema)
    model.json           the RetrieverConfig: what export and evaluation rebuild the model from
    tokenizer/           the run's tokenizer (save_pretrained)
    checkpoints/N/       orbax checkpoints: params, train (step, optimiser, rng), data position
    best/N/  best.json   with eval.select_best: the params of the best evaluation, and its step/value
    eval/step_N.json     evaluation results, flat keys ("xquad-r/map@20/de")
    eval/evaluate_step_N.json  python -m lair.evaluate --workdir's results for checkpoint N
    metrics.jsonl        one row per logged step and per evaluation
    tensorboard/         the same scalars for TensorBoard
    data/                array_record caches of the input pipeline (unless data.cache_dir)
    hf/                  the export that launch/run.sh writes

Files are written atomically (a temporary file in the same folder, fsync, rename), so a run
killed at any instant leaves each file either as it was or as it is meant to be. Reading never
creates anything: a `Workdir` of a folder that does not exist stays that way until a run writes.
"""
import dataclasses
import json
import os
from typing import Optional

import ml_collections

from lair import configs
from lair.files import read_json, replace_folder, write_json, write_text
from lair.models import retriever

CONFIG = "config.json"
MODEL = "model.json"
TOKENIZER = "tokenizer"
CHECKPOINTS = "checkpoints"
BEST = "best"
BEST_JSON = "best.json"
EVAL = "eval"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
DATA = "data"
HF = "hf"


# ------------------------------------------------------------------------------------------------
# The run directory.
# ------------------------------------------------------------------------------------------------


class Workdir:
  """Paths of one run directory, and its small files (JSON, the tokenizer), read and written."""

  def __init__(self, root: str):
    self.root = os.path.abspath(os.path.expanduser(str(root)))
    self.config_json = self.path(CONFIG)
    self.model_json = self.path(MODEL)
    self.tokenizer_dir = self.path(TOKENIZER)
    self.checkpoints_dir = self.path(CHECKPOINTS)
    self.best_dir = self.path(BEST)
    self.best_json = self.path(BEST_JSON)
    self.metrics_jsonl = self.path(METRICS)
    self.tensorboard_dir = self.path(TENSORBOARD)
    self.data_dir = self.path(DATA)
    self.hf_dir = self.path(HF)

  def __repr__(self) -> str:
    return f"Workdir({self.root!r})"

  def path(self, *names: str) -> str:
    return os.path.join(self.root, *names)

  def eval_json(self, step: Optional[int], *, by_command: bool = False) -> str:
    """eval/step_N.json (the trainer's), eval/evaluate_step_N.json (`python -m lair.evaluate`
    on the run's checkpoint N), or eval/eval.json for an evaluation without a step.

    lair.evaluate keeps out of the trainer's files: they record which evaluations training did
    (a resume redoes a missing one) and with which sets.
    """
    if step is None:
      return self.path(EVAL, "eval.json")
    return self.path(EVAL, f"{'evaluate_' if by_command else ''}step_{int(step)}.json")

  def exists(self) -> bool:
    return os.path.isdir(self.root)

  def is_run(self) -> bool:
    """Whether a training run has written its model files here."""
    return os.path.isfile(self.model_json)

  def owns(self, path: str) -> bool:
    """Whether `path` is this run's folder or a run file inside it (export must not write there).

    `hf/` is the one place inside a run that is meant for an export.
    """
    path = os.path.abspath(os.path.expanduser(path))
    if path == self.root:
      return True
    inside = os.path.commonpath([path, self.root]) == self.root
    return inside and not (path == self.hf_dir or path.startswith(self.hf_dir + os.sep))

  def inside(self, path: str) -> bool:
    """Whether this run's folder is inside `path` (replacing `path` would delete the run)."""
    path = os.path.abspath(os.path.expanduser(path))
    return os.path.commonpath([path, self.root]) == path

  # --- the run's config and model files ---------------------------------------------------------

  def read_config(self) -> ml_collections.ConfigDict:
    """config.json as a ConfigDict, on top of today's defaults (keys added since are filled in)."""
    if not os.path.isfile(self.config_json):
      raise FileNotFoundError(f"{self.config_json} not found: is {self.root} the workdir of a "
                              f"`python -m lair.train` run?")
    return configs.from_saved(read_json(self.config_json), source=self.config_json)

  def write_config(self, config: ml_collections.ConfigDict) -> None:
    write_text(self.config_json, config.to_json_best_effort(indent=1, sort_keys=True) + "\n")

  def read_model(self):
    """(RetrieverConfig, tokenizer or None) as `write_model` saved them."""
    if not os.path.isfile(self.model_json):
      raise FileNotFoundError(f"{self.model_json} not found: is {self.root} the workdir of a "
                              f"`python -m lair.train` run?")
    rcfg = retriever.RetrieverConfig.from_dict(read_json(self.model_json))
    tokenizer = None
    if os.path.isdir(self.tokenizer_dir):
      import transformers  # pylint: disable=g-import-not-at-top  (slow to import)
      tokenizer = transformers.AutoTokenizer.from_pretrained(self.tokenizer_dir)
    return rcfg, tokenizer

  def write_model(self, rcfg, tokenizer) -> None:
    """model.json and tokenizer/ (each replaced atomically)."""
    write_json(self.model_json, dataclasses.asdict(rcfg))
    if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
      replace_folder(self.tokenizer_dir, tokenizer.save_pretrained)

  # --- evaluations and the best checkpoint ------------------------------------------------------

  def read_eval(self, step: Optional[int]) -> Optional[dict]:
    path = self.eval_json(step)
    return read_json(path) if os.path.isfile(path) else None

  def write_eval(self, step: Optional[int], results: dict, *, by_command: bool = False) -> str:
    path = self.eval_json(step, by_command=by_command)
    write_json(path, {"step": step, "metrics": results})
    return path

  def read_best(self) -> Optional[dict]:
    """best.json ({"step", "metric", "value"}) or None."""
    return read_json(self.best_json) if os.path.isfile(self.best_json) else None

  def write_best(self, step: int, metric: str, value: float) -> None:
    write_json(self.best_json, {"step": int(step), "metric": metric, "value": float(value)})

  # --- metrics.jsonl ----------------------------------------------------------------------------

  def keep_metrics_up_to(self, step: int) -> None:
    """Drops the metrics.jsonl rows after `step`: a resumed run logs those steps again."""
    if not os.path.exists(self.metrics_jsonl):
      return
    with open(self.metrics_jsonl, encoding="utf-8") as f:
      rows = [line for line in f if line.strip() and _row_step(line) <= step]
    write_text(self.metrics_jsonl, "".join(rows))


def _row_step(line: str) -> int:
  """The step of one metrics.jsonl row; a row cut short by a kill counts as after every step."""
  try:
    return int(json.loads(line)["step"])
  except (json.JSONDecodeError, KeyError, TypeError, ValueError):
    return 2**62
