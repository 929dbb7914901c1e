"""Hugging Face import (`load_hf`) and export (`export_hf`) of lair's encoders.

Import reads `config.json`, the weights (`model.safetensors`, `pytorch_model.bin`, or their
sharded `*.index.json` forms) and the tokenizer (`transformers.AutoTokenizer`), and maps
PyTorch names/layouts to lair's Flax params (`nn.Linear` weights are [out, in]; Flax kernels are
[in, out]). Checkpoints of task models (`bert.` / `roberta.` prefixes, MLM heads) import their
encoder; the pooler and heads are dropped since lair pools itself.

Export writes a directory that both `transformers.AutoModel` and
`sentence_transformers.SentenceTransformer` load offline:

  config.json, model.safetensors, tokenizer files     the encoder (BertModel / XLMRobertaModel)
  modules.json, sentence_bert_config.json             the sentence-transformers pipeline
  1_Pooling/config.json                               "cls" or "mean" pooling
  2_Dense[, 3_Dense]/{config.json, model.safetensors} the projection head, one Dense per layer
  N_Normalize/                                        when the retriever L2-normalises
  lair_retriever.json                                 lair's RetrieverConfig, for reference

With separate towers the top level holds the query tower and `passage_encoder/` holds the
passage tower as a second, complete directory of the same form (both share the head).
lair does not train BERT's pooler; the export writes it as the identity (`pooler_output` is
tanh of the CLS state), so `AutoModel` loads every weight it expects and says nothing.

`load_retriever` reads any such folder back, lair's exports and third-party sentence-transformers
models alike, with the modules it declares: pooling mode, Dense layers, Normalize and prompts.
"""
import dataclasses
import json
import pathlib
from typing import Optional

import jax
import numpy as np
import safetensors.numpy

from lair import errors
from lair import files
from lair.models import bert
from lair.models import pooling
from lair.models import retriever

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "sentencepiece.bpe.model", "spiece.model",
                    "tokenizer.model", "vocab.json")
_ARCHITECTURES = {"bert": "BertModel", "xlm-roberta": "XLMRobertaModel",
                  "roberta": "RobertaModel"}
# HF config.json key -> EncoderConfig field.
_CONFIG_KEYS = {
    "model_type": "model_type", "vocab_size": "vocab_size", "hidden_size": "hidden_size",
    "num_hidden_layers": "num_layers", "num_attention_heads": "num_heads",
    "intermediate_size": "intermediate_size",
    "max_position_embeddings": "max_position_embeddings", "type_vocab_size": "type_vocab_size",
    "layer_norm_eps": "layer_norm_eps", "hidden_dropout_prob": "hidden_dropout",
    "attention_probs_dropout_prob": "attention_dropout", "pad_token_id": "pad_token_id"}


def _linear(flax_prefix, hf_prefix):
  return [(flax_prefix + ("kernel",), hf_prefix + ".weight", True),
          (flax_prefix + ("bias",), hf_prefix + ".bias", False)]


def _layer_norm(flax_prefix, hf_prefix):
  return [(flax_prefix + ("scale",), hf_prefix + ".weight", False),
          (flax_prefix + ("bias",), hf_prefix + ".bias", False)]


def param_name_map(num_layers: int):
  """[(flax path tuple, HF name without model prefix, transpose?)] for every encoder param."""
  names = [(("embeddings", e, "embedding"), f"embeddings.{e}.weight", False)
           for e in ("word_embeddings", "position_embeddings", "token_type_embeddings")]
  names += _layer_norm(("embeddings", "LayerNorm"), "embeddings.LayerNorm")
  for i in range(num_layers):
    ours, theirs = f"layer_{i}", f"encoder.layer.{i}"
    for proj in ("query", "key", "value"):
      names += _linear((ours, "attention", proj), f"{theirs}.attention.self.{proj}")
    names += _linear((ours, "attention", "output"), f"{theirs}.attention.output.dense")
    names += _layer_norm((ours, "attention_LayerNorm"), f"{theirs}.attention.output.LayerNorm")
    names += _linear((ours, "intermediate"), f"{theirs}.intermediate.dense")
    names += _linear((ours, "output"), f"{theirs}.output.dense")
    names += _layer_norm((ours, "output_LayerNorm"), f"{theirs}.output.LayerNorm")
  return names


