"""The one body of every error the server answers, 4xx and 5xx alike: `ErrorResponse`.

`{"detail": "nbest: Input should be less than or equal to 5", "field": "nbest"}`: `detail` is one
line for a person (it starts with the offending field when there is one), `field` names that
field for a program (`"text[3]"` for the fourth text of a list), or is null when the error is
not about one field (a body over the size cap, a full queue, a timeout). The routes declare it
in /openapi.json for each status they can answer (`error_responses`), so a client generated
from the schema can read every error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse


class ErrorResponse(BaseModel):
    """The body of every error response (4xx and 5xx)."""

    detail: str = Field(description="what went wrong, one line; starts with the offending field when there is one")
    field: str | None = Field(
        None, description="the offending request field ('beam_size', 'text[3]'); null when the error is not about one"
    )


# What each status means, as the schema describes it.
MEANINGS = {
    400: "The body is not UTF-8 text.",
    401: "The API key is missing or wrong (`Authorization: Bearer <key>`).",
    404: "No such path.",
    405: "The path does not take this method.",
    408: "Not translated within the server's request_timeout_s.",
    413: "The body is larger than the server's cap (from max_texts and max_chars), refused unread.",
    422: "The request is not valid JSON or breaks the request schema; `field` names the field.",
    429: "Too many texts are waiting for a search (max_queue); retry later. A request of more texts (or split"
    " sentences) than max_queue is 422.",
    500: "The translation (or the server) failed; the server goes on.",
    503: "The model is still loading and compiling, or failed to load (see /health).",
}


class ApiError(HTTPException):
    """An HTTPException that may name the request field it is about."""

    def __init__(
        self, status_code: int, detail: str, field: str | None = None, headers: Mapping[str, str] | None = None
    ):
        super().__init__(status_code, detail, headers=headers)
        self.field = field


def error_response(
    status_code: int, detail: str, field: str | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """An error answered with the ErrorResponse body."""
    body = ErrorResponse(detail=detail, field=field).model_dump()
    return JSONResponse(body, status_code=status_code, headers=dict(headers) if headers else None)


def error_responses(statuses: Iterable[int]) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: ErrorResponse for each of `statuses`."""
    return {status: {"model": ErrorResponse, "description": MEANINGS[status]} for status in statuses}


def field_path(loc: Sequence[str | int], union_tags: Iterable[str] = ()) -> str:
    """A pydantic error location as a field path: ('body', 'text', 'list', 3) -> 'text[3]'
    (the leading 'body' and the union members' tags left out)."""
    parts = [part for part in loc[1:] if part not in set(union_tags)] if loc[:1] == ("body",) else list(loc)
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def validation_error(errors: Sequence[Mapping[str, Any]], union_tags: Iterable[str] = ()) -> tuple[str, str | None]:
    """(detail, field) for a request's validation errors: each one as 'field: message',
    joined by '; ', and the first one's field. Bodies are never echoed back."""
    lines, fields = [], []
    for error in errors:
        loc = tuple(error.get("loc", ()))
        message = error.get("msg", "invalid")
        if error.get("type") == "json_invalid":
            where = f" at character {loc[1]}" if len(loc) > 1 else ""
            lines.append(f"body: invalid JSON{where}: {error.get('ctx', {}).get('error', message)}")
            fields.append(None)
            continue
        path = field_path(loc, union_tags)
        lines.append(f"{path or 'body'}: {message}")
        fields.append(path or None)
    return "; ".join(lines) or "invalid request", fields[0] if fields else None
