r"""One dual-encoder training step in lair (JAX) and in PyTorch, side by side on this machine.

Both sides run the same computation: a shared BERT tower embeds B queries [B, Lq] and B passages
[B, Lp], masked mean pooling, L2 norm, in-batch InfoNCE (`lair.losses.retrieval_infonce` /
the same loss written in torch), then an AdamW update. lair: `jit(value_and_grad)` + `optax.adamw`
with donated params; PyTorch: `transformers.BertModel` + `torch.optim.AdamW`. Both start from the
SAME weights (the torch model's, imported into lair with `lair.models.hf`), so the printed
initial eval-mode losses must agree; with `--dropout 0` the per-step losses agree too.

Timing: warm-up steps (compilation included) are excluded; then `--rounds` rounds alternate
`--steps` steps of each framework, so that load from other processes on a shared CPU hits both
alike. Reported: median step time, steps/s, padded and real (non-pad) tokens/s, and the ratio.

  python benchmarks/train_step.py                    # BERT 6x384, 12 heads, vocab 30522
  python benchmarks/train_step.py --model e5         # ~/.cache/lair/multilingual-e5-small
  python benchmarks/train_step.py --batch 16 --query-len 32 --passage-len 128 --dropout 0
  python benchmarks/train_step.py --single-thread    # one compute thread in each framework
"""
import argparse
import dataclasses
import os
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import torch.nn.functional as F
import transformers

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from lair import losses  # pylint: disable=g-import-not-at-top,wrong-import-position
from lair.models import bert  # pylint: disable=g-import-not-at-top,wrong-import-position
from lair.models import hf  # pylint: disable=g-import-not-at-top,wrong-import-position
from lair.models import retriever  # pylint: disable=g-import-not-at-top,wrong-import-position

E5_DIR = pathlib.Path.home() / ".cache" / "lair" / "multilingual-e5-small"
# The small BERT of `--model bert6`: MiniLM-sized, BERT-base vocabulary.
BERT6 = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
             intermediate_size=1536, max_position_embeddings=512, pad_token_id=0)


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", choices=["bert6", "e5"], default="bert6")
  parser.add_argument("--batch", type=int, default=16, help="Queries (and passages) per step.")
  parser.add_argument("--query-len", type=int, default=32)
  parser.add_argument("--passage-len", type=int, default=128)
  parser.add_argument("--dropout", type=float, default=0.1, help="Hidden and attention dropout.")
  parser.add_argument("--tau", type=float, default=0.05)
  parser.add_argument("--lr", type=float, default=2e-5)
  parser.add_argument("--weight-decay", type=float, default=0.01)
  parser.add_argument("--warmup", type=int, default=2, help="Untimed steps per framework.")
  parser.add_argument("--steps", type=int, default=4, help="Timed steps per framework per round.")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--single-thread", action="store_true",
                      help="One compute thread in both frameworks (fairer on a busy CPU).")
  return parser.parse_args()


def torch_model(args):
  """(transformers BertModel in train mode, its pad id)."""
  torch.manual_seed(args.seed)
  dropout = dict(hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout)
  if args.model == "e5":
    if not (E5_DIR / "config.json").exists():
      sys.exit(f"--model e5: {E5_DIR}/config.json not found (build it with "
               "shared/tools/e5_small_checkpoint.py)")
    model = transformers.AutoModel.from_pretrained(str(E5_DIR), add_pooling_layer=False,
                                                   **dropout)
  else:
    model = transformers.BertModel(transformers.BertConfig(**BERT6, **dropout),
                                   add_pooling_layer=False)
  return model.train(), model.config.pad_token_id


