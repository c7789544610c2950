"""The translation server: a FastAPI app over one `Translator`, with dynamic batching.

Requests are split into one job per text. A single batcher task gathers the jobs whose
search settings can share a batch (`SearchOptions.batch_key`: the same beam size, n-best
and sampling switch; alpha, temperature, top-k and top-p are traced per row) for up to
`max_wait_ms` after the oldest one arrived, or until `max_batch` texts are waiting, and
hands them to one worker thread as one `Translator.translate` call. That call goes
through the one inference path (s2s_jax/decoding/inference.py), so a batch of texts is sorted by
length and padded to the shapes decode.py uses; before /health turns 200 every accepted search
has compiled shapes that cover all its batches (s2s_jax/serving/shapes.py), so no plain request
waits on a compile. What compiles on first use: a constrained batch's search, and the teacher-forced
pass of an `alignment`. A job whose request has already timed out is
dropped before its search; a batch that fails fails its own requests only.

Sampling draws text j of a request from fold_in(key(seed), j), whatever else shares its
batch; without a seed the server picks one at random.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import hmac
import importlib.resources
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from s2s_jax.data import sentences
from s2s_jax.decoding import constraints as dba
from s2s_jax.decoding.inference import SearchOptions
from s2s_jax.decoding.mbr import MBROptions
from s2s_jax.serving import shapes
from s2s_jax.serving.body_limit import BodyLimit, body_cap
from s2s_jax.serving.errors import ApiError, error_response, error_responses, validation_error
from s2s_jax.serving.settings import ServeSettings
from s2s_jax.serving.translate_request import TEXT_TAGS, TranslateRequest, translate_request_model

# After a search, the batcher waits up to this fraction of its duration (or max_wait_ms, if longer)
# for that batch's clients to send their next texts.
REJOIN_FRACTION = 0.25
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_BEARER = HTTPBearer(auto_error=False, description="the server's API key, when it has one")


# ---------------------------------------------------------------------------
# The API's JSON (part of the OpenAPI document at /openapi.json)
# ---------------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok", "loading", "error"] = Field(description="ok (200); loading or error (503)")
    detail: str | None = Field(None, description="why the model failed to load (status error)")


class Candidate(BaseModel):
    text: str
    score: float


class Alignment(BaseModel):
    pairs: str = Field(description="hard word alignment, 'source-target' index pairs")
    src: list[str] = Field(description="source pieces, </s> last")
    tgt: list[str] = Field(description="output pieces, </s> last")
    weights: list[list[float]] = Field(description="attention weights [len(tgt)][len(src)]")


class Word(BaseModel):
    text: str
    prob: float = Field(description="the model's probability of the word given the source and the words before it")


class Translation(BaseModel):
    text: str
    score: float
    nbest: list[Candidate]
    alignment: Alignment | None = None
    words: list[Word] | None = Field(None, description="the translation's words (with word_scores)")
    constraints_met: bool | None = Field(
        None, description="with constraints: whether the translation contains them all (false: cut at the length cap)"
    )


class TranslateResponse(BaseModel):
    translations: list[Translation]


# ---------------------------------------------------------------------------
# Dynamic batching
# ---------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class _Job:
    text: str
    opts: SearchOptions
    sample_key: tuple[int, int]
    alignment: bool
    arrived: float
    future: asyncio.Future
    mbr: MBROptions | None = None
    constraints: list[str] = dataclasses.field(default_factory=list)
    all_constraints: bool = True  # False: phrases past the cap were left out
    target_lang: str | None = None

    def batch_key(self) -> tuple:
        """What jobs must share to be translated in one call."""
        return self.opts.batch_key(), self.mbr, self.target_lang


class QueueFull(Exception):
    pass


def _constraints_met(best, job: _Job) -> bool | None:
    """A text's `constraints_met`: None without constraints; False when phrases were left out (all
    of them, even), else whether the translation holds every phrase."""
    if not job.all_constraints:
        return False
    return bool(best.constraints_met) if job.constraints else None


class Batcher:
    """Gathers compatible jobs into one search call, run on one worker thread."""

    def __init__(self, translator, settings: ServeSettings):
        self.translator = translator
        self.settings = settings
        self.pending: list[_Job] = []
        self.search_calls = 0  # searches run (tests: two concurrent requests share one)
        self.batch_texts: list[int] = []  # texts per search call, newest last (bounded)
        self._wake = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="s2s-search")
        self._has_attention = any(m.config.model.attention != "none" for m in translator.members)

    def submit(
        self,
        texts: Sequence[str],
        opts: SearchOptions,
        seed: int,
        alignment: bool,
        mbr: MBROptions | None = None,
        constraints: Sequence[list[str]] | None = None,
        whole: Sequence[bool] | None = None,
        target_lang: str | None = None,
        constrained_opts: SearchOptions | None = None,
    ) -> list[asyncio.Future]:
        """One job per text; a text with constraints (or whose phrases were all left out, `whole`
        False) gets `constrained_opts` (a beam search), no MBR; the others `opts` and `mbr`."""
        self.pending = [job for job in self.pending if not job.future.done()]  # timed out: no longer waiting
        if len(self.pending) + len(texts) > self.settings.max_queue:
            raise QueueFull(f"{len(self.pending)} texts are waiting (max_queue={self.settings.max_queue})")
        loop = asyncio.get_running_loop()
        now = loop.time()
        constraints = constraints or [[] for _ in texts]
        whole = whole or [True for _ in texts]
        jobs = [
            _Job(
                t,
                (constrained_opts or opts) if c or not w else opts,
                (seed, j),
                alignment,
                now,
                loop.create_future(),
                None if c or not w else mbr,
                c,
                w,
                target_lang,
            )
            for j, (t, c, w) in enumerate(zip(texts, constraints, whole))
        ]
        self.pending.extend(jobs)
        self._wake.set()
        return [job.future for job in jobs]

    async def run(self) -> None:
        """The batching loop (one task for the server's lifetime)."""
        loop = asyncio.get_running_loop()
        wait = self.settings.max_wait_ms / 1000.0
        previous_texts, previous_done, previous_seconds = 0, -math.inf, 0.0
        while True:
            while not self.pending:
                self._wake.clear()
                await self._wake.wait()
            first = self.pending[0]
            key = first.batch_key()
            while True:
                same = [job for job in self.pending if job.batch_key() == key]
                deadline = first.arrived + wait
                if sum(job.arrived >= previous_done for job in same) < previous_texts:
                    # The previous batch's clients tend to send again at once: waiting for them
                    # lets them join this batch instead of the next (closed-loop clients otherwise
                    # settle into two half-size groups that alternate).
                    deadline = max(deadline, previous_done + max(wait, REJOIN_FRACTION * previous_seconds))
                remaining = deadline - loop.time()
                if len(same) >= self.settings.max_batch or remaining <= 0:
                    break
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), remaining)
            batch = same[: self.settings.max_batch]
            taken = set(map(id, batch))
            self.pending = [job for job in self.pending if id(job) not in taken]
            batch = [job for job in batch if not job.future.done()]  # their requests timed out or went away
            if not batch:
                continue
            started = loop.time()
            try:
                results = await loop.run_in_executor(self._executor, self._translate, batch)
            except Exception as err:  # noqa: BLE001 - a failing batch fails its own requests, not the server
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(err)
                continue
            finally:
                previous_texts, previous_done = len(batch), loop.time()
                previous_seconds = previous_done - started
            for job, result in zip(batch, results):
                if not job.future.done():
                    job.future.set_result(result)

    def _translate(self, batch: list[_Job]) -> list[Translation]:
        texts = [job.text for job in batch]
        hyps = self.translator.translate(
            texts,
            [job.opts for job in batch],
            batch_size=self.settings.max_batch,
            sample_keys=[job.sample_key for job in batch],
            warn=lambda message: None,
            mbr=batch[0].mbr,
            target_lang=batch[0].target_lang,
            **({"constraints": [job.constraints for job in batch]} if any(job.constraints for job in batch) else {}),
        )
        self.search_calls += 1
        self.batch_texts = (self.batch_texts + [len(batch)])[-1000:]
        # A slot no hypothesis filled (fewer outputs than nbest exist) has score -inf: left out.
        hyps = [[x for x in h if math.isfinite(x.score)] or h[:1] for h in hyps]
        out = [
            Translation(
                text=h[0].text,
                score=_finite(h[0].score),
                nbest=[Candidate(text=x.text, score=_finite(x.score)) for x in h],
                words=None if h[0].words is None else [Word(text=w.text, prob=round(w.prob, 6)) for w in h[0].words],
                constraints_met=_constraints_met(h[0], job),
            )
            for h, job in zip(hyps, batch)
        ]
        aligned = [i for i, job in enumerate(batch) if job.alignment and texts[i].strip()]
        if aligned and self._has_attention:
            for i, alignment in zip(
                aligned,
                self._alignments(
                    [texts[i] for i in aligned], [hyps[i][0].tokens for i in aligned], batch[0].target_lang
                ),
            ):
                out[i].alignment = alignment
        return out

    def _alignments(self, texts: list[str], outputs: list[list[int]], target_lang: str | None) -> list[Alignment]:
        pairs, maps = self.translator.align_with_attention(texts, outputs, "hard", target_lang)
        return [
            Alignment(
                pairs=p, src=m["src"], tgt=m["tgt"], weights=[[round(float(w), 4) for w in row] for row in m["weights"]]
            )
            for p, m in zip(pairs, maps)
        ]

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def _finite(score: float) -> float:
    return score if math.isfinite(score) else -1e30


