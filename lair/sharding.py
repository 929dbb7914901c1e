"""Devices and hosts: the mesh, how arrays are laid out on it, and multi-host start-up.

Used alike by training, evaluation and export. One mesh axis, `data`: every batch is split along it. Parameters (and their optimiser moments)
are replicated by default; with `mesh.fsdp` an array of at least `mesh.fsdp_min_size` elements is
sharded along `data` on its largest dimension that the axis size divides (FSDP / ZeRO-3 style),
and jit inserts the all-gathers the encoder needs.
"""
import os
from typing import Any, Callable, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
T = TypeVar("T")


def make_mesh(data: int = -1) -> Mesh:
  """A 1-D mesh over `data` devices (-1: all of them), axis name "data".

  On several processes the mesh must span every device: the first `data` devices of
  jax.devices() are process 0's, and a process owning none of the mesh fails later, obscurely.
  """
  devices = jax.devices()
  if jax.process_count() > 1:
    if data not in (-1, len(devices)):
      raise ValueError(
          f"config.mesh.data={data}: with {jax.process_count()} processes the mesh must span "
          f"all devices; expected -1 or {len(devices)} (the global device count)")
  elif data != -1 and not 1 <= data <= len(devices):
    raise ValueError(f"config.mesh.data={data}: expected -1 or 1..{len(devices)} "
                     f"(the number of devices)")
  if data == -1:
    data = len(devices)
  return Mesh(np.asarray(devices[:data]), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  """Split the leading (row) dimension along `data`."""
  return NamedSharding(mesh, P(DATA_AXIS))


def fsdp_spec(shape: tuple[int, ...], axis_size: int, min_size: int) -> P:
  """The PartitionSpec of one array: its largest dimension divisible by the axis, if big enough."""
  if axis_size == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  dims = sorted(range(len(shape)), key=lambda d: -shape[d])
  for d in dims:
    if shape[d] % axis_size == 0:
      spec = [None] * len(shape)
      spec[d] = DATA_AXIS
      return P(*spec)
  return P()


def state_shardings(state: Any, mesh: Mesh, *, fsdp: bool = False, min_size: int = 2**18) -> Any:
  """NamedShardings for every leaf of `state` (arrays or ShapeDtypeStructs).

  Params and their Adam moments have the same shapes, so one size rule shards both alike.
  """
  axis_size = mesh.shape[DATA_AXIS]

  def leaf_sharding(leaf):
    shape = getattr(leaf, "shape", ())
    if not fsdp or len(shape) == 0:
      return replicated(mesh)
    return NamedSharding(mesh, fsdp_spec(tuple(shape), axis_size, min_size))

  return jax.tree.map(leaf_sharding, state)


def put_batch(batch: Any, mesh: Mesh) -> Any:
  """Host-local numpy batch -> global jax arrays split along `data` (rows of this process).

  Every leaf's leading dimension is rows; the global batch is the concatenation over processes.
  """
  sharding = data_sharded(mesh)
  axis_size = mesh.shape[DATA_AXIS]

  def put(path, x):
    x = np.asarray(x)
    global_rows = x.shape[0] * jax.process_count()
    if global_rows % axis_size:
      raise ValueError(f"batch field {jax.tree_util.keystr(path)}: {global_rows} global rows do "
                       f"not split over mesh.data={axis_size} devices; use batch sizes that the "
                       f"device count divides")
    return jax.make_array_from_process_local_data(sharding, x)

  return jax.tree_util.tree_map_with_path(put, batch)


# ------------------------------------------------------------------------------------------------
# Several processes (hosts).
# ------------------------------------------------------------------------------------------------


def initialize_distributed() -> None:
  """jax.distributed.initialize from LAIR_COORDINATOR / LAIR_NUM_PROCESSES / LAIR_PROCESS_ID."""
  coordinator = os.environ.get("LAIR_COORDINATOR")
  if coordinator:
    # CPU hosts all-reduce over gloo (the default in jax 0.10; earlier ones had none, and a
    # multi-process CPU step then fails to compile its collectives).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator,
                               num_processes=int(os.environ["LAIR_NUM_PROCESSES"]),
                               process_id=int(os.environ["LAIR_PROCESS_ID"]))


def process_zero_first(name: str, build: Callable[[], T]) -> T:
  """build() on process 0, then, after a barrier named `name`, on every other process.

  For what process 0 writes to the shared workdir and the others then read (the tokenizer,
  the data caches): built at once by every host, they would be raced.
  """
  if jax.process_count() == 1:
    return build()
  result = build() if jax.process_index() == 0 else None
  barrier(name)
  return result if jax.process_index() == 0 else build()


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier called `name` (nothing on one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def all_processes_agree(ok: bool) -> bool:
  """True when `ok` is true on every process: one vote against decides for all."""
  if jax.process_count() == 1:
    return bool(ok)
  return bool(np.all(multihost_utils.process_allgather(np.asarray(bool(ok)))))


def any_process(flag: bool) -> bool:
  """True when `flag` is true on some process."""
  return not all_processes_agree(not flag)


def broadcast_from_zero(value):
  """Process 0's `value` (a numpy-convertible scalar or array) on every process."""
  if jax.process_count() == 1:
    return value
  return multihost_utils.broadcast_one_to_all(np.asarray(value))


def config_errors(mesh_cfg) -> list[str]:
  """What is wrong with `config.mesh` before any device is looked at (one line per key)."""
  errors = []
  if int(mesh_cfg.data) != -1 and int(mesh_cfg.data) <= 0:
    errors.append(f"config.mesh.data={mesh_cfg.data}: expected -1 (all devices) or a positive "
                  f"device count")
  if int(mesh_cfg.fsdp_min_size) < 0:
    errors.append(f"config.mesh.fsdp_min_size={mesh_cfg.fsdp_min_size}: expected >= 0")
  return errors
