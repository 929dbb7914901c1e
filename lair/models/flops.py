"""Model FLOPs of the encoder, and the peak FLOP/s of the device, for throughput and utilisation.

The count is of the matmuls and the attention (the convention of PaLM's "model FLOPs
utilisation"): elementwise work (softmax, GELU, LayerNorm, dropout), embedding lookups, pooling
and the loss are left out, and so is what rematerialisation recomputes, so the same model and
batch always have the same count. A multiply-add is 2 FLOPs. For one text of L (padded) tokens
through an encoder of N layers, width H, FFN width I:

  per layer, forward:  Q, K, V and output projections   4 * 2 L H^2     =  8 L H^2
                       scores Q K^T and probs @ V       2 * 2 L^2 H     =  4 L^2 H
                       FFN up and down                  2 * 2 L H I     =  4 L H I
  forward   = N * (8 L H^2 + 4 L^2 H + 4 L H I)
  training  = 3 * forward   (the backward pass takes the gradients of each matmul's two inputs,
                             twice the forward's FLOPs)

(The heads split H but not the work: heads * 2 L^2 (H / heads) = 2 L^2 H per product.) Padded
tokens count: they are computed. BERT-base (N=12, H=768, I=3072) at L=128 gives 2 * 85M * 128 +
12 * 4 * 128^2 * 768 ~ 22.4 GFLOPs forward per text.
"""
import time
from typing import Optional

import jax
import jax.numpy as jnp

# Dense peak FLOP/s of one device by `jax.devices()[0].device_kind`, per compute dtype
# (vendor figures for dense tensor-core / MXU work, without sparsity).
PEAK_FLOPS = {
    "NVIDIA H100 80GB HBM3": {"bfloat16": 989e12, "float32": 494e12},  # SXM; float32: TF32.
    "NVIDIA H100 PCIe": {"bfloat16": 756e12, "float32": 378e12},
    "NVIDIA H100 NVL": {"bfloat16": 835e12, "float32": 418e12},
    "NVIDIA H200": {"bfloat16": 989e12, "float32": 494e12},  # SXM.
    "NVIDIA H200 NVL": {"bfloat16": 835e12, "float32": 418e12},
    "NVIDIA A100-SXM4-80GB": {"bfloat16": 312e12, "float32": 156e12},
    "NVIDIA A100-SXM4-40GB": {"bfloat16": 312e12, "float32": 156e12},
    "NVIDIA A100 80GB PCIe": {"bfloat16": 312e12, "float32": 156e12},
    "TPU v4": {"bfloat16": 275e12},
    "TPU v5 lite": {"bfloat16": 197e12},
    "TPU v5": {"bfloat16": 459e12},  # v5p
    "TPU v6 lite": {"bfloat16": 918e12},
}


def encoder_forward_flops(num_layers: int, hidden: int, intermediate: int, length: int) -> float:
  """FLOPs of one text of `length` tokens through the encoder, forward (module docstring)."""
  n, h, i, l = num_layers, hidden, intermediate, length
  return float(n * (8 * l * h * h + 4 * l * l * h + 4 * l * h * i))


def encoder_flops(config, rows: int, length: int, *, train: bool = True) -> float:
  """FLOPs of `rows` texts of `length` tokens through the encoder `config` (bert.EncoderConfig).

  train=True: forward + backward (3x the forward); False: forward only.
  """
  per_text = encoder_forward_flops(config.num_layers, config.hidden_size,
                                   config.intermediate_size, length)
  return (3.0 if train else 1.0) * rows * per_text


def peak_flops(device_kind: str, dtype: str) -> Optional[float]:
  """The device's dense peak FLOP/s for `dtype` matmuls from PEAK_FLOPS, or None if unknown."""
  by_dtype = PEAK_FLOPS.get(device_kind)
  if by_dtype is None:  # A longer name of a listed kind ("TPU v4 ..."): the longest prefix,
    # so that "NVIDIA H200 NVL" is not taken for the SXM "NVIDIA H200" when both are listed.
    prefixes = [k for k in PEAK_FLOPS if device_kind.startswith(k)]
    by_dtype = PEAK_FLOPS[max(prefixes, key=len)] if prefixes else None
  return None if by_dtype is None else by_dtype.get(dtype)


def measure_matmul_flops(dtype: str = "float32", size: int = 2048, repeats: int = 5) -> float:
  """FLOP/s of a jitted `size`^2 matmul on the default device (best of `repeats`).

  The practical peak where no vendor figure applies (a CPU): what the matmuls of a step could
  reach at best on this machine, now.
  """
  x = jax.random.normal(jax.random.key(0), (size, size), jnp.dtype(dtype))
  matmul = jax.jit(lambda a, b: a @ b)
  matmul(x, x).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(x, x).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2.0 * size ** 3 / best