def default_options(translator) -> SearchOptions:
    """A request without settings: the model's decode.beam_size and alpha, scored."""
    cfg = translator.config.decode
    return SearchOptions(beam_size=cfg.beam_size, alpha=cfg.alpha, with_scores=True)


def request_options(
    request: TranslateRequest, translator, settings: ServeSettings, constrained: bool = False
) -> SearchOptions:
    """The request's SearchOptions. An omitted beam size is the model's default; an nbest above
    the beam size widens the beam to the smallest allowed size >= nbest (sampling ignores the
    beam size). With constraints (`constrained`) the search is a beam search of at least 2: `sample`
    is ignored and a beam of 1 widens to the smallest allowed size >= 2 (the request model has no
    constraints field when there is none). The request model enforces the limits; ApiError 422 for a
    request built without it."""
    if request.beam_size is not None and request.beam_size not in settings.beam_sizes:
        sizes = ", ".join(map(str, settings.beam_sizes))
        raise ApiError(
            422, f"beam_size: {request.beam_size} is not one of this server's beam sizes {sizes}", "beam_size"
        )
    if request.nbest > settings.max_nbest:
        raise ApiError(422, f"nbest: at most {settings.max_nbest}", "nbest")
    if request.mbr is not None and request.mbr > settings.max_mbr:
        raise ApiError(422, f"mbr: at most {settings.max_mbr}", "mbr")
    default = default_options(translator)
    beam = default.beam_size if request.beam_size is None else request.beam_size
    sample = request.sample and not constrained
    least = max(request.nbest, 2 if constrained else 1)
    if sample:
        beam = 1
    elif least > beam:
        beam = min(size for size in settings.beam_sizes if size >= least)
    opts = SearchOptions(
        beam_size=beam,
        alpha=default.alpha if request.alpha is None else request.alpha,
        nbest=request.nbest,
        sample=sample,
        temperature=request.temperature,
        top_k=request.top_k,
        top_p=request.top_p,
        with_scores=True,
        no_repeat_ngram=request.no_repeat_ngram,
        token_scores=request.word_scores,
    )
    mbr = request_mbr(request)
    if mbr is not None and not constrained:  # texts with constraints keep the beam and get no MBR
        opts = mbr.search_options(opts)
    opts.check()  # the request model's constraints leave nothing for it to refuse
    return opts


