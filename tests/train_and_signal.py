"""`python -m lair.train ...` that sends itself a stop signal when asked for input batch N.

    LAIR_SIGNAL_AT_BATCH=7 [LAIR_SIGNAL_PROCESSES=0,1] [LAIR_SIGNAL_AGAIN_IN_SAVE=1] \
        python tests/train_and_signal.py --config=... --workdir=...

Like a scheduler's SIGTERM, at a fixed place so the test is repeatable: only the processes whose
index is in LAIR_SIGNAL_PROCESSES (default all) get it. With LAIR_SIGNAL_AGAIN_IN_SAVE=1 each
of them gets a second SIGTERM while the checkpoint that the first one asked for is being saved.
"""
import os
import signal

import jax

from lair import checkpoint
from lair import cli
from lair.data import pipeline
from lair.train import __main__ as train_main

AT = int(os.environ["LAIR_SIGNAL_AT_BATCH"])
PROCESSES = os.environ.get("LAIR_SIGNAL_PROCESSES", "")
AGAIN_IN_SAVE = os.environ.get("LAIR_SIGNAL_AGAIN_IN_SAVE") == "1"
_next_batch = pipeline.TrainBatches.__next__
_save = checkpoint.Checkpoints.save
_signalled = []


def _chosen() -> bool:
  return not PROCESSES or str(jax.process_index()) in PROCESSES.split(",")


def _next_or_signal(self):
  if self.step == AT and _chosen():
    _signalled.append(True)
    os.kill(os.getpid(), signal.SIGTERM)
  return _next_batch(self)


def _save_and_signal_again(self, step, state, data_state):
  _save(self, step, state, data_state)  # Asynchronous: the write is under way.
  if AGAIN_IN_SAVE and _signalled and _chosen():
    os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
  pipeline.TrainBatches.__next__ = _next_or_signal
  checkpoint.Checkpoints.save = _save_and_signal_again
  cli.run(train_main.main)
