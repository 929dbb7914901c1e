r"""One dual-encoder training step in lair (JAX) and in PyTorch, side by side on one device.

Both sides run the same computation: a shared BERT tower embeds B queries [B, Lq] and B passages
[B, Lp], masked mean pooling, L2 norm, in-batch InfoNCE (`lair.losses.retrieval_infonce` /
the same loss written in torch), then an AdamW update. lair: `jit(value_and_grad)` + `optax.adamw`
with donated params; PyTorch (eager): `transformers.BertModel` (SDPA attention) +
`torch.optim.AdamW`. Both start from the SAME weights (the torch model's, imported into lair with
`lair.models.hf`), so the printed initial eval-mode losses must agree; with `--dropout 0` the
per-step losses agree too. With `--dtype bfloat16` lair runs its matmuls in bfloat16 (params,
optimiser, LayerNorm, softmax in float32) and PyTorch runs under `torch.autocast(bfloat16)`.

Timing: warm-up steps (compilation included) are excluded; then `--rounds` rounds alternate
`--steps` steps of each framework, so that load from other processes hits both alike. Reported:
median step time, padded and real tokens/s, model FLOP/s (lair/models/flops.py: the encoder's
matmuls and attention, forward + backward, padded tokens) and utilisation: of the device's
bf16/f32 dense peak where known (GPU/TPU table), and on a CPU of the matmul peak measured on the
spot (a 2048^2 float32 matmul in each framework). Then a profile: the same phases timed apart
in both (forward, forward + backward, optimiser update), to show where the gap is.

  python benchmarks/train_step.py                    # BERT 6x384, 12 heads, vocab 30522
  python benchmarks/train_step.py --model e5         # ~/.cache/lair/multilingual-e5-small
  python benchmarks/train_step.py --model base --dtype bfloat16 --attention dot_product  # GPU
  python benchmarks/train_step.py --batch 16 --query-len 32 --passage-len 128 --dropout 0
  python benchmarks/train_step.py --single-thread    # one compute thread in each framework
  python benchmarks/train_step.py --quick            # tiny run: checks the script end to end
"""
import argparse
import dataclasses
import json
import os
import pathlib
import platform
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
from lair.models import flops  # pylint: disable=g-import-not-at-top,wrong-import-position
from lair.models import hf  # pylint: disable=g-import-not-at-top,wrong-import-position
from lair.models import retriever  # pylint: disable=g-import-not-at-top,wrong-import-position
from lair.train import step as step_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

