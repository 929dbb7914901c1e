"""`python -m lair.train ...` that SIGKILLs itself when asked for input batch N (a real kill).

    LAIR_DIE_AT_BATCH=27 python tests/train_and_die.py --config=... --workdir=...

Killing from outside would race a tiny model that runs hundreds of steps a second; dying at a
fixed batch makes the interruption land at the same place every time, with no clean-up run.
"""
import os
import signal

from lair import cli
from lair.data import pipeline
from lair.train import __main__ as train_main

DIE_AT = int(os.environ["LAIR_DIE_AT_BATCH"])
_next_batch = pipeline.TrainBatches.__next__


def _next_or_die(self):
  if self.step == DIE_AT:
    os.kill(os.getpid(), signal.SIGKILL)
  return _next_batch(self)


if __name__ == "__main__":
  pipeline.TrainBatches.__next__ = _next_or_die
  cli.run(train_main.main)
