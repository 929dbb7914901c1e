"""BERT-family text encoder (BERT, XLM-R, RoBERTa) as a Flax linen module used purely.

Semantics follow Hugging Face's `modeling_bert` / `modeling_xlm_roberta` so that imported
checkpoints give the same hidden states: learned absolute positions (offset by
`pad_token_id + 1` and skipping pad tokens for XLM-R/RoBERTa), token type 0 everywhere,
post-LayerNorm residual blocks, exact (erf) GELU, and padded keys masked with a large negative
bias. Params are float32; `EncoderConfig.dtype` sets the compute dtype.

Params layout (names mirror HF's so the mapping in `hf.py` stays a flat table):

  embeddings/{word_embeddings, position_embeddings, token_type_embeddings}/embedding
  embeddings/LayerNorm/{scale, bias}
  layer_{i}/attention/{query, key, value, output}/{kernel [H, H], bias [H]}
  layer_{i}/attention_LayerNorm/{scale, bias}
  layer_{i}/intermediate/{kernel [H, I], bias [I]}
  layer_{i}/output/{kernel [I, H], bias [H]}
  layer_{i}/output_LayerNorm/{scale, bias}
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

# model_type -> whether positions are offset by pad_token_id + 1 and skip pad tokens.
SUPPORTED_MODEL_TYPES = {"bert": False, "xlm-roberta": True, "roberta": True}


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """Shape and behaviour of one encoder tower (a subset of HF's config.json)."""
  vocab_size: int
  model_type: str = "bert"
  hidden_size: int = 128
  num_layers: int = 2
  num_heads: int = 2
  intermediate_size: int = 512
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_dropout: float = 0.1
  attention_dropout: float = 0.1
  pad_token_id: int = 0
  dtype: str = "float32"  # Compute dtype ("float32" | "bfloat16"); params stay float32.

  def __post_init__(self):
    if self.model_type not in SUPPORTED_MODEL_TYPES:
      raise ValueError(
          f"EncoderConfig.model_type={self.model_type!r} is not supported; expected one of "
          f"{sorted(SUPPORTED_MODEL_TYPES)}.")
    if self.hidden_size % self.num_heads:
      raise ValueError(f"EncoderConfig.hidden_size={self.hidden_size} is not divisible by "
                       f"num_heads={self.num_heads}.")
    if self.vocab_size <= 0:
      raise ValueError(f"EncoderConfig.vocab_size must be > 0, got {self.vocab_size}.")

  @property
  def offset_positions(self) -> bool:
    """True for XLM-R/RoBERTa: positions start at pad_token_id + 1 and skip pads."""
    return SUPPORTED_MODEL_TYPES[self.model_type]

  @property
  def max_length(self) -> int:
    """Longest input (tokens) the position table can hold."""
    if self.offset_positions:
      return self.max_position_embeddings - self.pad_token_id - 1
    return self.max_position_embeddings


def position_ids(input_ids, config: EncoderConfig):
  """Position ids [B, L] int32 as HF computes them.

  BERT: 0..L-1. XLM-R/RoBERTa: non-pad tokens are numbered from pad_token_id + 1 in order and
  pad tokens get pad_token_id (fairseq's `make_positions`), so left padding is handled too.
  """
  batch, length = input_ids.shape
  if not config.offset_positions:
    return jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
  not_pad = (input_ids != config.pad_token_id).astype(jnp.int32)
  return jnp.cumsum(not_pad, axis=1) * not_pad + config.pad_token_id


def _dense(features, name, config):
  return nn.Dense(features, name=name, dtype=jnp.dtype(config.dtype), param_dtype=jnp.float32,
                  kernel_init=nn.initializers.normal(0.02))


def _layer_norm(name, config):
  return nn.LayerNorm(epsilon=config.layer_norm_eps, name=name, dtype=jnp.dtype(config.dtype),
                      param_dtype=jnp.float32)


class SelfAttention(nn.Module):
  """Multi-head self-attention over [B, L, H] with padded keys masked."""
  config: EncoderConfig

  @nn.compact
  def __call__(self, x, attention_mask, train: bool):
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    batch, length, hidden = x.shape
    head_dim = hidden // cfg.num_heads

    def heads(name):  # [B, L, H] -> [B, L, heads, head_dim]
      return _dense(hidden, name, cfg)(x).reshape(batch, length, cfg.num_heads, head_dim)

    q, k, v = heads("query"), heads("key"), heads("value")
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(head_dim).astype(dtype)
    # Softmax in float32 (also under bfloat16 compute) with padded keys pushed to the minimum,
    # as HF does; a fully padded row then attends uniformly instead of producing NaNs.
    key_is_real = attention_mask[:, None, None, :].astype(bool)
    logits = jnp.where(key_is_real, logits.astype(jnp.float32), jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(dtype)
    probs = nn.Dropout(cfg.attention_dropout, deterministic=not train)(probs)
    context = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(batch, length, hidden)
    return _dense(hidden, "output", cfg)(context)


class EncoderLayer(nn.Module):
  """One post-LayerNorm transformer block: attention and MLP, each `LN(x + dropout(f(x)))`."""
  config: EncoderConfig

  @nn.compact
  def __call__(self, x, attention_mask, train: bool):
    cfg = self.config
    dropout = nn.Dropout(cfg.hidden_dropout, deterministic=not train)
    attended = SelfAttention(cfg, name="attention")(x, attention_mask, train)
    x = _layer_norm("attention_LayerNorm", cfg)(x + dropout(attended))
    mlp = _dense(cfg.intermediate_size, "intermediate", cfg)(x)
    mlp = jax.nn.gelu(mlp, approximate=False)
    mlp = _dense(cfg.hidden_size, "output", cfg)(mlp)
    return _layer_norm("output_LayerNorm", cfg)(x + dropout(mlp))


class Embeddings(nn.Module):
  """Token + absolute position + token type (all 0) embeddings, then LayerNorm and dropout."""
  config: EncoderConfig

  @nn.compact
  def __call__(self, input_ids, train: bool):
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)

    def embed(num, name):
      return nn.Embed(num, cfg.hidden_size, name=name, dtype=dtype, param_dtype=jnp.float32,
                      embedding_init=nn.initializers.normal(0.02))

    x = embed(cfg.vocab_size, "word_embeddings")(input_ids)
    x += embed(cfg.max_position_embeddings, "position_embeddings")(position_ids(input_ids, cfg))
    x += embed(cfg.type_vocab_size, "token_type_embeddings")(jnp.zeros_like(input_ids))
    x = _layer_norm("LayerNorm", cfg)(x)
    return nn.Dropout(cfg.hidden_dropout, deterministic=not train)(x)


class BertEncoder(nn.Module):
  """input_ids [B, L], attention_mask [B, L] (1 = real token) -> hidden states [B, L, H]."""
  config: EncoderConfig

  @nn.compact
  def __call__(self, input_ids, attention_mask, train: bool = False):
    cfg = self.config
    if input_ids.shape[1] > cfg.max_length:
      raise ValueError(f"Input length {input_ids.shape[1]} exceeds the encoder's maximum of "
                       f"{cfg.max_length} tokens (max_position_embeddings="
                       f"{cfg.max_position_embeddings}, model_type={cfg.model_type!r}).")
    x = Embeddings(cfg, name="embeddings")(input_ids, train)
    for i in range(cfg.num_layers):
      x = EncoderLayer(cfg, name=f"layer_{i}")(x, attention_mask, train)
    return x


def init_encoder(config: EncoderConfig, rng) -> dict:
  """Randomly initialised encoder params (float32), BERT's N(0, 0.02) initialisation."""
  ids = jnp.zeros((1, 8), jnp.int32)
  return BertEncoder(config).init(rng, ids, jnp.ones_like(ids))["params"]


def encode(params, input_ids, attention_mask, *, config: EncoderConfig, train: bool = False,
           rng=None):
  """Runs the encoder: input_ids, attention_mask [B, L] -> hidden states [B, L, H].

  The output is in the compute dtype (`config.dtype`). With `train=True` dropout is applied and
  needs `rng` (unless both dropout rates are 0).
  """
  needs_rng = train and (config.hidden_dropout > 0 or config.attention_dropout > 0)
  if needs_rng and rng is None:
    raise ValueError("encode(train=True) applies dropout and needs an `rng`.")
  rngs = {"dropout": rng} if rng is not None else {}
  return BertEncoder(config).apply({"params": params}, input_ids, attention_mask, train=train,
                                   rngs=rngs)
