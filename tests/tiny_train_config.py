"""A tiny run for the loop tests: quickstart's data, a 2-layer hidden-32 BERT, 8-row batches.

`python -m lair.train --config=tests/tiny_train_config.py:STEPS --workdir=DIR` trains STEPS
steps (default 50) on CPU in seconds: IR + semantic + language losses, checkpoints every 10,
evaluation every 25.
"""
from configs import quickstart  # pylint: disable=g-bad-import-order  (the repo root is on sys.path)


def get_config(arg=None):
  c = quickstart.get_config()
  c.model.encoder.update(dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                              hidden_dropout=0.1, attention_dropout=0.0))
  c.tokenizer.vocab_size = 600
  c.data.length_buckets = [32]  # One shape: one compile.
  c.train.batch_size = 8
  c.train.parallel_batch_size = 8
  c.train.mono_batch_size = 8
  c.train.steps = int(arg) if arg else 50
  c.train.learning_rate = 3e-3
  c.train.warmup_steps = 5
  c.train.log_every = 5
  c.train.checkpoint_every = 10
  c.train.keep_checkpoints = 2
  # Tatoeba-style bitext retrieval (quick) at step 25 and at the end; keep the best params.
  c.eval.sets = [dict(s) for s in c.eval.sets if s["kind"] == "tatoeba"]
  c.eval.search = "exact"
  c.train.eval_every = 25
  c.eval.select_best = "tatoeba/acc/mean"
  return c
