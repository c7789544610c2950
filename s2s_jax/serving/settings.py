"""The server's settings (the `s2s-serve` flags), apart from the app so that the command can
define its flags and refuse bad ones where the serve extra (FastAPI, uvicorn) is not installed."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ServeSettings:
    """Batching, limits and access: the `s2s-serve` flags."""

    max_wait_ms: float = 5.0  # how long the oldest waiting text waits for others to share its batch
    max_batch: int = 32  # texts per search call (rows of the largest compiled shape)
    max_chars: int = 2000  # characters per text (422 above); with split, per sentence (longer ones are cut)
    max_request_chars: int = 20000  # with split, characters of a request's one text (a list's texts keep max_chars)
    max_texts: int = 64  # texts per request (422 above)
    max_queue: int = 256  # texts waiting for a search (429 above)
    request_timeout_s: float = 30.0  # a request not answered by then gets 408
    beam_sizes: tuple[int, ...] = (1, 2, 3, 4, 5, 8)  # the beam sizes a request may ask for (each one compiles)
    max_nbest: int = 5  # an nbest above the beam size widens the beam, so at most max(beam_sizes)
    max_mbr: int = 16  # most samples of a minimum-Bayes-risk request (below 2: MBR off)
    warm_up_beam_sizes: tuple[int, ...] = ()  # every batch shape of these compiled at start, not only covering ones
    api_key: str | None = None  # when set, /translate and /info need `Authorization: Bearer <key>`

    def check(self) -> None:
        if self.max_batch < 1 or self.max_texts < 1 or self.max_queue < 1 or self.max_chars < 1:
            raise ValueError("max_batch, max_texts, max_queue and max_chars must be at least 1")
        if self.max_request_chars < self.max_chars:
            raise ValueError(f"max_request_chars {self.max_request_chars} must be at least max_chars {self.max_chars}")
        if self.max_wait_ms < 0 or not self.request_timeout_s > 0:
            raise ValueError("max_wait_ms must be >= 0 and request_timeout_s > 0")
        if not self.beam_sizes or min(self.beam_sizes) < 1 or self.max_nbest < 1:
            raise ValueError("beam_sizes must be positive and max_nbest at least 1")
        if self.max_nbest > max(self.beam_sizes):
            raise ValueError(
                f"max_nbest {self.max_nbest} needs a beam size >= {self.max_nbest} among beam_sizes {self.beam_sizes}"
            )
        if self.max_mbr < 0:
            raise ValueError(f"max_mbr must be >= 0 (below 2: MBR off), got {self.max_mbr}")
        if not set(self.warm_up_beam_sizes) <= set(self.beam_sizes):
            raise ValueError(f"warm_up_beam_sizes {self.warm_up_beam_sizes} must be among beam_sizes {self.beam_sizes}")
