r"""Sentences/s of lair's text encoder vs sentence-transformers on the same model and sentences.

The lair retriever is exported with `lair.models.hf.export_hf` and that folder is loaded by
`sentence_transformers.SentenceTransformer`, so both encode the same weights (same tokenizer,
mean pooling, L2 norm). lair: `lair.evaluate.encode.make_text_encoder` (what evaluation runs:
length-sorted batches padded to length buckets, one jitted call per batch); sentence-transformers:
`model.encode` (length-sorted batches padded to each batch's longest). Both start from the raw
texts (tokenization included), with the same batch size and max length. The embeddings must
agree (max |diff| and min cosine printed; float32: ~1e-6).

Timing: one untimed pass each (compilation, caches), then `--rounds` rounds alternating one
full pass of lair and one of sentence-transformers; the median per framework is reported.

Models: `e5` (~/.cache/lair/multilingual-e5-small with its XLM-R tokenizer), or `bert6` /
`base` (random weights: 6 x 384 / 12 x 768, 12 heads; `base` has the XLM-R vocabulary size
250002) with a WordPiece tokenizer generated on the spot, so no download is needed. Sentences:
Tatoeba sentences from shared/data when present (several languages), else random sentences of
the tokenizer's words, 5 to 60 words long.

  python benchmarks/encode.py                      # e5-small, 2000 sentences, CPU
  python benchmarks/encode.py --model base --dtype bfloat16   # on a GPU
  python benchmarks/encode.py --quick              # a small check that the script runs
"""
import argparse
import dataclasses
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from lair.evaluate import encode  # pylint: disable=g-import-not-at-top,wrong-import-position
from lair.models import bert  # pylint: disable=g-import-not-at-top,wrong-import-position
from lair.models import hf  # pylint: disable=g-import-not-at-top,wrong-import-position
from lair.models import retriever  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = pathlib.Path(__file__).resolve().parents[1]
E5_DIR = pathlib.Path.home() / ".cache" / "lair" / "multilingual-e5-small"
SHAPES = {"bert6": dict(vocab_size=30522, hidden_size=384, num_layers=6, num_heads=12,
                        intermediate_size=1536),
          "base": dict(vocab_size=250002, hidden_size=768, num_layers=12, num_heads=12,
                       intermediate_size=3072)}