# ---------------------------------------------------------------------------------------------
# Import.


def looks_like_hub_name(path_or_name: str) -> bool:
  """"org/name" (a Hugging Face hub model id) rather than a local path."""
  text = str(path_or_name)
  return (text.count("/") == 1 and not text.startswith((".", "/", "~"))
          and not pathlib.Path(text).exists())


def _resolve(path_or_name: str) -> pathlib.Path:
  """A local directory, or a hub snapshot where the hub is reachable."""
  path = pathlib.Path(path_or_name).expanduser()
  if path.is_dir():
    return path
  try:
    import huggingface_hub  # pylint: disable=g-import-not-at-top
    return pathlib.Path(huggingface_hub.snapshot_download(
        str(path_or_name), allow_patterns=["*.json", "*.safetensors", "*.bin", "*.model",
                                           "*.txt"]))
  except Exception as e:  # pylint: disable=broad-except  (offline, unknown repo, ...)
    raise FileNotFoundError(
        f"{path_or_name!r} is not a local directory and could not be fetched from the "
        f"Hugging Face hub ({type(e).__name__}: {e}).") from e


def _encoder_config_from_json(config_file: pathlib.Path) -> bert.EncoderConfig:
  hf = json.loads(config_file.read_text())
  model_type = hf.get("model_type")
  if model_type not in bert.SUPPORTED_MODEL_TYPES:
    raise ValueError(f"{config_file}: model_type={model_type!r} is not supported; expected one "
                     f"of {sorted(bert.SUPPORTED_MODEL_TYPES)}.")
  if hf.get("hidden_act", "gelu") != "gelu":
    raise ValueError(f"{config_file}: hidden_act={hf['hidden_act']!r}; lair's encoder "
                     "implements only 'gelu' (exact erf form).")
  if hf.get("position_embedding_type", "absolute") != "absolute":
    raise ValueError(f"{config_file}: position_embedding_type="
                     f"{hf['position_embedding_type']!r}; expected 'absolute'.")
  missing = [k for k in _CONFIG_KEYS if k not in hf and k != "pad_token_id"]
  if missing:
    raise ValueError(f"{config_file}: missing keys {missing}.")
  fields = {ours: hf[theirs] for theirs, ours in _CONFIG_KEYS.items() if theirs in hf}
  if fields.get("pad_token_id") is None:
    fields["pad_token_id"] = 0
  return bert.EncoderConfig(**fields)


def _read_tensors(weights_file: pathlib.Path) -> dict:
  """name -> np.ndarray (float32) from one safetensors / PyTorch file."""
  if weights_file.suffix == ".safetensors":
    with safetensors.safe_open(str(weights_file), framework="np") as f:
      names = list(f.keys())
      if not any("BF16" in str(f.get_slice(k).get_dtype()) for k in names):
        return {k: f.get_tensor(k) for k in names}
  # NumPy has no bfloat16: such safetensors, and legacy .bin checkpoints, are read by torch.
  import torch  # pylint: disable=g-import-not-at-top
  if weights_file.suffix == ".safetensors":
    with safetensors.safe_open(str(weights_file), framework="pt") as f:
      state = {k: f.get_tensor(k) for k in f.keys()}
  else:
    state = torch.load(str(weights_file), map_location="cpu", weights_only=True)
  return {k: v.float().numpy() for k, v in state.items()}


def _read_checkpoint(directory: pathlib.Path):
  """(name -> array, the weights file read) from the first weights format present."""
  for name in _WEIGHT_FILES:
    weights_file = directory / name
    if not weights_file.exists():
      continue
    if name.endswith(".index.json"):
      shards = sorted(set(json.loads(weights_file.read_text())["weight_map"].values()))
      tensors = {}
      for shard in shards:
        tensors.update(_read_tensors(directory / shard))
      return tensors, weights_file
    return _read_tensors(weights_file), weights_file
  raise FileNotFoundError(f"{directory}: no weights found; expected one of {list(_WEIGHT_FILES)}.")


