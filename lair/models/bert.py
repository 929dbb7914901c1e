"""BERT-family text encoder (BERT, XLM-R, RoBERTa) as a Flax linen module used purely.

Semantics follow Hugging Face's `modeling_bert` / `modeling_xlm_roberta` so that imported
checkpoints give the same hidden states: learned absolute positions (offset by
`pad_token_id + 1` and skipping pad tokens for XLM-R/RoBERTa), token type 0 everywhere,
post-LayerNorm residual blocks, exact (erf) GELU, and padded keys masked with a large negative
bias.

Precision: params are float32; `EncoderConfig.dtype` is the dtype of the matmuls (their inputs;
they accumulate in float32). With "bfloat16" the embeddings, the residual stream, LayerNorm and
the attention softmax stay float32: only what feeds a matmul is cast, so the output [B, L, H]
is float32 whatever the compute dtype. `EncoderConfig.activation_dtype="bfloat16"` also stores
the residual stream (each LayerNorm's output, the dropout and residual sums) in bfloat16, which
halves the memory traffic of everything between the matmuls; LayerNorm still computes its
statistics in float32 (flax promotes them), the softmax stays float32, and the encoder's output
is cast back to float32, so pooling and the losses are float32 either way.

Speed options (EncoderConfig, from `config.model`):
  attention: "einsum" (the hand-written reference: einsum, float32 softmax, einsum) or
    "dot_product" (`jax.nn.dot_product_attention`: cuDNN flash attention on a GPU with bfloat16
    compute, XLA's fused path elsewhere). Neither changes the maths; "dot_product" has no
    attention dropout, so a training pass with attention_dropout > 0 runs "einsum" instead.
  remat: "" (keep every activation for the backward pass), "full" (each encoder layer keeps
    only its input and recomputes the rest in the backward pass: least memory, about one more
    forward pass of compute) or "dots" (keeps the outputs of the dense layers' matmuls and
    recomputes the attention scores, softmax, GELU and LayerNorms: most of remat's memory
    saving for a fraction of its compute). Gradients equal the plain path's.

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

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp

# model_type -> whether positions are offset by pad_token_id + 1 and skip pad tokens.
SUPPORTED_MODEL_TYPES = {"bert": False, "xlm-roberta": True, "roberta": True}
ATTENTIONS = ("einsum", "dot_product")
DTYPES = ("float32", "bfloat16")
# remat -> what each encoder layer saves for the backward pass (see the module docstring).
REMAT_POLICIES = {"": None, "full": jax.checkpoint_policies.nothing_saveable,
                  "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


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
  dtype: str = "float32"  # Matmul dtype ("float32" | "bfloat16"); params stay float32.
  # Residual-stream dtype ("float32" | "bfloat16"; module docstring); use with dtype="bfloat16".
  activation_dtype: str = "float32"
  attention: str = "einsum"  # ATTENTIONS (module docstring); "einsum" is the reference.
  remat: str = ""  # REMAT_POLICIES: "" | "full" | "dots" (module docstring).

  def __post_init__(self):
    if self.model_type not in SUPPORTED_MODEL_TYPES:
      raise ValueError(
          f"EncoderConfig.model_type={self.model_type!r} is not supported; expected one of "
          f"{sorted(SUPPORTED_MODEL_TYPES)}.")
    if self.attention not in ATTENTIONS:
      raise ValueError(f"model.attention={self.attention!r} is not supported; expected one of "
                       f"{ATTENTIONS}.")
    for key in ("dtype", "activation_dtype"):
      if getattr(self, key) not in DTYPES:
        raise ValueError(f"model.{key}={getattr(self, key)!r} is not supported; expected one "
                         f"of {DTYPES}.")
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"model.remat={self.remat!r} is not supported; expected one of "
                       f"{tuple(REMAT_POLICIES)}.")
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
  # Statistics in float32 whatever the dtype (flax promotes them); the output, which is the
  # residual stream, in `activation_dtype` (module docstring).
  return nn.LayerNorm(epsilon=config.layer_norm_eps, name=name,
                      dtype=jnp.dtype(config.activation_dtype), param_dtype=jnp.float32)


def einsum_attention(q, k, v, attention_mask, *, dropout=None):
  """The reference attention: q, k, v [B, L, heads, d], mask [B, L] -> context [B, L, heads, d].

  Scores accumulate in float32 and the softmax runs in float32 (also under bfloat16 compute),
  with padded keys pushed to the float32 minimum, as HF does; a fully padded row then attends
  uniformly instead of producing NaNs. `dropout(probs)` is applied to the probabilities.
  """
  head_dim = q.shape[-1]
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
  logits = logits / jnp.sqrt(jnp.float32(head_dim))
  key_is_real = attention_mask[:, None, None, :].astype(bool)
  logits = jnp.where(key_is_real, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  if dropout is not None:
    probs = dropout(probs)
  return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


def fused_attention(q, k, v, attention_mask):
  """`jax.nn.dot_product_attention`: the same maths as `einsum_attention`, without dropout.

  On a GPU with bfloat16/float16 inputs it runs cuDNN's flash attention, given the padding as
  per-row key lengths (lair right-pads, so the real keys of a row are its first mask.sum()); where
  cuDNN refuses the shapes it falls back to XLA. Elsewhere XLA's path, with the boolean mask
  (padded keys at -0.7 * float32 max: a fully padded row attends uniformly, as the reference).
  """
  on_gpu = jax.default_backend() == "gpu"
  if on_gpu and q.dtype in (jnp.bfloat16, jnp.float16):
    lengths = jnp.sum(attention_mask, axis=-1, dtype=jnp.int32)
    try:
      return jax.nn.dot_product_attention(q, k, v, query_seq_lengths=lengths,
                                          key_value_seq_lengths=lengths, implementation="cudnn")
    except (NotImplementedError, RuntimeError, ValueError, TypeError) as e:
      logging.warning("cuDNN attention unavailable for %s %s (%s); using XLA's.", q.shape,
                      q.dtype, e)
  mask = attention_mask[:, None, None, :].astype(bool)  # [B, 1, 1, L]: over heads and queries.
  return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")


class SelfAttention(nn.Module):
  """Multi-head self-attention over [B, L, H] with padded keys masked."""
  config: EncoderConfig

  @nn.compact
  def __call__(self, x, attention_mask, train: bool):
    cfg = self.config
    batch, length, hidden = x.shape
    head_dim = hidden // cfg.num_heads

    def heads(name):  # [B, L, H] -> [B, L, heads, head_dim]
      return _dense(hidden, name, cfg)(x).reshape(batch, length, cfg.num_heads, head_dim)

    q, k, v = heads("query"), heads("key"), heads("value")
    attention_dropout = train and cfg.attention_dropout > 0
    if cfg.attention == "dot_product" and not attention_dropout:
      context = fused_attention(q, k, v, attention_mask)
    else:
      dropout = nn.Dropout(cfg.attention_dropout, deterministic=not train)
      context = einsum_attention(q, k, v, attention_mask, dropout=dropout)
    return _dense(hidden, "output", cfg)(context.reshape(batch, length, hidden))


class EncoderLayer(nn.Module):
  """One post-LayerNorm transformer block: attention and MLP, each `LN(x + dropout(f(x)))`."""
  config: EncoderConfig

  @nn.compact
  def __call__(self, x, attention_mask, train: bool):
    cfg = self.config
    dropout = nn.Dropout(cfg.hidden_dropout, deterministic=not train)
    attended = SelfAttention(cfg, name="attention")(x, attention_mask, train)
    # The residual sums in the residual stream's dtype (Dense outputs are in the compute dtype).
    residual = jnp.dtype(cfg.activation_dtype)
    x = _layer_norm("attention_LayerNorm", cfg)(x + dropout(attended).astype(residual))
    mlp = _dense(cfg.intermediate_size, "intermediate", cfg)(x)
    mlp = jax.nn.gelu(mlp, approximate=False)
    mlp = _dense(cfg.hidden_size, "output", cfg)(mlp)
    return _layer_norm("output_LayerNorm", cfg)(x + dropout(mlp).astype(residual))


class Embeddings(nn.Module):
  """Token + absolute position + token type (all 0) embeddings, then LayerNorm and dropout."""
  config: EncoderConfig

  @nn.compact
  def __call__(self, input_ids, train: bool):
    cfg = self.config

    def embed(num, name):  # Float32 lookups: a gather is no matmul (module docstring).
      return nn.Embed(num, cfg.hidden_size, name=name, dtype=jnp.float32,
                      param_dtype=jnp.float32,
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
    layer = EncoderLayer
    if cfg.remat:
      # `train` (argument 3, counting self) is a Python bool: static for the recomputation.
      layer = nn.remat(EncoderLayer, policy=REMAT_POLICIES[cfg.remat], static_argnums=(3,))
    for i in range(cfg.num_layers):
      x = layer(cfg, name=f"layer_{i}")(x, attention_mask, train)
    return x.astype(jnp.float32)  # Pooling and the losses read float32 (module docstring).


def init_encoder(config: EncoderConfig, rng) -> dict:
  """Randomly initialised encoder params (float32), BERT's N(0, 0.02) initialisation."""
  ids = jnp.zeros((1, 8), jnp.int32)
  return BertEncoder(config).init(rng, ids, jnp.ones_like(ids))["params"]


def encode(params, input_ids, attention_mask, *, config: EncoderConfig, train: bool = False,
           rng=None):
  """Runs the encoder: input_ids, attention_mask [B, L] -> hidden states [B, L, H].

  The output is float32 whatever the compute dtype (`config.dtype`). With `train=True` dropout
  is applied and needs `rng` (unless both dropout rates are 0).
  """
  needs_rng = train and (config.hidden_dropout > 0 or config.attention_dropout > 0)
  if needs_rng and rng is None:
    raise ValueError("encode(train=True) applies dropout and needs an `rng`.")
  rngs = {"dropout": rng} if rng is not None else {}
  return BertEncoder(config).apply({"params": params}, input_ids, attention_mask, train=train,
                                   rngs=rngs)