def request_mbr(request: TranslateRequest) -> MBROptions | None:
    """The request's minimum Bayes risk decoding (samples only), or None."""
    if request.mbr is None:
        return None
    return MBROptions(request.mbr, request.mbr_metric, "samples")


def request_constraints(request: TranslateRequest, texts: list[str], translator) -> tuple[list[list[str]], list[bool]]:
    """Each text's constraint phrases (list i for text i: texts past the lists' end have none, lists
    past the last text are ignored; control characters as spaces, blank phrases dropped), and whether
    each text kept all of them: phrases that would take a text past the cap of constraint tokens
    (s2s_jax/decoding/constraints.py) are left out, the earlier ones kept. Not errors: the schema
    cannot say them (as for `nbest`, see translate_request.py)."""
    given = list(request.constraints or [])[: len(texts)]
    given += [[] for _ in range(len(texts) - len(given))]
    rows, whole = [], []
    for row in given:
        phrases = [p for p in (clean_text(phrase).strip() for phrase in row) if p]
        kept, kept_ids = [], []
        for phrase, ids in zip(phrases, translator.constraint_ids([[p] for p in phrases])):
            if dba.token_count(kept_ids + ids) <= dba.MAX_TOKENS:
                kept.append(phrase)
                kept_ids += ids
        rows.append(kept)
        whole.append(len(kept) == len(phrases))
    return rows, whole


