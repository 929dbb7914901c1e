"""Devices and hosts: the mesh, how arrays are laid out on it, and multi-host start-up.

Used alike by training, evaluation and export. One mesh axis, `data`: every batch is split along it. Parameters (and their optimiser moments)
are replicated by default; with `mesh.fsdp` an array of at least `mesh.fsdp_min_size` elements is
sharded along `data` on its largest dimension that the axis size divides (FSDP / ZeRO-3 style),
and jit inserts the all-gathers the encoder needs.
"""
import os
import re
from typing import Any, Callable, Optional, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lair import errors

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


def make_local_mesh() -> Mesh:
  """A 1-D `data` mesh over this process's own devices: work that needs no other host."""
  return Mesh(np.asarray(jax.local_devices()), (DATA_AXIS,))


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


# The explicit override, for clusters JAX does not detect by itself (launch/run.sh documents it).
COORDINATOR_ENV = ("LAIR_COORDINATOR", "LAIR_NUM_PROCESSES", "LAIR_PROCESS_ID")
# What `srun` sets in each task, all of which JAX's SLURM detection needs.
SLURM_STEP_ENV = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
                  "SLURM_LOCALID")


def detect_cluster():
  """The cluster environment jax.distributed.initialize() would use here, or None.

  JAX's own detection (its ClusterEnv classes: SLURM, Open MPI, Cloud TPU pods, Kubernetes where
  the `kubernetes` package is installed); lair adds nothing of its own.
  """
  from jax._src import clusters  # pylint: disable=g-import-not-at-top  (jax's detection registry)
  return next((env for env in clusters.ClusterEnv._cluster_types  # pylint: disable=protected-access
               if not env.opt_in_only_method and env.is_env_present()), None)


def _tasks_per_node() -> Optional[int]:
  """Processes on this node, where the scheduler says (SLURM's "4(x2)" form included)."""
  for key in ("SLURM_STEP_TASKS_PER_NODE", "SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE",
              "OMPI_COMM_WORLD_LOCAL_SIZE"):
    if os.environ.get(key):
      return int(re.match(r"\d+", os.environ[key])[0])
  return None


def local_device_ids(local_process_id: Optional[int]) -> Optional[list[int]]:
  """The GPUs this process drives: all it sees, or (one process per GPU) its own.

  JAX under a scheduler assumes one process per GPU (device = local process id). That is wrong
  in two common set-ups, which this function handles: one process per node (it must drive
  every GPU of the node), and `--gpus-per-task=1`, where the scheduler already narrowed
  CUDA_VISIBLE_DEVICES to one GPU whose id is 0 in the process. JAX_LOCAL_DEVICE_IDS overrides.
  """
  if os.environ.get("JAX_LOCAL_DEVICE_IDS"):
    return [int(i) for i in os.environ["JAX_LOCAL_DEVICE_IDS"].split(",")]
  if local_process_id is None or "cpu" in os.environ.get("JAX_PLATFORMS", "").split(","):
    return None
  visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
  if (_tasks_per_node() or 1) <= 1 or len(visible) == 1:
    return None
  return [local_process_id]


