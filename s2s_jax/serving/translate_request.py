"""The body of POST /translate, with the server's limits in its schema.

`translate_request_model(...)` builds the request model of one server: the beam sizes it allows
(an enum), its most n-best, characters per text and texts per request are pydantic constraints,
so the published /openapi.json says them and validation enforces them (422, `field` naming the
field). The rules the schema cannot say are not rules: an n-best above the beam size widens
the beam (see `NBEST`), and constraints make the search a beam search, with no more than the cap
of constraint tokens per text (see `CONSTRAINTS`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, create_model
from pydantic_core import PydanticCustomError

# The tags of `text`'s two forms, as they appear in pydantic's error locations.
TEXT_TAGS = ("one", "list")
_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_PHRASES = 8  # constraint phrases per text
MAX_PHRASE_CHARS = 200  # characters per constraint phrase
CONSTRAINTS = (
    "list i: the phrases the translation of text i must contain (texts past the lists have none). They "
    "make the search a beam search of at least 2 (sample ignored, a beam of 1 widened); phrases past 32 "
    "target tokens per text are left out (constraints_met false)"
)
NBEST = (
    "hypotheses per text; above the beam size it widens the beam to the smallest allowed beam size "
    ">= nbest (sampling draws nbest samples)"
)


def _valid_unicode(value: Any) -> Any:
    """Lone surrogates (JSON allows "\\ud800") become U+FFFD, as the translator would make them."""
    return _SURROGATE.sub("\ufffd", value) if isinstance(value, str) else value


def _json_integer(value: Any) -> Any:
    """An integer as JSON Schema has it: 2.0 is 2 (strict pydantic would refuse it), true is not 1
    (an enum of integers would take it)."""
    if isinstance(value, bool):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return int(value) if isinstance(value, float) and value.is_integer() else value


def json_int(**constraints: int) -> Any:
    """An integer field's type: strict (no "5"), but 5.0 is 5, as in the published schema. The
    constraints go before the validator, or pydantic would publish them under their own names."""
    return Annotated[int, Field(**constraints), BeforeValidator(_json_integer)]


class TranslateRequest(BaseModel):
    """One or more texts and how to translate them; omitted settings take the model's decode defaults."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    text: str | list[str]
    beam_size: json_int(ge=1) | None = Field(None, description="1 = greedy; one of the server's sizes")
    nbest: json_int(ge=1) = Field(1, description=NBEST)
    alpha: float | None = Field(None, ge=0.0, le=10.0, description="GNMT length penalty exponent")
    sample: bool = False
    temperature: float = Field(1.0, gt=0.0, le=100.0)
    top_k: json_int(ge=0, le=2**31 - 1) = Field(0, description="0 = off")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="1.0 = off")
    seed: json_int(ge=0, lt=2**32) | None = Field(None, description="sampling seed; random when omitted")
    alignment: bool = Field(False, description="word alignment and the attention matrix (attention models)")
    constraints: list[list[str]] | None = Field(None, description=CONSTRAINTS)


def _text_form(value: Any) -> str | None:
    return TEXT_TAGS[0] if isinstance(value, str) else TEXT_TAGS[1] if isinstance(value, list) else None


def translate_request_model(
    beam_sizes: tuple[int, ...], max_nbest: int, max_chars: int, max_texts: int
) -> type[TranslateRequest]:
    """TranslateRequest with one server's limits as constraints (and so in its schema)."""
    one_text = Annotated[str, BeforeValidator(_valid_unicode), Field(max_length=max_chars)]
    text = Annotated[
        Union[
            Annotated[one_text, Tag(TEXT_TAGS[0])],
            Annotated[list[one_text], Field(max_length=max_texts), Tag(TEXT_TAGS[1])],
        ],
        Discriminator(
            _text_form,
            custom_error_type="text_type",
            custom_error_message="Input should be a string or a list of strings",
        ),
        Field(description=f"one text or a list of at most {max_texts}, each at most {max_chars} characters"),
    ]
    beam = Annotated[Literal[tuple(beam_sizes)], BeforeValidator(_json_integer)]  # type: ignore[valid-type]
    phrase = Annotated[str, BeforeValidator(_valid_unicode), Field(max_length=MAX_PHRASE_CHARS)]
    # Without a beam size of 2 or more the server cannot search constraints: no phrase is valid.
    phrases = Annotated[list[phrase], Field(max_length=MAX_PHRASES if max(beam_sizes) >= 2 else 0)]
    return create_model(
        "TranslateRequest",
        __base__=TranslateRequest,
        text=(text, ...),
        beam_size=(
            beam | None,
            Field(None, description="1 = greedy; one of the server's beam sizes; omitted: the model's default"),
        ),
        nbest=(json_int(ge=1, le=max_nbest), Field(1, description=NBEST)),
        constraints=(
            Annotated[list[phrases], Field(max_length=max_texts)] | None,
            Field(
                None,
                description=f"{CONSTRAINTS}; one list per text, each of at most {MAX_PHRASES} phrases "
                f"of at most {MAX_PHRASE_CHARS} characters",
            ),
        ),
    )
