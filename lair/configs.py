"""The config schema every lair run shares, and reading configs from the command line.

A config file is plain Python with `get_config(arg=None)` returning an `ml_collections.ConfigDict`;
it starts from `default_config()` below and changes what it needs. Command lines are parsed by
`ml_collections.config_flags` (as in big_vision and the Flax examples):
`--config=configs/x.py[:ARG] --config.train.steps=100`. The config is locked after loading, so an
override of a key the schema does not have is an error naming the key.

`python -m lair.evaluate` and `lair.export` start from a run's saved config.json instead: this
file doubles as a config file, `--config=lair/configs.py:WORKDIR/config.json`, whose
`get_config(path)` reads it (`get_config()` gives the defaults).
"""
import ast
import importlib.util
import os
import re
import sys
from typing import Callable, Optional, Sequence

from absl import flags
import ml_collections
from ml_collections import config_flags
from ml_collections.config_flags import config_flags as config_flags_lib

from lair import files
from lair.errors import ConfigError


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
  # Matmul dtype; params, optimiser state, LayerNorm, softmax and losses stay float32.
  # "bfloat16" on accelerators.
  c.model.dtype = "float32"
  # Residual-stream dtype: "bfloat16" stores the activations between the matmuls in bfloat16
  # (LayerNorm statistics, softmax, pooling and losses stay float32): less memory traffic on
  # accelerators, with model.dtype="bfloat16". See lair/models/bert.py.
  c.model.activation_dtype = "float32"
  # "einsum" (the reference) | "dot_product" (jax.nn.dot_product_attention: cuDNN flash
  # attention on GPU with bfloat16, XLA elsewhere; training with attention dropout > 0 falls
  # back to "einsum"). See lair/models/bert.py.
  c.model.attention = "einsum"
  # Rematerialise each encoder layer in the backward pass: "" (off) | "full" (keep only each
  # layer's input) | "dots" (keep the dense layers' matmul outputs). Same gradients, less memory.
  c.model.remat = ""
  c.model.freeze_embeddings = False  # Keep the (large, multilingual) token embedding table fixed.
  c.model.query_prefix = ""  # e.g. "query: " for multilingual-e5.
  c.model.passage_prefix = ""  # e.g. "passage: " for multilingual-e5.

  # Tokenizer trained on the fly (from-scratch models: no model.hf_path, encoder.vocab_size 0):
  # from these files, or with none listed from the texts of the run's own training streams
  # (the rows the objectives read, as the data builders write them); this many pieces at most.
  c.tokenizer = ml_collections.ConfigDict(dict(train_files=[], vocab_size=8000))

  # Data. Each stream lists local files; a stream with weight 0 in `loss` is not read at all.
  c.data = ml_collections.ConfigDict()
  c.data.languages = ["eng"]  # ISO 639-3 codes; language ids index this list.
  c.data.ir = ml_collections.ConfigDict(dict(
      # "squad" (SQuAD JSON) | "triples" (query<TAB>positive<TAB>negatives... TSV) | "beir"
      # (folders; their train qrels) | "jsonl" ({"query": str, "pos": [str], "neg": [str]} per
      # line: FlagEmbedding's and sentence-transformers' format, and what lair.mine writes).
      format="squad",
      paths=[],
      squad_target="sentence",  # "sentence" (the answer's sentence) | "paragraph"
      # Hard negatives per query: the first K of each row ("triples", "jsonl"), or K other
      # sentences of the answer's paragraph ("squad", squad_target="sentence"; seeded by the
      # question id). A row with fewer is a counted skip.
      num_negatives=0,
      language="eng"))  # The IR text's language (ISO 639-3; "" if mixed): z of the language loss.
  c.data.parallel = ml_collections.ConfigDict(dict(
      format="tsv",  # "tsv" (source, eng, xxx columns) | "aligned" (line-aligned file pairs)
      paths=[], max_pairs_per_language=0))  # 0: all pairs.
  c.data.mono = ml_collections.ConfigDict(dict(
      paths=[],  # "xxx:PATH" files, one sentence per line.
      # N > 0: hold out N rows per language of the parallel data (never used as pairs) and use
      # their sentences, one side each, as monolingual text of that language.
      from_parallel=0))
  c.data.max_query_len = 64
  c.data.max_passage_len = 128
  c.data.max_sentence_len = 64
  # Pad to the smallest bucket that fits (buckets past a cut-off serve eval.max_len only).
  c.data.length_buckets = [16, 32, 64, 128]
  c.data.strict = False  # True: a bad row is an error instead of a counted, logged skip.
  c.data.cache_dir = ""  # Where tfds builders write array_record files ("": workdir/data).

  # Objectives: weights of 0 skip a term and its inputs.
  c.loss = ml_collections.ConfigDict()
  c.loss.tau = 0.05
  c.loss.ir_weight = 1.0
  c.loss.ir_margin = 0.0  # Additive margin (LaBSE's AMS) on the positive logit.
  c.loss.ir_bidirectional = False
  c.loss.semantic_weight = 0.0
  # The semantic term's negatives: "other_side" (a sentence picks its translation among the
  # batch's translations) | "both_sides" (and among the other sentences of its own side, so its
  # translation must beat same-language sentences: losses.semantic_contrastive_loss_both_sides).
  c.loss.semantic_negatives = "other_side"
  c.loss.language_weight = 0.0
  c.loss.language_form = "uniform_ce"  # "uniform_ce" | "squared_gap"
  # The z sentences (non-parallel text whose similarity to both sides of a pair must be equal):
  # "ir" (the IR queries and passages) | "mono" (data.mono) | "ir+mono". z should hold several
  # languages: with z of one language the term cannot remove language identity (a warning).
  c.loss.language_inputs = "ir+mono"
  c.loss.language_tau = 0.0  # The language term's own temperature (0: loss.tau).
  # True: stop the gradient through the parallel pair (x, y), so the term moves z only.
  c.loss.language_stop_pairs = False
  c.loss.xtr_weight = 0.0  # EMS cross-lingual token reconstruction.
  c.loss.ems_contrastive_weight = 0.0  # EMS sentence contrastive on a 128-d projection.
  # XTR's target: "ems" (1/n for each token type of an n-token sentence, as EMS's code) |
  # "types" (1/#types: a proper distribution). See losses.bag_of_tokens.
  c.loss.xtr_target = "ems"
  c.loss.ems_language_dropout = 0.1  # Dropout on the XTR head's language embedding (EMS's).
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
  # Signals that stop the run after the current step with a checkpoint and exit code 75 (for a
  # scheduler to requeue it; see lair/train/loop.py).
  c.train.stop_signals = ["SIGTERM", "SIGINT", "SIGUSR1"]

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
  # Token cut-off of every text in evaluation and in use (lair.evaluate, training evaluations, a
  # run loaded by api.load_retriever / lair.index): 0 keeps the training cut-offs
  # data.max_{query,passage,sentence}_len; a set's own max_len wins over it. Training may cut
  # texts short to save time, but a retriever in use should read them whole, as
  # sentence-transformers reads an HF export (up to the encoder's max_length). Padded to
  # data.length_buckets, then to this. An HF folder loaded by lair takes its cut-offs from the
  # config it is given (lair's defaults: 64 / 128), as before.
  c.eval.max_len = 0
  c.eval.scann = ml_collections.ConfigDict(dict(
      num_leaves=0,  # 0: about sqrt(pool size).
      num_leaves_to_search=0,  # 0: all below 5k points, then fewer (evaluate/search.py).
      training_sample_size=0,  # 0: the whole pool, at most 100k.
      # Candidates re-ranked exactly (at least top_k): what lifts recall@10 from ~0.9 to ~0.98
      # on clustered pools at a few % of ScaNN's speed (benchmarks/search.py).
      dimensions_per_block=2, anisotropic_quantization_threshold=0.2, reorder=300))
  c.eval.select_best = ""  # Metric key ("xquad-r/map@20/mean") that picks the best checkpoint.
  return c


