"""tensorflow-datasets builders that write each training stream as array_record.

No TensorFlow is needed: tfds 4.9 writes `array_record` files with its own
serializer (`file_format="array_record"`) and reads them back with
`builder.as_data_source()`, a random-access `ArrayRecordDataSource` whose items
are dicts of numpy values (text features come back as UTF-8 `bytes`). Checked
with tensorflow-datasets 4.9.10 and no TensorFlow installed. What must be avoided:
`as_dataset` (tf.data: "Failed to import TensorFlow"); `dataset_info_from_configs`,
which looks for package metadata files (`_info` builds `tfds.core.DatasetInfo`
directly); and tfds's lookup of the builder's source folder through the
`importlib_resources` backport, which is not installed (`_RowsBuilder.code_path`).

One builder per stream, fed by the readers in `lair/data/readers.py`:

* `build_ir(config, cache_dir)`: `{"query", "passage", "negatives"?}` from
  config.data.ir (SQuAD JSON, triples TSV, BEIR folders or `{"query", "pos", "neg"}` JSONL).
* `build_parallel(config, cache_dir)`: `{"src", "tgt", "src_lang", "tgt_lang"}`
  from config.data.parallel (`source eng xxx` TSVs or aligned file pairs).
* `build_mono(config, cache_dir)`: `{"text", "lang"}` from config.data.mono.

Each returns a `BuiltStream`: the data source, the row and skip counts, and where
it lives. Builds are cached under `cache_dir/<stream>-<key>/`, where the key hashes
the input files' paths, sizes and mtimes, the options that change the rows, and
`FORMAT_VERSION`; the same inputs reuse the files (and the counts saved beside them).
"""
import collections
import dataclasses
import hashlib
import math
import json
import os
from typing import Callable, Iterable, Iterator

from absl import logging
from etils import epath
import filelock
import numpy as np
import tensorflow_datasets as tfds

from lair.data import readers

# Bump when the readers or the features change what a build writes.
FORMAT_VERSION = 3  # 3: undecodable lines are skipped; parallel rows may be held out for mono.
_STATS_FILE = "lair_stats.json"


