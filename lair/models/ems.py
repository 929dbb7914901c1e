"""The heads that EMS's objectives train beside the encoder (Mao et al., "EMS").

Following the reference code Mao-KU/EMS `modeling/model_v2.py` (`BertForMaskedLM` with
`has_la_emb and not share_emb`, and `BilingualModel.alignproj`). Both exist only in training:
their params live in the train state under `params["objectives"]`, never in an export.

  XtrHead        (u [b, H], target language [b]) -> log p(token | u, language) [b, V]
  EmsProjection  u [b, H] -> unit vectors [b, P] for the sentence contrastive loss

LayerNorms are Flax's, with EMS's epsilon (1e-12, as BERT's), the same module the encoder uses.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

_LAYER_NORM_EPS = 1e-12  # EMS's BertLayerNorm.
_INIT = nn.initializers.normal(0.02)  # BERT's initialisation, as the encoder's.


class XtrHead(nn.Module):
  """EMS's cross-lingual token reconstruction head.

  `e_l = dropout(LayerNorm(E[l]))` (EMS's BertLaEmbedding, dropout = its emb_dropout 0.1 in
  training), `h = LayerNorm(swish(W1 [e_l; u] + b1))` (its BertPredictionHeadTransform, width
  kept at lang_dim + H), `log p = log_softmax(W_out h)` with a bias-free decoder.

  Attributes:
    num_languages: rows of the language table (`len(config.data.languages)`).
    vocab_size: V, the tokenizer's vocabulary size.
    language_dim: width of the language embedding (`config.loss.ems_language_embedding_dim`).
    language_dropout: dropout on the language embedding in training
      (`config.loss.ems_language_dropout`).
  """
  num_languages: int
  vocab_size: int
  language_dim: int = 128
  language_dropout: float = 0.1

  @nn.compact
  def __call__(self, u, target_lang, *, train: bool = False):
    """u [b, H] float, target_lang [b] int -> [b, V] float32 log-probabilities."""
    e_l = nn.Embed(self.num_languages, self.language_dim, embedding_init=_INIT,
                   name="language_embedding")(target_lang)
    e_l = nn.LayerNorm(epsilon=_LAYER_NORM_EPS, name="language_norm")(e_l)
    e_l = nn.Dropout(self.language_dropout, deterministic=not train)(e_l)
    features = jnp.concatenate([e_l, u.astype(jnp.float32)], axis=-1)
    h = nn.Dense(features.shape[-1], kernel_init=_INIT, name="dense")(features)
    h = nn.LayerNorm(epsilon=_LAYER_NORM_EPS, name="norm")(jax.nn.swish(h))
    logits = nn.Dense(self.vocab_size, use_bias=False, kernel_init=_INIT, name="decoder")(h)
    return jax.nn.log_softmax(logits, axis=-1)


class EmsProjection(nn.Module):
  """EMS's sentence projection `z = W2 relu(W1 u + b1) + b2`, L2-normalised (cosine similarity).

  Attributes:
    projection_dim: P (`config.loss.ems_projection_dim`, 128 in EMS).
  """
  projection_dim: int = 128

  @nn.compact
  def __call__(self, u):
    """u [b, H] -> [b, P] float32 unit vectors."""
    u = u.astype(jnp.float32)
    h = jax.nn.relu(nn.Dense(u.shape[-1], kernel_init=_INIT, name="dense1")(u))
    z = nn.Dense(self.projection_dim, kernel_init=_INIT, name="dense2")(h)
    # EMS's nn.CosineSimilarity clamps each norm at 1e-8.
    return z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-8)


def init_heads(weights, loss_cfg, rng, *, embedding_dim: int, num_languages: int,
               vocab_size: int) -> dict:
  """Params of the EMS heads the active terms train ({} when none is on).

  Args:
    weights: the active terms ({"xtr": w, ...}, `ObjectivePlan.weights`).
    loss_cfg: config.loss (head sizes).
    rng: a PRNG key.
    embedding_dim: H, width of the sentence embeddings fed to the heads.
    num_languages, vocab_size: sizes of the XTR head's tables.
  """
  xtr_rng, proj_rng = jax.random.split(rng)
  u = jnp.zeros((1, embedding_dim), jnp.float32)
  params = {}
  if "xtr" in weights:
    params["xtr_head"] = xtr_head(loss_cfg, num_languages, vocab_size).init(
        xtr_rng, u, jnp.zeros((1,), jnp.int32))["params"]
  if "ems_contrastive" in weights:
    params["ems_projection"] = EmsProjection(loss_cfg.ems_projection_dim).init(
        proj_rng, u)["params"]
  return params


def xtr_head(loss_cfg, num_languages: int, vocab_size: int) -> XtrHead:
  """The XtrHead module `config.loss` describes."""
  return XtrHead(num_languages=num_languages, vocab_size=vocab_size,
                 language_dim=loss_cfg.ems_language_embedding_dim,
                 language_dropout=loss_cfg.get("ems_language_dropout", 0.1))
