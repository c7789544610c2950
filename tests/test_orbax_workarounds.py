"""Tripwires for s2s_jax/workdir/orbax_workarounds.py: each fails when an orbax upgrade changes the
internals a workaround relies on (then update the workaround, or delete it if orbax fixed
the problem itself). In-process with tiny pytrees."""

from __future__ import annotations

import glob
import importlib
import json
import os
import sys
import time

import jax

from s2s_jax.workdir import checkpoints as ckpt_lib
from s2s_jax.workdir import checksums, orbax_workarounds
from tests.test_checkpoints import damage, make_state, write_run


def test_the_orbax_loop_workaround_still_takes_effect(tmp_path, capfd, monkeypatch):
    """Fails when an orbax upgrade makes `drain_pending_io_on_failure` a silent no-op.

    Then either orbax fixed the 'Event loop is closed' tracebacks after a failed
    restore (delete the workaround) or moved the private function (update it).
    """
    module = importlib.import_module(orbax_workarounds.ORBAX_LOOP_MODULE)
    runner = orbax_workarounds.ORBAX_LOOP_RUNNER
    assert callable(getattr(module, runner, None)), (
        f"{orbax_workarounds.ORBAX_LOOP_MODULE}.{runner} is gone: the workaround does nothing"
    )
    assert runner in module.run_sync.__code__.co_names, "orbax's run_sync no longer uses it"

    failures = []
    original = orbax_workarounds.run_sync_draining_on_failure

    def spy(coro):
        try:
            return original(coro)
        except BaseException as err:
            failures.append(err)
            raise

    monkeypatch.setattr(orbax_workarounds, "run_sync_draining_on_failure", spy)
    write_run(tmp_path, steps=(10, 20), best=None, leaves=40)  # many arrays: many reads left pending
    damage(tmp_path / "checkpoints" / "20", "state")
    os.remove(tmp_path / "checkpoints" / "20" / checksums.MANIFEST)  # else the checksums stop it before orbax reads
    # The late read completions report 'Event loop is closed' through sys.unraisablehook
    # (which prints to stderr outside pytest).
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: unraisable.append(repr(info.exc_value)))
    capfd.readouterr()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), make_state(0, leaves=40))
    with ckpt_lib.Checkpoints(str(tmp_path), max_to_keep=5) as checkpoints:
        _, meta = checkpoints.restore(abstract)
        time.sleep(0.2)  # time for stray completions to report
    assert meta["step"] == 10
    assert failures, "the damaged restore did not go through the replacement runner"
    assert getattr(module, runner) is not spy  # put back when the last user ended
    assert not [text for text in unraisable if "Event loop is closed" in text], unraisable[:3]
    err = capfd.readouterr().err
    assert "Event loop is closed" not in err, err[-3000:]


def test_every_checkpoint_carries_a_manifest_of_its_files(tmp_path):
    """Fails when orbax stops calling `ChecksummedRename.finalize` for a step, or rewrites other
    files than `REWRITTEN_AT_COMMIT` after it."""
    write_run(tmp_path)
    step_dirs = [tmp_path / "checkpoints" / step for step in ("10", "20", "30")] + [tmp_path / "best" / "20"]
    for step_dir in step_dirs:
        with open(step_dir / checksums.MANIFEST, encoding="utf-8") as f:
            listed = json.load(f)["files"]
        on_disk = {
            os.path.relpath(path, step_dir)
            for path in glob.glob(str(step_dir / "**" / "*"), recursive=True)
            if os.path.isfile(path)
        }
        # orbax rewrites its two step-level commit files after the manifest: they are left out.
        assert set(listed) == on_disk - {checksums.MANIFEST, *orbax_workarounds.REWRITTEN_AT_COMMIT}
        assert orbax_workarounds.REWRITTEN_AT_COMMIT == ("_CHECKPOINT_METADATA", "commit_success.txt")
        assert any(name.startswith(("state/", "params/")) and "/d/" in name for name in listed)
        assert all(entry["size"] == os.path.getsize(step_dir / name) for name, entry in listed.items())
        assert checksums.verify(str(step_dir)) is True
        assert not glob.glob(str(step_dir / "*" / checksums.MANIFEST))  # one per step, none per item
