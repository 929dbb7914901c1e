"""`python -m lair.train --config=configs/NAME.py[:ARG] --workdir=DIR [--config.a.b=VALUE ...]`.

Trains (or resumes, when DIR holds a checkpoint) the run the config describes; see loop.py. The
command line is parsed by ml_collections.config_flags (lair/configs.py).
"""
from absl import flags

from lair import cli
from lair import configs
from lair import sharding
from lair.errors import ConfigError
from lair.train import loop


def define_flags(flag_values: flags.FlagValues) -> None:
  flags.DEFINE_string("workdir", None, "run directory (resumed when it holds a run)",
                      flag_values=flag_values)


def main(argv) -> None:
  config, flag_values = configs.parse_command_line(argv, define_flags)
  if config is None:
    raise ConfigError("--config=configs/NAME.py[:ARG] is required")
  if not flag_values.workdir:
    raise ConfigError("--workdir=DIR is required (the run directory; resumed when it holds a run)")
  print(sharding.initialize_distributed(), flush=True)
  loop.train(config, flag_values.workdir)


if __name__ == "__main__":
  cli.run(main)
