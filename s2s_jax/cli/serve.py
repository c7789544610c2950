"""`s2s-serve` / `python serve.py`: a trained workdir behind HTTP (s2s_jax/serving/app.py) with uvicorn.

    s2s-serve --workdir runs/m30k_att                      # http://127.0.0.1:8000/
    S2S_API_KEY=secret s2s-serve --workdir W --host 0.0.0.0 --port 8080
    s2s-serve --workdir W --api_key_file /run/secrets/s2s_key   # the key never shows in `ps`

SIGTERM (or Ctrl-C) stops accepting connections, finishes the requests in flight and
exits 0.
"""

from s2s_jax.cli import runtime  # first: OPENBLAS_NUM_THREADS must be set before numpy/jax load

runtime.limit_openblas_threads()

import os
import signal
import sys

from s2s_jax.cli import model_flags
from s2s_jax.serving.settings import ServeSettings

API_KEY_ENV = "S2S_API_KEY"


def api_key_from(path: str | None, environ=os.environ) -> str | None:
    """The key from `--api_key_file` or $S2S_API_KEY (never a flag's value: that shows in `ps`);
    ValueError for both at once or for an unreadable or empty file."""
    from_env = environ.get(API_KEY_ENV, "").strip() or None
    if path is None:
        return from_env
    if from_env is not None:
        raise ValueError(f"give the API key by --api_key_file or ${API_KEY_ENV}, not both")
    try:
        with open(path, encoding="utf-8") as f:
            key = f.read().strip()
    except OSError as err:
        raise ValueError(f"--api_key_file {path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ValueError(f"--api_key_file {path}: not UTF-8 text") from None
    if not key:
        raise ValueError(f"--api_key_file {path} is empty")
    return key


def settings_from_flags(flags) -> ServeSettings:
    try:
        beam_sizes = tuple(sorted({int(b) for b in flags.beam_sizes}))
        warm = tuple(sorted({int(b) for b in flags.warm_up_beam_sizes or ()}))
    except ValueError:
        raise ValueError("--beam_sizes and --warm_up_beam_sizes must be integers") from None
    settings = ServeSettings(
        max_wait_ms=flags.max_wait_ms,
        max_batch=flags.max_batch,
        max_chars=flags.max_chars,
        max_request_chars=flags.max_request_chars,
        max_texts=flags.max_texts,
        max_queue=flags.max_queue,
        request_timeout_s=flags.request_timeout_s,
        beam_sizes=beam_sizes,
        max_nbest=flags.max_nbest,
        max_mbr=flags.max_mbr,
        warm_up_beam_sizes=warm,
        api_key=api_key_from(flags.api_key_file),
    )
    settings.check()
    return settings


def run(flags) -> int:
    try:
        import uvicorn

        from s2s_jax.serving.app import create_app
    except ImportError as err:  # `pip install -e .` without the serve extra
        print(f'error: the server needs FastAPI and uvicorn ({err}): pip install -e ".[serve]"', file=sys.stderr)
        return 1
    from s2s_jax.data import languages
    from s2s_jax.decoding.inference import ensemble_weights_flag
    from s2s_jax.decoding.shortlist import load as load_shortlist
    from s2s_jax.decoding.translator import Translator
    from s2s_jax.errors import CheckpointError, DataError
    from s2s_jax.workdir import run_config

    try:
        settings = settings_from_flags(flags)
        weights = ensemble_weights_flag(flags.ensemble_weights, len(flags.workdir))
        for workdir in flags.workdir:  # a wrong path is an error now, not a 503 later
            if not os.path.isfile(os.path.join(workdir, "config.json")):
                raise DataError(f"{workdir} is not a training workdir (no config.json)")
        if flags.shortlist:
            load_shortlist(flags.workdir[0])  # no shortlist: an error now, not a 503 later
        config = run_config.load(flags.workdir[0])
        targets = languages.run_languages(config.data).targets  # the request schema's
        if config.decode.beam_size not in settings.beam_sizes:  # a request's default must be one that compiles ahead
            raise ValueError(
                f"{flags.workdir[0]}'s decode.beam_size {config.decode.beam_size}, the beam of a request that names "
                f"none, is not among --beam_sizes {','.join(map(str, settings.beam_sizes))}: add it"
            )
    except (ValueError, DataError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def load() -> Translator:
        try:
            return Translator(
                flags.workdir, flags.checkpoint, weights=weights, int8=flags.int8, shortlist=flags.shortlist
            )
        except (DataError, CheckpointError, ValueError) as err:
            raise RuntimeError(str(err)) from None

    app = create_app(load, settings, log, targets)
    log(f"serving {', '.join(flags.workdir)} on http://{flags.host}:{flags.port}/ (ready once /health answers 200)")
    # uvicorn re-raises the signal that stopped it once it has drained; ignoring SIGTERM
    # there makes a requested stop exit 0.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    uvicorn.run(app, host=flags.host, port=flags.port, log_level=flags.log_level, timeout_graceful_shutdown=None)
    return 0


def _define_flags() -> None:
    from absl import flags

    defaults = ServeSettings()
    model_flags.define_workdirs("serve")
    model_flags.define_checkpoint()
    flags.DEFINE_bool(
        "int8", False, "Serve int8 copies of the weight matrices (made at load time): lower latency on a CPU."
    )
    model_flags.define_shortlist("text")
    flags.DEFINE_string("host", "127.0.0.1", "Address to bind (0.0.0.0 to listen on every interface).")
    flags.DEFINE_integer("port", 8000, "Port to listen on.")
    flags.DEFINE_float("max_wait_ms", defaults.max_wait_ms, "How long a text waits for others to share its batch.")
    flags.DEFINE_integer("max_batch", defaults.max_batch, "Texts per search call (0 < n; 1 switches batching off).")
    flags.DEFINE_integer(
        "max_chars", defaults.max_chars, "Characters per text (422 above); with split, per sentence (cut above)."
    )
    flags.DEFINE_integer(
        "max_request_chars",
        defaults.max_request_chars,
        "With split, the characters of a request's single text, a document (422 above; >= --max_chars).",
    )
    flags.DEFINE_integer("max_texts", defaults.max_texts, "Texts per request (422 above).")
    flags.DEFINE_integer("max_queue", defaults.max_queue, "Texts waiting for a search (429 above).")
    flags.DEFINE_float("request_timeout_s", defaults.request_timeout_s, "Seconds before a request gets 408.")
    flags.DEFINE_list("beam_sizes", [str(b) for b in defaults.beam_sizes], "Beam sizes a request may ask for.")
    flags.DEFINE_integer(
        "max_nbest",
        defaults.max_nbest,
        "Most hypotheses per text (at most the largest --beam_sizes: nbest widens the beam).",
    )
    flags.DEFINE_integer(
        "max_mbr",
        defaults.max_mbr,
        "Most samples of a minimum-Bayes-risk request (its `mbr` field); below 2 switches MBR off.",
    )
    flags.DEFINE_list(
        "warm_up_beam_sizes",
        None,
        "Beam sizes whose every batch shape is compiled before /health, not only the shapes that cover "
        "them (every accepted search has those; a batch runs on one until its own shape has compiled "
        "in the background, so no plain request waits on a compile either way; constrained searches and "
        "alignments compile on first use).",
    )
    flags.DEFINE_string(
        "api_key_file",
        None,
        f"A file holding the key that 'Authorization: Bearer KEY' must carry (surrounding whitespace "
        f"stripped); or set ${API_KEY_ENV}. Not taken as a flag value, which would show in `ps`.",
    )
    flags.DEFINE_enum("log_level", "warning", ["critical", "error", "warning", "info", "debug"], "uvicorn's log level.")


def main(argv: list[str] | None = None) -> None:
    """Entry point of `s2s-serve` and `python serve.py`."""
    runtime.run_command("serve", _define_flags, run, argv)
