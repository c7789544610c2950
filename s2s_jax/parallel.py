"""Data parallelism with JAX's own machinery: one device mesh, NamedShardings, jax.distributed.

The mesh has a single axis, ``data``, over every device of every process. Each
batch is split along its first (row) dimension across that axis; parameters and
optimizer state are replicated. ``jax.jit`` partitions the same train step and
search functions for whatever mesh their inputs live on, so one device and N
devices (or N hosts) run the same code: XLA inserts the gradient all-reduce.

Where a ``model`` axis would go: make the mesh 2-D, ``jax.make_mesh((data, model),
("data", "model"))``, keep `batch_sharding` as ``P("data")`` and give large
parameters a ``PartitionSpec`` naming ``"model"`` where `replicate` places them (today
every leaf is ``P()``, replicated).

Several hosts (``jax.process_count() > 1``): every host builds the same,
deterministic global batch (bucketing and shuffling depend only on the seed, so
all hosts agree on shapes) and hands only its own rows to its own devices with
``jax.make_array_from_process_local_data``. Each host tokenizes the whole corpus;
it *transfers* only its shard to the accelerators.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Callable, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from s2s_jax.data.tokenizer import PAD_ID
from s2s_jax.errors import ConfigError
from s2s_jax.workdir.lost_peer import DEFAULT_HEARTBEAT_TIMEOUT

DATA = "data"

# Environment variables that say "this process is one of several" (launchers and clusters
# jax.distributed.initialize() knows how to read).
_MULTIPROCESS_ENV = {
    "SLURM_NTASKS": "slurm",
    "OMPI_COMM_WORLD_SIZE": "Open MPI",
}


def distributed_reason(multihost: bool = False, env: Mapping[str, str] | None = None) -> str | None:
    """Why this process should call jax.distributed.initialize(), or None on a single process."""
    env = os.environ if env is None else env
    if multihost:
        return "--multihost"
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return "JAX_COORDINATOR_ADDRESS is set"
    for var, name in _MULTIPROCESS_ENV.items():
        if env.get(var, "").isdigit() and int(env[var]) > 1:
            return f"{name} launched {env[var]} processes ({var})"
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    if len(hosts) > 1:
        return f"a TPU pod slice with {len(hosts)} hosts (TPU_WORKER_HOSTNAMES)"
    return None


def maybe_initialize_distributed(
    multihost: bool = False, env: Mapping[str, str] | None = None, heartbeat_timeout: int = DEFAULT_HEARTBEAT_TIMEOUT
) -> bool:
    """Calls jax.distributed.initialize() when asked (--multihost) or when the environment
    says this is one process of several; does nothing on a single process.

    Must run before anything touches a JAX backend. Cloud TPU pods, Slurm and Open MPI
    are detected by JAX itself; elsewhere set JAX_COORDINATOR_ADDRESS=host:port plus
    JAX_NUM_PROCESSES and JAX_PROCESS_ID on every process. `heartbeat_timeout` (seconds)
    bounds how long the others wait for a process that died or hangs.
    """
    env = os.environ if env is None else env
    reason = distributed_reason(multihost, env)
    if reason is None:
        return False
    kwargs: dict[str, Any] = {"heartbeat_timeout_seconds": heartbeat_timeout}
    if env.get("JAX_NUM_PROCESSES"):
        kwargs["num_processes"] = int(env["JAX_NUM_PROCESSES"])
    if env.get("JAX_PROCESS_ID"):
        kwargs["process_id"] = int(env["JAX_PROCESS_ID"])
    jax.distributed.initialize(**kwargs)
    return True


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh with axis ``data`` over all devices (of every process).

    Axis type Auto: jit's sharding propagation decides intermediate shardings, so
    the model code needs no sharding annotations.
    """
    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh((len(devices),), (DATA,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows (the leading dimension) split over the ``data`` axis, everything else whole."""
    return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device."""
    return NamedSharding(mesh, P())


def num_devices(mesh_or_count) -> int:
    return mesh_or_count if isinstance(mesh_or_count, int) else int(mesh_or_count.devices.size)


def check_batch_divides(global_batch: int, mesh_or_count, key: str = "train.batch_size") -> int:
    """The per-device batch; a ConfigError when `global_batch` does not split evenly."""
    n = num_devices(mesh_or_count)
    if global_batch % n:
        raise ConfigError(
            f"{key}={global_batch} does not divide across {n} devices; use a multiple of {n} "
            f"(e.g. {max(n, global_batch // n * n)} or {-(-global_batch // n) * n})"
        )
    return global_batch // n


def round_up_rows(rows: int, mesh_or_count) -> int:
    """`rows` rounded up to a multiple of the device count (decoding pads, it never refuses)."""
    n = num_devices(mesh_or_count)
    return -(-rows // n) * n


def describe(mesh: Mesh, global_batch: int, max_tokens: int = 0) -> str:
    """'devices: 8 × cpu, global batch 64 = 8 per device' (+ process count when several);
    with a token budget, 'batches of at most N tokens' instead of the row count."""
    n = num_devices(mesh)
    platform = mesh.devices.flat[0].platform
    hosts = f" on {jax.process_count()} processes" if jax.process_count() > 1 else ""
    if max_tokens:
        return f"devices: {n} × {platform}{hosts}, batches of at most {max_tokens} tokens (rows x max(S, T))"
    return f"devices: {n} × {platform}{hosts}, global batch {global_batch} = {global_batch // n} per device"


def is_main_process() -> bool:
    """Process 0 writes logs, prints and the files that are not checkpoints."""
    return jax.process_index() == 0


def silence_other_processes() -> None:
    """In a run of several processes, sends the stdout of all but process 0 to /dev/null
    (for the rest of the process): one copy of every log line. stderr stays, for errors."""
    if not is_main_process() and not getattr(sys.stdout, "_s2s_silenced", False):
        sys.stdout = open(os.devnull, "w", encoding="utf-8")
        sys.stdout._s2s_silenced = True


def sync(name: str) -> None:
    """A barrier across processes (a no-op on one)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


@contextlib.contextmanager
def main_process_first(name: str):
    """Process 0 runs the block, then the others do (they then find its files, e.g. a
    tokenizer, instead of writing them at the same time)."""
    if not is_main_process():
        sync(f"{name}:main-done")
        yield
        return
    try:
        yield
    finally:  # also when process 0 failed: the others then fail on their own, not hang
        sync(f"{name}:main-done")


def agree_to_stop(requested: bool, step: int, every: int) -> bool:
    """Whether the run stops after `step` (Ctrl-C / SIGTERM seen by this process).

    One process decides alone. Several must stop at the same step (each saves its
    part of the checkpoint), so they compare flags every `every` steps (train.log_every,
    where the loop waits for the device anyway) and stop if any process was asked to.
    """
    if jax.process_count() == 1:
        return requested
    if step % every:
        return False
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.array([int(requested)], np.int32))
    return bool(np.asarray(flags).any())


def process_rows(sharding: NamedSharding, global_rows: int) -> np.ndarray:
    """Indices of the global batch rows this process's devices hold, in global order."""
    shape = (global_rows,)
    starts = set()
    stop_of = {}
    for index in sharding.addressable_devices_indices_map(shape).values():
        start, stop, _ = index[0].indices(global_rows)
        starts.add(start)
        stop_of[start] = stop
    return np.concatenate([np.arange(s, stop_of[s]) for s in sorted(starts)])


def pad_rows(batch: Mapping[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """Tops a batch up to `rows` rows with filler (PAD tokens, index -1), as the
    bucketing does for a bucket's last batch; filler rows carry no loss."""
    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        missing = rows - value.shape[0]
        if missing <= 0:
            out[key] = value
            continue
        fill = -1 if key == "index" else PAD_ID
        out[key] = np.concatenate([value, np.full((missing, *value.shape[1:]), fill, value.dtype)])
    return out


def shard_batch(mesh: Mesh, batch: Mapping[str, Any]) -> dict[str, Any]:
    """Places a global numpy batch (the same on every process; values may be tuples of arrays)
    with its rows split over ``data``.

    Each process passes only the rows its own devices hold to
    jax.make_array_from_process_local_data; on one process that is the whole batch.
    """
    sharding = batch_sharding(mesh)

    def place(value) -> jax.Array:
        value = np.asarray(value)
        if jax.process_count() == 1:
            return jax.make_array_from_process_local_data(sharding, value)
        local = value[process_rows(sharding, value.shape[0])]
        return jax.make_array_from_process_local_data(sharding, local, value.shape)

    return {key: jax.tree.map(place, value) for key, value in batch.items()}


def search_inputs(mesh: Mesh, batch: Mapping[str, Any]) -> dict[str, Any]:
    """A decoding batch as a jitted search takes it: on one device the numpy arrays themselves
    (jit copies them in with the call; placing each one first costs ~0.1 ms, 1-2 ms of a
    batch-1 search's ~14 ms), on several devices `shard_batch`'s placement."""
    if mesh.devices.size == 1 and jax.process_count() == 1:
        return {key: jax.tree.map(np.asarray, value) for key, value in batch.items()}
    return shard_batch(mesh, batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Copies host-visible values (identical on every process) to every device of the mesh."""
    sharding = replicated(mesh)

    def put(x):
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def to_host(x) -> np.ndarray:
    """A numpy copy of a (possibly sharded, possibly multi-process) array, whole on every process."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def data_parallel_train_step(train_step: Callable, mesh: Mesh) -> Callable:
    """`train_step` (state, batch, key, segments=None) -> (state, metrics) with the new state kept
    replicated; `segments` (the batch's time-segment profiles) is static.

    jit propagates the input shardings (replicated state, row-split batch) through the
    step, so the step itself needs no change; pinning the outputs to replicated makes
    the next step's inputs (and the checkpoints) the same on every run.
    """
    return jax.jit(train_step, out_shardings=replicated(mesh), donate_argnums=0, static_argnames="segments")


def data_parallel_eval_step(eval_step: Callable, mesh: Mesh) -> Callable:
    """`eval_step` (params, batch) on a row-split batch (padded up to a multiple of the devices)."""
    n = num_devices(mesh)

    def run(params, batch):
        rows = round_up_rows(len(batch["src"]), n)
        return eval_step(params, shard_batch(mesh, pad_rows(batch, rows)))

    return run
