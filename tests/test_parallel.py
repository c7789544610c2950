"""Data parallelism: N devices train and decode like one, the batch is really split,
several processes agree, bfloat16 tracks float32.

The device count of a JAX process is fixed when it starts, so each configuration
runs tests/parallel_worker.py in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=N on CPU and compares the arrays
it saves. Tolerances: training losses rtol 1e-5; parameters after 40 Adam steps
rtol 1e-5, atol 1e-5 (one step moves them by ~1e-2; observed differences are
~1e-7, from the order of the cross-device gradient sum); decoded text exactly.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from jax.sharding import PartitionSpec

from s2s_jax import parallel
from s2s_jax.errors import ConfigError
from s2s_jax.workdir import checkpoints as ckpt_lib
from tests.helpers import cli_cache, free_port

pytestmark = pytest.mark.slow  # subprocesses with 8 simulated devices and 2 processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 400


def worker_env(base, devices: int, **extra) -> dict:
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    return dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=flags,
        OPENBLAS_NUM_THREADS="1",
        S2S_JAX_CACHE=cli_cache(),
        **extra,
    )


def run_worker(base, devices: int, *args) -> dict:
    base.mkdir(parents=True, exist_ok=True)
    out = base / "out.npz"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.parallel_worker", str(out), str(base), *args],
        cwd=ROOT,
        env=worker_env(base, devices),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return dict(np.load(out)), proc


def params_of(result: dict, prefix: str = "param:") -> dict:
    return {k[len(prefix) :]: v for k, v in result.items() if k.startswith(prefix)}


def assert_same_params(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and len(a) > 5
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-5, err_msg=key)


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    base = tmp_path_factory.mktemp("one_device")
    result, _ = run_worker(base, 1, "--bf16")
    result["workdir"] = str(base / "f32")
    return result


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory, one_device):
    base = tmp_path_factory.mktemp("eight_devices")
    one_dir = one_device["workdir"]
    result, proc = run_worker(base, 8, "--decode_workdir", one_dir, "--resume_from", one_dir)
    result["workdir"], result["stdout"] = str(base / "f32"), proc.stdout
    return result


def test_eight_devices_train_like_one_device(one_device, eight_devices):
    assert (one_device["device_count"], eight_devices["device_count"]) == (1, 8)
    assert len(one_device["losses"]) == 40
    np.testing.assert_allclose(eight_devices["losses"], one_device["losses"], rtol=1e-5)
    assert eight_devices["losses"][-1] < 0.8 * eight_devices["losses"][0]  # it learned something
    assert_same_params(params_of(eight_devices), params_of(one_device))
    # Validation batches of 12 rows are padded to 16 on 8 devices; the filler rows count for nothing.
    np.testing.assert_allclose(eight_devices["valid_loss"], one_device["valid_loss"], rtol=1e-5)
    assert "devices: 8 × cpu, global batch 16 = 2 per device" in eight_devices["stdout"]


def test_eight_devices_decode_like_one_device(one_device, eight_devices):
    for name in ("greedy", "beam"):
        hyps = list(one_device[f"decode_{name}"])
        assert sum(bool(h) for h in hyps) >= len(hyps) // 2, hyps  # real output, not all empty
        assert list(eight_devices[f"decode_{name}"]) == hyps, name


def test_each_device_holds_an_eighth_of_the_batch(eight_devices):
    assert eight_devices["batch_rows"] == 16
    assert str(eight_devices["batch_spec"]) == str(PartitionSpec("data"))
    assert list(eight_devices["shard_rows"]) == [2] * 8
    assert sorted(eight_devices["shard_starts"]) == list(range(0, 16, 2))
    assert len(set(eight_devices["shard_devices"])) == 8


def test_a_batch_the_devices_do_not_divide_is_a_config_error(eight_devices):
    assert str(eight_devices["batch_error"]) == (
        "train.batch_size=12 does not divide across 8 devices; use a multiple of 8 (e.g. 8 or 16)"
    )
    with pytest.raises(
        ConfigError, match=r"train.batch_size=100 does not divide across 8 devices; use a multiple of 8"
    ):
        parallel.check_batch_divides(100, 8)
    assert parallel.check_batch_divides(64, 8) == 8


def test_a_one_device_run_resumes_on_eight_devices(one_device, eight_devices):
    # The one-device run's step-20 checkpoint, continued to step 40 on 8 devices.
    np.testing.assert_allclose(eight_devices["resumed_losses"], one_device["losses"], rtol=1e-5)
    assert_same_params(params_of(eight_devices, "resumed:"), params_of(one_device))


def test_an_eight_device_checkpoint_loads_on_one_device(eight_devices):
    """What decode.py does after training on a TPU: another device count than the checkpoint's."""
    params, meta = ckpt_lib.load_params(eight_devices["workdir"], "latest")
    assert meta["step"] == 40
    flat = {k: np.asarray(v) for k, v in _flatten(params).items()}
    assert_same_params(flat, params_of(eight_devices))
    best, _ = ckpt_lib.load_params(eight_devices["workdir"], "best")
    assert _flatten(best).keys() == flat.keys()