def _strip_model_prefix(tensors: dict, weights_file: pathlib.Path) -> dict:
  """Drops a task model's prefix ("bert.", "roberta.", ...) from the encoder's names."""
  anchor = "embeddings.word_embeddings.weight"
  hits = [k for k in tensors if k == anchor or k.endswith("." + anchor)]
  if not hits:
    raise ValueError(f"{weights_file}: no tensor named '{anchor}' (with or without a model "
                     "prefix such as 'bert.'); is this a BERT/XLM-R encoder checkpoint?")
  prefix = min(hits, key=len)[:-len(anchor)]
  stripped = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
  # Very old checkpoints name LayerNorm params gamma/beta.
  return {k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta",
                                                                   "LayerNorm.bias"): v
          for k, v in stripped.items()}


def _set_path(tree: dict, path, value):
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def encoder_params_from_torch(tensors: dict, config: bert.EncoderConfig, source: str) -> dict:
  """Flax encoder params from HF tensors (names without prefix); checks every shape."""
  expected = jax.eval_shape(lambda: bert.init_encoder(config, jax.random.key(0)))
  params = {}
  for path, name, transpose in param_name_map(config.num_layers):
    if name not in tensors:
      raise ValueError(f"{source}: tensor '{name}' is missing.")
    value = np.asarray(tensors[name], np.float32)
    if transpose:
      value = value.T
    want = expected
    for key in path:
      want = want[key]
    if value.shape != want.shape:
      shape = value.T.shape if transpose else value.shape
      want_shape = tuple(reversed(want.shape)) if transpose else want.shape
      raise ValueError(f"{source}: tensor '{name}' has shape {shape} but config.json implies "
                       f"{want_shape}.")
    _set_path(params, path, value)
  return params


def load_hf(path_or_name: str):
  """(EncoderConfig, encoder params, tokenizer) from an HF directory or hub name."""
  import transformers  # pylint: disable=g-import-not-at-top
  directory = _resolve(path_or_name)
  config_file = directory / "config.json"
  if not config_file.exists():
    raise FileNotFoundError(f"{directory}: no config.json; expected a Hugging Face model "
                            "directory.")
  config = _encoder_config_from_json(config_file)
  tensors, weights_file = _read_checkpoint(directory)
  params = encoder_params_from_torch(_strip_model_prefix(tensors, weights_file), config,
                                     str(weights_file))
  # transformers 5 silently builds an empty vocabulary (special tokens only) without these.
  if not any((directory / f).exists() for f in _TOKENIZER_FILES):
    raise FileNotFoundError(f"{directory}: no tokenizer files; expected one of "
                            f"{list(_TOKENIZER_FILES)}.")
  try:
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
  except (OSError, ValueError) as e:
    raise ValueError(f"{directory}: could not load a tokenizer with transformers.AutoTokenizer "
                     f"(expected tokenizer.json or the files of a slow tokenizer): {e}") from e
  retriever.check_vocabulary(tokenizer, config, str(directory))
  return config, params, tokenizer


# ---------------------------------------------------------------------------------------------
# Export.


def hf_config_dict(config: bert.EncoderConfig) -> dict:
  """config.json contents for `transformers.AutoModel` (BertModel / XLMRobertaModel / ...)."""
  hf = {theirs: getattr(config, ours) for theirs, ours in _CONFIG_KEYS.items()}
  hf.update(architectures=[_ARCHITECTURES[config.model_type]], hidden_act="gelu",
            position_embedding_type="absolute", initializer_range=0.02, dtype="float32")
  return hf


def torch_state_from_encoder_params(params, config: bert.EncoderConfig) -> dict:
  """HF (BertModel, no prefix) name -> float32 numpy array, [out, in] linear weights.

  Includes an identity pooler (lair trains none; see the module docstring).
  """
  state = {}
  for path, name, transpose in param_name_map(config.num_layers):
    value = params
    for key in path:
      value = value[key]
    value = np.asarray(value, np.float32)
    state[name] = np.ascontiguousarray(value.T if transpose else value)
  state["pooler.dense.weight"] = np.eye(config.hidden_size, dtype=np.float32)
  state["pooler.dense.bias"] = np.zeros((config.hidden_size,), np.float32)
  return state


