"""Shared test fixtures: where the real data and the real encoder live, skipping when absent."""
import os
import pathlib
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("LAIR_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"
E5_TOOL = SHARED / "tools" / "e5_small_checkpoint.py"
E5_CACHE = pathlib.Path(os.environ.get(
    "LAIR_E5_DIR", pathlib.Path.home() / ".cache" / "lair" / "multilingual-e5-small"))


@pytest.fixture(scope="session")
def shared_data():
  """Path to ../shared/data; skips the test when it is not there."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"real data not found at {SHARED_DATA}")
  return SHARED_DATA


@pytest.fixture(scope="session")
def e5_small_dir():
  """A multilingual-e5-small HF directory, built once by the shared tool and cached."""
  if (E5_CACHE / "model.safetensors").exists():
    return E5_CACHE
  if not E5_TOOL.exists():
    pytest.skip(f"{E5_TOOL} not found: cannot build multilingual-e5-small")
  proc = subprocess.run([sys.executable, str(E5_TOOL), str(E5_CACHE)],
                        capture_output=True, text=True)
  if proc.returncode != 0 or not (E5_CACHE / "model.safetensors").exists():
    pytest.skip("could not build multilingual-e5-small: " + proc.stderr[-500:])
  return E5_CACHE


def run_in_repo(cmd, timeout):
  """(stdout + stderr, seconds) of `cmd` run from the repository root as a user would (no
  XLA_FLAGS device split); fails the test, with the output's end, when it exits non-zero."""
  env = dict(os.environ, PYTHON=sys.executable, PYTHONUNBUFFERED="1")
  env.pop("XLA_FLAGS", None)
  start = time.monotonic()
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
  elapsed = time.monotonic() - start
  assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
  return proc.stdout + proc.stderr, elapsed


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory):
  """(workdir, output, seconds) of `bash launch/run.sh`, the quickstart as the README gives it
  (train 600 steps, evaluate, export); run once for every test that reads a trained run."""
  workdir = tmp_path_factory.mktemp("quickstart")
  out, seconds = run_in_repo(["bash", "launch/run.sh", f"--workdir={workdir}"], timeout=600)
  print(f"quickstart took {seconds:.0f} s")
  return workdir, out, seconds


# Rows of the fault-injection table (tests/test_faults.py): (fault, what lair did, anything lost).
FAULT_TABLE = []


def pytest_terminal_summary(terminalreporter):
  """Prints the fault-injection table after the test run (also when every test passed)."""
  if not FAULT_TABLE:
    return
  terminalreporter.section("fault injection: fault -> what lair did -> anything lost")
  width = max(len(row[0]) for row in FAULT_TABLE)
  for fault, did, lost in FAULT_TABLE:
    terminalreporter.write_line(f"{fault:<{width}}  {did}  [lost: {lost}]")
