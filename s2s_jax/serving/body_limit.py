"""A cap on request bodies, enforced before they are read: an ASGI middleware.

A body over the cap is refused with 413 and the server's error body (s2s_jax/serving/errors.py):
at once from its `Content-Length`, without reading a byte of it, or, for a chunked body,
as soon as the bytes received pass the cap, without reading further. The connection is
closed after the answer, so the rest of the body is never read.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from s2s_jax.serving.errors import error_response

# The bytes one character of a text can take in a valid body: 12 for a character outside the
# BMP written as an escaped surrogate pair ("\ud83d\ude00"); 4 in raw UTF-8, 6 as one \uXXXX.
BYTES_PER_CHAR = 12
# Per text: its quotes, the comma and some whitespace.
BYTES_PER_TEXT = 16
# The other fields, the brackets and whitespace of a request.
FIXED_OVERHEAD = 64 * 1024


def body_cap(max_texts: int, max_chars: int) -> int:
    """The largest body a request within `max_texts` texts of `max_chars` characters needs,
    however its texts are written (raw UTF-8 or JSON escapes), with 64 KiB for the rest."""
    return max_texts * (max_chars * BYTES_PER_CHAR + BYTES_PER_TEXT) + FIXED_OVERHEAD


class BodyTooLarge(HTTPException):
    """Raised by the counting `receive` once a chunked body passes the cap; FastAPI answers it
    as it answers any HTTPException."""


class BodyLimit:
    """Refuses request bodies over `max_bytes` with 413 before reading them (see the module doc)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _detail(self, size: str) -> str:
        return f"request body: {size} bytes, at most {self.max_bytes}, from max_texts and max_chars"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            refusal = error_response(413, self._detail(str(declared)), headers={"Connection": "close"})
            return await refusal(scope, receive, send)
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(413, self._detail(f"over {received}"), headers={"Connection": "close"})
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
