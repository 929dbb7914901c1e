"""Dual-encoder retriever: one shared tower (default) or query/passage towers, pooling, head.

Params are a dict: `{"encoder": enc}` with shared towers, else
`{"query_encoder": enc, "passage_encoder": enc}`; plus `{"head": ...}` with a projection
(layout in pooling.py). Everything here is a pure function of (params, arrays, config).
"""
import dataclasses

import jax

from lair.models import bert
from lair.models import pooling

TOWERS = ("query", "passage")


@dataclasses.dataclass(frozen=True)
class RetrieverConfig:
  """How texts become embeddings: encoder tower(s), pooling, optional head, normalisation."""
  encoder: bert.EncoderConfig
  pooling: str = "mean"  # "mean" | "cls"
  projection: str = ""  # "" | "linear" | "mlp"
  projection_dim: int = 0  # 0: the encoder's hidden size.
  normalize: bool = True
  shared_towers: bool = True
  # Each head layer's activation (pooling.ACTIVATIONS); () is lair's own (GELU between layers).
  # Set for heads imported from sentence-transformers folders (hf.load_retriever).
  head_activations: tuple = ()

  def __post_init__(self):
    if self.pooling not in pooling.POOLINGS:
      raise ValueError(f"model.pooling={self.pooling!r} is not supported; expected one of "
                       f"{pooling.POOLINGS}.")
    if self.projection not in pooling.PROJECTIONS:
      raise ValueError(f"model.projection={self.projection!r} is not supported; expected one "
                       f"of {pooling.PROJECTIONS}.")
    if self.projection_dim < 0:
      raise ValueError(f"model.projection_dim={self.projection_dim} is negative; expected 0 (the "
                       f"encoder's hidden size) or a positive width.")
    if self.projection_dim and not self.projection:
      # Without a head nothing changes the width: a set projection_dim would be ignored silently.
      raise ValueError(f"model.projection_dim={self.projection_dim} needs a head; set "
                       f"model.projection to one of {[p for p in pooling.PROJECTIONS if p]} or "
                       f"projection_dim to 0.")

  @classmethod
  def from_dict(cls, fields: dict) -> "RetrieverConfig":
    """The inverse of `dataclasses.asdict` (model.json, lair_retriever.json)."""
    fields = dict(fields)
    fields["head_activations"] = tuple(fields.get("head_activations", ()))
    return cls(encoder=bert.EncoderConfig(**fields.pop("encoder")), **fields)

  @property
  def embedding_dim(self) -> int:
    """D, the size of the vectors `embed` returns."""
    if self.projection and self.projection_dim:
      return self.projection_dim
    return self.encoder.hidden_size


def retriever_config_from_config(model_cfg, encoder_config: bert.EncoderConfig):
  """RetrieverConfig from `config.model` (a ConfigDict) and the encoder's config."""
  return RetrieverConfig(
      encoder=encoder_config, pooling=model_cfg.pooling, projection=model_cfg.projection,
      projection_dim=model_cfg.projection_dim, normalize=model_cfg.normalize,
      shared_towers=model_cfg.shared_towers)


def encoder_params(params, tower: str):
  """The encoder params that embed texts of `tower` ("query" | "passage")."""
  if tower not in TOWERS:
    raise ValueError(f"tower={tower!r}; expected one of {TOWERS}.")
  if "encoder" in params:
    return params["encoder"]
  return params[f"{tower}_encoder"]


def init_retriever(rcfg: RetrieverConfig, rng, encoder_params=None) -> dict:
  """Retriever params; `encoder_params` (e.g. from `load_hf`) seed every tower when given.

  Separate towers start as copies of the imported encoder, or as two independent random inits.
  """
  # Three keys whatever the towers, so a seed gives the same encoder and head either way.
  enc_rng, passage_rng, head_rng = jax.random.split(rng, 3)
  if encoder_params is None:
    query_enc = bert.init_encoder(rcfg.encoder, enc_rng)
  else:
    query_enc = encoder_params
  if rcfg.shared_towers:
    params = {"encoder": query_enc}
  else:
    if encoder_params is None:
      passage_enc = bert.init_encoder(rcfg.encoder, passage_rng)
    else:
      # A real copy, so the towers never alias one buffer (donation, in-place updates).
      passage_enc = jax.tree.map(lambda x: x.copy(), encoder_params)
    params = {"query_encoder": query_enc, "passage_encoder": passage_enc}
  if rcfg.projection:
    params["head"] = pooling.init_head(rcfg.projection, rcfg.encoder.hidden_size,
                                       rcfg.embedding_dim, head_rng)
  return params


def embed(params, input_ids, attention_mask, *, rcfg: RetrieverConfig, tower: str = "query",
          train: bool = False, rng=None):
  """input_ids, attention_mask [B, L] -> embeddings [B, D] float32 (L2-normalised if asked)."""
  hidden = bert.encode(encoder_params(params, tower), input_ids, attention_mask,
                       config=rcfg.encoder, train=train, rng=rng)
  x = pooling.pool(hidden, attention_mask, rcfg.pooling)
  if rcfg.projection:
    x = pooling.apply_head(params["head"], x, rcfg.head_activations)
  if rcfg.normalize:
    x = pooling.l2_normalize(x)
  return x


def check_vocabulary(tokenizer, encoder_config: bert.EncoderConfig, source: str):
  """Raises if the tokenizer can emit ids past the embedding table of `source`."""
  if tokenizer is not None and len(tokenizer) > encoder_config.vocab_size:
    raise ValueError(
        f"{source}: the tokenizer has {len(tokenizer)} tokens but the embedding table has "
        f"vocab_size={encoder_config.vocab_size} rows; expected len(tokenizer) <= vocab_size.")


def trainable_mask(params, freeze_embeddings: bool):
  """Pytree of bools like `params`: False for the token embedding tables when frozen.

  For `optax.masked(tx, mask)` / `optax.multi_transform` (frozen leaves get no update).
  """
  def trainable(path, _):
    names = [getattr(k, "key", str(k)) for k in path]
    return not (freeze_embeddings and "word_embeddings" in names)
  return jax.tree_util.tree_map_with_path(trainable, params)


def stop_frozen_gradients(params):
  """`params` with the token embedding tables behind stop_gradient (see `trainable_mask`)."""
  frozen = trainable_mask(params, freeze_embeddings=True)
  return jax.tree.map(lambda p, keep: p if keep else jax.lax.stop_gradient(p), params, frozen)