def eval_cut_off(config: ml_collections.ConfigDict, training_len: int,
                 set_max_len: int = 0) -> int:
  """Tokens a text is cut at in evaluation and in use (the rule of config.eval.max_len).

  A set's own max_len, else config.eval.max_len, else `training_len` (the training cut-off,
  data.max_{query,passage,sentence}_len). The caller caps it at the encoder's position table.
  """
  return int(set_max_len or config.eval.max_len or training_len)


# ------------------------------------------------------------------------------------------------
# Config files and the command line.
# ------------------------------------------------------------------------------------------------


def get_config(arg: Optional[str] = None) -> ml_collections.ConfigDict:
  """This file as a config file: the defaults, or (ARG = a run's config.json) that run's config."""
  if not arg:
    return default_config()
  return from_saved(files.read_json(arg), source=arg)


def from_saved(saved: dict, *, source: str) -> ml_collections.ConfigDict:
  """A run's saved config (config.json's dict) laid over today's defaults.

  Keys added to the schema since the run was saved keep their defaults; keys the schema no
  longer has are reported and dropped.
  """
  config = default_config()
  unknown = []

  def merge(node: ml_collections.ConfigDict, values: dict, prefix: str) -> None:
    for key, value in values.items():
      if key not in node:
        unknown.append(prefix + key)
      elif isinstance(node[key], ml_collections.ConfigDict) and isinstance(value, dict):
        merge(node[key], value, f"{prefix}{key}.")
      else:
        node[key] = value

  merge(config, saved, "")
  if unknown:
    print(f"{source}: ignoring keys this lair does not know: {', '.join(unknown)}",
          file=sys.stderr)
  return config