class _RowsBuilder(tfds.core.GeneratorBasedBuilder):
  """Writes the rows of `rows_fn()` in order, as one "train" split of array_record."""

  VERSION = tfds.core.Version("1.0.0")
  # tfds finds a builder's own folder (for checksums) through `importlib_resources`,
  # which is not installed (tfds imports it lazily); local inputs need no checksums.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)

  def __init__(self, *, features: tfds.features.FeaturesDict,
               rows_fn: Callable[[], Iterable[dict]], data_dir: str):
    self._features = features
    self._rows_fn = rows_fn
    super().__init__(data_dir=data_dir, file_format=tfds.core.FileFormat.ARRAY_RECORD)

  def _info(self) -> tfds.core.DatasetInfo:
    # Keep the readers' order: the pipeline shuffles with its own seeded permutation.
    return tfds.core.DatasetInfo(builder=self, features=self._features,
                                 disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager  # Inputs are local files.
    return {"train": self._generate_examples()}

  def _generate_examples(self) -> Iterator[tuple[int, dict]]:
    for index, row in enumerate(self._rows_fn()):
      yield index, row

  # tfds prints "Downloading and preparing dataset Unknown size ..." and "... downloaded and
  # prepared" to stdout for every build; for local files that is noise: log it instead.
  def _log_download_bytes(self) -> None:
    logging.info("writing array_record files to %s", self.data_dir)

  def _log_download_done(self) -> None:
    logging.info("wrote %s", self.data_dir)


@dataclasses.dataclass
class BuiltStream:
  """A stream's array_record rows and how they were made."""
  name: str  # "ir" | "parallel" | "mono"
  source: "tfds.data_sources.ArrayRecordDataSource"  # len(), [i], __getitems__([i, ...])
  # SkipLog.as_dict() of the build: rows (written), skipped per reason, per file (rows
  # read); plus "capped", the rows read but left out by max_pairs_per_language.
  stats: dict
  data_dir: str


def input_files(paths: Iterable[str]) -> list[str]:
  """The files behind config paths: a folder (BEIR) stands for the files under it."""
  files = []
  for path in paths:
    if os.path.isdir(path):
      files.extend(os.path.join(root, f) for root, _, names in sorted(os.walk(path))
                   for f in sorted(names))
    else:
      files.append(path)
  return files


def cache_key(name: str, files: Iterable[str], options: dict) -> str:
  """Hex digest of the stream name, each file's (path, size, mtime) and the options."""
  described = []
  for f in files:
    if not os.path.exists(f):
      raise readers.DataError(f"{f}: input file not found (stream {name!r})")
    st = os.stat(f)
    described.append([os.path.abspath(f), st.st_size, st.st_mtime_ns])
  blob = json.dumps({"name": name, "files": described, "options": options,
                     "format": FORMAT_VERSION}, sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_rows(name: str, features: tfds.features.FeaturesDict,
               rows_fn: Callable[[readers.SkipLog], Iterable[dict]], *,
               files: list[str], options: dict, cache_dir: str, strict: bool) -> BuiltStream:
  """Builds (or reuses) the array_record files of `rows_fn(log)` under `cache_dir`.

  Raises `DataError` when the stream has no usable row at all.
  """
  key = cache_key(name, files, dict(options, strict=strict))
  data_dir = os.path.join(cache_dir, f"{name}-{key}")
  log = readers.SkipLog(strict=strict)

  written = [0]

  def counted_rows():
    for row in rows_fn(log):
      written[0] += 1
      yield row
    # Checked here, before tfds finalizes (it fails on an empty split with less to say).
    if not written[0]:
      raise readers.DataError(f"stream {name!r}: no usable rows in {files} "
                              f"(skipped: {log.total_skipped()})")

  builder = _RowsBuilder(features=features, rows_fn=counted_rows, data_dir=data_dir)
  stats = _finished_build(builder, name, data_dir)  # Reuse writes nothing (read-only caches).
  if stats is None:
    # Runs that share a cache_dir may build the same stream at once, and tfds's final rename
    # of the later build then fails. A lock beside the folder serialises them: the later
    # process waits, then reuses what the first one built (with a builder made after the wait:
    # tfds reads a folder's state when a builder is made).
    os.makedirs(cache_dir, exist_ok=True)
    lock = filelock.FileLock(data_dir + ".lock")
    try:
      lock.acquire(timeout=0)
    except filelock.Timeout:
      logging.info("stream %s: another process is building %s; waiting for it", name, data_dir)
      lock.acquire()
    try:
      builder = _RowsBuilder(features=features, rows_fn=counted_rows, data_dir=data_dir)
      stats = _finished_build(builder, name, data_dir) or _build(builder, data_dir, log,
                                                                  written)
    finally:
      lock.release()
  logging.info("stream %s: %d rows, skipped %s", name, stats["rows"], stats["skipped"] or 0)
  source = builder.as_data_source()["train"]
  if len(source) != stats["rows"]:
    raise readers.DataError(f"{data_dir}: holds {len(source)} rows but its build counted "
                            f"{stats['rows']}; delete the folder to rebuild")
  return BuiltStream(name=name, source=source, stats=stats, data_dir=data_dir)


def _finished_build(builder, name: str, data_dir: str):
  """The stats of a finished build of the stream in `data_dir`, or None."""
  stats_path = os.path.join(data_dir, _STATS_FILE)
  if not (os.path.exists(stats_path) and builder.is_prepared()):
    return None
  with open(stats_path) as f:
    stats = json.load(f)
  logging.info("stream %s: reusing %d rows in %s", name, stats["rows"], data_dir)
  return stats


def _build(builder, data_dir: str, log: readers.SkipLog, written: list) -> dict:
  """Builds the stream's rows into `data_dir`; its stats (rows, skips), also written there."""
  stats_path = os.path.join(data_dir, _STATS_FILE)
  tfds.disable_progress_bar()  # Row counts are logged below; tqdm bars only clutter logs.
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      compute_stats=tfds.download.ComputeStatsMode.SKIP))
  stats = log.as_dict()
  stats["rows"] = written[0]  # Per-file counts are rows read; a reader may read more.
  if log.capped:  # Rows read but left out on purpose, counted and logged by the cap.
    stats["capped"] = log.capped
  if log.held_out:  # Rows read but kept for the monolingual stream (data.mono.from_parallel).
    stats["held_out"] = log.held_out
  with open(stats_path + ".tmp", "w") as f:
    json.dump(stats, f, indent=1)
  os.replace(stats_path + ".tmp", stats_path)
  return stats


def _text():
  return tfds.features.Text()


IR_FORMATS = readers.IR_FORMATS
PARALLEL_FORMATS = ("tsv", "aligned")


def stream_files(config, stream: str) -> list[str]:
  """The input files of `stream` ("ir" | "parallel" | "mono") that config.data names.

  A folder (BEIR) stands for the files under it; a malformed spec is a DataError naming it.
  """
  data = config.data
  if stream == "ir":
    return input_files(data.ir.paths)
  if stream == "parallel":
    if data.parallel.format == "aligned":
      return [f for spec in data.parallel.paths for _, f in readers.parse_aligned_spec(spec)]
    return input_files(data.parallel.paths)
  return [readers.parse_mono_spec(s)[1] for s in data.mono.paths]


