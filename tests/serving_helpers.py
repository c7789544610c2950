"""A real `serve.py` process on a free loopback port, for the server and page tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import httpx

from tests.helpers import ROOT, cli_cache, free_port


class Server:
    """`python serve.py --workdir W ARGS` until `stop()`; `url` is its base address."""

    def __init__(self, workdir: str, *args: str, cache: str | None = None, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = dict(os.environ, S2S_JAX_CACHE=cache or cli_cache(), JAX_PLATFORMS="cpu", **(env or {}))
        self.process = subprocess.Popen(
            [sys.executable, "serve.py", f"--workdir={workdir}", f"--port={self.port}", *args],
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output = ""

    def wait_ready(self, timeout: float = 300.0) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve.py exited {self.process.returncode}: {self.read_output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            time.sleep(0.25)
        self.stop()
        raise AssertionError(f"serve.py not ready after {timeout} s: {self.read_output()}")

    def read_output(self) -> str:
        if self.process.poll() is not None and self.process.stdout:
            self.output += self.process.stdout.read()
        return self.output[-3000:]

    def stop(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.read_output()
        return self.process.returncode

    def post(self, payload, **kwargs) -> httpx.Response:
        return httpx.post(f"{self.url}/translate", json=payload, timeout=60, **kwargs)


@contextlib.contextmanager
def in_process(app):
    """Serves `app` with uvicorn on a thread of this process; yields its base address."""
    import threading

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)


def raw_post(url: str, headers: dict[str, str], chunks) -> tuple[int, dict]:
    """POSTs /translate over a bare socket: the headers as given, then `chunks` (bytes, sent as
    they come) until the server answers or closes; the answer's status and JSON body. Unlike
    an HTTP client, it reads an answer that arrives before the body is sent."""
    import json
    import select
    import socket

    host, port = url.rsplit("/", 1)[-1].split(":")
    head = "".join(f"{name}: {value}\r\n" for name, value in {"Host": host, "Connection": "close", **headers}.items())
    reply = b""
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST /translate HTTP/1.1\r\n{head}\r\n".encode())
        with contextlib.suppress(OSError):  # the server may close while the body is being sent
            for chunk in chunks:
                if select.select([sock], [], [], 0)[0]:
                    break
                sock.sendall(chunk)
        with contextlib.suppress(OSError):  # a reset after the answer, for the body left unread
            while data := sock.recv(65536):
                reply += data
    status_line, _, rest = reply.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB."""
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024
