"""Errors a user can fix: the command-line tools print their message (and hint) without a traceback.

Every such error names the file, line, flag or config key at fault and what was expected. The
classes below also derive from the built-in error they refine (ValueError, FileNotFoundError),
so code that catches those keeps working.
"""


class UserError(Exception):
  """Bad input, config or files; `hint` (optional) says how to fix it."""

  def __init__(self, message: str, hint: str = ""):
    super().__init__(message)
    self.hint = hint


class ConfigError(UserError, ValueError):
  """A config or command line a user can fix; the message names the key and what was expected."""


class MissingFileError(UserError, FileNotFoundError):
  """A file or folder the run needs is not there; the message names it and the key that names it."""