E5_DIR = pathlib.Path.home() / ".cache" / "lair" / "multilingual-e5-small"
# Random-weight shapes: `bert6` MiniLM-sized with BERT-base's vocabulary; `base` BERT-base
# sized with XLM-R's vocabulary (multilingual retrievers' usual embedding table).
SHAPES = {
    "bert6": dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                  intermediate_size=1536, max_position_embeddings=512, pad_token_id=0),
    "base": dict(vocab_size=250002, hidden_size=768, num_hidden_layers=12,
                 num_attention_heads=12, intermediate_size=3072, max_position_embeddings=514,
                 pad_token_id=0),
}
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", choices=["bert6", "e5", "base"], default="bert6")
  parser.add_argument("--layers", type=int, default=0,
                      help="Override the layer count of bert6/base (0: keep).")
  parser.add_argument("--batch", type=int, default=16, help="Queries (and passages) per step.")
  parser.add_argument("--query-len", type=int, default=32)
  parser.add_argument("--passage-len", type=int, default=128)
  parser.add_argument("--dropout", type=float, default=0.1, help="Hidden dropout.")
  parser.add_argument("--attention-dropout", type=float, default=None,
                      help="Attention dropout (default: --dropout). lair's fused attention "
                           "has none: with --attention dot_product use 0.")
  parser.add_argument("--dtype", choices=bert.DTYPES, default="float32")
  parser.add_argument("--activation-dtype", choices=bert.DTYPES, default="float32",
                      help="lair's residual-stream dtype (model.activation_dtype).")
  parser.add_argument("--attention", choices=bert.ATTENTIONS, default="einsum")
  parser.add_argument("--remat", choices=tuple(bert.REMAT_POLICIES), default="")
  parser.add_argument("--tau", type=float, default=0.05)
  parser.add_argument("--lr", type=float, default=2e-5)
  parser.add_argument("--weight-decay", type=float, default=0.01)
  parser.add_argument("--warmup", type=int, default=2, help="Untimed steps per framework.")
  parser.add_argument("--steps", type=int, default=4, help="Timed steps per framework per round.")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--single-thread", action="store_true",
                      help="One compute thread in both frameworks (fairer on a busy CPU).")
  parser.add_argument("--no-torch", action="store_true", help="Time lair only.")
  parser.add_argument("--no-profile", action="store_true", help="Skip the per-phase profile.")
  parser.add_argument("--json", default="", help="Also write the figures to this JSON file.")
  parser.add_argument("--pipelined", action="store_true",
                      help="Keep one step in flight (read step i-1's loss after dispatching step "
                           "i, as lair.train does; PyTorch likewise) and time each round as a "
                           "whole; default: every step waits for its loss.")
  parser.add_argument("--xla-defaults", action="store_true",
                      help="Compile lair's step with XLA's default options instead of the "
                           "trainer's (lair.train.step.compiler_options).")
  parser.add_argument("--hlo", default="",
                      help="Write the compiled lair train step's optimised HLO to this file.")
  parser.add_argument("--trace", default="",
                      help="After timing, trace 3 lair steps with jax.profiler into this folder "
                           "(TensorBoard/Perfetto) and print where the device time went.")
  parser.add_argument("--quick", action="store_true",
                      help="A tiny run (2 layers, vocab <= 30522, batch 4, short texts, 1 round) "
                           "to check the script end to end; also LAIR_BENCH_QUICK=1.")
  args = parser.parse_args(argv)
  if args.attention_dropout is None:
    args.attention_dropout = args.dropout
  if args.quick or os.environ.get("LAIR_BENCH_QUICK"):
    args.quick = True
    args.layers = args.layers or 2
    args.batch, args.query_len, args.passage_len = 4, 16, 32
    args.warmup, args.steps, args.rounds = 1, 1, 1
  return args


def device_description():
  """(jax device kind, torch device, a line about the processor)."""
  cpu = platform.processor() or platform.machine()
  flags = set()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name") and cpu in ("", "x86_64"):
          cpu = line.split(":", 1)[1].strip()
        if line.startswith("flags"):
          flags = set(line.split(":", 1)[1].split())
          break
  except OSError:
    pass
  present = " ".join(f for f in CPU_FLAGS if f in flags) or f"none of {' '.join(CPU_FLAGS)}"
  cpu_line = f"CPU {cpu}, {os.cpu_count()} cores, flags {present}"
  torch_device = "cuda" if torch.cuda.is_available() else "cpu"
  return jax.devices()[0].device_kind, torch_device, cpu_line


def torch_model(args, device):
  """(transformers BertModel in train mode on `device`, its pad id)."""
  torch.manual_seed(args.seed)
  dropout = dict(hidden_dropout_prob=args.dropout,
                 attention_probs_dropout_prob=args.attention_dropout)
  if args.model == "e5":
    if not (E5_DIR / "config.json").exists():
      sys.exit(f"--model e5: {E5_DIR}/config.json not found (build it with "
               "shared/tools/e5_small_checkpoint.py)")
    model = transformers.AutoModel.from_pretrained(str(E5_DIR), add_pooling_layer=False,
                                                   attn_implementation="sdpa", **dropout)
  else:
    shape = dict(SHAPES[args.model])
    if args.layers:
      shape["num_hidden_layers"] = args.layers
    if args.quick:  # Light enough for a CPU check of the script; the shapes are not the point.
      shape["vocab_size"] = min(shape["vocab_size"], 30522)
    model = transformers.BertModel(transformers.BertConfig(**shape, **dropout),
                                   add_pooling_layer=False)
  return model.to(device).train(), model.config.pad_token_id


