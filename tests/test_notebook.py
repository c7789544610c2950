"""notebooks/colab_tpu.ipynb executes top to bottom (nbclient, a python3 kernel) on CPU.

S2S_NOTEBOOK_SMOKE=1 makes the notebook's training tiny; two simulated CPU devices
make train.py and decode.py run data parallel as on a TPU's cores.
"""

import json
import os

import pytest

from tests.helpers import cli_cache

pytestmark = pytest.mark.slow  # executes the whole notebook

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "colab_tpu.ipynb")


@pytest.mark.slow
def test_colab_notebook_runs_on_cpu(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    workdir = tmp_path / "run"
    # The kernel and the commands it starts inherit these.
    monkeypatch.setenv("S2S_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("S2S_NOTEBOOK_WORKDIR", str(workdir))
    monkeypatch.setenv("S2S_JAX_CACHE", cli_cache())
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv(
        "XLA_FLAGS", f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2".strip()
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("MPLBACKEND", "Agg")  # headless
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError (with the cell's traceback) if any cell fails

    text = "\n".join(
        out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
    )
    assert "2 devices: [CpuDevice(id=0), CpuDevice(id=1)]" in text
    assert "devices: 2 × cpu, global batch 16 = 8 per device" in text
    assert "BLEU" in text and "chrF" in text  # decode.py --reference scored the test lines
    hyps = (workdir / "test_hyp.txt").read_text(encoding="utf-8").splitlines()
    assert len(hyps) == 32
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 30 and "valid_bleu" in records[-1]
    assert (workdir / "loss.png").stat().st_size > 1000
    images = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    ]
    assert len(images) == 1  # the loss curve, shown inline