def _write_json(path: pathlib.Path, obj):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(obj, indent=2) + "\n")


def _sentence_transformers_modules(out: pathlib.Path, params, rcfg: retriever.RetrieverConfig,
                                   prompts: dict):
  """Writes modules.json and the module folders that follow the encoder (pooling, head, norm)."""
  hidden = rcfg.encoder.hidden_size
  modules = [{"idx": 0, "name": "0", "path": "",
              "type": "sentence_transformers.models.Transformer"}]

  def add(kind):
    idx = len(modules)
    path = f"{idx}_{kind}"
    modules.append({"idx": idx, "name": str(idx), "path": path,
                    "type": f"sentence_transformers.models.{kind}"})
    return out / path

  _write_json(out / "sentence_bert_config.json",
              {"max_seq_length": rcfg.encoder.max_length, "do_lower_case": False})
  _write_json(add("Pooling") / "config.json", {
      "word_embedding_dimension": hidden,
      "pooling_mode_cls_token": rcfg.pooling == "cls",
      "pooling_mode_mean_tokens": rcfg.pooling == "mean",
      "pooling_mode_max_tokens": False,
      "pooling_mode_mean_sqrt_len_tokens": False,
      "pooling_mode_weightedmean_tokens": False,
      "pooling_mode_lasttoken": False,
      "include_prompt": True})
  if rcfg.projection:
    head = params["head"]
    activations = pooling.head_activations(len(head), rcfg.head_activations)
    for i, act in enumerate(activations):
      layer = head[f"dense_{i}"]
      n_in, n_out = np.shape(layer["kernel"])
      folder = add("Dense")
      _write_json(folder / "config.json", {"in_features": n_in, "out_features": n_out,
                                           "bias": True,
                                           "activation_function": _TORCH_ACTIVATIONS[act]})
      safetensors.numpy.save_file(
          {"linear.weight": np.ascontiguousarray(np.asarray(layer["kernel"], np.float32).T),
           "linear.bias": np.asarray(layer["bias"], np.float32)},
          str(folder / "model.safetensors"), metadata={"format": "pt"})
  if rcfg.normalize:
    add("Normalize").mkdir(parents=True, exist_ok=True)
  _write_json(out / "modules.json", modules)
  _write_json(out / "config_sentence_transformers.json",
              {"similarity_fn_name": "cosine" if rcfg.normalize else "dot",
               "prompts": prompts, "default_prompt_name": None})


def _export_tower(enc_params, params, rcfg, tokenizer, out: pathlib.Path, prompts):
  out.mkdir(parents=True, exist_ok=True)
  enc_cfg = dataclasses.replace(rcfg.encoder, dtype="float32")
  _write_json(out / "config.json", hf_config_dict(enc_cfg))
  safetensors.numpy.save_file(torch_state_from_encoder_params(enc_params, enc_cfg),
                              str(out / "model.safetensors"), metadata={"format": "pt"})
  tokenizer.save_pretrained(str(out))
  _sentence_transformers_modules(out, params, rcfg, prompts)
  _write_json(out / "lair_retriever.json", dataclasses.asdict(rcfg))


