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
The HF pooler (`pooler.dense`) is not written: lair does not use it, so `AutoModel` initialises
it at random and `pooler_output` is meaningless; `last_hidden_state` is exact.
"""
import dataclasses
import json
import pathlib
from typing import Optional

import jax
import numpy as np
import safetensors.numpy

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
  """HF (BertModel, no prefix) name -> float32 numpy array, [out, in] linear weights."""
  state = {}
  for path, name, transpose in param_name_map(config.num_layers):
    value = params
    for key in path:
      value = value[key]
    value = np.asarray(value, np.float32)
    state[name] = np.ascontiguousarray(value.T if transpose else value)
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
    sizes = pooling.head_layer_sizes(rcfg.projection, hidden, rcfg.embedding_dim)
    for i, (n_in, n_out) in enumerate(sizes):
      # The MLP's hidden layer is followed by exact GELU (torch's default); the last is linear.
      activation = ("torch.nn.modules.activation.GELU" if i < len(sizes) - 1
                    else "torch.nn.modules.linear.Identity")
      folder = add("Dense")
      _write_json(folder / "config.json", {"in_features": n_in, "out_features": n_out,
                                           "bias": True, "activation_function": activation})
      layer = params["head"][f"dense_{i}"]
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
              prompts: Optional[dict] = None) -> pathlib.Path:
  """Writes retriever `params` as an HF + sentence-transformers directory; returns its path.

  Shared towers: one directory. Separate towers: the query tower in `out_dir` and the passage
  tower in `out_dir/passage_encoder` (layout in the module docstring). `prompts` (e.g.
  {"query": "query: ", "passage": "passage: "}) become sentence-transformers prompts, so
  `model.encode(texts, prompt_name="query")` adds the prefix the model was trained with.
  """
  out = pathlib.Path(out_dir)
  if not hasattr(tokenizer, "save_pretrained"):
    raise TypeError(f"export_hf({str(out)!r}) needs a transformers tokenizer (with "
                    f"save_pretrained), got {type(tokenizer).__name__}.")
  retriever.check_vocabulary(tokenizer, rcfg.encoder, f"export_hf({str(out)!r})")
  params = jax.device_get(params)
  prompts = {name: text for name, text in (prompts or {}).items() if text}
  _export_tower(retriever.encoder_params(params, "query"), params, rcfg, tokenizer, out, prompts)
  if not rcfg.shared_towers:
    _export_tower(retriever.encoder_params(params, "passage"), params, rcfg, tokenizer,
                  out / "passage_encoder", prompts)
  return out
