"""The config schema every lair run shares, and loading `configs/*.py` with overrides.

A config file is plain Python with `get_config(arg=None)` returning an `ml_collections.ConfigDict`;
it starts from `default_config()` below and changes what it needs. On the command line
(`--config=configs/x.py[:arg] --config.train.steps=100`) an override of a key that the schema does
not have is an error naming the key, since ConfigDicts are locked after loading.
"""
import ast
import importlib.util
import os
from typing import Sequence

import ml_collections


def default_config() -> ml_collections.ConfigDict:
  """Every key a run can set, with its default. Comments say what each is for."""
  c = ml_collections.ConfigDict()

  c.seed = 0

  # Model: import a pretrained HF encoder (`hf_path`) or build one from `encoder` (from scratch).
  c.model = ml_collections.ConfigDict()
  c.model.hf_path = ""  # HF directory (or hub name, where the hub is reachable).
  c.model.encoder = ml_collections.ConfigDict(dict(  # Used only when hf_path is empty.
      model_type="bert", vocab_size=0,  # 0: take the tokenizer's vocabulary size.
      hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512,
      max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12,
      hidden_dropout=0.1, attention_dropout=0.1))
  c.model.pooling = "mean"  # "mean" | "cls"
  c.model.projection = ""  # "" | "linear" | "mlp"
  c.model.projection_dim = 0  # 0: keep the hidden size.
  c.model.normalize = True
  c.model.shared_towers = True  # False: separate query and passage encoders.
  c.model.dtype = "float32"  # Compute dtype; params stay float32. "bfloat16" on accelerators.
  c.model.freeze_embeddings = False  # Keep the (large, multilingual) token embedding table fixed.
  c.model.query_prefix = ""  # e.g. "query: " for multilingual-e5.
  c.model.passage_prefix = ""  # e.g. "passage: " for multilingual-e5.

  # Tokenizer trained on the fly (from-scratch models): from these files, this many pieces.
  c.tokenizer = ml_collections.ConfigDict(dict(train_files=[], vocab_size=8000))

  # Data. Each stream lists local files; a stream with weight 0 in `loss` is not read at all.
  c.data = ml_collections.ConfigDict()
  c.data.languages = ["eng"]  # ISO 639-3 codes; language ids index this list.
  c.data.ir = ml_collections.ConfigDict(dict(
      format="squad",  # "squad" | "triples" | "beir"
      paths=[],
      squad_target="sentence",  # "sentence" (the answer's sentence) | "paragraph"
      num_negatives=0))
  c.data.parallel = ml_collections.ConfigDict(dict(
      format="tsv",  # "tsv" (source, eng, xxx columns) | "aligned" (line-aligned file pairs)
      paths=[], max_pairs_per_language=0))  # 0: all pairs.
  c.data.mono = ml_collections.ConfigDict(dict(paths=[]))  # One sentence per line; "lang:path".
  c.data.max_query_len = 64
  c.data.max_passage_len = 128
  c.data.max_sentence_len = 64
  c.data.length_buckets = [16, 32, 64, 128]  # Pad to the smallest bucket that fits.
  c.data.strict = False  # True: a bad row is an error instead of a counted, logged skip.
  c.data.cache_dir = ""  # Where tfds builders write array_record files ("": workdir/data).

  # Objectives: weights of 0 skip a term and its inputs.
  c.loss = ml_collections.ConfigDict()
  c.loss.tau = 0.05
  c.loss.ir_weight = 1.0
  c.loss.ir_margin = 0.0  # Additive margin (LaBSE's AMS) on the positive logit.
  c.loss.ir_bidirectional = False
  c.loss.semantic_weight = 0.0
  c.loss.language_weight = 0.0
  c.loss.language_form = "uniform_ce"  # "uniform_ce" | "squared_gap"
  c.loss.language_inputs = "ir+mono"  # The z sentences: "ir" (queries, passages) | "mono" | both.
  c.loss.xtr_weight = 0.0  # EMS cross-lingual token reconstruction.
  c.loss.ems_contrastive_weight = 0.0  # EMS sentence contrastive on a 128-d projection.
  c.loss.ems_language_embedding_dim = 128
  c.loss.ems_projection_dim = 128
  c.loss.ems_tau = 0.1

  # Training.
  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 32  # Global IR batch (query, positive) pairs across all devices.
  c.train.parallel_batch_size = 32  # Global parallel pairs per step.
  c.train.mono_batch_size = 32  # Global monolingual sentences per step.
  c.train.steps = 1000
  c.train.learning_rate = 2e-5
  c.train.warmup_steps = 100
  c.train.decay = "linear"  # "linear" | "cosine" | "constant"
  c.train.weight_decay = 0.01
  c.train.clip_norm = 1.0
  c.train.grad_cache_chunk = 0  # >0: GradCache, embedding this many rows at a time.
  c.train.log_every = 10
  c.train.checkpoint_every = 200
  c.train.keep_checkpoints = 3
  c.train.eval_every = 0  # 0: evaluate only at the end.

  # Device mesh: the `data` axis size (-1: all devices). FSDP shards along it every param (and
  # its optimiser moments) of at least fsdp_min_size elements, by size, not by name.
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=False, fsdp_min_size=2**18))

  # Evaluation: named sets, each with a kind and its files.
  c.eval = ml_collections.ConfigDict()
  c.eval.sets = []  # e.g. [{"name": "xquad-r", "kind": "lareqa", "paths": [...]}]
  c.eval.search = "auto"  # "auto" (exact for small pools) | "exact" | "scann"
  c.eval.exact_below = 20000  # "auto" uses exact search for pools smaller than this.
  c.eval.top_k = 20
  c.eval.batch_size = 64
  c.eval.scann = ml_collections.ConfigDict(dict(
      num_leaves=0,  # 0: about sqrt(pool size).
      num_leaves_to_search=0,  # 0: half the leaves or more (see evaluate/search.py).
      training_sample_size=0,  # 0: the whole pool, at most 100k.
      dimensions_per_block=2, anisotropic_quantization_threshold=0.2, reorder=100))
  c.eval.select_best = ""  # Metric key ("xquad-r/map@20/mean") that picks the best checkpoint.
  return c


