"""Files written atomically: a kill at any instant leaves the old file or the new one, never half.

Each write goes to a temporary file in the same folder, is flushed to disk, then renamed over the
target (rename is atomic within a file system). Folders (a tokenizer, an export) are written
beside their target and swapped in with two renames.
"""
import contextlib
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Iterator


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w") -> Iterator[Any]:
  """Opens a temporary file beside `path`; on a clean exit it replaces `path` in one rename.

  An exception before the end leaves `path` untouched and removes the temporary file; a kill
  leaves at most a hidden `.NAME.*.tmp` beside it.
  """
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
  try:
    with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def write_text(path: str, text: str) -> None:
  with atomic_open(path) as f:
    f.write(text)


def write_json(path: str, obj: Any) -> None:
  write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def read_json(path: str) -> Any:
  """The JSON in `path`; a damaged file is an error naming it."""
  with open(path, encoding="utf-8") as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from e


def replace_folder(path: str, write: Callable[[str], Any]) -> None:
  """Writes a folder atomically: write(tmp_dir) fills a sibling, which then replaces `path`.

  A kill leaves either the old folder or the new one (plus, at worst, a hidden sibling
  `.NAME.tmp` or `.NAME.old` that the next call removes), except between the two renames
  below: there `path` is missing and the old folder is `.NAME.old`, which the next call puts
  back before anything else.
  """
  parent, name = os.path.split(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  tmp, old = os.path.join(parent, f".{name}.tmp"), os.path.join(parent, f".{name}.old")
  if not os.path.exists(path) and os.path.isdir(old):
    os.rename(old, path)
  for stale in (tmp, old):
    shutil.rmtree(stale, ignore_errors=True)
  os.makedirs(tmp)
  write(tmp)
  if os.path.exists(path):
    os.rename(path, old)
  os.rename(tmp, path)
  shutil.rmtree(old, ignore_errors=True)
