"""The server keeps its published contract: every response, errors included, is what /openapi.json
says, and every request the schema allows is answered. Checked by schemathesis (all its checks)
against a real serve.py process, and by reading the schema the app publishes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from s2s_jax.serving import app as serving
from s2s_jax.serving.errors import field_path, validation_error
from s2s_jax.serving.translate_request import TEXT_TAGS, translate_request_model
from tests.serving_helpers import Server

# Small limits and one row per search keep the searches schemathesis can ask for few (each one
# compiles per source width on first use), so the run takes seconds, not minutes.
SMALL = [
    "--max_batch=1",
    "--beam_sizes=1,2",
    "--max_nbest=2",
    "--max_chars=8",
    "--max_texts=3",
    "--max_request_chars=24",
    # A constrained or split request's first search compiles; on a loaded 2-core machine that can pass the
    # default 30 s, which the contract would see as a 408 for a valid request.
    "--request_timeout_s=150",
]
KEY = "sesame"


def _schemathesis() -> str:
    """The schemathesis command of this environment (the test extra pins it)."""
    command = shutil.which("schemathesis", path=os.path.dirname(sys.executable))
    assert command, "schemathesis is not installed: pip install -e '.[test,serve]'"
    return command


@pytest.mark.slow
def test_schemathesis_finds_nothing(trained_workdir, tmp_path):
    """`schemathesis run --checks all` (a fixed seed, a bounded number of examples, no example
    database) against a server with an API key: no finding."""
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    srv = Server(
        trained_workdir.workdir,
        *SMALL,
        "--warm_up_beam_sizes=1,2",
        f"--api_key_file={key_file}",
        cache=trained_workdir.cache,
    )
    try:
        srv.wait_ready()
        args = [_schemathesis(), "run", f"{srv.url}/openapi.json", "--checks=all", "--seed=1", "--max-examples=30"]
        # A search shape's first request compiles it (seconds on a busy 2-core machine): the contract is the
        # responses' shape, so the response-time check gets the request timeout; latency is benchmarked.
        args += ["--workers=1", "--request-timeout=180", "--max-response-time=180", "--generation-database=none"]
        args += ["--continue-on-failure"]
        args += ["--no-color", f"--header=Authorization: Bearer {KEY}"]
        # In a directory of its own: schemathesis and hypothesis leave caches in the working directory.
        result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        output = result.stdout[-12000:] + result.stderr[-3000:]
        assert result.returncode == 0 and "No issues found" in result.stdout, output
    finally:
        assert srv.stop() == 0, srv.output


def _schema(**settings) -> dict:
    return serving.create_app(lambda: None, serving.ServeSettings(**settings), log=lambda message: None).openapi()


def test_every_error_status_is_declared_as_the_one_error_body():
    """Each route declares ErrorResponse for its 4xx and 5xx (FastAPI's own 422 model is gone);
    /health's 503 is its status body; 401 only when the server has a key."""
    for key in (None, "k"):
        schema = _schema(api_key=key)
        assert "HTTPValidationError" not in schema["components"]["schemas"]
        statuses = {}
        for path, methods in schema["paths"].items():
            for operation in methods.values():
                statuses[path] = set(operation["responses"])
                for status, response in operation["responses"].items():
                    if int(status) >= 400:
                        ref = response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
                        want = "Health" if (path, status) == ("/health", "503") else "ErrorResponse"
                        assert ref == want, (path, status, ref)
        keyed = {"401"} if key else set()
        assert statuses["/translate"] == {"200", "400", "408", "413", "422", "429", "500", "503"} | keyed
        assert statuses["/info"] == {"200", "413", "500", "503"} | keyed
        assert statuses["/health"] == {"200", "413", "500", "503"}
        assert ("securitySchemes" in schema["components"]) == bool(key)


def test_the_request_schema_says_the_server_limits():
    schema = _schema(beam_sizes=(1, 2, 4), max_nbest=3, max_chars=50, max_texts=7)
    fields = schema["components"]["schemas"]["TranslateRequest"]["properties"]
    assert fields["beam_size"]["anyOf"][0]["enum"] == [1, 2, 4]
    assert fields["nbest"]["maximum"] == 3 and "widens the beam" in fields["nbest"]["description"]
    one, many = fields["text"]["oneOf"]
    assert many["maxItems"] == 7 and many["items"]["maxLength"] == 50
    # A single text may be a document of max_request_chars with split; without it, max_chars (the if/else).
    assert one["maxLength"] == serving.ServeSettings().max_request_chars
    request = schema["components"]["schemas"]["TranslateRequest"]
    assert request["if"] == {"properties": {"split": {"const": True}}, "required": ["split"]}
    assert request["else"] == {"properties": {"text": {"maxLength": 50}}}
    assert fields["top_k"]["maximum"] == 2**31 - 1  # the search's int32
    assert fields["seed"]["anyOf"][0] == {"type": "integer", "minimum": 0, "exclusiveMaximum": 2**32}


def test_the_request_model_takes_what_the_schema_allows_and_nothing_else():
    model = translate_request_model((1, 2), max_nbest=2, max_chars=5, max_texts=2)
    ok = model.model_validate({"text": ["ab", "\ud800"], "beam_size": 2.0, "nbest": 2, "seed": 3.0})
    assert ok.text == ["ab", "\ufffd"] and ok.beam_size == 2 and ok.seed == 3  # 2.0 is a JSON Schema integer
    for bad in (
        {"text": "abcdef"},
        {"text": ["a", "b", "c"]},
        {"text": "a", "beam_size": 3},
        {"text": "a", "beam_size": True},
        {"text": "a", "beam_size": "2"},
        {"text": "a", "nbest": 3},
        {"text": "a", "top_k": 2.5},
        {"text": "a", "seed": -1},
    ):
        with pytest.raises(ValueError):
            model.model_validate(bad)


def test_max_nbest_needs_a_beam_that_large():
    with pytest.raises(ValueError, match="max_nbest 5 needs a beam size >= 5"):
        serving.ServeSettings(beam_sizes=(1, 2), max_nbest=5).check()
    serving.ServeSettings(beam_sizes=(1, 2), max_nbest=2).check()


def test_validation_errors_read_as_field_and_message():
    assert field_path(("body", "text", "list", 3), TEXT_TAGS) == "text[3]"
    assert field_path(("body", "text", "one"), TEXT_TAGS) == "text"
    assert field_path(("body",), TEXT_TAGS) == ""
    detail, field = validation_error(
        [
            {"loc": ("body", "nbest"), "msg": "Input should be less than or equal to 5", "type": "less_than_equal"},
            {"loc": ("body", "bogus"), "msg": "Extra inputs are not permitted", "type": "extra_forbidden"},
        ],
        TEXT_TAGS,
    )
    assert (detail, field) == (
        "nbest: Input should be less than or equal to 5; bogus: Extra inputs are not permitted",
        "nbest",
    )
    detail, field = validation_error(
        [{"loc": ("body", 11), "msg": "JSON decode error", "type": "json_invalid", "ctx": {"error": "Expecting ','"}}]
    )
    assert (detail, field) == ("body: invalid JSON at character 11: Expecting ','", None)