def lair_retriever(args, model):
  """(RetrieverConfig, params) of lair's dual encoder holding the torch model's weights."""
  tensors = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
  if args.model == "e5":
    enc_cfg, enc_params, _ = hf.load_hf(str(E5_DIR))
  else:
    c = model.config
    enc_cfg = bert.EncoderConfig(
        model_type="bert", vocab_size=c.vocab_size, hidden_size=c.hidden_size,
        num_layers=c.num_hidden_layers, num_heads=c.num_attention_heads,
        intermediate_size=c.intermediate_size, max_position_embeddings=c.max_position_embeddings,
        pad_token_id=c.pad_token_id, layer_norm_eps=c.layer_norm_eps)
    enc_params = hf.encoder_params_from_torch(tensors, enc_cfg, "torch BertModel")
  enc_cfg = dataclasses.replace(enc_cfg, hidden_dropout=args.dropout,
                                attention_dropout=args.attention_dropout, dtype=args.dtype,
                                activation_dtype=args.activation_dtype,
                                attention=args.attention, remat=args.remat)
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


def make_lair_fns(rcfg, args, compiler_options):
  """(optimizer, step, eval_loss, grads_fn, update_fn), all jitted; step donates its state."""
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

  def update(params, opt_state, grads):
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  eval_loss = jax.jit(lambda params, batch: loss_fn(params, batch, jax.random.key(0), False))
  grads_fn = jax.jit(lambda params, batch, rng: jax.value_and_grad(loss_fn)(params, batch, rng,
                                                                            True))
  return (optimizer, jax.jit(step, donate_argnums=(0, 1), compiler_options=compiler_options),
          eval_loss, grads_fn, jax.jit(update, donate_argnums=(0, 1)))


# ---------------------------------------------------------------------------------------------
# PyTorch


def torch_loss(model, batch, tau, dtype):
  device_type = next(model.parameters()).device.type
  with torch.autocast(device_type, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
    def embed(ids, mask):
      hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
      m = mask.unsqueeze(-1).float()
      return F.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)

    q = embed(batch["query_ids"], batch["query_mask"])
    p = embed(batch["passage_ids"], batch["passage_mask"])
  logits = q @ p.T / tau
  return F.cross_entropy(logits, torch.arange(q.shape[0], device=q.device))


def torch_step(model, optimizer, batch, tau, dtype, block=True):
  optimizer.zero_grad(set_to_none=True)
  loss = torch_loss(model, batch, tau, dtype)
  loss.backward()
  optimizer.step()
  return loss.item() if block else loss.detach()  # .item() waits for the device.


def torch_sync():
  if torch.cuda.is_available():
    torch.cuda.synchronize()


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


def torch_matmul_flops(device, dtype="float32", size=2048, repeats=5):
  """FLOP/s of a `size`^2 torch matmul (best of `repeats`), the torch side's practical peak."""
  x = torch.randn(size, size, device=device, dtype=getattr(torch, dtype))
  torch.mm(x, x)
  torch_sync()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    torch.mm(x, x)
    torch_sync()
    best = min(best, time.perf_counter() - start)
  return 2.0 * size ** 3 / best


def profile_phases(lair_fns, state, jax_batch, model, torch_opt, torch_batch, args, reps):
  """{phase: {framework: median seconds}} for forward, forward + backward, optimiser update."""
  _, _, eval_loss, grads_fn, update_fn = lair_fns
  key = jax.random.key(1)

  def lair_forward():
    return float(eval_loss(state["params"], jax_batch))

  def lair_backward():
    loss, grads = grads_fn(state["params"], jax_batch, key)
    jax.block_until_ready(grads)
    return float(loss)

  grads = grads_fn(state["params"], jax_batch, key)[1]

  def lair_update():
    state["params"], state["opt_state"] = update_fn(state["params"], state["opt_state"], grads)
    jax.block_until_ready(state["params"])

  def torch_forward():
    model.eval()
    with torch.no_grad():
      loss = torch_loss(model, torch_batch, args.tau, args.dtype).item()
    model.train()
    return loss

  def torch_backward():
    torch_opt.zero_grad(set_to_none=True)
    loss = torch_loss(model, torch_batch, args.tau, args.dtype)
    loss.backward()
    torch_sync()

  def torch_update():
    torch_opt.step()
    torch_sync()

  phases = {"forward (eval)": (lair_forward, torch_forward),
            "forward + backward": (lair_backward, torch_backward),
            "AdamW update": (lair_update, torch_update)}
  out = {}
  for phase, (lair_fn, torch_fn) in phases.items():
    lair_fn()  # Compiles / warms each phase.
    if model is not None:
      torch_fn()
    times = {"lair": [], "torch": []}
    for _ in range(reps):
      times["lair"].append(timed(lair_fn)[0])
      if model is not None:
        times["torch"].append(timed(torch_fn)[0])
    out[phase] = {k: statistics.median(v) for k, v in times.items() if v}
  return out


