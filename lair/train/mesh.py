"""The device mesh, how the train state is laid out on it, and putting host batches on it.

One mesh axis, `data`: every batch is split along it. Parameters (and their optimiser moments)
are replicated by default; with `mesh.fsdp` an array of at least `mesh.fsdp_min_size` elements is
sharded along `data` on its largest dimension that the axis size divides (FSDP / ZeRO-3 style),
and jit inserts the all-gathers the encoder needs.
"""
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


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
