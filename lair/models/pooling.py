"""Pooling token states into one vector per text, an optional projection head, L2 norm.

All pure functions on arrays; results are float32 whatever the encoder's compute dtype.

Projection head params:
  "linear": {"dense_0": {"kernel": [H, D], "bias": [D]}}
  "mlp":    {"dense_0": {"kernel": [H, H], "bias": [H]}, "dense_1": {"kernel": [H, D], "bias": [D]}}
with an exact GELU after dense_0 of the MLP. Each dense is one sentence-transformers `Dense`
module on export (see hf.py). A head imported from a sentence-transformers folder may have other
sizes and activations (`activations`, e.g. LaBSE's ("tanh",)); the layer sizes always come from
the params themselves.
"""
import jax
import jax.numpy as jnp

POOLINGS = ("cls", "mean")
PROJECTIONS = ("", "linear", "mlp")
ACTIVATIONS = {"identity": lambda x: x, "gelu": lambda x: jax.nn.gelu(x, approximate=False),
               "tanh": jnp.tanh, "relu": jax.nn.relu}


def pool(hidden, mask, kind: str):
  """hidden [B, L, H], mask [B, L] (1 = real token) -> [B, H] float32.

  "cls" takes the first token; "mean" averages the real tokens (padding excluded), dividing by
  max(count, 1e-9) like sentence-transformers so an all-pad row gives zeros, not NaNs.
  """
  hidden = hidden.astype(jnp.float32)
  if kind == "cls":
    return hidden[:, 0]
  if kind == "mean":
    mask = mask.astype(jnp.float32)[..., None]
    return (hidden * mask).sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1e-9)
  raise ValueError(f"model.pooling={kind!r} is not supported; expected one of {POOLINGS}.")


def l2_normalize(x, eps: float = 1e-12):
  """x [B, D] -> x / max(||x||, eps), as torch.nn.functional.normalize."""
  norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
  return x / jnp.maximum(norm, eps)


def head_layer_sizes(kind: str, in_dim: int, out_dim: int):
  """(in, out) sizes of each dense layer of the projection head, in order."""
  if kind == "linear":
    return [(in_dim, out_dim)]
  if kind == "mlp":
    return [(in_dim, in_dim), (in_dim, out_dim)]
  raise ValueError(f"model.projection={kind!r} is not supported; expected one of {PROJECTIONS}.")


def dense_init(rng, fan_in: int, fan_out: int, bias: bool = True) -> dict:
  """BERT-style initialisation: normal(0.02) kernel [fan_in, fan_out], zero bias [fan_out]."""
  params = {"kernel": 0.02 * jax.random.normal(rng, (fan_in, fan_out), jnp.float32)}
  if bias:
    params["bias"] = jnp.zeros((fan_out,), jnp.float32)
  return params


def init_head(kind: str, in_dim: int, out_dim: int, rng) -> dict:
  """Projection head params: kernels ~ N(0, 0.02), zero biases (see the module docstring)."""
  sizes = head_layer_sizes(kind, in_dim, out_dim)
  rngs = jax.random.split(rng, len(sizes))
  return {f"dense_{i}": dense_init(r, n_in, n_out)
          for i, (r, (n_in, n_out)) in enumerate(zip(rngs, sizes))}


def head_activations(num_layers: int, activations=()) -> tuple[str, ...]:
  """Each layer's activation: `activations` when given, else GELU between layers, none last."""
  if activations:
    return tuple(activations)
  return ("gelu",) * (num_layers - 1) + ("identity",)


def apply_head(params, x, activations=()):
  """x [B, H] -> [B, D] float32 through the projection head (its layers: `init_head`).

  `activations` names each layer's (keys of ACTIVATIONS); default `head_activations`.
  """
  acts = head_activations(len(params), activations)
  x = x.astype(jnp.float32)
  for i, act in enumerate(acts):
    layer = params[f"dense_{i}"]
    x = ACTIVATIONS[act](x @ layer["kernel"] + layer["bias"])
  return x
