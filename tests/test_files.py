"""s2s_jax/files.py: a file is replaced whole or not at all, and digests match hashlib's."""

import hashlib
import os

import pytest

from s2s_jax import files


def test_write_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = str(tmp_path / "out.json")
    files.write_atomic(path, "old\n")
    files.write_atomic(path, "néw\r\n")
    with open(path, "rb") as f:
        assert f.read() == "néw\r\n".encode()  # text as UTF-8, line ends as given
    files.write_atomic(path, b"\x00\xff")
    assert open(path, "rb").read() == b"\x00\xff"
    assert os.listdir(tmp_path) == ["out.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / "out.txt")
    files.write_atomic(path, "old")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(OSError):
        files.write_atomic(path, "new")
    with pytest.raises(OSError):
        files.copy_atomic(path, str(tmp_path / "copy.txt"))
    monkeypatch.undo()
    assert open(path).read() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]  # the temporaries were removed


def test_file_digest_equals_hashlib(tmp_path):
    data = os.urandom(3 << 20)  # several read blocks
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert files.file_digest(str(path)) == hashlib.sha256(data).hexdigest()
    assert files.file_digest(str(path), "sha1") == hashlib.sha1(data).hexdigest()
