"""Running lair's command-line tools: an error a user can fix ends with one line and a hint.

`python -m lair.train|evaluate|export|index|search|mine` call `run(main)`. A `UserError` (bad
config, missing file, bad data, damaged checkpoints) or a FileNotFoundError prints
`lair.NAME: error: MESSAGE` (and the hint) on stderr and exits with status 2, without a
traceback; `--debug` or `LAIR_DEBUG=1` shows the traceback instead. `--help` (or `-h`) prints
the command's module docstring, its usage, and exits 0.
"""
import os
import sys
from typing import Callable, Optional, Sequence

from lair import errors

DEBUG_ENV = "LAIR_DEBUG"
USAGE_ERROR = 2
HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "--helpfull")


def run(main: Callable[[list[str]], None], argv: Optional[Sequence[str]] = None) -> None:
  """Calls main(argv) (argv[0] is the program), turning user errors into one clean line."""
  argv = list(sys.argv if argv is None else argv)
  debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
  argv = [a for a in argv if a != "--debug"]
  prog = _program_name(argv[0] if argv else "lair")
  if any(a in HELP_FLAGS for a in argv[1:]):
    print_help(main, prog)
    return
  try:
    main(argv)
  except (errors.UserError, FileNotFoundError) as e:
    if debug:
      raise
    print(f"{prog}: error: {e}", file=sys.stderr)
    hint = getattr(e, "hint", "")
    if hint:
      print(f"{prog}: hint: {hint}", file=sys.stderr)
    print(f"{prog}: (--debug or {DEBUG_ENV}=1 shows the traceback)", file=sys.stderr)
    sys.exit(USAGE_ERROR)


def print_help(main: Callable, prog: str) -> None:
  """The docstring of `main`'s module (each command's usage and what it does), and the flags
  every command shares."""
  module = sys.modules.get(main.__module__)
  print((getattr(module, "__doc__", None) or f"python -m {prog}").strip())
  print(f"\nEvery command takes --config.KEY=VALUE overrides of its config (every key, commented: "
        f"lair/configs.py) and --debug (or {DEBUG_ENV}=1) for tracebacks.")


def _program_name(argv0: str) -> str:
  """"lair.train" for .../lair/train/__main__.py, else the file's name."""
  parts = os.path.normpath(argv0).split(os.sep)
  if parts[-1] == "__main__.py" and len(parts) >= 3:
    return f"{parts[-3]}.{parts[-2]}"
  if len(parts) >= 2 and parts[-2] == "lair":
    return f"lair.{os.path.splitext(parts[-1])[0]}"
  return os.path.basename(argv0)