def export_hf(params, rcfg: retriever.RetrieverConfig, tokenizer, out_dir,
              prompts: Optional[dict] = None, *, overwrite: bool = False) -> pathlib.Path:
  """Writes retriever `params` as an HF + sentence-transformers directory; returns its path.

  Shared towers: one directory. Separate towers: the query tower in `out_dir` and the passage
  tower in `out_dir/passage_encoder` (layout in the module docstring). `prompts` (e.g.
  {"query": "query: ", "passage": "passage: "}) become sentence-transformers prompts, so
  `model.encode(texts, prompt_name="query")` adds the prefix the model was trained with.

  The folder is written beside `out_dir` and swapped in whole: an existing non-empty `out_dir`
  is an error unless `overwrite`, which replaces it (nothing of the old folder is left in it),
  and only when it is a model folder (config.json at its top), so a mistyped --out cannot
  delete a folder of other files.
  """
  out = pathlib.Path(out_dir).expanduser()
  if not hasattr(tokenizer, "save_pretrained"):
    raise TypeError(f"export_hf({str(out)!r}) needs a transformers tokenizer (with "
                    f"save_pretrained), got {type(tokenizer).__name__}.")
  if out.exists() and (not out.is_dir() or any(out.iterdir())):
    if not overwrite:
      raise errors.ConfigError(f"--out={out}: the folder exists and is not empty",
                               hint="pass --overwrite to replace it whole, or choose another --out")
    if not (out / "config.json").is_file():
      raise errors.ConfigError(
          f"--out={out}: the folder is not empty and holds no config.json; --overwrite replaces "
          f"only a model folder, as an export writes", hint="choose a new or empty --out folder")
  retriever.check_vocabulary(tokenizer, rcfg.encoder, f"export_hf({str(out)!r})")
  params = jax.device_get(params)
  prompts = {name: text for name, text in (prompts or {}).items() if text}

  def write(folder):
    folder = pathlib.Path(folder)
    _export_tower(retriever.encoder_params(params, "query"), params, rcfg, tokenizer, folder,
                  prompts)
    if not rcfg.shared_towers:
      _export_tower(retriever.encoder_params(params, "passage"), params, rcfg, tokenizer,
                    folder / "passage_encoder", prompts)

  files.replace_folder(str(out), write)
  return out


# ---------------------------------------------------------------------------------------------
# Reading a sentence-transformers folder back: `load_retriever`.

_TORCH_ACTIVATIONS = {"identity": "torch.nn.modules.linear.Identity",
                      "gelu": "torch.nn.modules.activation.GELU",
                      "tanh": "torch.nn.modules.activation.Tanh",
                      "relu": "torch.nn.modules.activation.ReLU"}
_ST = "sentence_transformers.models."
# Prompt names third-party models use for the passage side.
_PASSAGE_PROMPTS = ("passage", "document", "corpus", "doc")


@dataclasses.dataclass
class LoadedRetriever:
  """A retriever read from an HF / sentence-transformers folder."""
  rcfg: retriever.RetrieverConfig
  params: dict
  tokenizer: object
  prompts: dict  # {"query": prefix, "passage": prefix}, empty strings when the folder has none.


def _activation_name(torch_name: str, where: pathlib.Path) -> str:
  for name, full in _TORCH_ACTIVATIONS.items():
    if torch_name in (full, full.rsplit(".", 1)[-1], f"torch.nn.{full.rsplit('.', 1)[-1]}"):
      return name
  raise errors.ConfigError(f"{where}: activation_function={torch_name!r} is not supported; "
                           f"expected one of {sorted(_TORCH_ACTIVATIONS.values())}")


def _pooling_mode(config_file: pathlib.Path) -> str:
  cfg = json.loads(config_file.read_text())
  modes = [m for m in ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens",
                       "weightedmean_tokens", "lasttoken") if cfg.get(f"pooling_mode_{m}")]
  if modes not in (["cls_token"], ["mean_tokens"]):
    raise errors.ConfigError(f"{config_file}: pooling modes {modes or 'none'}; lair pools with "
                             f"exactly one of cls_token or mean_tokens")
  if not cfg.get("include_prompt", True):
    raise errors.ConfigError(f"{config_file}: include_prompt=false (pooling without the prompt's "
                             f"tokens) is not supported")
  return "cls" if modes == ["cls_token"] else "mean"