def clean_text(text: str) -> str:
    """Control characters (newlines included) become spaces: one text is one line."""
    return _CONTROL.sub(" ", text)


# ---------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------


def create_app(
    load: Callable[[], Any],
    settings: ServeSettings = ServeSettings(),
    log: Callable[[str], None] = print,
    target_languages: Sequence[str] | None = None,
) -> FastAPI:
    """The FastAPI app. `load()` returns the Translator; it runs (with the warm-up) in a
    background thread after startup, and /health answers 503 until both are done.
    `target_languages`, the model's (read from its config before it loads), put target_lang's
    choices in the request schema; without them it is checked once the model is loaded."""
    settings.check()
    service = _Service(load, settings, log)
    app = FastAPI(
        title="s2s-jax translation server",
        lifespan=service.lifespan,
        description="POST /translate; the page at /; the schema at /openapi.json.",
    )
    # Every error is an ErrorResponse (s2s_jax/serving/errors.py): routing's 404 and 405 too.
    app.add_exception_handler(HTTPException, service.http_error)
    app.add_exception_handler(RequestValidationError, service.invalid)
    app.add_exception_handler(Exception, service.unexpected)
    largest = max(body_cap(settings.max_texts, settings.max_chars), body_cap(1, settings.max_request_chars))
    app.add_middleware(BodyLimit, max_bytes=largest)
    keyed = [401] if settings.api_key is not None else []
    authorized = [Depends(service.authorized)] if keyed else []
    anywhere = [413, 500]  # the body cap applies to every route; so does an unexpected failure
    app.add_api_route(
        "/health",
        service.health,
        methods=["GET"],
        response_model=Health,
        responses={503: {"model": Health, "description": "Loading, or the load failed."}, **error_responses(anywhere)},
    )
    app.add_api_route(
        "/info",
        service.info,
        methods=["GET"],
        dependencies=authorized,
        responses=error_responses(keyed + [503, *anywhere]),
    )
    request_model = translate_request_model(
        settings.beam_sizes,
        settings.max_nbest,
        settings.max_chars,
        settings.max_texts,
        settings.max_request_chars,
        settings.max_mbr,
        target_languages,
    )
    app.add_api_route(
        "/translate",
        _taking(service.translate, request_model),
        name="translate",
        methods=["POST"],
        response_model=TranslateResponse,
        dependencies=authorized,
        responses=error_responses([400, *keyed, 408, 413, 422, 429, 500, 503]),
    )
    app.add_api_route("/", service.page, methods=["GET"], response_class=HTMLResponse, include_in_schema=False)
    return app


def _taking(translate: Callable, request_model: type[TranslateRequest]) -> Callable:
    """`translate` with its body typed `request_model`: FastAPI reads the type from the signature."""

    async def route(request):
        return await translate(request)

    route.__annotations__ = {"request": request_model, "return": TranslateResponse}
    return route


