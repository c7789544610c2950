"""Checkpoint save/restore, fallbacks past damaged checkpoints, checksums and a full disk
(the orbax workarounds' own tripwires are in test_orbax_workarounds.py).

In-process with tiny pytrees; the end-to-end versions (real training runs) are in
test_reliability.py.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2s_jax.workdir import checkpoints as ckpt_lib
from s2s_jax.workdir import checksums
from tests.helpers import fill_disk, flip_bytes, largest_array_file, tmpfs


def make_state(seed: int, leaves: int = 3) -> dict[str, Any]:
    params = {f"w{i}": jnp.arange(64, dtype=jnp.float32) * (seed + 1) + i for i in range(leaves)}
    return {"params": params, "opt": {"mu": jnp.full((4, 4), float(seed))}, "step": jnp.int32(seed)}


def abstract(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def assert_trees_equal(a: Any, b: Any) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(np.testing.assert_array_equal, a, b)


def write_run(workdir: Path, steps=(10, 20, 30), best: int | None = 20, leaves: int = 3) -> None:
    with ckpt_lib.Checkpoints(str(workdir), max_to_keep=5) as checkpoints:
        for step in steps:
            checkpoints.save(step, make_state(step, leaves), {"data_state": {"index": step}, "step": step})
            if step == best:
                checkpoints.save_best(step, make_state(step, leaves)["params"], {"valid_bleu": 1.5, "step": step})


def damage(step_dir: Path, item: str) -> None:
    """Truncates the array files of one item, as a disk error would."""
    files = glob.glob(str(step_dir / item / "**" / "d" / "*"), recursive=True)
    assert files, f"no array files under {step_dir / item}: has orbax's layout changed?"
    for path in files:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 3)


def test_save_and_restore_round_trip_latest_and_best(tmp_path):
    write_run(tmp_path)
    with ckpt_lib.Checkpoints(str(tmp_path), max_to_keep=5) as checkpoints:
        assert checkpoints.latest_step() == 30
        state, meta = checkpoints.restore(abstract(make_state(0)))
        assert checkpoints.best_meta() == {"valid_bleu": 1.5, "step": 20}
    assert_trees_equal(state, make_state(30))
    assert meta == {"data_state": {"index": 30}, "step": 30}

    params, meta = ckpt_lib.load_params(str(tmp_path), "best")
    assert_trees_equal(params, make_state(20)["params"])
    assert meta == {"valid_bleu": 1.5, "step": 20}
    params, meta = ckpt_lib.load_params(str(tmp_path), "latest")
    assert_trees_equal(params, make_state(30)["params"])
    assert meta["step"] == 30
    params, meta = ckpt_lib.load_params(str(tmp_path), "10")
    assert_trees_equal(params, make_state(10)["params"])
    assert meta == {"data_state": {"index": 10}, "step": 10}


def test_decoding_a_live_runs_workdir_survives_a_checkpoint_deleted_while_listing(tmp_path, monkeypatch):
    """A live run deletes its oldest checkpoint (max_to_keep) while decode.py's manager lists the
    steps: orbax then stats a directory that is gone. The reader lists again."""
    write_run(tmp_path)
    real = ckpt_lib.ocp.CheckpointManager
    calls = []

    def racing(directory, **kwargs):
        calls.append(directory)
        if len(calls) == 1:  # the training run removes step 10 between the listing and the stat
            shutil.rmtree(os.path.join(directory, "10"))
            raise FileNotFoundError(2, "No such file or directory", os.path.join(directory, "10"))
        return real(directory, **kwargs)

    monkeypatch.setattr(ckpt_lib.ocp, "CheckpointManager", racing)
    params, meta = ckpt_lib.load_params(str(tmp_path), "latest")
    assert meta["step"] == 30 and len(calls) == 2
    assert_trees_equal(params, make_state(30)["params"])


def test_saving_an_existing_step_replaces_it(tmp_path):
    write_run(tmp_path, steps=(10,), best=None)
    with ckpt_lib.Checkpoints(str(tmp_path), max_to_keep=5) as checkpoints:
        checkpoints.save(10, make_state(7), {"step": 10})
    params, _ = ckpt_lib.load_params(str(tmp_path), "latest")
    assert_trees_equal(params, make_state(7)["params"])


def test_best_falls_back_to_latest(tmp_path, capsys):
    write_run(tmp_path, best=None)  # a run without validation has no best checkpoint
    params, meta = ckpt_lib.load_params(str(tmp_path), "best")
    assert meta["step"] == 30
    assert_trees_equal(params, make_state(30)["params"])
    assert capsys.readouterr().err == ""

    write_run(tmp_path / "damaged_best", best=20)
    damage(tmp_path / "damaged_best" / "best" / "20", "params")
    _, meta = ckpt_lib.load_params(str(tmp_path / "damaged_best"), "best")
    assert meta["step"] == 30
    assert "warning: best checkpoint 20 in " in capsys.readouterr().err


def test_a_damaged_newest_checkpoint_falls_back_when_decoding_and_is_kept(tmp_path, capsys):
    write_run(tmp_path)
    damage(tmp_path / "checkpoints" / "30", "state")
    params, meta = ckpt_lib.load_params(str(tmp_path), "latest")
    assert meta["step"] == 20
    assert_trees_equal(params, make_state(20)["params"])
    err = capsys.readouterr().err
    assert "warning: checkpoint 30 in " in err and "is unreadable (" in err and "using step 20" in err
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10", "20", "30"]  # decoding moves nothing
    with pytest.raises(ckpt_lib.CheckpointError, match=r"no readable checkpoint in .*\(step 30: "):
        ckpt_lib.load_params(str(tmp_path), "30")


def test_a_damaged_newest_checkpoint_is_moved_aside_when_training(tmp_path, capsys):
    write_run(tmp_path)
    damage(tmp_path / "checkpoints" / "30", "state")
    with ckpt_lib.Checkpoints(str(tmp_path), max_to_keep=5) as checkpoints:
        state, meta = checkpoints.restore(abstract(make_state(0)))
        assert checkpoints.latest_step() == 20
    assert meta["step"] == 20
    assert_trees_equal(state, make_state(20))
    err = capsys.readouterr().err
    assert "warning: checkpoint 30 is unreadable (" in err and "resumed from step 20" in err
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10", "20"]
    (moved,) = os.listdir(tmp_path / "unreadable_checkpoints")
    assert moved.startswith("checkpoints-30-") and moved in err


def test_an_unreadable_best_is_moved_aside_and_forgotten(tmp_path, capsys):
    write_run(tmp_path)
    with open(tmp_path / "best" / "20" / "meta" / "metadata", "w", encoding="utf-8") as f:
        f.write('{"valid_bl')
    with ckpt_lib.Checkpoints(str(tmp_path), max_to_keep=5) as checkpoints:
        assert checkpoints.best_meta() is None
        assert checkpoints.best.all_steps() == []
    assert "warning: best checkpoint 20 is unreadable (" in capsys.readouterr().err
    (moved,) = os.listdir(tmp_path / "unreadable_checkpoints")
    assert moved.startswith("best-20-")


def test_no_readable_checkpoint_is_an_error_and_moves_nothing(tmp_path):
    write_run(tmp_path, steps=(10, 20), best=None)
    for step in ("10", "20"):
        damage(tmp_path / "checkpoints" / step, "state")
    with ckpt_lib.Checkpoints(str(tmp_path), max_to_keep=5) as checkpoints:
        with pytest.raises(ckpt_lib.CheckpointError, match=r"no readable checkpoint .*step 20: .*step 10: .*--workdir"):
            checkpoints.restore(abstract(make_state(0)))
    with pytest.raises(ckpt_lib.CheckpointError, match=r"no readable checkpoint .*step 20: .*step 10: "):
        ckpt_lib.load_params(str(tmp_path), "latest")
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10", "20"]
    assert not (tmp_path / "unreadable_checkpoints").exists()


def test_missing_checkpoints_are_errors_naming_what_exists(tmp_path):
    with pytest.raises(ckpt_lib.CheckpointError, match="train first"):
        ckpt_lib.load_params(str(tmp_path), "best")
    write_run(tmp_path, steps=(10, 20), best=None)
    with pytest.raises(ckpt_lib.CheckpointError, match=r"no checkpoint for step 15 .*\(available: 10, 20\)"):
        ckpt_lib.load_params(str(tmp_path), "15")
    with pytest.raises(ckpt_lib.CheckpointError, match="must be best, latest, a step number or avg:K"):
        ckpt_lib.load_params(str(tmp_path), "newest")


def test_the_context_manager_finishes_async_saves_and_close_is_idempotent(tmp_path):
    big = {"params": {"w": jnp.ones((512, 1024), jnp.float32)}, "step": jnp.int32(1)}
    with ckpt_lib.Checkpoints(str(tmp_path), max_to_keep=2) as checkpoints:
        checkpoints.save(1, big, {"step": 1})
    assert (tmp_path / "checkpoints" / "1").is_dir()  # no temporary directory left
    params, meta = ckpt_lib.load_params(str(tmp_path), "latest")
    assert meta["step"] == 1
    assert_trees_equal(params, big["params"])
    checkpoints.close()  # a second close is harmless


# ---------------------------------------------------------------------------
# checksums: files changed after a successful save are never restored
# ---------------------------------------------------------------------------


def random_state(seed: int) -> dict[str, Any]:
    """Like make_state, but with incompressible parameters: orbax stores those byte for byte,
    so flipped bytes in its files restore as other numbers instead of failing to decompress."""
    rng = np.random.default_rng(seed)
    params = {f"w{i}": jnp.asarray(rng.standard_normal(2048).astype(np.float32)) for i in range(3)}
    return {"params": params, "opt": {"mu": jnp.full((4, 4), float(seed))}, "step": jnp.int32(seed)}


def write_random_run(workdir: Path) -> None:
    with ckpt_lib.Checkpoints(str(workdir), max_to_keep=5) as checkpoints:
        for step in (10, 20, 30):
            checkpoints.save(step, random_state(step), {"data_state": {"index": step}, "step": step})
            if step == 20:
                checkpoints.save_best(step, random_state(step)["params"], {"valid_bleu": 1.5, "step": step})


def truncate(step_dir: Path, item: str) -> str:
    """Cuts the largest array file to a third (a copy or sync cut short)."""
    path = largest_array_file(step_dir, item)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 3)
    return os.path.relpath(path, step_dir)


CHANGES = {"flipped bytes": flip_bytes, "truncated": truncate}


def test_flipped_bytes_restore_silently_wrong_without_the_manifest(tmp_path):
    """What the manifest is for: orbax reads a file with flipped bytes without complaint.

    If this fails, orbax/tensorstore started detecting such damage themselves;
    the manifest is then a second line of defence.
    """
    write_random_run(tmp_path)
    flip_bytes(tmp_path / "checkpoints" / "30", "state")
    os.remove(tmp_path / "checkpoints" / "30" / checksums.MANIFEST)
    params, meta = ckpt_lib.load_params(str(tmp_path), "30")
    assert meta["step"] == 30
    saved = random_state(30)["params"]
    assert any((np.asarray(params[k]) != np.asarray(saved[k])).any() for k in saved)


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_changed_checkpoint_is_moved_aside_when_training(tmp_path, capsys, change):
    write_random_run(tmp_path)
    changed = CHANGES[change](tmp_path / "checkpoints" / "30", "state")
    with ckpt_lib.Checkpoints(str(tmp_path), max_to_keep=5) as checkpoints:
        state, meta = checkpoints.restore(abstract(random_state(0)))
        assert checkpoints.latest_step() == 20
    assert meta["step"] == 20
    assert_trees_equal(state, random_state(20))
    err = capsys.readouterr().err
    assert f"warning: checkpoint 30 is unreadable (ChecksumMismatch: {changed} " in err, err
    assert "resumed from step 20" in err
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10", "20"]
    (moved,) = os.listdir(tmp_path / "unreadable_checkpoints")
    assert moved.startswith("checkpoints-30-")


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_changed_best_is_moved_aside_when_training(tmp_path, capsys, change):
    write_random_run(tmp_path)
    changed = CHANGES[change](tmp_path / "best" / "20", "params")
    with ckpt_lib.Checkpoints(str(tmp_path), max_to_keep=5) as checkpoints:
        assert checkpoints.best_meta() is None  # the next evaluation writes a new best
        assert checkpoints.best.all_steps() == []
    err = capsys.readouterr().err
    assert f"warning: best checkpoint 20 is unreadable (ChecksumMismatch: {changed} " in err, err


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_changed_checkpoint_is_never_decoded(tmp_path, capsys, change):
    write_random_run(tmp_path)
    changed = CHANGES[change](tmp_path / "checkpoints" / "30", "state")
    changed_best = CHANGES[change](tmp_path / "best" / "20", "params")

    params, meta = ckpt_lib.load_params(str(tmp_path), "best")  # best -> latest -> the step before
    assert meta["step"] == 20
    assert_trees_equal(params, random_state(20)["params"])
    err = capsys.readouterr().err
    assert f"warning: best checkpoint 20 in {tmp_path / 'best'} is unreadable (ChecksumMismatch: {changed_best} " in err
    assert f"warning: checkpoint 30 in {tmp_path / 'checkpoints'} is unreadable (ChecksumMismatch: {changed} " in err
    assert "using step 20" in err

    params, meta = ckpt_lib.load_params(str(tmp_path), "latest")
    assert meta["step"] == 20
    assert_trees_equal(params, random_state(20)["params"])
    with pytest.raises(
        ckpt_lib.CheckpointError, match=rf"no readable checkpoint in .*\(step 30: ChecksumMismatch: {changed} "
    ):
        ckpt_lib.load_params(str(tmp_path), "30")
    with pytest.raises(
        ckpt_lib.CheckpointError, match=rf"avg:2: no readable checkpoint .*step 30: ChecksumMismatch: {changed} "
    ):
        ckpt_lib.load_params(str(tmp_path), "avg:2")
    with pytest.raises(ckpt_lib.CheckpointError, match=rf"step 30: ChecksumMismatch: {changed} "):
        ckpt_lib.load_train_state(str(tmp_path), 30, abstract(random_state(0)))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10", "20", "30"]  # decoding moves nothing


def test_checkpoints_without_a_manifest_still_load(tmp_path, capsys):
    """Checkpoints written before manifests existed are restored unchecked."""
    write_random_run(tmp_path)
    for manifest in glob.glob(str(tmp_path / "*" / "*" / checksums.MANIFEST)):
        os.remove(manifest)
    with ckpt_lib.Checkpoints(str(tmp_path), max_to_keep=5) as checkpoints:
        state, meta = checkpoints.restore(abstract(random_state(0)))
        assert checkpoints.best_meta() == {"valid_bleu": 1.5, "step": 20}
    assert meta["step"] == 30
    assert_trees_equal(state, random_state(30))
    params, meta = ckpt_lib.load_params(str(tmp_path), "best")
    assert meta["step"] == 20
    assert_trees_equal(params, random_state(20)["params"])
    assert capsys.readouterr().err == ""


def test_a_damaged_manifest_makes_its_checkpoint_unreadable(tmp_path, capsys):
    write_random_run(tmp_path)
    (tmp_path / "checkpoints" / "30" / checksums.MANIFEST).write_text('{"files": {"state/_METAD', encoding="utf-8")
    _, meta = ckpt_lib.load_params(str(tmp_path), "latest")
    assert meta["step"] == 20
    assert f"ChecksumMismatch: {checksums.MANIFEST} is damaged" in capsys.readouterr().err


def test_verify_names_the_file_that_changed(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.bin").write_bytes(b"0123456789")
    (tmp_path / "y.txt").write_text("hello", encoding="utf-8")
    (tmp_path / "skipped").write_text("rewritten later", encoding="utf-8")
    checksums.write_manifest(str(tmp_path), exclude=("skipped",))
    assert checksums.verify(str(tmp_path)) is True
    (tmp_path / "skipped").write_text("changed", encoding="utf-8")
    (tmp_path / "extra").write_text("not listed", encoding="utf-8")
    assert checksums.verify(str(tmp_path)) is True
    (tmp_path / "a" / "x.bin").write_bytes(b"0123456780")
    with pytest.raises(
        checksums.ChecksumMismatch, match=r"^a/x.bin differs from what the save wrote \(sha256 mismatch\)$"
    ):
        checksums.verify(str(tmp_path))
    (tmp_path / "a" / "x.bin").write_bytes(b"012345")
    with pytest.raises(checksums.ChecksumMismatch, match=r"^a/x.bin has 6 bytes, the save wrote 10$"):
        checksums.verify(str(tmp_path))
    (tmp_path / "a" / "x.bin").unlink()
    with pytest.raises(checksums.ChecksumMismatch, match=r"^a/x.bin is missing \(the save wrote 10 bytes\)$"):
        checksums.verify(str(tmp_path))
    os.remove(tmp_path / checksums.MANIFEST)
    assert checksums.verify(str(tmp_path)) is False


# ---------------------------------------------------------------------------
# a full disk (a small tmpfs): one CheckpointError naming the directory, nothing lost
# ---------------------------------------------------------------------------


def test_a_save_on_a_full_disk_is_one_error_and_keeps_the_previous_checkpoint(tmp_path, caplog, capfd, monkeypatch):
    unraisable = []  # 'Event loop is closed' from writes that completed after orbax gave up
    monkeypatch.setattr(sys, "unraisablehook", lambda info: unraisable.append(repr(info.exc_value)))
    with tmpfs(tmp_path / "disk", 8 << 20) as disk:
        checkpoints = ckpt_lib.Checkpoints(disk, max_to_keep=5)
        checkpoints.save(10, random_state(10), {"step": 10})
        checkpoints.wait()
        filler = fill_disk(disk, leave=8 << 10)  # less than one checkpoint needs
        checkpoints.save(20, random_state(20), {"step": 20})  # fails in orbax's background thread
        deadline = time.monotonic() + 60
        with pytest.raises(ckpt_lib.CheckpointError) as raised:
            while time.monotonic() < deadline:  # check() reports it once the save has ended, never waiting
                checkpoints.check()
                time.sleep(0.01)
        assert str(raised.value).startswith(
            f"no space left on the device of {disk}/checkpoints: saving checkpoint 20 failed and the run stopped. "
            "The checkpoints saved before it are intact: free space there, then run the same command"
        )
        checkpoints.close()  # the error was reported once; closing does not raise it again
        time.sleep(0.2)  # time for stray completions to report
        assert not unraisable, unraisable[:3]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.records[:3]
        assert "Traceback" not in capfd.readouterr().err
        assert ckpt_lib.load_params(disk, "latest")[1]["step"] == 10

        os.remove(filler)  # space freed: the next run removes the half-written step and saves it again
        with ckpt_lib.Checkpoints(disk, max_to_keep=5) as checkpoints:
            state, meta = checkpoints.restore(abstract(random_state(0)))
            assert meta["step"] == 10
            checkpoints.save(20, random_state(20), {"step": 20})
        assert sorted(os.listdir(os.path.join(disk, "checkpoints"))) == ["10", "20"]
        params, meta = ckpt_lib.load_params(disk, "latest")
        assert meta["step"] == 20
        assert_trees_equal(params, random_state(20)["params"])