# Kernel/op name -> kind, first match wins (cuDNN attention is *sdpa*/*fmha*/cudnn*, cuBLAS and
# CUTLASS GEMMs *gemm*/*gmma*/nvjet*; XLA's own kernels are named after their fusions).
KERNEL_KINDS = (("attention", ("fmha", "flash", "cudnn", "attention", "sdpa")),
                ("matmul", ("gemm", "gmma", "xmma", "cutlass", "nvjet", "cublas", "dot", "ynn")),
                ("random bits", ("threefry", "philox", "rng", "random")),
                ("scatter/gather", ("scatter", "gather", "dynamic_update_slice")),
                ("reduction", ("reduce", "reduction")),
                ("copy/transpose", ("copy", "transpose", "memcpy", "memset")),
                ("other XLA fusions", ("fusion", "loop_", "input_", "convert", "broadcast")))


def kernel_kind(name):
  lower = name.lower()
  return next((kind for kind, keys in KERNEL_KINDS if any(k in lower for k in keys)), "other")


def trace_summary(trace_dir, steps, step_seconds, top=25):
  """Prints where `steps` traced steps spent device time, from jax.profiler's Perfetto trace.

  Device time is the sum of the GPU streams' kernel events (on a CPU, of the innermost op events
  of XLA's threads, summed over threads); busy = that over `steps * step_seconds`. Returns
  {kind: ms per step}.
  """
  import collections  # pylint: disable=g-import-not-at-top
  import gzip  # pylint: disable=g-import-not-at-top
  paths = sorted(pathlib.Path(trace_dir).glob("**/perfetto_trace.json.gz"),
                 key=lambda p: p.stat().st_mtime)
  if not paths:
    print(f"(no perfetto_trace.json.gz under {trace_dir})")
    return {}
  with gzip.open(paths[-1], "rt") as f:
    events = json.load(f)["traceEvents"]
  process = {e["pid"]: e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}
  thread = {(e["pid"], e.get("tid")): e["args"]["name"] for e in events
            if e.get("ph") == "M" and e.get("name") == "thread_name"}
  print(f"\ntrace {paths[-1]}: processes {sorted(set(process.values()))}")
  device_pids = {pid for pid, name in process.items() if "/device:" in name}
  if device_pids:  # GPU/TPU: kernels on the device's streams (not its derived "XLA Ops" lines).
    lines = {k for k in thread if k[0] in device_pids}
    print("  device lines: " + ", ".join(sorted({thread[k] for k in lines})))
    streams = {k for k in lines if thread[k].lower().startswith("stream")} or lines
  else:  # CPU: the ops XLA's execution threads ran.
    streams = {k for k, name in thread.items() if name.startswith("tf_XLA")}
  per_line = collections.defaultdict(list)
  for e in events:
    # Not work of its own: the zero-length "end: OP" markers inside XLA's CPU ops, and its CPU
    # runtime's waits (ThunkExecutor/ThreadPool events enclose or wait for the ops).
    if (e.get("ph") == "X" and (e.get("pid"), e.get("tid")) in streams
        and not e["name"].startswith("end: ")
        and not any(k in e["name"] for k in ("ThunkExecutor", "ThreadPool"))):
      per_line[(e["pid"], e["tid"])].append(e)
  by_name, by_kind = collections.Counter(), collections.Counter()
  for line in per_line.values():
    line.sort(key=lambda e: (e["ts"], -e.get("dur", 0.0)))
    for e, after in zip(line, line[1:] + [None]):
      # On a CPU line an event that encloses the next is a parent: count leaves only. A GPU
      # stream's kernels do not nest, but may overlap (Hopper launches the next kernel early).
      if (not device_pids and after is not None
          and after["ts"] < e["ts"] + e.get("dur", 0.0)):
        continue
      ms = e.get("dur", 0.0) / 1e3 / steps
      by_name[e["name"]] += ms
      by_kind[kernel_kind(e["name"])] += ms
  total = sum(by_kind.values())
  step_ms = step_seconds * 1e3
  print(f"  device time {total:.1f} ms per step of {step_ms:.1f} ms "
        f"({total / step_ms:.0%} busy; the rest is launch gaps or host work)")
  for kind, ms in by_kind.most_common():
    print(f"    {kind:20s} {ms:8.2f} ms  {ms / total:6.1%}")
  print(f"  top {top} kernels/ops (ms per step):")
  for name, ms in by_name.most_common(top):
    print(f"    {ms:8.3f}  {ms / total:6.1%}  [{kernel_kind(name)}] {name[:110]}")
  return dict(by_kind)