TATOEBA_LANGUAGES = ("deu", "fra", "spa", "rus", "jpn", "ara", "hin", "zho", "tur", "vie")


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", choices=["e5", "bert6", "base"], default="e5")
  parser.add_argument("--sentences", type=int, default=2000)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--max-len", type=int, default=128)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                      help="Compute dtype of both (torch: the model's dtype).")
  parser.add_argument("--activation-dtype", choices=bert.DTYPES, default="float32",
                      help="lair's residual-stream dtype (model.activation_dtype).")
  parser.add_argument("--attention", choices=bert.ATTENTIONS, default="einsum")
  parser.add_argument("--single-thread", action="store_true",
                      help="One compute thread in both frameworks (fairer on a busy CPU).")
  parser.add_argument("--json", default="", help="Also write the figures to this JSON file.")
  parser.add_argument("--quick", action="store_true",
                      help="200 sentences, 1 round; bert6/base: 2 layers, the tokenizer's vocab.")
  args = parser.parse_args()
  if args.quick or os.environ.get("LAIR_BENCH_QUICK"):
    args.quick = True
    args.sentences, args.rounds = min(args.sentences, 200), 1
  return args


def word_tokenizer(folder: pathlib.Path, size: int = 30000):
  """A BERT WordPiece tokenizer over `size` random lowercase words (written to `folder`)."""
  import transformers  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
  words = sorted({"".join(rng.choice(letters, rng.integers(3, 9))) for _ in range(size)})
  folder.mkdir(parents=True, exist_ok=True)
  specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  (folder / "vocab.txt").write_text("\n".join(specials + words) + "\n", encoding="utf-8")
  return transformers.BertTokenizerFast(str(folder / "vocab.txt"), do_lower_case=True), words


def sentences(n: int, words, seed: int = 0) -> list[str]:
  """Tatoeba sentences of several languages when shared/data has them, else random words."""
  tatoeba = REPO.parent / "shared" / "data" / "tatoeba"
  if words is None and tatoeba.is_dir():
    texts = []
    for lang in TATOEBA_LANGUAGES:
      path = tatoeba / f"tatoeba.{lang}-eng.{lang}"
      if path.exists():
        texts += path.read_text(encoding="utf-8").splitlines()
    texts = [t for t in texts if t.strip()]
    if texts:
      rng = np.random.default_rng(seed)
      return [texts[i] for i in rng.permutation(len(texts))[:n]]
  if words is None:
    raise SystemExit("no sentences: shared/data/tatoeba is absent and the model has no "
                     "generated vocabulary (use --model bert6 or base)")
  rng = np.random.default_rng(seed)
  return [" ".join(rng.choice(words, rng.integers(5, 61))) for _ in range(n)]


def build(args, workdir: pathlib.Path):
  """(RetrieverConfig, params, tokenizer, words or None) of the benchmarked model."""
  if args.model == "e5":
    if not (E5_DIR / "config.json").exists():
      raise SystemExit(f"--model e5: {E5_DIR}/config.json not found; use --model bert6|base")
    enc_cfg, enc_params, tokenizer = hf.load_hf(str(E5_DIR))
    words = None
  else:
    tokenizer, words = word_tokenizer(workdir / "tokenizer")
    shape = dict(SHAPES[args.model])
    if args.quick:  # Light enough for a CPU check of the script (and a small export).
      shape.update(vocab_size=len(tokenizer), num_layers=2)
    enc_cfg = bert.EncoderConfig(model_type="bert", max_position_embeddings=512,
                                 pad_token_id=tokenizer.pad_token_id, **shape)
    enc_params = None
  enc_cfg = dataclasses.replace(enc_cfg, dtype=args.dtype, attention=args.attention,
                                activation_dtype=args.activation_dtype)
  rcfg = retriever.RetrieverConfig(encoder=enc_cfg, pooling="mean", normalize=True)
  params = retriever.init_retriever(rcfg, jax.random.key(0), enc_params)
  return rcfg, params, tokenizer, words


def main():
  args = parse_args()
  import sentence_transformers  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  if args.single_thread:  # XLA reads XLA_FLAGS at its first computation, which is later.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_cpu_multi_thread_eigen=false").strip()
    torch.set_num_threads(1)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  with tempfile.TemporaryDirectory() as tmp:
    workdir = pathlib.Path(tmp)
    rcfg, params, tokenizer, words = build(args, workdir)
    texts = sentences(args.sentences, words)
    export = hf.export_hf(params, rcfg, tokenizer, workdir / "export")
    torch_dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    st_model = sentence_transformers.SentenceTransformer(
        str(export), device=device, model_kwargs={"torch_dtype": torch_dtype})
    st_model.max_seq_length = args.max_len
    lair_encode = encode.make_text_encoder(
        params, rcfg, tokenizer, batch_size=args.batch, max_len=args.max_len,
        buckets=(16, 32, 64, 128, 256, 512))

    def run_lair():
      return lair_encode(texts)

    def run_st():
      return st_model.encode(texts, batch_size=args.batch, convert_to_numpy=True,
                             normalize_embeddings=False, show_progress_bar=False)

    lengths = [len(x) for x in tokenizer(texts, truncation=True,
                                         max_length=args.max_len)["input_ids"]]
    print(f"model={args.model} ({rcfg.encoder.num_layers} x {rcfg.encoder.hidden_size}, vocab "
          f"{rcfg.encoder.vocab_size}), {len(texts)} sentences, {np.mean(lengths):.1f} tokens "
          f"on average (max {max(lengths)}), batch {args.batch}, max_len {args.max_len}, dtype "
          f"{args.dtype}, lair activations {args.activation_dtype}, attention {args.attention}")
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; torch {torch.__version__} "
          f"on {device} ({torch.get_num_threads()} threads), sentence-transformers "
          f"{sentence_transformers.__version__}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    ours, theirs = run_lair(), np.asarray(run_st(), np.float32)  # Untimed: compiles, warms.
    cosine = np.sum(ours * theirs, axis=1) / (np.linalg.norm(theirs, axis=1) + 1e-12)
    print(f"same embeddings: max |lair - st| {np.max(np.abs(ours - theirs)):.2e}, min cosine "
          f"{np.min(cosine):.6f}")
    times = {"lair": [], "sentence-transformers": []}
    for _ in range(args.rounds):
      for name, fn in (("lair", run_lair), ("sentence-transformers", run_st)):
        start = time.perf_counter()
        fn()
        times[name].append(time.perf_counter() - start)
    rate = {name: len(texts) / statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
      print(f"  {name:22s} {rate[name]:9.1f} sentences/s  (median of {len(t)}: "
            f"{statistics.median(t):.2f}s; min {min(t):.2f}s, max {max(t):.2f}s)")
    ratio = rate["lair"] / rate["sentence-transformers"]
    print(f"lair / sentence-transformers: {ratio:.2f}x sentences/s")
    if args.json:
      pathlib.Path(args.json).write_text(json.dumps(dict(
          model=args.model, dtype=args.dtype, activation_dtype=args.activation_dtype,
          attention=args.attention, device=device,
          sentences=len(texts), lair_sentences_per_s=rate["lair"],
          st_sentences_per_s=rate["sentence-transformers"], ratio=ratio,
          max_abs_diff=float(np.max(np.abs(ours - theirs))),
          min_cosine=float(np.min(cosine))), indent=2))


if __name__ == "__main__":
  main()