def _flatten(tree) -> dict:
    import jax

    return {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def test_bfloat16_tracks_float32(one_device):
    """train.dtype=bfloat16: bf16 activations, float32 parameters, optimizer state and loss.

    Tolerance: every one of the 40 training losses within 1% of float32's (observed ~0.07%).
    """
    assert list(one_device["bf16_state_dtypes"]) == ["float32"]  # params, Adam moments
    assert str(one_device["bf16_loss_dtype"]) == "float32"
    assert str(one_device["bf16_activation_dtype"]) == "bfloat16"
    f32, bf16 = one_device["losses"], one_device["bf16_losses"]
    assert np.all(np.isfinite(bf16))
    relative = np.abs(bf16 - f32) / f32
    assert relative.max() < 1e-2, relative
    assert relative.max() > 0  # it really computed in another precision
    assert bf16[-1] < 0.8 * bf16[0]


@pytest.mark.slow
def test_two_processes_train_like_one_device(tmp_path, one_device):
    """jax.distributed on one machine: 2 processes x 4 CPU devices, a shared workdir.

    Each process feeds only its own rows, only process 0 writes logs, both write
    their part of every checkpoint, and the result equals one device's.
    """
    port = free_port()  # for the coordinator
    procs = []
    for pid in range(2):
        env = worker_env(
            tmp_path,
            4,
            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
            JAX_NUM_PROCESSES="2",
            JAX_PROCESS_ID=str(pid),
        )
        env["S2S_JAX_CACHE"] = cli_cache(pid)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.parallel_worker",
                    str(tmp_path / "out.npz"),
                    str(tmp_path),
                    "--skip_decode",
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=TIMEOUT))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-4000:]
    result = dict(np.load(tmp_path / "out.npz"))
    assert (result["device_count"], result["process_count"]) == (8, 2)
    np.testing.assert_allclose(result["losses"], one_device["losses"], rtol=1e-5)
    assert_same_params(params_of(result), params_of(one_device))
    # Process 0's devices hold global rows 0..7, two each.
    assert list(result["shard_rows"]) == [2] * 4 and sorted(result["shard_starts"]) == [0, 2, 4, 6]
    assert "devices: 8 × cpu on 2 processes, global batch 16 = 2 per device" in outputs[0][0]
    assert "devices:" not in outputs[1][0] and "valid loss" not in outputs[1][0]  # process 1 is quiet
    state_dir = tmp_path / "f32" / "checkpoints" / "40" / "state"
    assert {"ocdbt.process_0", "ocdbt.process_1"} <= set(os.listdir(state_dir))


# ---------------------------------------------------------------------------
# In-process pieces (one CPU device here)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, None),
        ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, "JAX_COORDINATOR_ADDRESS is set"),
        ({"SLURM_NTASKS": "1"}, None),
        ({"SLURM_NTASKS": "4"}, "slurm launched 4 processes (SLURM_NTASKS)"),
        ({"OMPI_COMM_WORLD_SIZE": "2"}, "Open MPI launched 2 processes (OMPI_COMM_WORLD_SIZE)"),
        ({"TPU_WORKER_HOSTNAMES": "localhost"}, None),  # a single-host TPU (Colab, v3-8)
        ({"TPU_WORKER_HOSTNAMES": "t1,t2,t3,t4"}, "a TPU pod slice with 4 hosts (TPU_WORKER_HOSTNAMES)"),
    ],
)
def test_when_to_initialize_jax_distributed(env, expected):
    assert parallel.distributed_reason(False, env) == expected
    assert parallel.distributed_reason(True, env) == "--multihost"


def test_a_single_process_does_not_initialize(monkeypatch):
    import jax

    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: pytest.fail("initialize called"))
    assert parallel.maybe_initialize_distributed(False, {}) is False


def test_padding_rows_for_the_devices():
    batch = {"src": np.ones((3, 4), np.int32), "index": np.arange(3, dtype=np.int32)}
    padded = parallel.pad_rows(batch, parallel.round_up_rows(3, 8))
    assert padded["src"].shape == (8, 4) and not padded["src"][3:].any()
    assert list(padded["index"]) == [0, 1, 2] + [-1] * 5
    assert parallel.round_up_rows(16, 8) == 16 and parallel.round_up_rows(1, 1) == 1


def test_one_device_mesh_places_batches_and_state():
    mesh = parallel.make_mesh()
    assert mesh.axis_names == ("data",)
    batch = parallel.shard_batch(mesh, {"src": np.arange(12, dtype=np.int32).reshape(4, 3)})
    assert batch["src"].sharding == parallel.batch_sharding(mesh)
    np.testing.assert_array_equal(parallel.to_host(batch["src"]), np.arange(12).reshape(4, 3))
    state = parallel.replicate({"w": np.ones(3, np.float32)}, mesh)
    assert state["w"].sharding.is_fully_replicated
    assert parallel.describe(mesh, 64) == "devices: 1 × cpu, global batch 64 = 64 per device"
