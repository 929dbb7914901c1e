"""`python -m lair.train --config=configs/NAME.py[:ARG] --workdir=DIR [--config.a.b=VALUE ...]`.

Trains (or resumes, when DIR holds a checkpoint) the run the config describes; see loop.py.
"""
import argparse
import sys

from lair import configs
from lair.train import loop


def parse_args(argv):
  """(config path[:arg], workdir, ['--config.a.b=v', ...]); anything else is an error."""
  parser = argparse.ArgumentParser(prog="python -m lair.train", description=__doc__)
  parser.add_argument("--config", required=True, help="configs/NAME.py[:ARG]")
  parser.add_argument("--workdir", required=True, help="run directory (resumed if it exists)")
  args, rest = parser.parse_known_args(argv)
  bad = [a for a in rest if not a.startswith("--config.")]
  if bad:
    parser.error(f"unrecognized arguments {bad}: expected --config.KEY=VALUE overrides")
  return args.config, args.workdir, rest


def main(argv=None):
  config_path, workdir, overrides = parse_args(sys.argv[1:] if argv is None else argv)
  config = configs.load_config(config_path, overrides)
  loop.initialize_distributed()
  loop.train(config, workdir)


if __name__ == "__main__":
  main()