def lair_retriever(args, model):
  """(RetrieverConfig, params) of lair's dual encoder holding the torch model's weights."""
  if args.model == "e5":
    enc_cfg, enc_params, _ = hf.load_hf(str(E5_DIR))
  else:
    enc_cfg = bert.EncoderConfig(
        model_type="bert", vocab_size=BERT6["vocab_size"], hidden_size=BERT6["hidden_size"],
        num_layers=BERT6["num_hidden_layers"], num_heads=BERT6["num_attention_heads"],
        intermediate_size=BERT6["intermediate_size"],
        max_position_embeddings=BERT6["max_position_embeddings"],
        pad_token_id=BERT6["pad_token_id"], layer_norm_eps=model.config.layer_norm_eps)
    tensors = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    enc_params = hf.encoder_params_from_torch(tensors, enc_cfg, "torch BertModel")
  enc_cfg = dataclasses.replace(enc_cfg, hidden_dropout=args.dropout,
                                attention_dropout=args.dropout)
  rcfg = retriever.RetrieverConfig(encoder=enc_cfg, pooling="mean", normalize=True)
  return rcfg, retriever.init_retriever(rcfg, jax.random.key(args.seed), enc_params)


def random_batch(rng, batch, length, vocab_size, pad_id):
  """ids, mask [batch, length] int32: random non-special ids, lengths in [length/2, length]."""
  lengths = rng.integers(length // 2, length + 1, size=batch)
  mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
  ids = rng.integers(1000, vocab_size, size=(batch, length)).astype(np.int32)
  return np.where(mask == 1, ids, pad_id).astype(np.int32), mask


# ---------------------------------------------------------------------------------------------
# lair


def make_lair_step(rcfg, args):
  """jit'ed (params, opt_state, batch, rng) -> (params, opt_state, loss), params donated."""
  optimizer = optax.adamw(args.lr, weight_decay=args.weight_decay)

  def loss_fn(params, batch, rng, train):
    q_rng, p_rng = jax.random.split(rng)
    q = retriever.embed(params, batch["query_ids"], batch["query_mask"], rcfg=rcfg,
                        tower="query", train=train, rng=q_rng if train else None)
    p = retriever.embed(params, batch["passage_ids"], batch["passage_mask"], rcfg=rcfg,
                        tower="passage", train=train, rng=p_rng if train else None)
    return jnp.mean(losses.retrieval_infonce(q, p, tau=args.tau))

  def step(params, opt_state, batch, rng):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch, rng, True)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  eval_loss = jax.jit(lambda params, batch: loss_fn(params, batch, jax.random.key(0), False))
  return optimizer, jax.jit(step, donate_argnums=(0, 1)), eval_loss


# ---------------------------------------------------------------------------------------------
# PyTorch


def torch_loss(model, batch, tau):
  def embed(ids, mask):
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).float()
    return F.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)

  q = embed(batch["query_ids"], batch["query_mask"])
  p = embed(batch["passage_ids"], batch["passage_mask"])
  logits = q @ p.T / tau
  return F.cross_entropy(logits, torch.arange(q.shape[0]))


def torch_step(model, optimizer, batch, tau):
  optimizer.zero_grad(set_to_none=True)
  loss = torch_loss(model, batch, tau)
  loss.backward()
  optimizer.step()
  return loss.item()


# ---------------------------------------------------------------------------------------------


def timed(fn):
  start = time.perf_counter()
  value = fn()
  return time.perf_counter() - start, value


def use_one_thread():
  """One compute thread for both: torch's intra-op pool and XLA's Eigen pool.

  XLA reads XLA_FLAGS when its CPU backend starts, which is at the first JAX computation, so
  setting it here (after `import jax`, before any array op) still takes effect.
  """
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_cpu_multi_thread_eigen=false").strip()
  torch.set_num_threads(1)