def import_config_file(path: str):
  """Imports the config file `path` as a module (for a config that builds on another one)."""
  spec = importlib.util.spec_from_file_location(f"lair_config_{abs(hash(path))}", path)
  if spec is None or not os.path.isfile(path):
    raise ConfigError(f"--config={path}: no such config file")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"--config={path}: the file defines no get_config(arg=None)")
  return module


class _ListParser(flags.ArgumentParser):
  """List-valued keys (data.languages, data.ir.paths, eval.sets, ...) from the command line.

  config_flags parses ints, floats, bools, strings and tuples but refuses list fields, which lair's
  configs use for paths, languages and eval.sets (a list of dicts). The value is a Python
  literal (`[16, 32]`, `"[{'name': ...}]"`) or, failing that, comma-separated strings (`eng,deu`).
  """

  def parse(self, argument):
    if isinstance(argument, list):
      return argument
    try:
      value = ast.literal_eval(argument)
    except (ValueError, SyntaxError):
      return [t.strip() for t in argument.split(",") if t.strip()]
    if isinstance(value, tuple):
      value = list(value)
    if not isinstance(value, list):
      value = [value]
    return value

  def flag_type(self):
    return "list"


config_flags.register_flag_parser_for_type(list, _ListParser())

_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               list: "a list, e.g. [1, 2] or a,b"}


def _config_argument(argv: Sequence[str]) -> Optional[str]:
  for arg in argv:
    if arg.startswith("--config="):
      return arg[len("--config="):]
  return None


def _overrides(argv: Sequence[str]) -> list[tuple[str, str]]:
  """(key, value text) of every `--config.KEY=VALUE` in argv."""
  found = []
  for arg in argv:
    match = re.match(r"^--?config\.([^=]+)(?:=(.*))?$", arg, re.S)
    if match:
      found.append((match[1], match[2] if match[2] is not None else "true"))
  return found


def _explain(error: Exception, argv: Sequence[str]) -> str:
  """One line naming the key at fault and what was expected, from a config_flags error."""
  path_arg = _config_argument(argv)
  try:
    loaded = config_flags_lib.ConfigFileFlagParser("config", lock_config=False).parse(path_arg)
  except Exception:  # pylint: disable=broad-except  (the file itself is at fault: say so below)
    loaded = None
  if isinstance(loaded, ml_collections.ConfigDict):
    for key, text in _overrides(argv):
      node, parts = loaded, key.split(".")
      for depth, part in enumerate(parts):
        parent = ".".join(["config", *parts[:depth]])
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
          known = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
          return (f"--config.{key}: unknown config key {part!r} in {parent} "
                  f"(it has: {', '.join(known)})")
        node = node[part]
      if isinstance(node, ml_collections.ConfigDict):
        return (f"--config.{key}={text}: config.{key} is a group of keys; set its fields one "
                f"by one, e.g. --config.{key}.{next(iter(node.keys()), 'NAME')}=VALUE")
      if f"config.{key}" in str(error):
        expected = _TYPE_NAMES.get(type(node), type(node).__name__)
        return f"--config.{key}={text}: expected {expected} (the current value is {node!r})"
  if isinstance(error, OSError) or loaded is None:
    return f"--config={path_arg}: cannot load the config file ({error})"
  return str(error)


