"""A retriever to use: loaded from a training run or an HF folder; texts in, vectors out.

    from lair import inference
    retriever = inference.load_retriever("runs/quickstart")               # the latest checkpoint
    retriever = inference.load_retriever("runs/quickstart", step="best")  # or a step number
    retriever = inference.load_retriever("~/.cache/lair/multilingual-e5-small")  # HF / s-t folder
    vectors = retriever.encode(["Wo wohnt Leon Novunt?"], kind="query")   # [1, D] float32

A run is restored from its checkpoint (`checkpoint.restore_run_params`), model.json and
tokenizer/, and encodes as its config.json says: model.query_prefix / passage_prefix,
eval.max_len (else data.max_query_len / max_passage_len), data.length_buckets and
eval.batch_size. An HF or
sentence-transformers folder is read by `lair.models.hf.load_retriever` with the modules it
declares (pooling, Dense, Normalize) and its prompts, which fill in prefixes the config leaves
empty. Texts are embedded by `lair.evaluate.encode.make_text_encoder`: length-sorted batches
sharded over every device.

`python -m lair.index`, `lair.search` and `lair.mine` name their model with the flags of
`define_model_flags` (--workdir [--step] or --hf) and load it with `from_flags`.
"""
import dataclasses
import json
import os
import sys
from typing import Optional, Sequence

from absl import flags
import jax
import ml_collections
import numpy as np

from lair import checkpoint
from lair import configs
from lair import workdir as workdir_lib
from lair.errors import ConfigError
from lair.evaluate import encode as encode_lib
from lair.models import hf
from lair.models import retriever as retriever_lib

KINDS = ("query", "passage")
# Texts per call of the batched encoder: the progress bar moves this often (the encoder
# length-sorts within a chunk, which loses little padding at this size).
_PROGRESS_CHUNK = 2048


@dataclasses.dataclass(frozen=True)
class Retriever:
  """A dual encoder and how it embeds texts: `encode(texts, kind) -> [N, D]`.

  `source` says where it came from: {"workdir": PATH, "step": N} (plus "requested_step":
  "best" when that named it) or {"hf": PATH}; `identity()` is what an index records.
  """
  params: dict = dataclasses.field(repr=False)
  rcfg: retriever_lib.RetrieverConfig
  tokenizer: object = dataclasses.field(repr=False)
  source: dict
  query_prefix: str = ""
  passage_prefix: str = ""
  max_query_len: int = 64
  max_passage_len: int = 128
  batch_size: int = 64
  buckets: tuple = (16, 32, 64, 128)
  _encoders: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

  @property
  def dim(self) -> int:
    """D, the width of the vectors."""
    return self.rcfg.embedding_dim

  def settings(self, kind: str) -> tuple[str, int]:
    """(prefix, max_len in tokens) of `kind` ("query" | "passage")."""
    if kind not in KINDS:
      raise ConfigError(f"kind={kind!r}: expected one of {KINDS}")
    max_len = int(self.max_query_len if kind == "query" else self.max_passage_len)
    # Never past the position table (a long max_len with a short model would index beyond it).
    max_len = min(max_len, self.rcfg.encoder.max_length)
    return (self.query_prefix if kind == "query" else self.passage_prefix), max_len

  def encode(self, texts: Sequence[str], kind: str = "query", *,
             progress: bool = False) -> np.ndarray:
    """`texts` [N] -> embeddings [N, D] float32 (unit length when the retriever normalises).

    Args:
      texts: strings; `kind`'s prefix is prepended and the tokens cut at its max length.
      kind: "query" or "passage" (the tower, prefix and max length that go with it).
      progress: show a progress bar (count, texts/s, time left) on stderr.
    """
    prefix, max_len = self.settings(kind)
    if isinstance(texts, str):
      raise TypeError("encode(texts): expected a list of strings, got one string")
    texts = list(texts)
    key = (kind, prefix, max_len, int(self.batch_size), tuple(self.buckets))
    if key not in self._encoders:
      self._encoders[key] = encode_lib.make_text_encoder(
          self.params, self.rcfg, self.tokenizer, batch_size=int(self.batch_size),
          max_len=max_len, prefix=prefix, tower=kind, buckets=tuple(self.buckets))
    encode = self._encoders[key]
    if not progress or len(texts) <= _PROGRESS_CHUNK:
      return encode(texts) if texts else np.zeros((0, self.dim), np.float32)
    import tqdm  # pylint: disable=g-import-not-at-top  (only for long encodes)
    out = np.zeros((len(texts), self.dim), np.float32)
    with tqdm.tqdm(total=len(texts), desc=f"embedding {kind}s", unit=" texts",
                   file=sys.stderr, mininterval=1.0, smoothing=0.1,
                   disable=jax.process_index() != 0) as bar:
      for start in range(0, len(texts), _PROGRESS_CHUNK):
        chunk = texts[start:start + _PROGRESS_CHUNK]
        out[start:start + len(chunk)] = encode(chunk)
        bar.update(len(chunk))
    return out

  def identity(self) -> dict:
    """JSON-able: where the model came from, its RetrieverConfig and how it embeds texts.

    As JSON reads it back (lists, not tuples), so an index built here and one loaded from disk
    record the same identity.
    """
    return _as_json({
        "source": dict(self.source), "retriever": dataclasses.asdict(self.rcfg),
        "dim": self.dim, "query_prefix": self.query_prefix,
        "passage_prefix": self.passage_prefix, "max_query_len": int(self.max_query_len),
        "max_passage_len": int(self.max_passage_len), "batch_size": int(self.batch_size),
        "buckets": [int(b) for b in self.buckets]})


