"""The translation server (s2s_jax/serving/app.py) as a client meets it: a real serve.py process
on loopback, the tiny trained workdir behind it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import signal
import threading
import time
import types
from collections.abc import Callable

import httpx
import jax
import pytest

from s2s_jax.cli import serve as serve_cli
from s2s_jax.decoding.inference import SearchOptions
from s2s_jax.decoding.translator import Translator
from s2s_jax.serving import app as serving
from s2s_jax.serving.body_limit import body_cap
from tests.serving_helpers import Server, in_process, peak_rss_mb, raw_post

pytestmark = pytest.mark.slow  # each server starts a process and compiles its shapes

LINES = ["the red cat sees a dog", "a small house", "big car has the blue dog likes", "cat"]


@pytest.fixture(scope="module")
def server(trained_workdir):
    srv = Server(trained_workdir.workdir, "--max_batch=4", "--max_wait_ms=300", cache=trained_workdir.cache)
    srv.wait_ready()
    yield srv
    assert srv.stop() == 0, srv.output


@pytest.fixture(scope="module")
def translator(trained_workdir):
    return Translator(trained_workdir.workdir)


def test_translations_equal_the_in_process_translator(server, translator):
    """The server's output (beam 3, n-best 2, in input order) is exactly the Python API's."""
    response = server.post({"text": LINES, "beam_size": 3, "nbest": 2, "alpha": 0.8})
    assert response.status_code == 200, response.text
    got = response.json()["translations"]
    want = translator.translate(LINES, SearchOptions(beam_size=3, nbest=2, alpha=0.8, with_scores=True))
    assert [t["text"] for t in got] == [h[0].text for h in want]
    assert [[c["text"] for c in t["nbest"]] for t in got] == [[x.text for x in h] for h in want]
    for t, h in zip(got, want):
        assert t["score"] == pytest.approx(h[0].score, abs=1e-4)
        assert [c["score"] for c in t["nbest"]] == pytest.approx([x.score for x in h], abs=1e-4)
    single = server.post({"text": LINES[2]}).json()["translations"]
    assert len(single) == 1 and single[0]["text"] == translator.translate([LINES[2]])[0][0].text


def test_alignment_and_attention_matrix(server, translator):
    body = server.post({"text": LINES[:2], "alignment": True}).json()
    outputs = [h[0].tokens for h in translator.translate(LINES[:2])]
    want = translator.align(LINES[:2], outputs, "hard")
    for t, pairs in zip(body["translations"], want):
        alignment = t["alignment"]
        assert alignment["pairs"] == pairs
        assert alignment["src"][-1] == "</s>" and alignment["tgt"][-1] == "</s>"
        assert len(alignment["weights"]) == len(alignment["tgt"])
        assert all(len(row) == len(alignment["src"]) and abs(sum(row) - 1) < 1e-2 for row in alignment["weights"])


def test_word_scores_and_no_repeat_ngram_equal_the_translators(server, translator):
    """`words` only when asked; a request with them shares its search with one without."""
    request = {"text": LINES[:2], "beam_size": 3, "word_scores": True, "no_repeat_ngram": 2}
    got = server.post(request).json()["translations"]
    opts = SearchOptions(beam_size=3, with_scores=True, token_scores=True, no_repeat_ngram=2)
    want = translator.translate(LINES[:2], opts)
    for t, (h, *_) in zip(got, want):
        assert t["text"] == h.text
        assert [w["text"] for w in t["words"]] == [w.text for w in h.words]
        assert [w["prob"] for w in t["words"]] == pytest.approx([w.prob for w in h.words], abs=1e-4)
    assert server.post({"text": LINES[0]}).json()["translations"][0]["words"] is None


def test_concurrent_requests_are_served_by_one_search(server):
    """Two requests sent together (within max_wait_ms=300) make one search call."""
    before = httpx.get(f"{server.url}/info").json()["batches"]["search_calls"]
    barrier = threading.Barrier(2)

    def send(text):
        barrier.wait()
        return server.post({"text": text})

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(send, LINES[:2]))
    assert [r.status_code for r in responses] == [200, 200]
    after = httpx.get(f"{server.url}/info").json()["batches"]["search_calls"]
    assert after - before == 1


def test_a_seeded_sample_does_not_depend_on_its_batch(server):
    """Sent alone, and sent with two other requests (other seeds and per-row settings) that share
    its search: the same samples."""
    request = {"text": LINES[0], "sample": True, "seed": 11, "nbest": 3, "temperature": 1.5, "top_p": 0.95}
    alone = server.post(request).json()["translations"][0]
    barrier = threading.Barrier(3)

    def send(payload):
        barrier.wait()
        return server.post(payload).json()["translations"][0]

    others = [
        {"text": LINES[1], "sample": True, "seed": 2, "nbest": 3, "temperature": 0.7},
        {"text": [LINES[2], LINES[0]], "sample": True, "seed": 5, "nbest": 3, "top_k": 3},
    ]
    before = httpx.get(f"{server.url}/info").json()["batches"]["search_calls"]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        shared = list(pool.map(send, [request, *others]))[0]
    assert httpx.get(f"{server.url}/info").json()["batches"]["search_calls"] - before == 1  # one batch of 4 texts
    assert [c["text"] for c in shared["nbest"]] == [c["text"] for c in alone["nbest"]]
    another_seed = server.post(dict(request, seed=12)).json()["translations"][0]
    assert [c["text"] for c in another_seed["nbest"]] != [c["text"] for c in alone["nbest"]]


@pytest.mark.parametrize(
    "payload, status, field",
    [
        ({"text": 5}, 422, "text"),
        ({"text": "a", "beam_size": "3"}, 422, "beam_size"),
        ({"text": "a", "temperature": -1.0}, 422, "temperature"),
        ({"text": "a", "top_p": 1.5}, 422, "top_p"),
        ({"text": "a", "seed": -3}, 422, "seed"),
        ({"text": "a", "bogus": 1}, 422, "bogus"),
        ({"beam_size": 2}, 422, "text"),
        ({"text": "a", "beam_size": 7}, 422, "beam_size"),
        ({"text": "a", "beam_size": True}, 422, "beam_size"),
        ({"text": "a", "nbest": 6}, 422, "nbest"),
        ({"text": "a" * 2001}, 422, "text"),
        ({"text": ["a", "b" * 2001]}, 422, "text[1]"),
        ({"text": ["a"] * 65}, 422, "text"),
        ({"text": "a", "no_repeat_ngram": -1}, 422, "no_repeat_ngram"),
    ],
    ids=[
        "text-type",
        "beam-type",
        "temperature",
        "top-p",
        "seed",
        "unknown-field",
        "no-text",
        "beam-not-allowed",
        "beam-bool",
        "nbest",
        "too-long",
        "too-long-in-list",
        "too-many",
        "no-repeat-ngram",
    ],
)
def test_bad_requests_get_a_4xx_naming_the_field(server, payload, status, field):
    """The one error body: `detail` a line starting with the field, `field` the field."""
    response = server.post(payload)
    assert response.status_code == status, response.text
    assert response.json()["field"] == field and response.json()["detail"].startswith(field + ": ")
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_an_nbest_above_the_beam_size_widens_the_beam(server, translator):
    """nbest 4 with beam_size 2 searches with beam 4, the smallest allowed size >= 4."""
    response = server.post({"text": LINES[0], "beam_size": 2, "nbest": 4})
    assert response.status_code == 200, response.text
    want = translator.translate([LINES[0]], SearchOptions(beam_size=4, nbest=4, with_scores=True))[0]
    assert [c["text"] for c in response.json()["translations"][0]["nbest"]] == [x.text for x in want]


def test_malformed_bodies_and_odd_text_never_hurt_the_server(server):
    headers = {"content-type": "application/json"}
    url = f"{server.url}/translate"
    errors = [
        (httpx.post(url, content=b'{"text": "a"', headers=headers), 422),
        (httpx.post(url, content=b'{"text": "a\xff\xfe b"}', headers=headers), 400),
        (httpx.post(url, content=b'{"text": NaN}', headers=headers), 422),
        (httpx.post(url, content=b"text=a", headers={"content-type": "application/x-www-form-urlencoded"}), 422),
        (httpx.get(f"{server.url}/nowhere"), 404),
        (httpx.delete(url), 405),
    ]
    for response, status in errors:  # each one the server's one error body
        assert response.status_code == status and set(response.json()) == {"detail", "field"}, response.text
    odd = ["\u0000cat\u0007 dog\nthe", "\ud800 lone surrogate", "", "   ", "emoji \U0001f600 \u200b"]
    response = httpx.post(url, content=json.dumps({"text": odd}), headers=headers, timeout=60)  # \ud800 escaped
    assert response.status_code == 200, response.text
    assert len(response.json()["translations"]) == len(odd)
    assert response.json()["translations"][2]["text"] == ""
    assert server.post({"text": LINES[0]}).status_code == 200


def test_info_and_openapi(server, trained_workdir):
    info = httpx.get(f"{server.url}/info").json()
    assert info["step"] == 40 and info["attention"] is True
    assert info["members"][0]["workdir"] == trained_workdir.workdir
    assert info["limits"]["max_batch"] == 4 and "api_key" not in info["limits"]
    schema = httpx.get(f"{server.url}/openapi.json").json()
    response = schema["paths"]["/translate"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert response["$ref"].endswith("/TranslateResponse")
    properties = set(schema["components"]["schemas"]["Translation"]["properties"])
    assert properties == {"text", "score", "nbest", "alignment", "words", "constraints_met"}
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "<textarea" in page.text and "://" not in page.text  # no CDN, no external asset


JSON = {"Content-Type": "application/json"}


def test_a_declared_body_over_the_cap_is_refused_unread(server):
    """A Content-Length over max_texts × max_chars (worst case bytes) is 413 at once: the server
    answers after a few bytes of a declared 200 MB body and stays up."""
    peak = peak_rss_mb(server.process.pid)
    started = time.monotonic()
    status, body = raw_post(server.url, {**JSON, "Content-Length": str(200 * 2**20)}, [b'{"text": "a'])
    assert status == 413 and "at most" in body["detail"] and body["field"] is None, body
    assert time.monotonic() - started < 5
    assert peak_rss_mb(server.process.pid) - peak < 50
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert server.post({"text": LINES[0]}).status_code == 200


def _chunked(total: int, size: int = 64 * 1024):
    """A chunked body of `total` bytes of JSON whitespace, made as it is sent."""
    chunk = f"{size:x}\r\n".encode() + b" " * size + b"\r\n"
    for _ in range(total // size):
        yield chunk
    yield b"0\r\n\r\n"


def test_a_chunked_body_is_refused_once_it_passes_the_cap(server):
    """Without a Content-Length, the bytes are counted as they arrive: 413 once past the cap,
    the rest unread (a 200 MB body leaves the server's peak memory flat)."""
    cap = body_cap(serving.ServeSettings().max_texts, serving.ServeSettings().max_chars)
    headers = {**JSON, "Transfer-Encoding": "chunked"}
    status, body = raw_post(server.url, headers, _chunked(cap + 2**20))
    assert status == 413 and "at most" in body["detail"], body
    peak = peak_rss_mb(server.process.pid)
    started = time.monotonic()
    assert raw_post(server.url, headers, _chunked(200 * 2**20))[0] == 413
    assert time.monotonic() - started < 5
    assert peak_rss_mb(server.process.pid) - peak < 50
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert server.post({"text": LINES[0]}).status_code == 200


def test_a_body_within_the_cap_is_not_refused_for_its_size(server):
    """The cap holds any request within the limits, each character written the longest way JSON
    allows (an escaped surrogate pair, 12 bytes); a body of exactly the cap is read, one more byte is 413."""
    settings = serving.ServeSettings()
    cap = body_cap(settings.max_texts, settings.max_chars)
    fields = {"beam_size": 5, "nbest": 5, "alpha": 0.123456789, "sample": False, "temperature": 99.987654321}
    fields |= {"top_k": 1000000, "top_p": 0.987654321, "seed": 2**32 - 1, "alignment": False}
    widest = {"text": ["\U0001f600" * settings.max_chars] * settings.max_texts, **fields}
    assert len(json.dumps(widest, indent=1).encode()) <= cap
    payload = json.dumps({"text": LINES[0]}).encode()
    body = payload + b" " * (cap - len(payload))
    response = httpx.post(f"{server.url}/translate", content=body, headers=JSON, timeout=60)
    assert response.status_code == 200, response.text
    status, _ = raw_post(server.url, {**JSON, "Content-Length": str(cap + 1)}, [body + b" "])
    assert status == 413


def test_limits_queue_timeout_and_key(trained_workdir, tmp_path):
    """A full queue is 429, a slow answer 408, a missing or wrong key 401; the server stays up throughout."""
    key_file = tmp_path / "key"
    key_file.write_text("  sesame\n")
    srv = Server(
        trained_workdir.workdir,
        "--max_batch=4",
        "--max_queue=2",
        "--max_wait_ms=1500",
        "--request_timeout_s=0.5",
        f"--api_key_file={key_file}",
        cache=trained_workdir.cache,
    )
    try:
        srv.wait_ready()
        key = {"Authorization": "Bearer sesame"}
        assert srv.post({"text": "a cat"}).status_code == 401
        assert srv.post({"text": "a cat"}, headers={"Authorization": "Bearer sesamf"}).status_code == 401
        assert httpx.get(f"{srv.url}/info").status_code == 401
        assert httpx.get(f"{srv.url}/health").status_code == 200
        never = srv.post({"text": ["a", "b", "c"]}, headers=key)  # more than max_queue: it would never fit
        assert never.status_code == 422 and "3 texts, more than max_queue=2" in never.json()["detail"], never.text
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow = pool.submit(srv.post, {"text": "a cat"}, headers=key)  # waits 1.5 s for company, times out at 0.5 s
            time.sleep(0.2)
            assert srv.post({"text": ["a", "b"]}, headers=key).status_code == 429  # 1 + 2 waiting > max_queue
            assert slow.result().status_code == 408, slow.result().text
        time.sleep(1.5)
        assert httpx.get(f"{srv.url}/info", headers=key).status_code == 200
    finally:
        assert srv.stop() == 0, srv.output


def test_sigterm_drains_requests_in_flight(trained_workdir):
    srv = Server(trained_workdir.workdir, "--max_batch=4", "--max_wait_ms=2000", cache=trained_workdir.cache)
    srv.wait_ready()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(srv.post, {"text": LINES[:2]})
        time.sleep(0.7)  # the request is in the batcher, waiting 2 s for company
        srv.process.send_signal(signal.SIGTERM)
        response = pending.result(timeout=60)
    assert response.status_code == 200 and len(response.json()["translations"]) == 2
    assert srv.process.wait(60) == 0, srv.read_output()


def test_bad_flags_and_workdir_are_one_error_line(tmp_path):
    srv = Server(str(tmp_path), "--max_batch=0")
    assert srv.process.wait(60) == 1
    assert srv.read_output().strip().splitlines()[-1].startswith("error: max_batch")
    srv = Server(str(tmp_path / "missing"))
    assert srv.process.wait(60) == 1
    assert "is not a training workdir" in srv.read_output() and "Traceback" not in srv.output
    (tmp_path / "blank").write_text(" \n")
    for args, env, message in [
        ([f"--api_key_file={tmp_path / 'nokey'}"], {}, "No such file"),
        ([f"--api_key_file={tmp_path / 'blank'}"], {}, "is empty"),
        ([f"--api_key_file={tmp_path / 'blank'}"], {serve_cli.API_KEY_ENV: "k"}, "not both"),
    ]:
        srv = Server(str(tmp_path), *args, env=env)
        assert srv.process.wait(60) == 1
        lines = srv.read_output().strip().splitlines()
        assert lines[-1].startswith("error: ") and message in lines[-1] and "Traceback" not in srv.output


def test_a_default_beam_outside_beam_sizes_is_refused_at_start(trained_workdir):
    """A request without beam_size gets the model's decode.beam_size (1 here), which must compile ahead."""
    srv = Server(trained_workdir.workdir, "--beam_sizes=2,4", "--max_nbest=2", cache=trained_workdir.cache)
    assert srv.process.wait(60) == 1
    last = srv.read_output().strip().splitlines()[-1]
    assert last.startswith("error: ") and "decode.beam_size 1" in last and "--beam_sizes 2,4" in last, last
    assert "Traceback" not in srv.output


def test_the_api_key_comes_from_a_file_or_the_environment(tmp_path):
    """Never from a flag's value, which `ps` shows; the file's surrounding whitespace is stripped."""
    (tmp_path / "key").write_text("\n sesame \n")
    assert serve_cli.api_key_from(str(tmp_path / "key"), {}) == "sesame"
    assert serve_cli.api_key_from(None, {"S2S_API_KEY": "open"}) == "open"
    assert serve_cli.api_key_from(None, {}) is None
    with pytest.raises(ValueError, match="not both"):
        serve_cli.api_key_from(str(tmp_path / "key"), {"S2S_API_KEY": "open"})
    with pytest.raises(ValueError, match="empty"):
        (tmp_path / "blank").write_text("\t\n")
        serve_cli.api_key_from(str(tmp_path / "blank"), {})
    with pytest.raises(ValueError, match="No such file"):
        serve_cli.api_key_from(str(tmp_path / "missing"), {})


def _compiles_on(thread_prefix: str) -> tuple[list[str], Callable[[], None]]:
    """The names of JAX's compile events (tracing, lowering, XLA compile) that run on threads whose
    name starts with `thread_prefix`, as they happen; and the function that stops recording."""
    seen: list[str] = []

    def listener(event: str, duration: float, **kwargs) -> None:
        if event.startswith("/jax/core/compile/") and threading.current_thread().name.startswith(thread_prefix):
            seen.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    return seen, lambda: jax.monitoring.unregister_event_duration_listener(listener)


WORDS = "the a red blue small big cat dog house car sees likes has".split()
TEXTS = [" ".join(WORDS[: n % 13 + 1] * (n // 13 + 1)) for n in range(30)]
# Every search the test server accepts: each beam size with each n-best, sampling with each filter.
SEARCHES = [{"beam_size": b, "nbest": n} for b in (1, 2, 4) for n in range(1, min(b, 2) + 1)] + [
    {"sample": True, "nbest": n, "seed": 3, **filters}
    for n in (1, 2)
    for filters in ({}, {"top_k": 3}, {"top_p": 0.8}, {"top_k": 2, "top_p": 0.9, "temperature": 0.7})
]


def test_after_health_no_request_waits_on_a_compile(trained_workdir):
    """In process: /health is 503 until loading and warm-up finish; then requests of every accepted
    search (beam sizes, n-best, sampling filters), of any length and count, run on compiled shapes:
    no compile on the search thread. A batch whose own shape was not compiled ran on a covering
    one and gives the same translations as once its own shape has compiled in the background."""
    release = threading.Event()

    def load():
        release.wait(60)
        return Translator(trained_workdir.workdir)

    settings = serving.ServeSettings(max_batch=4, max_wait_ms=1, beam_sizes=(1, 2, 4), max_nbest=2)
    app = serving.create_app(load, settings, log=lambda message: None)
    compiles, stop_recording = _compiles_on("s2s-search")
    background, stop_recording_background = _compiles_on("s2s-compile")  # the listener does hear compiles
    try:
        with in_process(app) as url, httpx.Client(base_url=url, timeout=120) as client:
            health = client.get("/health")
            assert health.status_code == 503 and health.json() == {"status": "loading", "detail": None}
            busy = client.post("/translate", json={"text": "a"})
            assert busy.status_code == 503 and busy.json()["field"] is None and "loading" in busy.json()["detail"]
            release.set()
            deadline = time.monotonic() + 300
            while client.get("/health").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            shapes = client.get("/info").json()["shapes"]
            assert shapes["warm_up_shapes"] == shapes["compiled"] == 6 * 3  # 3 beam + 3 sampling keys x rows 1, 2, 4
            first = {}
            for number, search in enumerate(SEARCHES):
                for count in (1, 3):
                    texts = TEXTS[number % 7 * 4 : number % 7 * 4 + count]
                    response = client.post("/translate", json={"text": texts, "alpha": 0.1 * count, **search})
                    assert response.status_code == 200, response.text
                    first[number, count] = response.json()["translations"]
            assert compiles == [], compiles
            info = client.get("/info").json()["shapes"]
            assert info["request_compiles"] == 0 and info["covered_batches"] > 0
            deadline = time.monotonic() + 300
            while client.get("/info").json()["shapes"]["compiling"]:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            covered = client.get("/info").json()["shapes"]["covered_batches"]
            for (number, count), want in first.items():
                texts = TEXTS[number % 7 * 4 : number % 7 * 4 + count]
                got = client.post("/translate", json={"text": texts, "alpha": 0.1 * count, **SEARCHES[number]})
                _assert_same_translations(got.json()["translations"], want)
            assert client.get("/info").json()["shapes"]["covered_batches"] == covered  # each on its own shape now
            assert compiles == [] and background, compiles
    finally:
        stop_recording()
        stop_recording_background()


def _assert_same_translations(got: list[dict], want: list[dict]) -> None:
    """The same texts; scores equal up to float rounding (XLA's kernels differ by batch shape)."""
    assert [[c["text"] for c in t["nbest"]] for t in got] == [[c["text"] for c in t["nbest"]] for t in want]
    for g, w in zip(got, want):
        assert [c["score"] for c in g["nbest"]] == pytest.approx([c["score"] for c in w["nbest"]], rel=1e-5, abs=1e-5)


def test_a_failing_load_is_reported_and_the_server_stays_up():
    def load():
        raise RuntimeError("no checkpoint in /nowhere")

    app = serving.create_app(load, serving.ServeSettings(), log=lambda message: None)
    with in_process(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        deadline = time.monotonic() + 30
        while "no checkpoint" not in client.get("/health").text:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.get("/health").status_code == 503
        assert "no checkpoint" in client.post("/translate", json={"text": "a"}).text


class _SlowTranslator:
    """Stands in for a Translator in the batcher: each search takes `seconds` and is recorded."""

    members = [types.SimpleNamespace(config=types.SimpleNamespace(model=types.SimpleNamespace(attention="none")))]

    def __init__(self, seconds: float):
        self.seconds, self.calls = seconds, []

    def translate(self, texts, opts, batch_size, sample_keys, warn, mbr=None, target_lang=None):
        self.calls.append(list(texts))
        time.sleep(self.seconds)
        return [[types.SimpleNamespace(text=t.upper(), score=-1.0, tokens=[], words=None)] for t in texts]


@pytest.mark.parametrize("rejoin", [True, False])
def test_answered_clients_that_send_again_share_one_batch(monkeypatch, rejoin):
    """After a search of 4 texts, the 4 answered clients send again 0 and 30 ms later: with the wait
    for them (a quarter of the 0.4-s search) they make one batch; without it, two half batches."""
    if not rejoin:
        monkeypatch.setattr(serving, "REJOIN_FRACTION", 0.0)
    translator = _SlowTranslator(0.4)
    opts = SearchOptions(beam_size=1, with_scores=True)

    async def clients() -> list:
        batcher = serving.Batcher(translator, serving.ServeSettings(max_batch=8, max_wait_ms=5))
        task = asyncio.create_task(batcher.run())
        try:
            await asyncio.gather(*batcher.submit(["a", "b", "c", "d"], opts, 0, False))
            again = batcher.submit(["a", "b"], opts, 0, False)
            await asyncio.sleep(0.03)
            again += batcher.submit(["c", "d"], opts, 0, False)
            return [t.text for t in await asyncio.gather(*again)]
        finally:
            task.cancel()
            batcher.close()

    assert asyncio.run(clients()) == ["A", "B", "C", "D"]
    expected = [["a", "b", "c", "d"]] * 2 if rejoin else [["a", "b", "c", "d"], ["a", "b"], ["c", "d"]]
    assert translator.calls == expected
