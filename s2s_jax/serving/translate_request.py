"""The body of POST /translate, with the server's limits in its schema.

`translate_request_model(...)` builds the request model of one server: the beam sizes it allows
(an enum), its most n-best, characters per text and texts per request are pydantic constraints,
so the published /openapi.json says them and validation enforces them (422, `field` naming the
field). The rules the schema cannot say are not rules: an n-best above the beam size widens
the beam (see `NBEST`), and constraints make their text's search a beam search, with no more than the cap
of constraint tokens per text (see `CONSTRAINTS`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from s2s_jax.decoding import pairwise_metrics
from s2s_jax.decoding.constraints import MAX_TOKENS

# The tags of `text`'s two forms, as they appear in pydantic's error locations.
TEXT_TAGS = ("one", "list")
_SURROGATE = re.compile("[\ud800-\udfff]")
SPLIT = (
    "cut each text into sentences (line breaks and blank lines kept), translate them all in one batch and join "
    "their translations with the text's own spacing; max_chars then applies per sentence (a longer one is cut at "
    "spaces) and a single text may hold up to max_request_chars. Candidate k joins each sentence's k-th, its "
    "score their sum; the alignment only for a text of one sentence"
)
MAX_PHRASES = 8  # constraint phrases per text
MAX_PHRASE_CHARS = 200  # characters per constraint phrase
CONSTRAINTS = (
    "list i: the phrases the translation of text i must contain (texts past the lists have none). They "
    "make that text's search a beam search of at least 2 (sample ignored, a beam of 1 widened; the other texts' "
    "searches are as without them) and hold for the whole "
    f"text (it is not split, mbr does not apply to it); phrases past {MAX_TOKENS} target tokens per text are left out "
    "(constraints_met false)"
)
NBEST = (
    "hypotheses per text; above the beam size it widens the beam to the smallest allowed beam size "
    ">= nbest (sampling draws nbest samples; with mbr, the best distinct samples)"
)
MBRMetric = Literal[tuple(pairwise_metrics.METRICS)]  # mbr's utility: the pairwise metrics' names
MBR = (
    "minimum Bayes risk decoding: draw this many samples (temperature, top_k, top_p and seed apply; "
    "beam_size and sample do not) and answer the one with the highest expected mbr_metric against the "
    "others; its score is that expected utility (0-100); omitted: off"
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

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        json_schema_extra=lambda schema, cls: _unsplit_cap(schema, cls),
    )

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
    mbr: json_int(ge=2) | None = Field(None, description=MBR)
    mbr_metric: MBRMetric = Field("chrf", description="mbr's utility: sentence chrF or BLEU")
    split: bool = Field(False, description=SPLIT)
    word_scores: bool = Field(False, description="each word of the translation with its probability (`words`)")
    no_repeat_ngram: json_int(ge=0, le=2**31 - 1) = Field(
        0, description="no n-gram of this many tokens twice in a translation; 0 = off"
    )
    constraints: list[list[str]] | None = Field(None, description=CONSTRAINTS)
    target_lang: str | None = Field(
        None,
        max_length=16,
        description="the language to translate into, one of /info's target_languages: required for a model "
        "with several, optional for one",
    )

    # The characters a single text may hold without `split`, when that is less than with it
    # (translate_request_model sets it).
    unsplit_chars: ClassVar[int | None] = None

    @model_validator(mode="after")
    def _text_cap_without_split(self) -> TranslateRequest:
        """A single text longer than max_chars only with `split` (the schema's if/else says it too)."""
        cap = self.unsplit_chars
        if not self.split and cap is not None and isinstance(self.text, str) and len(self.text) > cap:
            error = PydanticCustomError(
                "string_too_long",
                "String should have at most {max_length} characters (or set split)",
                {"max_length": cap},
            )
            raise ValidationError.from_exception_data(
                type(self).__name__, [InitErrorDetails(type=error, loc=("text",), input=self.text)]
            )
        return self


def _text_form(value: Any) -> str | None:
    return TEXT_TAGS[0] if isinstance(value, str) else TEXT_TAGS[1] if isinstance(value, list) else None


def translate_request_model(
    beam_sizes: tuple[int, ...],
    max_nbest: int,
    max_chars: int,
    max_texts: int,
    max_request_chars: int | None = None,
    max_mbr: int = 0,
    target_languages: Sequence[str] | None = None,
) -> type[TranslateRequest]:
    """TranslateRequest with one server's limits as constraints (and so in its schema). With
    `max_request_chars` (> max_chars), a single text with `split` may be that long: the schema
    says so with an if/else on `split`, and validation agrees. `max_mbr` below 2 leaves MBR off
    (the field only takes null). `target_languages` (the model's, when known before it loads) make
    target_lang an enum of them: required with several, optional with one, only null with none."""
    mbr = (
        (json_int(ge=2, le=max_mbr) | None, Field(None, description=f"{MBR}; at most {max_mbr}"))
        if max_mbr >= 2
        else (None, Field(None, description="minimum Bayes risk decoding: off on this server"))
    )
    one_text = Annotated[str, BeforeValidator(_valid_unicode), Field(max_length=max_chars)]
    document = max(max_chars, max_request_chars or max_chars)
    single = Annotated[str, BeforeValidator(_valid_unicode), Field(max_length=document)]
    text = Annotated[
        Union[
            Annotated[single, Tag(TEXT_TAGS[0])],
            Annotated[list[one_text], Field(max_length=max_texts), Tag(TEXT_TAGS[1])],
        ],
        Discriminator(
            _text_form,
            custom_error_type="text_type",
            custom_error_message="Input should be a string or a list of strings",
        ),
        Field(
            description=f"one text or a list of at most {max_texts}, each at most {max_chars} characters"
            + (f" (a single text with split: {document})" if document > max_chars else "")
        ),
    ]
    beam = Annotated[Literal[tuple(beam_sizes)], BeforeValidator(_json_integer)]  # type: ignore[valid-type]
    phrase = Annotated[str, BeforeValidator(_valid_unicode), Field(max_length=MAX_PHRASE_CHARS)]
    # Without a beam size of 2 or more the server cannot search constraints: no phrase is valid.
    phrases = Annotated[list[phrase], Field(max_length=MAX_PHRASES if max(beam_sizes) >= 2 else 0)]
    model = create_model(
        "TranslateRequest",
        __base__=TranslateRequest,
        __doc__=TranslateRequest.__doc__,
        text=(text, ...),
        beam_size=(
            beam | None,
            Field(None, description="1 = greedy; one of the server's beam sizes; omitted: the model's default"),
        ),
        nbest=(json_int(ge=1, le=max_nbest), Field(1, description=NBEST)),
        mbr=mbr,
        target_lang=_target_lang_field(target_languages),
        constraints=(
            Annotated[list[phrases], Field(max_length=max_texts)] | None,
            Field(
                None,
                description=f"{CONSTRAINTS}; one list per text, each of at most {MAX_PHRASES} phrases "
                f"of at most {MAX_PHRASE_CHARS} characters",
            ),
        ),
    )
    model.unsplit_chars = max_chars if document > max_chars else None
    return model


def _target_lang_field(target_languages: Sequence[str] | None) -> tuple[Any, Any]:
    """target_lang's type and default for a model with these target languages (None: not known,
    any code, checked once the model is loaded)."""
    if target_languages is None:
        return TranslateRequest.model_fields["target_lang"].annotation, TranslateRequest.model_fields["target_lang"]
    if not target_languages:
        return None, Field(None, description="this model's target language is not known: leave it out")
    codes = Literal[tuple(target_languages)]  # type: ignore[valid-type]
    if len(target_languages) == 1:
        return codes | None, Field(None, description=f"the language to translate into: {target_languages[0]}")
    return codes, Field(..., description=f"the language to translate into, one of {', '.join(target_languages)}")


def _unsplit_cap(schema: dict[str, Any], cls: type[TranslateRequest]) -> None:
    """The schema's rule that a text over max_chars needs `split`: unless split is true, text
    (its single-string form; maxLength does not apply to the list) is at most max_chars."""
    if cls.unsplit_chars is not None:
        schema["if"] = {"properties": {"split": {"const": True}}, "required": ["split"]}
        schema["else"] = {"properties": {"text": {"maxLength": cls.unsplit_chars}}}