# ------------------------------------------------------------------------------------------------
# Loading a config file and applying command-line overrides.
# ------------------------------------------------------------------------------------------------


def import_config_file(path: str):
  """Imports `path` as a module (the repository stays importable: configs import lair)."""
  spec = importlib.util.spec_from_file_location(f"lair_config_{abs(hash(path))}", path)
  if spec is None or not os.path.isfile(path):
    raise FileNotFoundError(f"--config={path}: no such config file")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise AttributeError(f"--config={path}: the file defines no get_config(arg=None)")
  return module


def _parse_value(key: str, text: str, current):
  """`text` as the type of the key's current value (bool, int, float, str, list, tuple)."""
  def fail(expected):
    return ValueError(f"--config.{key}={text}: expected {expected} (the current value is "
                      f"{current!r})")

  if isinstance(current, bool):
    if text.lower() in ("true", "1", "yes"):
      return True
    if text.lower() in ("false", "0", "no"):
      return False
    raise fail("true or false")
  if isinstance(current, int):
    try:
      return int(text)
    except ValueError:
      raise fail("an integer") from None
  if isinstance(current, float):
    try:
      return float(text)
    except ValueError:
      raise fail("a number") from None
  if isinstance(current, str):
    return text
  if isinstance(current, (list, tuple)):
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):  # a,b,c: a list of strings.
      value = [t.strip() for t in text.split(",") if t.strip()]
    if isinstance(value, (str, int, float)) or value is None:
      value = [value] if value is not None else []
    if not isinstance(value, (list, tuple)):
      raise fail("a list, e.g. [1, 2] or a,b")
    return type(current)(value)
  if isinstance(current, ml_collections.ConfigDict):
    raise fail("a leaf key; set its fields one by one, e.g. --config.{key}.NAME=VALUE")
  try:  # None or another type: a Python literal, else the string.
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def apply_override(config: ml_collections.ConfigDict, override: str) -> None:
  """Applies one `--config.a.b=value` (or `a.b=value`); an unknown key is an error naming it."""
  text = override[len("--config."):] if override.startswith("--config.") else override
  if "=" not in text:
    raise ValueError(f"{override}: expected --config.KEY=VALUE")
  key, value = text.split("=", 1)
  node, parts = config, key.split(".")
  for depth, part in enumerate(parts):
    parent = ".".join(["config", *parts[:depth]])
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      known = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      raise KeyError(f"--config.{key}: unknown config key {part!r} in {parent} "
                     f"(it has: {', '.join(known)})")
    if depth < len(parts) - 1:
      node = node[part]
  with node.unlocked():
    node[parts[-1]] = _parse_value(key, value, node[parts[-1]])


def load_config(path_with_arg: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """`configs/NAME.py[:ARG]` -> its get_config(ARG), overrides applied, then locked.

  Args:
    path_with_arg: a config file path, optionally followed by `:ARG` passed to get_config.
    overrides: `--config.a.b=VALUE` strings (the `--config.` prefix is optional); values are
      parsed as the key's current type (lists as Python literals or comma-separated).

  Returns:
    The locked ConfigDict (adding a key afterwards is an error).
  """
  path, _, arg = path_with_arg.partition(":")
  module = import_config_file(path)
  config = module.get_config(arg) if arg else module.get_config()
  if not isinstance(config, ml_collections.ConfigDict):
    raise TypeError(f"--config={path}: get_config() returned {type(config).__name__}; "
                    f"expected an ml_collections.ConfigDict")
  for override in overrides:
    apply_override(config, override)
  config.lock()
  return config