def _dense_layer(folder: pathlib.Path):
  """({"kernel": [in, out], "bias": [out]}, activation name) of one sentence-transformers Dense."""
  cfg = json.loads((folder / "config.json").read_text())
  weights_file = next((folder / n for n in ("model.safetensors", "pytorch_model.bin")
                       if (folder / n).exists()), None)
  if weights_file is None:
    raise FileNotFoundError(f"{folder}: a Dense module without model.safetensors or "
                            f"pytorch_model.bin")
  tensors = _read_tensors(weights_file)
  kernel = np.asarray(tensors["linear.weight"], np.float32).T
  bias = tensors.get("linear.bias")
  bias = np.zeros((kernel.shape[1],), np.float32) if bias is None else np.asarray(bias, np.float32)
  if kernel.shape != (cfg["in_features"], cfg["out_features"]):
    raise ValueError(f"{weights_file}: linear.weight is {kernel.T.shape} but config.json says "
                     f"[{cfg['out_features']}, {cfg['in_features']}]")
  activation = _activation_name(cfg.get("activation_function", "torch.nn.modules.activation.Tanh"),
                                folder / "config.json")
  return {"kernel": kernel, "bias": bias}, activation


def load_retriever(path: str, *, pooling_default: str = "mean", normalize_default: bool = True,
                   dtype: str = "float32") -> LoadedRetriever:
  """A retriever from an HF or sentence-transformers folder, as its modules declare.

  With modules.json (sentence-transformers, lair's exports included): the Transformer module's
  encoder, its Pooling mode (cls or mean), each Dense layer (weights and activation), Normalize,
  and the prompts of config_sentence_transformers.json ("query"; "passage", "document" or
  "corpus"). A lair export with separate towers also brings `passage_encoder/`. Any other module
  is an error naming it. Without modules.json (a plain HF encoder): `pooling_default` and
  `normalize_default`, no head, no prompts.
  """
  directory = _resolve(path)
  modules_file = directory / "modules.json"
  if not modules_file.exists():
    enc_cfg, enc_params, tokenizer = load_hf(str(directory))
    rcfg = retriever.RetrieverConfig(encoder=dataclasses.replace(enc_cfg, dtype=dtype),
                                     pooling=pooling_default, normalize=normalize_default)
    return LoadedRetriever(rcfg, {"encoder": enc_params}, tokenizer, {"query": "", "passage": ""})
  encoder_dir, pool_mode, normalize, head, activations = None, None, False, {}, []
  for module in json.loads(modules_file.read_text()):
    kind = module.get("type", "")
    folder = directory / module.get("path", "")
    if kind == _ST + "Transformer":
      encoder_dir = folder
    elif kind == _ST + "Pooling":
      pool_mode = _pooling_mode(folder / "config.json")
    elif kind == _ST + "Dense":
      head[f"dense_{len(head)}"], act = _dense_layer(folder)
      activations.append(act)
    elif kind == _ST + "Normalize":
      normalize = True
    else:
      raise errors.ConfigError(f"{modules_file}: module {kind!r} is not supported (lair reads "
                               f"Transformer, Pooling, Dense and Normalize)")
  if encoder_dir is None or pool_mode is None:
    raise errors.ConfigError(f"{modules_file}: expected a Transformer and a Pooling module")
  enc_cfg, enc_params, tokenizer = load_hf(str(encoder_dir))
  params = {"encoder": enc_params}
  shared = not (directory / "passage_encoder" / "modules.json").exists()
  if not shared:
    _, passage_params, _ = load_hf(str(directory / "passage_encoder"))
    params = {"query_encoder": enc_params, "passage_encoder": passage_params}
  projection, projection_dim = "", 0
  if head:
    projection = "linear" if len(head) == 1 else "mlp"
    projection_dim = int(head[f"dense_{len(head) - 1}"]["kernel"].shape[1])
    params["head"] = head
  rcfg = retriever.RetrieverConfig(
      encoder=dataclasses.replace(enc_cfg, dtype=dtype), pooling=pool_mode,
      projection=projection, projection_dim=projection_dim, normalize=normalize,
      shared_towers=shared,
      head_activations=tuple(activations) if head else ())
  prompts = {"query": "", "passage": ""}
  st_config = directory / "config_sentence_transformers.json"
  if st_config.exists():
    declared = json.loads(st_config.read_text()).get("prompts") or {}
    prompts["query"] = declared.get("query", "")
    prompts["passage"] = next((declared[k] for k in _PASSAGE_PROMPTS if declared.get(k)), "")
  return LoadedRetriever(rcfg, params, tokenizer, prompts)