def config_errors(config, stream: str) -> list[str]:
  """What is wrong with the config.data keys of `stream`, its files included (one per line)."""
  data = config.data
  errors = []
  if stream == "ir":
    if data.ir.format not in IR_FORMATS:
      errors.append(f"config.data.ir.format={data.ir.format!r}: expected one of {IR_FORMATS}")
    if data.ir.squad_target not in readers.SQUAD_TARGETS:
      errors.append(f"config.data.ir.squad_target={data.ir.squad_target!r}: expected one of "
                    f"{readers.SQUAD_TARGETS}")
    k = int(data.ir.num_negatives)
    if k < 0 or (k and data.ir.format not in readers.IR_FORMATS_WITH_NEGATIVES):
      errors.append(f"config.data.ir.num_negatives={k}: expected 0, or > 0 with "
                    f"config.data.ir.format in {readers.IR_FORMATS_WITH_NEGATIVES} (not "
                    f"{data.ir.format!r})")
    elif data.ir.format == "squad" and (
        problem := readers.squad_negatives_error(k, data.ir.squad_target)):
      errors.append(problem)
    if not data.ir.paths:
      errors.append("config.data.ir.paths is empty, but the objectives read the 'ir' stream")
  elif stream == "parallel":
    if data.parallel.format not in PARALLEL_FORMATS:
      errors.append(f"config.data.parallel.format={data.parallel.format!r}: expected one of "
                    f"{PARALLEL_FORMATS}")
      return errors
    if not data.parallel.paths:
      errors.append("config.data.parallel.paths is empty, but a loss that needs parallel pairs "
                    "has weight > 0")
  elif not data.mono.paths and not data.mono.get("from_parallel", 0):
    errors.append("config.data.mono.paths is empty and config.data.mono.from_parallel is 0, "
                  "but the objectives read the 'mono' stream")
  try:
    files = stream_files(config, stream)
  except readers.DataError as e:
    return errors + [str(e)]
  key = {"ir": "config.data.ir.paths", "parallel": "config.data.parallel.paths",
         "mono": "config.data.mono.paths"}[stream]
  errors += [f"{key}: {f}: no such file" for f in files if not os.path.exists(f)]
  return errors


def _check(config, stream: str) -> None:
  errors = config_errors(config, stream)
  if errors:
    raise readers.DataError("; ".join(errors))


def build_ir(config, cache_dir: str) -> BuiltStream:
  """IR rows from config.data.ir: `{"query", "passage"}` (+ `"negatives"` [K] when K > 0)."""
  _check(config, "ir")
  ir = config.data.ir
  k = int(ir.num_negatives)
  spec = {"query": _text(), "passage": _text()}
  if k:
    spec["negatives"] = tfds.features.Sequence(_text(), length=k)

  def rows(log):
    for path in ir.paths:
      for row in readers.read_ir(path, format=ir.format, squad_target=ir.squad_target,
                                 num_negatives=k, log=log):
        if not k:
          row = {"query": row["query"], "passage": row["passage"]}
        yield row

  options = {"format": ir.format, "squad_target": ir.squad_target, "num_negatives": k}
  return build_rows("ir", tfds.features.FeaturesDict(spec), rows,
                    files=stream_files(config, "ir"), options=options,
                    cache_dir=cache_dir, strict=config.data.strict)


def _cap_per_language(rows: Iterable[dict], cap: int,
                      log: readers.SkipLog) -> Iterator[dict]:
  """At most `cap` rows per (src_lang, tgt_lang): a seeded uniform sample in file order.

  The rows left out are added to `log.capped`.
  """
  by_pair = {}
  for row in rows:
    by_pair.setdefault((row["src_lang"], row["tgt_lang"]), []).append(row)
  for pair, pair_rows in by_pair.items():
    if len(pair_rows) > cap:
      logging.info("parallel %s: keeping %d of %d pairs (max_pairs_per_language)",
                   pair, cap, len(pair_rows))
      log.capped += len(pair_rows) - cap
      keep = np.sort(np.random.default_rng(list(pair)).choice(len(pair_rows), cap, replace=False))
      pair_rows = [pair_rows[i] for i in keep]
    yield from pair_rows