def _settings(config: ml_collections.ConfigDict) -> dict:
  return dict(query_prefix=config.model.query_prefix,
              passage_prefix=config.model.passage_prefix,
              max_query_len=configs.eval_cut_off(config, config.data.max_query_len),
              max_passage_len=configs.eval_cut_off(config, config.data.max_passage_len),
              batch_size=int(config.eval.batch_size),
              buckets=tuple(int(b) for b in config.data.length_buckets))


def from_run(workdir: str, step=None, *,
             config: Optional[ml_collections.ConfigDict] = None) -> Retriever:
  """The retriever of a `python -m lair.train` run at `step` (None: latest; N; "best").

  `config` defaults to the run's config.json (prefixes, max lengths, batch size).
  """
  run = workdir_lib.Workdir(workdir)
  rcfg, tokenizer = run.read_model()
  if tokenizer is None:
    raise FileNotFoundError(f"{run.tokenizer_dir} not found: the run {run.root} saved no "
                            f"tokenizer, so its texts cannot be embedded")
  config = config if config is not None else run.read_config()
  restored_step, params = checkpoint.restore_run_params(run, step)
  source = {"workdir": run.root, "step": int(restored_step)}
  if step == "best":
    source["requested_step"] = "best"
  return Retriever(params=params["retriever"], rcfg=rcfg, tokenizer=tokenizer, source=source,
                   **_settings(config))


def from_hf(path: str, *, config: Optional[ml_collections.ConfigDict] = None) -> Retriever:
  """The retriever of a Hugging Face / sentence-transformers folder, as its modules declare.

  The folder's prompts ("query", "passage"/"document") fill in the prefixes that `config`
  (default: lair's defaults) leaves empty; model.pooling / model.normalize apply only to a
  plain HF encoder without sentence-transformers modules.
  """
  config = config if config is not None else configs.default_config()
  path = os.path.abspath(os.path.expanduser(str(path)))
  if not os.path.isdir(path):
    raise FileNotFoundError(f"--hf={path}: no such folder; expected a Hugging Face or "
                            f"sentence-transformers model folder")
  loaded = hf.load_retriever(path, pooling_default=config.model.pooling,
                             normalize_default=config.model.normalize, dtype=config.model.dtype)
  settings = _settings(config)
  settings["query_prefix"] = settings["query_prefix"] or loaded.prompts.get("query", "")
  settings["passage_prefix"] = settings["passage_prefix"] or loaded.prompts.get("passage", "")
  return Retriever(params=loaded.params, rcfg=loaded.rcfg, tokenizer=loaded.tokenizer,
                   source={"hf": path}, **settings)


def load_retriever(path: str, step=None, *,
                   config: Optional[ml_collections.ConfigDict] = None) -> Retriever:
  """A training run's retriever (a folder with model.json) or an HF folder's (any other).

  Args:
    path: a `python -m lair.train` workdir, or an HF / sentence-transformers folder (lair's
      exports included).
    step: for a run, the checkpoint: None (the latest), a step number or "best".
    config: how to embed (model prefixes, eval.max_len else data max lengths, eval.batch_size);
      default: the run's config.json, or lair's defaults and the folder's prompts for an HF
      folder.
  """
  if workdir_lib.Workdir(path).is_run():
    return from_run(path, step, config=config)
  if step is not None:
    raise ConfigError(f"step={step!r} given, but {path} is not a lair training run (no "
                      f"model.json); an HF folder has no steps")
  return from_hf(path, config=config)