def initialize_distributed() -> str:
  """Starts JAX's multi-process runtime when this process is one of several; says how.

  LAIR_COORDINATOR / LAIR_NUM_PROCESSES / LAIR_PROCESS_ID, when set, are used as given (any
  cluster). Otherwise JAX's own detection finds SLURM (under `srun`), Open MPI, Cloud TPU pods
  and Kubernetes, and lair passes its coordinator, process count and id to
  jax.distributed.initialize with the local devices of `local_device_ids`. One process alone
  (no cluster, or a one-task job) starts nothing. Returns a line for the start-up log.
  """
  # CPU hosts all-reduce over gloo (the default in jax 0.10; earlier ones had none, and a
  # multi-process CPU step then fails to compile its collectives). No effect on accelerators.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if os.environ.get("LAIR_COORDINATOR"):
    missing = [k for k in COORDINATOR_ENV if not os.environ.get(k)]
    if missing:
      raise errors.ConfigError(f"LAIR_COORDINATOR is set but {', '.join(missing)} are not: "
                               f"set all of {', '.join(COORDINATOR_ENV)} (launch/run.sh)")
    source = "LAIR_COORDINATOR"
    jax.distributed.initialize(coordinator_address=os.environ["LAIR_COORDINATOR"],
                               num_processes=int(os.environ["LAIR_NUM_PROCESSES"]),
                               process_id=int(os.environ["LAIR_PROCESS_ID"]),
                               local_device_ids=local_device_ids(None))
  else:
    env = detect_cluster()
    if env is None:
      if os.environ.get("SLURM_JOB_ID"):
        missing = [k for k in SLURM_STEP_ENV if k not in os.environ]
        print(f"warning: SLURM_JOB_ID is set but {', '.join(missing)} are not: this process was "
              f"not started by srun, so it runs alone (start it with srun, as "
              f"launch/slurm.sbatch does)", flush=True)
      return describe_processes("no cluster")
    source = getattr(env, "name", "") or env.__name__
    count = env.get_process_count()
    if count <= 1:
      return describe_processes(f"{source}, one process")
    jax.distributed.initialize(
        coordinator_address=env.get_coordinator_address(
            timeout_secs=300, override_coordinator_port=os.environ.get("JAX_COORDINATOR_PORT")),
        num_processes=count, process_id=env.get_process_id(),
        local_device_ids=local_device_ids(env.get_local_process_id()),
        cluster_detection_method="deactivate")  # Detected above; local devices chosen here.
  return describe_processes(source)


def launcher_process_index() -> int:
  """This process's index among those the launcher started, read from the environment only.

  For single-host work that every process of a job reaches (launch/run.sh's export): process 0
  does it alone, without starting JAX's multi-process runtime (whose collectives would wait for
  the others).
  """
  if os.environ.get("LAIR_PROCESS_ID"):
    return int(os.environ["LAIR_PROCESS_ID"])
  env = detect_cluster()
  return int(env.get_process_id()) if env is not None else 0


def describe_processes(source: str) -> str:
  """"cluster: slurm; process 0 of 2; local devices [...]; 8 devices in all"."""
  local = ", ".join(str(d) for d in jax.local_devices())
  return (f"cluster: {source}; process {jax.process_index()} of {jax.process_count()}; local "
          f"devices [{local}]; {jax.device_count()} devices in all")


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


# ------------------------------------------------------------------------------------------------
# Splitting host work (evaluation) over processes.
# ------------------------------------------------------------------------------------------------


def process_share(num_items: int) -> tuple[int, int]:
  """[start, stop) of this process's contiguous share of `num_items` (sizes differ by <= 1)."""
  count, index = jax.process_count(), jax.process_index()
  base, extra = divmod(num_items, count)
  start = index * base + min(index, extra)
  return start, start + base + (index < extra)


def gather_shares(local: np.ndarray, num_items: int) -> np.ndarray:
  """Every process's `process_share` rows, concatenated in order: [num_items, ...] on all.

  `local` is this process's rows [stop - start, ...]; shares are padded to one size for the
  all-gather and trimmed after.
  """
  if jax.process_count() == 1:
    return local
  size = -(-num_items // jax.process_count())
  padded = np.zeros((size, *local.shape[1:]), local.dtype)
  padded[:len(local)] = local
  gathered = np.asarray(multihost_utils.process_allgather(padded))  # [P, size, ...]
  parts = []
  for index in range(jax.process_count()):
    base, extra = divmod(num_items, jax.process_count())
    parts.append(gathered[index, :base + (index < extra)])
  return np.concatenate(parts)


def to_local(tree: Any) -> Any:
  """Arrays of `tree` as this process can hold them alone (numpy where they span other hosts).

  A replicated global array keeps one of its local copies; one sharded across hosts (FSDP) is
  all-gathered. For work on `make_local_mesh()`, such as evaluation.
  """
  def local(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
      return x
    if x.is_fully_replicated:
      return x.addressable_data(0)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

  return jax.tree.map(local, tree)
