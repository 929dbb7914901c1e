"""The optimiser: AdamW with warm-up then linear/cosine/constant decay, clipping, masks.

Weight decay skips LayerNorm params and biases (BERT's recipe). Frozen params (the token
embedding table with `model.freeze_embeddings`) get no update and no optimiser state: they go
through `optax.set_to_zero` under `optax.multi_transform`.
"""
from typing import Any

import jax
import optax

DECAYS = ("linear", "cosine", "constant")


def learning_rate_schedule(train_cfg) -> optax.Schedule:
  """0 -> learning_rate over warmup_steps, then decay to 0 at train.steps (or stay constant)."""
  peak, warmup, total = train_cfg.learning_rate, train_cfg.warmup_steps, train_cfg.steps
  decay_steps = max(total - warmup, 1)
  if train_cfg.decay == "linear":
    decay = optax.linear_schedule(peak, 0.0, decay_steps)
  elif train_cfg.decay == "cosine":
    decay = optax.cosine_decay_schedule(peak, decay_steps)
  elif train_cfg.decay == "constant":
    decay = optax.constant_schedule(peak)
  else:
    raise ValueError(f"config key train.decay={train_cfg.decay!r}: expected one of {DECAYS}")
  if warmup <= 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def _path_names(path) -> list[str]:
  return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


def weight_decay_mask(params: Any) -> Any:
  """True where AdamW decays: not biases, not LayerNorm/norm scales and shifts."""
  def decays(path, _):
    names = _path_names(path)
    is_norm = any("norm" in n.lower() for n in names)
    return names[-1] != "bias" and not is_norm
  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(train_cfg, trainable: Any) -> tuple[optax.GradientTransformation,
                                                       optax.Schedule]:
  """(optimizer, schedule) for params shaped like `trainable` (a pytree of bools).

  The gradient norm clipped at train.clip_norm is that of the trainable params only.
  """
  schedule = learning_rate_schedule(train_cfg)
  steps = [optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-6,
                       weight_decay=train_cfg.weight_decay, mask=weight_decay_mask)]
  if train_cfg.clip_norm > 0:
    steps.insert(0, optax.clip_by_global_norm(train_cfg.clip_norm))
  labels = jax.tree.map(lambda t: "train" if t else "frozen", trainable)
  optimizer = optax.multi_transform(
      {"train": optax.chain(*steps), "frozen": optax.set_to_zero()}, labels)
  return optimizer, schedule


def config_errors(train_cfg) -> list[str]:
  """What is wrong with `config.train`'s optimiser and loop keys (one line per key)."""
  errors = []
  for key in ("steps", "warmup_steps", "grad_cache_chunk", "eval_every"):
    if int(train_cfg[key]) < 0:
      errors.append(f"config.train.{key}={train_cfg[key]}: expected an integer >= 0")
  for key in ("log_every", "checkpoint_every", "keep_checkpoints"):
    if int(train_cfg[key]) <= 0:
      errors.append(f"config.train.{key}={train_cfg[key]}: expected a positive integer")
  for key in ("learning_rate", "weight_decay", "clip_norm"):
    if float(train_cfg[key]) < 0:
      errors.append(f"config.train.{key}={train_cfg[key]}: expected a number >= 0")
  if train_cfg.decay not in DECAYS:
    errors.append(f"config.train.decay={train_cfg.decay!r}: expected one of {DECAYS}")
  return errors
