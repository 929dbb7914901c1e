"""Building a retriever from `config.model`: a pretrained Hugging Face encoder or a fresh one."""
import dataclasses
import os

from lair.models import bert
from lair.models import hf
from lair.models import pooling
from lair.models import retriever


def build_from_config(model_cfg, *, tokenizer=None, rng):
  """(RetrieverConfig, params, tokenizer) from `config.model`.

  With `model_cfg.hf_path` the encoder (and, unless one is passed, its tokenizer) is imported
  by `load_hf`; otherwise a random encoder is built from `model_cfg.encoder`, whose
  vocab_size = 0 means len(tokenizer) and whose pad id is the tokenizer's.
  `model_cfg`'s RUN_OPTIONS set how the encoder runs (lair/models/bert.py).
  """
  run_options = {key: model_cfg[key] for key in RUN_OPTIONS}
  if model_cfg.hf_path:
    enc_cfg, enc_params, hf_tokenizer = hf.load_hf(model_cfg.hf_path)  # Checks its tokenizer.
    enc_cfg = dataclasses.replace(enc_cfg, **run_options)
    if tokenizer is None:
      tokenizer = hf_tokenizer
    else:
      retriever.check_vocabulary(tokenizer, enc_cfg, f"model.hf_path={model_cfg.hf_path!r}")
  else:
    e = model_cfg.encoder
    vocab_size = e.vocab_size
    if not vocab_size:
      if tokenizer is None:
        raise ValueError("model.encoder.vocab_size=0 takes the tokenizer's size, but no "
                         "tokenizer was given; pass one or set model.encoder.vocab_size.")
      vocab_size = len(tokenizer)
    pad_id = getattr(tokenizer, "pad_token_id", None)
    enc_cfg = bert.EncoderConfig(
        model_type=e.model_type, vocab_size=vocab_size, hidden_size=e.hidden_size,
        num_layers=e.num_layers, num_heads=e.num_heads, intermediate_size=e.intermediate_size,
        max_position_embeddings=e.max_position_embeddings, type_vocab_size=e.type_vocab_size,
        layer_norm_eps=e.layer_norm_eps, hidden_dropout=e.hidden_dropout,
        attention_dropout=e.attention_dropout, pad_token_id=pad_id if pad_id is not None else 0,
        **run_options)
    retriever.check_vocabulary(tokenizer, enc_cfg, "model.encoder.vocab_size")
    enc_params = None
  rcfg = retriever.retriever_config_from_config(model_cfg, enc_cfg)
  return rcfg, retriever.init_retriever(rcfg, rng, enc_params), tokenizer


# config.model keys that set how the encoder runs, not what it computes (EncoderConfig fields).
RUN_OPTIONS = ("dtype", "activation_dtype", "attention", "remat")
HF_PATH_HINT = ("--config.model.hf_path must be a local Hugging Face model folder (config.json, "
                "weights, tokenizer files), e.g. one written by `huggingface-cli download "
                "intfloat/multilingual-e5-small --local-dir DIR` where the hub is reachable; "
                "leave it empty to train an encoder from scratch (config.model.encoder)")


def config_errors(model_cfg) -> list[str]:
  """What is wrong with `config.model` (one line per key), without loading anything."""
  errors = []
  choices = {"pooling": pooling.POOLINGS, "projection": pooling.PROJECTIONS,
             "dtype": bert.DTYPES, "activation_dtype": bert.DTYPES, "attention": bert.ATTENTIONS,
             "remat": tuple(bert.REMAT_POLICIES)}
  for key, allowed in choices.items():
    if model_cfg[key] not in allowed:
      errors.append(f"config.model.{key}={model_cfg[key]!r}: expected one of {allowed}")
  if model_cfg.projection_dim < 0 or (model_cfg.projection_dim and not model_cfg.projection):
    errors.append(f"config.model.projection_dim={model_cfg.projection_dim}: expected 0, or a "
                  f"positive width with config.model.projection set")
  if model_cfg.hf_path:
    if not hf.looks_like_hub_name(model_cfg.hf_path) and not os.path.isdir(
        os.path.expanduser(model_cfg.hf_path)):
      errors.append(f"config.model.hf_path={model_cfg.hf_path!r}: no such folder")
  else:
    e = model_cfg.encoder
    if e.model_type not in bert.SUPPORTED_MODEL_TYPES:
      errors.append(f"config.model.encoder.model_type={e.model_type!r}: expected one of "
                    f"{sorted(bert.SUPPORTED_MODEL_TYPES)}")
    for key in ("hidden_size", "num_layers", "num_heads", "intermediate_size",
                "max_position_embeddings"):
      if int(e[key]) <= 0:
        errors.append(f"config.model.encoder.{key}={e[key]}: expected a positive integer")
    if int(e.num_heads) > 0 and int(e.hidden_size) % int(e.num_heads):
      errors.append(f"config.model.encoder.hidden_size={e.hidden_size}: expected a multiple of "
                    f"num_heads={e.num_heads}")
  return errors