def hold_out_for_mono(rows: Iterable[dict], per_language: int,
                      log: readers.SkipLog) -> tuple[list[dict], list[dict]]:
  """Splits parallel rows into (pairs, monolingual sentences) for data.mono.from_parallel.

  About `per_language` sentences of every language are taken from rows that are then not used
  as pairs, one side of a row each, so that the language loss's z is non-parallel text of every
  language the pairs have. A language in g pair groups (English in all of them, typically)
  gives ceil(per_language / g) sentences from each; no group gives more than half its rows.
  The choice is a seeded sample per (src_lang, tgt_lang), the same in every build. The rows
  held out are counted in `log.held_out`.

  Returns:
    (pair rows in file order, mono rows {"text", "lang"}).
  """
  by_pair = {}
  for row in rows:
    by_pair.setdefault((row["src_lang"], row["tgt_lang"]), []).append(row)
  groups = collections.Counter(lang for pair in by_pair for lang in set(pair))
  pairs, mono = [], []
  for (src, tgt), pair_rows in by_pair.items():
    want = [math.ceil(per_language / groups[src]), math.ceil(per_language / groups[tgt])]
    budget = len(pair_rows) // 2
    if sum(want) > budget:
      want = [budget // 2, budget - budget // 2]
    picked = np.random.default_rng([src, tgt, 1]).choice(len(pair_rows), sum(want),
                                                         replace=False)
    taken = set(picked.tolist())
    mono += [{"text": pair_rows[i]["src"], "lang": src} for i in picked[:want[0]]]
    mono += [{"text": pair_rows[i]["tgt"], "lang": tgt} for i in picked[want[0]:]]
    pairs += [r for i, r in enumerate(pair_rows) if i not in taken]
    log.held_out += len(taken)
  return pairs, mono


def _parallel_rows(config, log: readers.SkipLog) -> Iterator[dict]:
  """The parallel rows config.data.parallel names, in file order, before any hold-out or cap."""
  par = config.data.parallel
  languages = list(config.data.languages)
  if par.format == "tsv":
    read = lambda p: readers.read_parallel_tsv(p, languages=languages, log=log)
  else:
    read = lambda p: readers.read_aligned(p, languages=languages, log=log)
  for path in par.paths:
    yield from read(path)


def _parallel_options(config) -> dict:
  par = config.data.parallel
  return {"format": par.format, "languages": list(config.data.languages),
          "max_pairs_per_language": int(par.max_pairs_per_language),
          "from_parallel": int(config.data.mono.get("from_parallel", 0))}


def build_parallel(config, cache_dir: str) -> BuiltStream:
  """Parallel rows from config.data.parallel: `{"src", "tgt", "src_lang", "tgt_lang"}`.

  Rows held out for the monolingual stream (data.mono.from_parallel) are left out.
  """
  _check(config, "parallel")
  par = config.data.parallel
  held_out = int(config.data.mono.get("from_parallel", 0))

  def rows(log):
    all_rows = _parallel_rows(config, log)
    if held_out:
      all_rows, _ = hold_out_for_mono(all_rows, held_out, log)
    if par.max_pairs_per_language:
      all_rows = _cap_per_language(all_rows, int(par.max_pairs_per_language), log)
    yield from all_rows

  features = tfds.features.FeaturesDict({
      "src": _text(), "tgt": _text(), "src_lang": np.int32, "tgt_lang": np.int32})
  return build_rows("parallel", features, rows, files=stream_files(config, "parallel"),
                    options=_parallel_options(config), cache_dir=cache_dir,
                    strict=config.data.strict)


def build_mono(config, cache_dir: str) -> BuiltStream:
  """Monolingual rows `{"text", "lang"}`: config.data.mono.paths ("xxx:PATH" entries), then the
  sentences held out of the parallel data (config.data.mono.from_parallel)."""
  _check(config, "mono")
  languages = list(config.data.languages)
  specs = list(config.data.mono.paths)
  held_out = int(config.data.mono.get("from_parallel", 0))
  files = stream_files(config, "mono")
  options = {"languages": languages}
  if held_out:
    files += stream_files(config, "parallel")
    options.update(parallel=_parallel_options(config))

  def rows(log):
    for spec in specs:
      yield from readers.read_mono(spec, languages=languages, log=log)
    if held_out:
      # The parallel files' own skips are counted by the parallel stream; count nothing twice.
      _, mono = hold_out_for_mono(_parallel_rows(config, readers.SkipLog(log.strict)),
                                  held_out, readers.SkipLog())
      for row in mono:
        log.keep("data.mono.from_parallel")
        yield row

  features = tfds.features.FeaturesDict({"text": _text(), "lang": np.int32})
  return build_rows("mono", features, rows, files=files, options=options, cache_dir=cache_dir,
                    strict=config.data.strict)