def from_identity(identity: dict, **overrides) -> Retriever:
  """The retriever an index recorded (`Retriever.identity()`), with its recorded settings.

  A run named with step "best" is restored as "best" and must still be the step recorded (a
  run that kept training may have a better one since). `overrides` replace settings.
  """
  source = identity["source"]
  if "hf" in source:
    # A plain HF encoder takes its pooling and normalisation from the config: those recorded.
    config = configs.default_config()
    recorded = identity["retriever"]
    config.model.update(dict(pooling=recorded["pooling"], normalize=recorded["normalize"],
                             dtype=recorded["encoder"]["dtype"]))
    retriever = from_hf(source["hf"], config=config)
  else:
    step = source.get("requested_step", source["step"])
    retriever = from_run(source["workdir"], step)
    if retriever.source["step"] != source["step"]:
      raise ConfigError(
          f"the index was embedded with step {source['step']} of {source['workdir']}, but "
          f"its best step is now {retriever.source['step']}",
          hint="rebuild the index, or name the model with --workdir and --step")
  if _as_json(dataclasses.asdict(retriever.rcfg)) != _as_json(identity["retriever"]):
    where = source.get("hf") or source["workdir"]
    raise ConfigError(f"{where}: the model there is no longer the one the index was embedded "
                      f"with (its RetrieverConfig differs)",
                      hint="rebuild the index with python -m lair.index")
  settings = {key: identity[key] for key in ("query_prefix", "passage_prefix", "max_query_len",
                                             "max_passage_len", "batch_size")}
  settings["buckets"] = tuple(identity["buckets"])
  settings.update(overrides)
  return dataclasses.replace(retriever, _encoders={}, **settings)


def _as_json(value):
  return json.loads(json.dumps(value, sort_keys=True))


# ------------------------------------------------------------------------------------------------
# The command lines' model flags.
# ------------------------------------------------------------------------------------------------


def define_model_flags(fv: flags.FlagValues, *, required: bool = True) -> None:
  """--workdir, --step and --hf: the retriever a command line uses."""
  what = "" if required else " (default: the model that built the index)"
  flags.DEFINE_string("workdir", None, f"a lair training run whose retriever to use{what}",
                      flag_values=fv)
  flags.DEFINE_string("step", None, "the run's checkpoint step, or 'best' (default: the "
                      "latest)", flag_values=fv)
  flags.DEFINE_string("hf", None, f"a Hugging Face / sentence-transformers folder to use{what}",
                      flag_values=fv)


def default_config_file(argv: Sequence[str]) -> str:
  """--config's default: the --workdir run's saved config.json, else lair's defaults."""
  workdir, hf_dir = configs.flag_value(argv, "workdir"), configs.flag_value(argv, "hf")
  if workdir and not hf_dir and configs.flag_value(argv, "config") is None:
    return configs.saved_config_file(workdir_lib.Workdir(workdir).config_json)
  return configs.__file__


def model_named(fv: flags.FlagValues) -> bool:
  """Whether the command line names a model (--workdir or --hf)."""
  return bool(fv.workdir or fv.hf)


def from_flags(fv: flags.FlagValues, config: ml_collections.ConfigDict) -> Retriever:
  """The retriever named by --workdir [--step] or --hf, embedding as `config` says."""
  if fv.workdir and fv.hf:
    raise ConfigError(f"--workdir={fv.workdir} and --hf={fv.hf}: give one of them")
  if fv.hf:
    if fv.step:
      raise ConfigError(f"--step={fv.step} applies to --workdir runs, not to an --hf folder")
    return from_hf(fv.hf, config=config)
  if not fv.workdir:
    raise ConfigError("no model: give --workdir=RUN_DIR (a lair training run) or --hf=DIR (a "
                      "Hugging Face / sentence-transformers folder)")
  run = workdir_lib.Workdir(fv.workdir)
  if not run.is_run():
    raise FileNotFoundError(f"--workdir={fv.workdir}: {run.model_json} not found; expected the "
                            f"workdir of a `python -m lair.train` run")
  return from_run(fv.workdir, checkpoint.parse_step(fv.step), config=config)
