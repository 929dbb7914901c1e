"""`python -m lair.train ...` that SIGKILLs itself at a chosen place (a real kill, no clean-up).

    LAIR_DIE_AT_BATCH=27 python tests/train_and_die.py --config=... --workdir=...
    LAIR_DIE_IN_SAVE=2 LAIR_DIE_SEED=0 python tests/train_and_die.py ...

LAIR_DIE_AT_BATCH=N: when input batch N is asked for. LAIR_DIE_IN_SAVE=K: during the K-th
checkpoint save (1-based), a seeded 0-30 ms after orbax started writing it in the background.
Killing from outside would race a tiny model that runs hundreds of steps a second; dying at a
fixed place makes the interruption land there every time.
"""
import os
import random
import signal
import time

from lair import checkpoint
from lair import cli
from lair.data import pipeline
from lair.train import __main__ as train_main

DIE_AT = int(os.environ.get("LAIR_DIE_AT_BATCH", -1))
DIE_IN_SAVE = int(os.environ.get("LAIR_DIE_IN_SAVE", 0))
_next_batch = pipeline.TrainBatches.__next__
_save = checkpoint.Checkpoints.save
_saves = []


def _next_or_die(self):
  if self.step == DIE_AT:
    os.kill(os.getpid(), signal.SIGKILL)
  return _next_batch(self)


def _save_and_die(self, step, state, data_state):
  _save(self, step, state, data_state)
  _saves.append(step)
  if len(_saves) == DIE_IN_SAVE:
    time.sleep(random.Random(int(os.environ.get("LAIR_DIE_SEED", 0))).uniform(0, 0.03))
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
  pipeline.TrainBatches.__next__ = _next_or_die
  checkpoint.Checkpoints.save = _save_and_die
  cli.run(train_main.main)
