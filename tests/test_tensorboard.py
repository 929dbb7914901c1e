"""TensorBoard: the events a run writes, read back by TensorBoard's own reader, grouped by tag.

metrics.jsonl keeps the plain names its readers use; the TensorBoard tags group them
("loss/ir", "throughput/examples_per_s"). Needs tensorboardX (a lair requirement) and, for
TensorBoard's reader, the `tb` extra (`pip install -e '.[tb]'`); skipped without them.
"""
import json
import struct

import pytest

from lair import workdir as workdir_lib
from lair.train import loop

SCALARS = {"loss": 1.5, "ir": 0.5, "semantic": 0.25, "language_identity": 0.125,
           "learning_rate": 1e-3, "grad_norm": 2.0, "examples_per_s": 30.0,
           "tokens_per_s": 400.0, "compiles": 1.0, "ir_candidates": 32.0}
TAGS = {"loss/total", "loss/ir", "loss/semantic", "loss/language_identity",
        "optimizer/learning_rate", "optimizer/grad_norm", "throughput/examples_per_s",
        "throughput/tokens_per_s", "train/compiles", "train/ir_candidates"}


def test_tensorboard_tag():
  assert {loop.tensorboard_tag(k) for k in SCALARS} == TAGS
  assert loop.tensorboard_tag("lareqa/map@20/deu") == "lareqa/map@20/deu"


def _tfrecord_events(path):
  """Event protos of a TFRecord file (length, crc, data, crc), read without TensorBoard."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  with open(path, "rb") as f:
    data = f.read()
  events, at = [], 0
  while at < len(data):
    (length,) = struct.unpack("<Q", data[at:at + 8])
    events.append(event_pb2.Event.FromString(data[at + 12:at + 12 + length]))
    at += 12 + length + 4
  return events


def test_a_run_writes_grouped_tags_and_plain_metrics_jsonl(tmp_path):
  pytest.importorskip("tensorboardX")
  run = workdir_lib.Workdir(tmp_path / "run")
  (tmp_path / "run").mkdir()  # Training writes its config there first.
  writer = loop.MetricWriter(run, total_steps=10)
  writer.write(5, SCALARS, echo=False)
  writer.write(10, {"lareqa/map@20/deu": 0.75}, echo=False)
  writer.close()
  rows = [json.loads(line) for line in open(run.metrics_jsonl, encoding="utf-8")]
  assert rows == [{"step": 5, **SCALARS}, {"step": 10, "lareqa/map@20/deu": 0.75}]
  (events_file,) = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
  found = {(v.tag, e.step): v.simple_value for e in _tfrecord_events(events_file)
           for v in e.summary.value}
  # TensorBoard tags allow no "@": tensorboardX writes "map@20" as "map_20".
  assert set(found) == {(t, 5) for t in TAGS} | {("lareqa/map_20/deu", 10)}
  assert found[("loss/ir", 5)] == 0.5
  try:
    # pylint: disable-next=g-import-not-at-top
    from tensorboard.backend.event_processing import event_accumulator
  except ImportError:
    pytest.skip("the tensorboard viewer is not installed (pip install -e '.[tb]')")
  accumulator = event_accumulator.EventAccumulator(str(tmp_path / "run" / "tensorboard"))
  accumulator.Reload()
  assert set(accumulator.Tags()["scalars"]) == TAGS | {"lareqa/map_20/deu"}
  assert [(s.step, s.value)
          for s in accumulator.Scalars("throughput/examples_per_s")] == [(5, 30.0)]