def fused_attention_kernels(fn, *args):
  """Names of the program's primitives that are a fused attention kernel (cuDNN's), if any."""
  def names(jaxpr):
    for eqn in jaxpr.eqns:
      yield eqn.primitive.name
      for param in eqn.params.values():
        for sub in (param if isinstance(param, (list, tuple)) else [param]):
          if isinstance(sub, jax.extend.core.ClosedJaxpr):
            yield from names(sub.jaxpr)
          elif isinstance(sub, jax.extend.core.Jaxpr):
            yield from names(sub)
  found = set(names(jax.make_jaxpr(fn)(*args).jaxpr))
  return sorted(n for n in found if "cudnn" in n or "attention" in n or "fmha" in n)


def main(argv=None):
  args = parse_args(argv)
  if args.single_thread:
    use_one_thread()
  device_kind, torch_device, cpu_line = device_description()
  on_cpu = jax.default_backend() == "cpu"
  model, pad_id = torch_model(args, torch_device)
  rcfg, params = lair_retriever(args, model)
  if args.no_torch:
    model = None
  vocab_size = rcfg.encoder.vocab_size
  rng = np.random.default_rng(args.seed)
  q_ids, q_mask = random_batch(rng, args.batch, args.query_len, vocab_size, pad_id)
  p_ids, p_mask = random_batch(rng, args.batch, args.passage_len, vocab_size, pad_id)
  np_batch = {"query_ids": q_ids, "query_mask": q_mask, "passage_ids": p_ids,
              "passage_mask": p_mask}
  jax_batch = {k: jnp.asarray(v) for k, v in np_batch.items()}
  torch_batch = {k: torch.from_numpy(v.astype(np.int64)).to(torch_device)
                 for k, v in np_batch.items()}
  padded_tokens = q_ids.size + p_ids.size
  real_tokens = int(q_mask.sum() + p_mask.sum())
  step_flops = (flops.encoder_flops(rcfg.encoder, args.batch, args.query_len)
                + flops.encoder_flops(rcfg.encoder, args.batch, args.passage_len))

  e = rcfg.encoder
  num_params = sum(x.size for x in jax.tree.leaves(params))
  print(f"model={args.model} ({e.num_layers} layers x {e.hidden_size}, {e.num_heads} heads, ffn "
        f"{e.intermediate_size}, vocab {vocab_size}, {num_params / 1e6:.1f}M params), batch "
        f"{args.batch} queries x {args.query_len} + {args.batch} passages x {args.passage_len} "
        f"tokens ({padded_tokens} padded, {real_tokens} real), dropout {args.dropout} "
        f"(attention {args.attention_dropout}), tau {args.tau}; lair dtype {args.dtype}, "
        f"activations {args.activation_dtype}, attention {args.attention}, remat "
        f"{args.remat or 'off'}; model FLOPs per step {step_flops / 1e12:.3f} TFLOP "
        f"(lair/models/flops.py)")
  # The trainer's XLA options (lair.train.step.compiler_options: on a GPU, no dot merger).
  options = {} if args.xla_defaults else step_lib.compiler_options()
  print(f"jax {jax.__version__} on {jax.default_backend()} ({device_kind}, "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, step compiler options {options}); "
        f"torch {torch.__version__} on {torch_device}, {torch.get_num_threads()} threads, "
        f"attention {model.config._attn_implementation if model is not None else '-'}; {cpu_line}; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)

  # Same weights, eval mode (no dropout): the two implementations must agree.
  lair_fns = make_lair_fns(rcfg, args, options)
  optimizer, lair_step, lair_eval_loss = lair_fns[:3]
  lair_initial = float(lair_eval_loss(params, jax_batch))
  if model is not None:
    model.eval()
    with torch.no_grad():
      torch_initial = torch_loss(model, torch_batch, args.tau, args.dtype).item()
    model.train()
    print(f"initial eval loss, same weights: lair {lair_initial:.6f}  torch {torch_initial:.6f}"
          f"  |diff| {abs(lair_initial - torch_initial):.2e}", flush=True)

  attention_kernels = fused_attention_kernels(lair_eval_loss, params, jax_batch)
  if args.attention == "dot_product":
    print(f"fused attention primitives in lair's program: {attention_kernels or 'none (XLA)'}")

  state = {"params": params, "opt_state": optimizer.init(params), "key": jax.random.key(args.seed)}
  torch_opt = (torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
               if model is not None else None)

  def run_lair(block=True):
    state["key"], step_key = jax.random.split(state["key"])
    state["params"], state["opt_state"], loss = lair_step(
        state["params"], state["opt_state"], jax_batch, step_key)
    return float(loss) if block else loss  # float() blocks until the step is done.

  def run_torch(block=True):
    return torch_step(model, torch_opt, torch_batch, args.tau, args.dtype, block)

  def pipelined(fn, steps):
    """(seconds per step, losses) of `steps` steps with one in flight, as lair.train runs them.

    The host reads step i-1's loss only after dispatching step i, so the device never waits
    for the host between steps; the round ends when the last loss is read.
    """
    start = time.perf_counter()
    pending, losses = None, []
    for _ in range(steps):
      loss = fn(block=False)
      if pending is not None:
        losses.append(float(pending))
      pending = loss
    losses.append(float(pending))
    return (time.perf_counter() - start) / steps, losses

  frameworks = [("lair", run_lair)] + ([("torch", run_torch)] if model is not None else [])
  times = {name: [] for name, _ in frameworks}
  trajectory = {name: [] for name, _ in frameworks}
  for name, fn in frameworks:
    for i in range(args.warmup):
      seconds, loss = timed(fn)
      trajectory[name].append(loss)
      print(f"  warm-up {name} step {i}: {seconds:.2f}s loss {loss:.5f}"
            + (" (includes compilation)" if name == "lair" and i == 0 else ""), flush=True)
  for _ in range(args.rounds):
    for name, fn in frameworks:
      if args.pipelined:  # One figure per round: its mean step.
        seconds, round_losses = pipelined(fn, args.steps)
        times[name].append(seconds)
        trajectory[name].extend(round_losses)
        continue
      for _ in range(args.steps):
        seconds, loss = timed(fn)
        times[name].append(seconds)
        trajectory[name].append(loss)

  for name in times:
    print(f"  {name} losses: " + " ".join(f"{x:.4f}" for x in trajectory[name]))
  median = {name: statistics.median(t) for name, t in times.items()}

  # Peaks: the vendor's dense peak on accelerators; on a CPU, a matmul measured now.
  peak = flops.peak_flops(device_kind, args.dtype)
  measured = {}
  if on_cpu:
    measured["lair"] = flops.measure_matmul_flops("float32")
    if model is not None:
      measured["torch"] = torch_matmul_flops(torch_device)
  print(f"\n{'':6s} {'median s/step':>13s} {'padded tok/s':>13s} {'real tok/s':>11s} "
        f"{'model TFLOP/s':>13s} {'utilisation':>24s}  (min..max s/step over "
        + (f"{len(times['lair'])} rounds of {args.steps} pipelined steps)" if args.pipelined
           else f"{len(times['lair'])} steps)"))
  figures = {}
  for name in times:
    achieved = step_flops / median[name]
    if peak:
      util = f"{achieved / peak:6.1%} of {peak / 1e12:.0f} TFLOP/s"
    elif name in measured:
      util = f"{achieved / measured[name]:6.1%} of {measured[name] / 1e9:.0f} GFLOP/s matmul"
    else:
      util = "peak unknown"
    print(f"{name:6s} {median[name]:13.3f} {padded_tokens / median[name]:13.0f} "
          f"{real_tokens / median[name]:11.0f} {achieved / 1e12:13.4f} {util:>24s}  "
          f"({min(times[name]):.3f}..{max(times[name]):.3f})")
    figures[name] = dict(
        s_per_step=median[name], padded_tokens_per_s=padded_tokens / median[name],
        real_tokens_per_s=real_tokens / median[name], model_tflops_per_s=achieved / 1e12,
        mfu=achieved / peak if peak else None,
        matmul_peak_fraction=achieved / measured[name] if name in measured else None)
  if measured:
    print("(CPU matmul peak measured now, jitted/torch.mm 2048^2 float32: "
          + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in measured.items()) + ")")
  ratio = median["torch"] / median["lair"] if "torch" in median else None
  if ratio:
    print(f"lair / torch speed (steps/s ratio): {ratio:.2f}x; load average after: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")

  if args.hlo:  # After the timing: lowering ahead of time may compile the step once more.
    compiled = lair_step.lower(state["params"], state["opt_state"], jax_batch,
                               state["key"]).compile()
    pathlib.Path(args.hlo).write_text(compiled.as_text())
    print(f"wrote the compiled step's HLO to {args.hlo}")

  trace = None
  if args.trace:
    with jax.profiler.trace(args.trace, create_perfetto_trace=True):
      for _ in range(3):
        run_lair()
    trace = trace_summary(args.trace, 3, median["lair"])

  profile = None
  if not args.no_profile:
    profile = profile_phases(lair_fns, state, jax_batch, model, torch_opt, torch_batch, args,
                             reps=max(2, args.rounds))
    print("\nwhere a step's time goes (each phase timed apart, median s):")
    print(f"  {'phase':22s} {'lair':>8s} {'torch':>8s} {'lair/torch speed':>17s}")
    for phase, t in profile.items():
      speed = f"{t['torch'] / t['lair']:.2f}x" if "torch" in t else "-"
      torch_s = f"{t['torch']:8.3f}" if "torch" in t else f"{'-':>8s}"
      print(f"  {phase:22s} {t['lair']:8.3f} {torch_s} {speed:>17s}")
    print(f"  {'(whole step)':22s} {median['lair']:8.3f} "
          + (f"{median['torch']:8.3f} {ratio:16.2f}x" if ratio else ""))
    if on_cpu and "lair" in measured:
      print(f"  the step's model FLOPs at lair's measured matmul peak would take "
            f"{step_flops / measured['lair']:.3f} s: the rest of lair's step is not matmul.")

  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(dict(
        model=args.model, layers=e.num_layers, hidden=e.hidden_size, vocab=vocab_size,
        batch=args.batch, query_len=args.query_len, passage_len=args.passage_len,
        dtype=args.dtype, activation_dtype=args.activation_dtype, attention=args.attention,
        remat=args.remat, dropout=args.dropout, attention_dropout=args.attention_dropout,
        pipelined=args.pipelined, xla_flags=os.environ.get("XLA_FLAGS", ""),
        compiler_options=options,
        device_kind=device_kind, torch_device=torch_device, cpu=cpu_line,
        model_tflop_per_step=step_flops / 1e12, peak_tflops=peak / 1e12 if peak else None,
        measured_matmul_gflops={k: v / 1e9 for k, v in measured.items()},
        lair_over_torch=ratio, figures=figures, profile=profile, trace_ms_per_step=trace,
        fused_attention_primitives=attention_kernels,
        initial_loss={"lair": lair_initial}), indent=2))
  return figures


if __name__ == "__main__":
  main()