class _Service:
    """The app's route handlers and what they share: the Translator and its Batcher once loaded
    (`state`, also the app's `state.s2s`)."""

    def __init__(self, load: Callable[[], Any], settings: ServeSettings, log: Callable[[str], None]):
        self.load, self.settings, self.log = load, settings, log
        self.state: dict[str, Any] = {"ready": False, "error": None, "translator": None, "batcher": None}

    async def lifespan(self, app: FastAPI):
        """Starts loading in a background thread and the batcher once it is done; stops the batcher at shutdown."""
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        threading.Thread(target=self._prepare, args=(loop, ready), name="s2s-load", daemon=True).start()
        starter = asyncio.create_task(self._start(ready))
        app.state.s2s = self.state
        yield
        starter.cancel()
        if self.state.get("task") is not None:
            self.state["task"].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.state["task"]
            self.state["batcher"].close()
            self.state["shapes"].close()

    def _prepare(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future) -> None:
        """Loads the Translator and compiles its shapes (in the load thread); sets `ready` to it or the error."""
        try:
            started = time.perf_counter()
            translator = self.load()
            # Batches of mixed lengths would each compile a time-segment profile: the server runs
            # the padded shapes it compiles ahead (s2s_jax/models/time_segments.py).
            translator.inference.skip_padding = False
            s = self.settings
            registry = shapes.compile_ahead(
                translator, s.beam_sizes, s.max_nbest, s.max_batch, s.warm_up_beam_sizes, self.log, s.max_mbr
            )
            self.log(
                f"ready: {registry.warm_up_shapes} batch shapes compiled in {registry.warm_up_seconds:.1f} s "
                f"({time.perf_counter() - started:.1f} s with loading)"
            )
            loop.call_soon_threadsafe(ready.set_result, (translator, registry))
        except Exception as err:  # noqa: BLE001 - reported by /health and the log, the server stays up
            self.log(f"error: {err}")
            loop.call_soon_threadsafe(ready.set_exception, err)

    async def _start(self, ready: asyncio.Future) -> None:
        try:
            translator, registry = await ready
        except Exception as err:  # noqa: BLE001
            self.state["error"] = str(err)
            return
        batcher = Batcher(translator, self.settings)
        task = asyncio.create_task(batcher.run())
        self.state.update(translator=translator, shapes=registry, batcher=batcher, task=task, ready=True)

    async def http_error(self, request: Request, err: HTTPException) -> JSONResponse:
        return error_response(err.status_code, str(err.detail), getattr(err, "field", None), err.headers)

    async def invalid(self, request: Request, err: RequestValidationError) -> JSONResponse:
        """422 naming each bad field, without echoing the input back."""
        detail, field = validation_error(err.errors(), TEXT_TAGS)
        return error_response(422, detail, field)

    async def unexpected(self, request: Request, err: Exception) -> JSONResponse:
        return error_response(500, f"internal error: {type(err).__name__}: {err}")

    def authorized(self, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]) -> None:
        """401 unless the request carries the API key (a dependency only when the server has one)."""
        api_key = self.settings.api_key or ""
        if credentials is None or not hmac.compare_digest(credentials.credentials.strip().encode(), api_key.encode()):
            raise ApiError(
                401, "missing or wrong API key (Authorization: Bearer <key>)", headers={"WWW-Authenticate": "Bearer"}
            )

    def ready_state(self) -> dict:
        if not self.state["ready"]:
            raise ApiError(503, self.state["error"] or "loading the model and compiling; see /health")
        return self.state

    # The route handlers carry no docstrings: FastAPI would publish them in /openapi.json.

    async def health(self) -> JSONResponse:
        if self.state["ready"]:
            return JSONResponse({"status": "ok"})
        return JSONResponse(
            {"status": "error" if self.state["error"] else "loading", "detail": self.state["error"]}, status_code=503
        )

    async def info(self) -> dict:
        current = self.ready_state()
        translator = current["translator"]
        members = [_member_info(member) for member in translator.members]
        default = default_options(translator)
        return {
            "members": members,
            "languages": members[0]["languages"],
            "target_languages": translator.target_languages,
            "step": members[0]["step"],
            "attention": any(m.config.model.attention != "none" for m in translator.members),
            "int8": translator.model.config.int8,
            "defaults": {"beam_size": default.beam_size, "alpha": default.alpha},
            "limits": {k: v for k, v in dataclasses.asdict(self.settings).items() if k != "api_key"},
            "batches": {
                "search_calls": current["batcher"].search_calls,
                "mean_texts": float(np.mean(current["batcher"].batch_texts or [0])),
            },
            "shapes": current["shapes"].info(),
            "shortlist": getattr(translator, "shortlist", None) is not None,
        }

    async def translate(self, request: TranslateRequest) -> TranslateResponse:
        current = self.ready_state()
        texts = [request.text] if isinstance(request.text, str) else request.text
        try:
            target_lang = current["translator"].check_target(request.target_lang)
        except ValueError as err:
            raise ApiError(422, f"target_lang: {err}", "target_lang") from None
        constraints, whole = request_constraints(request, texts, current["translator"])
        constrained = [bool(c) or not w for c, w in zip(constraints, whole)]  # asked for constraints
        # each text's search as if it came alone: constraints make only their own texts' a beam search
        opts = request_options(request, current["translator"], self.settings)
        constrained_opts = (
            request_options(request, current["translator"], self.settings, constrained=True)
            if any(constrained)
            else None
        )
        seed = secrets.randbits(32) if request.seed is None else request.seed
        documents = None
        if request.split:  # a text with constraints is translated whole: they hold for all of it
            language = current["translator"].source_language
            documents = [
                sentences.unsplit(t) if c else sentences.segment(t, language, self.settings.max_chars)
                for t, c in zip(texts, constrained)
            ]
            texts = sentences.flatten(documents)
            constraints = [c for d, c in zip(documents, constraints) for _ in d.sentences]
            whole = [w for d, w in zip(documents, whole) for _ in d.sentences]
        if len(texts) > self.settings.max_queue:  # would never fit the queue: not a "retry later"
            what = f"split: {len(texts)} sentences" if request.split else f"text: {len(texts)} texts"
            raise ApiError(422, f"{what}, more than max_queue={self.settings.max_queue} wait at once", "text")
        mbr = request_mbr(request)
        try:
            futures = current["batcher"].submit(
                [clean_text(t) for t in texts],
                opts,
                seed,
                request.alignment,
                mbr,
                constraints,
                whole,
                target_lang,
                constrained_opts,
            )
        except QueueFull as err:
            raise ApiError(429, f"server busy: {err}; retry later") from None
        translations = await self._answers(futures)
        if documents is not None:
            regrouped = sentences.regroup(documents, translations)
            translations = [_joined(d, parts, mean=mbr is not None) for d, parts in zip(documents, regrouped)]
        if mbr is not None:  # the candidates ranked, of which the request's nbest
            translations = [t.model_copy(update={"nbest": t.nbest[: request.nbest]}) for t in translations]
        return TranslateResponse(translations=translations)

    async def _answers(self, futures: list[asyncio.Future]) -> list[Translation]:
        """The jobs' translations; 408 after request_timeout_s (the jobs are cancelled), 500 if their batch failed."""
        timeout = self.settings.request_timeout_s
        try:
            return list(await asyncio.wait_for(asyncio.gather(*futures), timeout))
        except asyncio.TimeoutError:
            for future in futures:
                future.cancel()
            raise ApiError(408, f"not translated within request_timeout_s={timeout:g}") from None
        except Exception as err:  # noqa: BLE001 - the batch failed: this request's error, the server goes on
            raise ApiError(500, f"translation failed: {err}") from None

    async def page(self) -> HTMLResponse:
        return HTMLResponse(
            importlib.resources.files("s2s_jax.serving").joinpath("static/index.html").read_text("utf-8")
        )