def parse_command_line(argv: Sequence[str], define_flags: Callable[[flags.FlagValues], None],
                       *, default_config_file: Optional[str] = None,
                       positional: Optional[list] = None
                       ) -> tuple[Optional[ml_collections.ConfigDict], flags.FlagValues]:
  """Parses `argv` (argv[0] is the program) with config_flags: (config, the other flags).

  Args:
    argv: the command line, e.g. sys.argv.
    define_flags: defines the program's own absl flags on the FlagValues it is given.
    default_config_file: used when argv has no --config= (None: then the config is None).
    positional: a list that receives the arguments that are not flags, in order (for a
      command that takes some, e.g. `python -m lair.search --index=DIR "a question"`).

  Raises:
    ConfigError naming the flag, key or file at fault.
  """
  argv = list(argv)
  if default_config_file and _config_argument(argv) is None:
    argv.insert(1, f"--config={default_config_file}")
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "configs/NAME.py[:ARG]",
                                  flag_values=flag_values, sys_argv=argv)
  define_flags(flag_values)
  try:
    rest = flag_values(argv)
    config = flag_values.config
  except flags.UnrecognizedFlagError as e:
    raise ConfigError(f"{e}: expected {', '.join('--' + n for n in _own_flags(flag_values))} "
                      f"or --config.KEY=VALUE overrides") from None
  except (flags.Error, KeyError, AttributeError, OSError, TypeError, ValueError) as e:
    raise ConfigError(_explain(e, argv)) from None
  if isinstance(config, config_flags_lib._ErrorConfig):  # pylint: disable=protected-access
    # config_flags defers a file that failed to load until first use; say so now.
    try:
      config.lock()
    except OSError as e:
      raise ConfigError(f"--config={_config_argument(argv)}: cannot load the config file "
                        f"({_last_line(e)})") from None
  if config is not None and not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f"--config={_config_argument(argv)}: get_config() returned "
                      f"{type(config).__name__}; expected an ml_collections.ConfigDict")
  if positional is not None:
    positional.extend(rest[1:])
  return config, flag_values


def _last_line(error: Exception) -> str:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return lines[-1] if lines else type(error).__name__


def _own_flags(flag_values: flags.FlagValues) -> list[str]:
  return sorted(name for name in flag_values if not name.startswith("config."))


def flag_value(argv: Sequence[str], name: str) -> Optional[str]:
  """The value of --NAME=V (or --NAME V) in argv, read before absl parses it.

  For the CLIs whose default config depends on another flag (a run's saved config.json).
  """
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}="):
      return arg.split("=", 1)[1]
    if arg == f"--{name}" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def saved_config_file(config_json: str) -> str:
  """`--config` value that loads a run's saved config.json through this file's get_config.

  A missing config.json is an error about --workdir here: config_flags would report it later
  as a failure of --config=.../lair/configs.py, a flag the user never gave.
  """
  if not os.path.isfile(config_json):
    run = os.path.dirname(config_json)
    raise ConfigError(f"--workdir={run}: no config.json there; expected the workdir of a "
                      f"`python -m lair.train` run")
  return f"{__file__}:{config_json}"


def load_config(path_with_arg: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """`configs/NAME.py[:ARG]` -> its get_config(ARG) with `--config.a.b=VALUE` overrides, locked.

  The same parsing as the command line (config_flags); the `--config.` prefix of an override
  is optional. Raises ConfigError naming the key at fault.
  """
  overrides = [o if o.startswith("--config.") else f"--config.{o}" for o in overrides]
  config, _ = parse_command_line(["lair", f"--config={path_with_arg}", *overrides],
                                 lambda _: None)
  return config
