r"""Prototype: a row-sparse (lazy) AdamW update of the token embedding vs the dense one.

Fully fine-tuning a multilingual encoder updates its [V, H] token embedding (V = 250002 for
XLM-R) with dense AdamW every step, although a batch touches a few thousand rows. This measures,
on one device, the embedding's share of a step both ways, with the token gradients [T, H] of a
batch of T token positions as input:

  dense: grad = zeros[V, H].at[ids].add(token_grads) (what autodiff of the lookup gives), then
         optax.adamw over the whole table (params, m, v: 3 x V x H floats read and written).
  lazy:  the batch's distinct rows (jnp.unique, padded to T), their gradients summed
         (segment_sum), AdamW on those rows of params, m and v only, scattered back in place
         (donated buffers). Rows the batch does not touch are left as they are.

The lazy update is NOT AdamW: where dense AdamW keeps moving an untouched row (its first moment
decays but is not zero, and weight decay applies), the lazy one leaves it, and its bias
correction counts the global step (as TF's LazyAdam and torch's SparseAdam do). After the
timings the script runs a few steps of both on the same gradients and prints how far apart the
tables drift, touched and untouched rows separately.

  python benchmarks/embedding_update.py              # V=250002, H=384, T=16*32+16*128 tokens
  python benchmarks/embedding_update.py --quick
"""
import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

B1, B2, EPS = 0.9, 0.999, 1e-8


def dense_update(optimizer):
  """jit((table, opt_state, ids [T], token_grads [T, H]) -> (table, opt_state)), donated."""
  def update(table, opt_state, ids, token_grads):
    grad = jnp.zeros_like(table).at[ids].add(token_grads)
    updates, opt_state = optimizer.update(grad, opt_state, table)
    return optax.apply_updates(table, updates), opt_state
  return jax.jit(update, donate_argnums=(0, 1))


def lazy_update(lr, weight_decay):
  """jit((table, m, v, count, ids [T], token_grads [T, H]) -> (table, m, v, count)), donated."""
  def update(table, m, v, count, ids, token_grads):
    t = ids.shape[0]
    rows, inverse = jnp.unique(ids, size=t, fill_value=-1, return_inverse=True)
    grad = jax.ops.segment_sum(token_grads, inverse.reshape(-1), num_segments=t)  # [T, H]
    real = (rows >= 0)[:, None]
    safe = jnp.where(rows >= 0, rows, 0)
    count = count + 1
    m_rows = B1 * m[safe] + (1 - B1) * grad
    v_rows = B2 * v[safe] + (1 - B2) * grad * grad
    m_hat = m_rows / (1 - B1 ** count)
    v_hat = v_rows / (1 - B2 ** count)
    p_rows = table[safe]
    p_rows = p_rows - lr * (m_hat / (jnp.sqrt(v_hat) + EPS) + weight_decay * p_rows)
    # Padding slots (rows < 0) write back what is there: row 0 unchanged by them.
    index = jnp.where(rows >= 0, rows, table.shape[0])  # Out of range: dropped by mode="drop".
    table = table.at[index].set(jnp.where(real, p_rows, 0), mode="drop")
    m = m.at[index].set(m_rows, mode="drop")
    v = v.at[index].set(v_rows, mode="drop")
    return table, m, v, count
  return jax.jit(update, donate_argnums=(0, 1, 2))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--vocab", type=int, default=250002)
  parser.add_argument("--hidden", type=int, default=384)
  parser.add_argument("--tokens", type=int, default=16 * 32 + 16 * 128)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--quick", action="store_true")
  args = parser.parse_args()
  if args.quick or os.environ.get("LAIR_BENCH_QUICK"):
    args.vocab, args.repeats = 30000, 2
  lr, wd = 2e-5, 0.01
  rng = np.random.default_rng(0)
  # Zipf-like token ids, as text: a few frequent rows, a long tail.
  def batch():
    ids = np.minimum(rng.zipf(1.3, size=args.tokens), args.vocab - 1).astype(np.int32)
    return jnp.asarray(ids), jnp.asarray(rng.normal(size=(args.tokens, args.hidden)) * 1e-3,
                                         jnp.float32)
  table0 = np.asarray(rng.normal(size=(args.vocab, args.hidden)) * 0.02, np.float32)
  optimizer = optax.adamw(lr, b1=B1, b2=B2, eps=EPS, weight_decay=wd)
  dense = dense_update(optimizer)
  lazy = lazy_update(lr, wd)
  d_table = jnp.asarray(table0)
  d_state = optimizer.init(d_table)
  l_table, l_m, l_v = jnp.asarray(table0), jnp.zeros_like(d_table), jnp.zeros_like(d_table)
  count = jnp.int32(0)
  print(f"{jax.devices()[0].device_kind}: table [{args.vocab}, {args.hidden}] float32, "
        f"{args.tokens} token positions per batch; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
  touched = np.zeros(args.vocab, bool)
  times = {"dense": [], "lazy": []}
  for i in range(args.repeats + 1):  # The first round compiles: not timed.
    ids, grads = batch()
    touched[np.asarray(ids)] = True
    start = time.perf_counter()
    d_table, d_state = dense(d_table, d_state, ids, grads)
    jax.block_until_ready(d_table)
    middle = time.perf_counter()
    l_table, l_m, l_v, count = lazy(l_table, l_m, l_v, count, ids, grads)
    jax.block_until_ready(l_table)
    end = time.perf_counter()
    if i:
      times["dense"].append(middle - start)
      times["lazy"].append(end - middle)
  unique = len(np.unique(np.asarray(ids)))
  for name, t in times.items():
    print(f"  {name:5s} embedding update: {statistics.median(t) * 1e3:8.1f} ms (median of "
          f"{len(t)})")
  print(f"  lazy is {statistics.median(times['dense']) / statistics.median(times['lazy']):.1f}x "
        f"faster; the last batch touched {unique} distinct rows of {args.vocab}")
  diff = np.abs(np.asarray(d_table) - np.asarray(l_table))
  moved = np.abs(np.asarray(d_table) - table0)
  print(f"  after {args.repeats + 1} steps on the same gradients: max |dense - lazy| "
        f"{diff[touched].max():.2e} on rows some batch touched ({touched.sum()}), "
        f"{diff[~touched].max():.2e} on the others; dense moved the table by up to "
        f"{moved.max():.2e} (untouched rows: {moved[~touched].max():.2e}, weight decay)")


if __name__ == "__main__":
  main()
