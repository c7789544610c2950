"""The corpus download helper against a local HTTP server (127.0.0.1 only, never the internet)."""

import gzip
import hashlib
import http.server
import io
import os
import threading
import zipfile

import pytest

from s2s_jax.cli import download as download_cli
from s2s_jax.data import download
from tests.helpers import free_port


class _Server:
    """Serves a directory on 127.0.0.1:<ephemeral port> and counts the requests per path."""

    def __init__(self, directory):
        counts = self.counts = {}

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(directory), **kwargs)

            def do_GET(self):
                counts[self.path] = counts.get(self.path, 0) + 1
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    srv = _Server(served)
    srv.dir = served
    yield srv
    srv.close()


def multi30k_texts():
    return {name: f"{name} line 1\n{name} line 2\n" for name in download._MULTI30K_SHA256}


def test_multi30k_through_a_mirror_is_unpacked_where_the_config_flags_point(server, tmp_path):
    for name, text in multi30k_texts().items():
        (server.dir / f"{name}.gz").write_bytes(gzip.compress(text.encode()))
    data_dir = str(tmp_path / "data")
    # The served files are stand-ins, so their checksums differ from the real corpus's.
    paths = download.download("multi30k", data_dir, mirror=server.url, verify=False, log=lambda m: None)
    assert paths["data.train_src"] == os.path.join(data_dir, "multi30k/train.de")
    for name, text in multi30k_texts().items():
        with open(os.path.join(data_dir, "multi30k", name), encoding="utf-8") as f:
            assert f.read() == text
    assert all(count == 1 for count in server.counts.values()) and len(server.counts) == len(multi30k_texts())
    assert "--config.data.valid_tgt=" in download.config_flags(paths)

    # Cached: a second run fetches nothing.
    download.download("multi30k", data_dir, mirror=server.url, verify=False, log=lambda m: None)
    assert sum(server.counts.values()) == len(multi30k_texts())
    assert not [p for p in os.listdir(os.path.join(data_dir, "multi30k")) if p.startswith(".download")]


def test_checksums_are_verified_and_a_bad_file_is_not_kept(server, tmp_path):
    good, bad = b"ein Hund\n", b"eine Katze\n"
    (server.dir / "good.txt").write_bytes(good)
    (server.dir / "bad.txt").write_bytes(bad)
    sha = "sha256:" + hashlib.sha256(good).hexdigest()
    data_dir = tmp_path / "data"
    ok = download.RemoteFile((f"{server.url}/good.txt",), "c/good.txt", checksum=sha)
    assert download.fetch_files([ok], str(data_dir), log=lambda m: None) == [str(data_dir / "c/good.txt")]
    wrong = download.RemoteFile((f"{server.url}/bad.txt",), "c/bad.txt", checksum=sha)
    with pytest.raises(download.DownloadError, match="sha256 .* expected"):
        download.fetch_files([wrong], str(data_dir), log=lambda m: None)
    assert sorted(os.listdir(data_dir / "c")) == ["good.txt"]  # nothing half-done left behind
    # A file whose checksum no longer matches is fetched again.
    (data_dir / "c/good.txt").write_bytes(b"edited\n")
    download.fetch_files([ok], str(data_dir), log=lambda m: None)
    assert (data_dir / "c/good.txt").read_bytes() == good and server.counts["/good.txt"] == 2


def test_zip_member_and_sha1_of_the_archive_with_a_fallback_url(server, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("fra-eng/fra.txt", "Go.\tVa !\n")
        archive.writestr("fra-eng/_about.txt", "about\n")
    (server.dir / "fra-eng.zip").write_bytes(buffer.getvalue())
    spec = download.RemoteFile(
        (f"http://127.0.0.1:{free_port()}/fra-eng.zip", f"{server.url}/fra-eng.zip"),  # first mirror is down
        "fra-eng/fra.txt",
        "zip:fra-eng/fra.txt",
        "sha1:" + hashlib.sha1(buffer.getvalue()).hexdigest(),
    )
    [path] = download.fetch_files([spec], str(tmp_path / "data"), log=lambda m: None)
    with open(path, encoding="utf-8") as f:
        assert f.read() == "Go.\tVa !\n"


def test_printed_command_names_the_config_and_only_a_non_default_data_dir(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(download, "fetch_files", lambda *args, **kwargs: [])
    monkeypatch.chdir(tmp_path)
    assert download_cli.main(["multi30k", "fra-eng"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "multi30k: python train.py --config multi30k --workdir runs/multi30k",
        "fra-eng: python train.py --config fra_eng --workdir runs/fra_eng",
    ]
    assert download_cli.main(["cmn-eng", "--data_dir", "/srv/corpora"]) == 0
    assert capsys.readouterr().out.strip() == (
        "cmn-eng: python train.py --config cmn_eng --workdir runs/cmn_eng --config.data.dir=/srv/corpora"
    )


def test_offline_error_names_the_urls_and_where_to_put_the_files(tmp_path, capsys):
    data_dir = str(tmp_path / "data")
    rc = download_cli.main(
        ["multi30k", "--data_dir", data_dir, "--mirror", f"http://127.0.0.1:{free_port()}", "--timeout", "5"]
    )
    assert rc == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: could not download {len(download._MULTI30K_SHA256)} file(s)")
    assert "/train.de.gz: " in err  # the URL that failed, and why
    expected = os.path.join(data_dir, "multi30k", "train.de")
    assert f"{expected}  <-  gunzip of https://raw.githubusercontent.com/multi30k/dataset/" in err
    assert not os.listdir(os.path.join(data_dir, "multi30k"))


def test_a_data_dir_that_cannot_be_made_is_one_error_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    rc = download_cli.main(
        ["multi30k", "--data_dir", str(blocker / "data"), "--mirror", f"http://127.0.0.1:{free_port()}"]
    )
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {blocker / 'data'}") and "Not a directory" in err[0], err


def test_registry_covers_the_configs_corpora():
    import importlib

    from s2s_jax.config import flags

    assert set(download.CORPORA) == {"multi30k", "fra-eng", "cmn-eng", "iwslt16-de-en"}
    for source in download.CORPORA.values():
        assert source.config in flags.builtin_configs()
        # The config reads, relative to its data.dir ("data", download's default), the files
        # download writes there.
        config = importlib.import_module(f"s2s_jax.configs.{source.config}").get_config()
        assert config.data.dir == download.DEFAULT_DATA_DIR
        for key, rel in source.flags:
            assert config.data[key.split(".", 1)[1]] == rel, key
        assert {spec.path for spec in source.files} >= {r for _, rel in source.flags for r in rel.split(",")}
        for spec in source.files:
            assert all(url.startswith("https://") for url in spec.urls)
    with pytest.raises(download.DownloadError, match="unknown corpus 'wmt'"):
        download.download("wmt", "data")