def _joined(document: sentences.Segmented, parts: list[Translation], mean: bool = False) -> Translation:
    """A split text's translation from its sentences': the texts joined with its own spacing, the
    scores summed (averaged with `mean`: MBR's expected utilities), candidate k joining each
    sentence's k-th; the words of all sentences in order; the alignment of a one-sentence text."""
    if not parts:  # blank: the translator's empty hypothesis, the whitespace kept
        return Translation(text=document.join([]), score=0.0, nbest=[Candidate(text=document.join([]), score=0.0)])
    ranks = min(len(p.nbest) for p in parts)
    nbest = [
        Candidate(
            text=document.join([p.nbest[k].text for p in parts]),
            score=_finite(sum(p.nbest[k].score for p in parts) / (len(parts) if mean else 1)),
        )
        for k in range(ranks)
    ]
    alignment = parts[0].alignment if len(parts) == 1 else None
    words = None if any(p.words is None for p in parts) else [w for p in parts for w in p.words]
    met = parts[0].constraints_met if len(parts) == 1 else None  # constraints keep a text whole
    return Translation(
        text=nbest[0].text, score=nbest[0].score, nbest=nbest, alignment=alignment, words=words, constraints_met=met
    )


def _member_info(member) -> dict:
    """/info's description of one model of the Translator."""
    cfg = member.config
    return {
        "workdir": member.workdir,
        "step": member.meta.get("step"),
        "model": {
            k: cfg.model[k]
            for k in ("cell", "emb_dim", "hidden_size", "num_layers", "bidirectional", "attention")
            if k in cfg.model
        },
        "vocab": {"src": member.src_tokenizer.vocab_size, "tgt": member.tgt_tokenizer.vocab_size},
        "languages": {"src": _language(cfg.data, "src"), "tgt": _language(cfg.data, "tgt")},
        "pairs": [pair.name for pair in member.languages.pairs],
    }


def _language(data_cfg, side: str) -> str:
    """A language code guessed from the training file's extension (train.de -> de), else ''."""
    return sentences.language_code(data_cfg.get(f"train_{side}", "") or "")