def main():
  args = parse_args()
  if args.single_thread:
    use_one_thread()
  model, pad_id = torch_model(args)
  rcfg, params = lair_retriever(args, model)
  vocab_size = rcfg.encoder.vocab_size
  rng = np.random.default_rng(args.seed)
  q_ids, q_mask = random_batch(rng, args.batch, args.query_len, vocab_size, pad_id)
  p_ids, p_mask = random_batch(rng, args.batch, args.passage_len, vocab_size, pad_id)
  np_batch = {"query_ids": q_ids, "query_mask": q_mask, "passage_ids": p_ids,
              "passage_mask": p_mask}
  jax_batch = {k: jnp.asarray(v) for k, v in np_batch.items()}
  torch_batch = {k: torch.from_numpy(v.astype(np.int64)) for k, v in np_batch.items()}
  padded_tokens = q_ids.size + p_ids.size
  real_tokens = int(q_mask.sum() + p_mask.sum())

  num_params = sum(x.size for x in jax.tree.leaves(params))
  print(f"model={args.model} ({rcfg.encoder.num_layers} layers x {rcfg.encoder.hidden_size}, "
        f"{rcfg.encoder.num_heads} heads, ffn {rcfg.encoder.intermediate_size}, vocab "
        f"{vocab_size}, {num_params / 1e6:.1f}M params), batch {args.batch} queries x "
        f"{args.query_len} + {args.batch} passages x {args.passage_len} tokens "
        f"({padded_tokens} padded, {real_tokens} real), dropout {args.dropout}, tau {args.tau}")
  print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({len(jax.devices())} device, "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}); "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, attention "
        f"{model.config._attn_implementation}; os.cpu_count()={os.cpu_count()}, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")

  # Same weights, eval mode (no dropout): the two implementations must agree.
  optimizer, lair_step, lair_eval_loss = make_lair_step(rcfg, args)
  model.eval()
  with torch.no_grad():
    torch_initial = torch_loss(model, torch_batch, args.tau).item()
  model.train()
  lair_initial = float(lair_eval_loss(params, jax_batch))
  print(f"initial eval loss, same weights: lair {lair_initial:.6f}  torch {torch_initial:.6f}  "
        f"|diff| {abs(lair_initial - torch_initial):.2e}")

  opt_state = optimizer.init(params)
  torch_opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
  key = jax.random.key(args.seed)
  state = {"params": params, "opt_state": opt_state, "key": key}

  def run_lair():
    state["key"], step_key = jax.random.split(state["key"])
    state["params"], state["opt_state"], loss = lair_step(
        state["params"], state["opt_state"], jax_batch, step_key)
    return float(loss)  # Blocks until the step is done.

  def run_torch():
    return torch_step(model, torch_opt, torch_batch, args.tau)

  times = {"lair": [], "torch": []}
  trajectory = {"lair": [], "torch": []}
  for name, fn in (("lair", run_lair), ("torch", run_torch)):
    for i in range(args.warmup):
      seconds, loss = timed(fn)
      trajectory[name].append(loss)
      print(f"  warm-up {name} step {i}: {seconds:.2f}s loss {loss:.5f}"
            + (" (includes compilation)" if name == "lair" and i == 0 else ""))
  for _ in range(args.rounds):
    for name, fn in (("lair", run_lair), ("torch", run_torch)):
      for _ in range(args.steps):
        seconds, loss = timed(fn)
        times[name].append(seconds)
        trajectory[name].append(loss)

  for name in ("lair", "torch"):
    print(f"  {name} losses: " + " ".join(f"{x:.4f}" for x in trajectory[name]))
  median = {name: statistics.median(t) for name, t in times.items()}
  print(f"\n{'':6s} {'median s/step':>13s} {'steps/s':>8s} {'padded tok/s':>13s} "
        f"{'real tok/s':>11s}  (min..max s/step over {len(times['lair'])} steps)")
  for name in ("lair", "torch"):
    print(f"{name:6s} {median[name]:13.3f} {1 / median[name]:8.2f} "
          f"{padded_tokens / median[name]:13.0f} {real_tokens / median[name]:11.0f}  "
          f"({min(times[name]):.3f}..{max(times[name]):.3f})")
  print(f"lair / torch speed (steps/s ratio): {median['torch'] / median['lair']:.2f}x; load "
        f"average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
  main()
