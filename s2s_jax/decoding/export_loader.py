"""Translate with a model that `s2s-export` wrote: this file is that artefact's translate.py.

    python DIR/translate.py --input test.de --output test.hyp     # the config's default search
    echo "Ein Hund rennt." | python DIR/translate.py --search greedy

It needs only jax and jaxlib (with flatbuffers, which jax.export's deserialisation uses), numpy
and sentencepiece, pinned in the artefact's requirements.txt (a missing one is one `error:` line
naming it and that file); not flax, optax, orbax nor s2s_jax. It reproduces decode.py: the same
text normalisation (written out again below, checked against s2s_jax.data.text.normalize by
the tests), sources cut to data.max_len subword tokens with a warning (so no input is
longer than the widest exported shape), batches sorted by length, output-length caps
max_len_a * (source tokens + EOS) + max_len_b, and the same searches, serialised as
StableHLO at the batch shapes manifest.json lists (a batch uses the smallest exported
rows and source width that hold it). One output line per input line; an empty input
line gives an empty output line. From Python: `ExportedModel(DIR).translate(lines)`.
An artefact exported with --shortlist restricts each sentence's output to its vocabulary
shortlist as decode.py --shortlist does (`shortlist_rows`, `shortlist_batch`: written out again
below, checked against s2s_jax.decoding.shortlist by the tests).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
import unicodedata
import zipfile

# What this file imports beyond the standard library (flatbuffers: jax.export's deserialisation), in import
# order; s2s-export pins them in the artefact's requirements.txt.
REQUIREMENTS = ("numpy", "jaxlib", "jax", "sentencepiece", "flatbuffers")
REQUIREMENTS_FILE = "requirements.txt"


def missing_requirement(directory: str) -> str | None:
    """One line naming the first of REQUIREMENTS that does not import and the artefact's requirements.txt;
    None when all of them import."""
    for name in REQUIREMENTS:
        try:
            importlib.import_module(name)
        except Exception as err:  # ImportError, or e.g. jax's RuntimeError for a jaxlib it does not match
            reason = " ".join(str(err).split()) or type(err).__name__
            return (
                f"cannot import {name} ({reason}), which this artefact needs: "
                f"pip install -r {os.path.join(directory, REQUIREMENTS_FILE)}"
            )
    return None


_MISSING = missing_requirement(os.path.dirname(os.path.abspath(__file__)))
if _MISSING is not None:
    if __name__ == "__main__":
        print(f"error: {_MISSING}", file=sys.stderr)
        sys.exit(1)
    raise ImportError(_MISSING)

import jax  # noqa: E402
import numpy as np  # noqa: E402
import sentencepiece as spm  # noqa: E402
from jax import export  # noqa: E402

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
FORMAT = 1  # manifest.json's "format": what this loader reads

# Text normalisation: the same as s2s_jax.data.text.normalize.
_DELETE: dict[int, None] = {c: None for c in [*range(0x20), *range(0x7F, 0xA0)] if not chr(c).isspace()}
_DELETE.update({0xFEFF: None, 0x200B: None})
_D2L_PUNCTUATION = re.compile(r"(?<=\S)([,.!?])")
_SURROGATES = re.compile("[\ud800-\udfff]")


def normalize(text: str, lowercase: bool = False, d2l: bool = False) -> str:
    """NFKC, unicode whitespace -> one space, control characters removed, stripped; d2l's
    space before , . ! ? and ASCII apostrophes; lowercasing."""
    text = unicodedata.normalize("NFKC", text)
    text = " ".join(text.translate(_DELETE).split())
    if d2l:
        text = _D2L_PUNCTUATION.sub(r" \1", text.replace("\u2019", "'"))
    return text.lower() if lowercase else text


class InputError(Exception):
    """A problem with the input or the artefact, reported as one `error:` line."""


def read_lines(path: str) -> list[str]:
    """Lines of a file or stdin ('-'), strictly UTF-8, split on '\\n' only (as decode.py reads them)."""
    name = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                raw = f.read()
    except OSError as err:
        raise InputError(f"{name}: {err.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise InputError(f"{name}:{line}: not valid UTF-8 (byte(s) {raw[err.start : err.end].hex(' ')})") from None
    lines = text.removeprefix("\ufeff").split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def shortlist_rows(table: np.ndarray, frequent: np.ndarray, vocab: int, sources: list[list[int]]) -> list:
    """Each source's sorted target ids: the frequent pieces, EOS, UNK and its pieces' table rows
    (s2s_jax.decoding.shortlist.Shortlist.row_ids)."""
    out = []
    for source in sources:
        source = np.asarray(source, np.int64)
        source = source[(source >= 0) & (source < table.shape[0])]
        ids = np.unique(np.concatenate([frequent, [EOS_ID, UNK_ID], table[source].ravel()]).astype(np.int32))
        out.append(ids[~np.isin(ids, (PAD_ID, BOS_ID)) & (ids < vocab)])
    return out


def shortlist_batch(rows: list, num_rows: int, vocab: int, min_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids [S], mask [num_rows, S]): the rows' union padded with PAD to a power of two from
    `min_size` (at most `vocab`), and each row's own ids (s2s_jax.decoding.shortlist.Shortlist.batch)."""
    union = np.unique(np.concatenate([*rows, [EOS_ID, UNK_ID]]).astype(np.int32))
    size = min(max(min_size, 1 << max(len(union) - 1, 0).bit_length()), vocab)
    ids = np.full((size,), PAD_ID, np.int32)
    ids[: len(union)] = union
    mask = np.zeros((num_rows, size), bool)
    for r, row in enumerate(rows):
        mask[r, : len(union)] = np.isin(union, row)
    return ids, mask


def _tokenizer(path: str) -> spm.SentencePieceProcessor:
    """The sentencepiece model at `path`; InputError naming it when it is missing or unreadable."""
    try:
        return spm.SentencePieceProcessor(model_file=path)
    except (RuntimeError, OSError) as err:
        raise InputError(f"{path}: not a readable sentencepiece model ({err})") from None


def _nested(flat: dict[str, np.ndarray]) -> dict:
    """{'a/b': x} -> {'a': {'b': x}}: the parameter tree the exported functions take."""
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return tree


class ExportedModel:
    """An exported model directory, ready to translate."""

    def __init__(self, directory: str):
        self.directory = directory
        path = os.path.join(directory, "manifest.json")
        try:
            with open(path, encoding="utf-8") as f:
                self.manifest = json.load(f)
        except (OSError, ValueError) as err:
            raise InputError(f"{path}: not a readable export manifest ({err})") from None
        if self.manifest.get("format") != FORMAT:
            raise InputError(f"{path}: format {self.manifest.get('format')}, this loader reads {FORMAT}")
        if jax.default_backend() not in self.manifest["platforms"]:
            raise InputError(
                f"{directory} was exported for {', '.join(self.manifest['platforms'])}; "
                f"this machine runs {jax.default_backend()}: export again there"
            )
        params = os.path.join(directory, "params.npz")
        try:
            with np.load(params) as arrays:
                self.params = jax.device_put(_nested({k: arrays[k] for k in arrays.files}))
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise InputError(f"{params}: not readable parameters ({err})") from None
        self.src, self.tgt = (
            _tokenizer(os.path.join(directory, self.manifest[f"{side}_model"])) for side in ("src", "tgt")
        )
        self._functions: dict[tuple[str, int, int], object] = {}
        self.shortlist = None  # (table, frequent, target vocabulary size, smallest size) when exported with one
        if self.manifest.get("shortlist"):
            with np.load(os.path.join(directory, self.manifest["shortlist"]["file"])) as data:
                table, frequent, vocab = data["table"], data["frequent"], int(data["tgt_vocab_size"])
            self.shortlist = (table, frequent, vocab, int(self.manifest["shortlist"]["min_size"]))

    def _function(self, search: str, rows: int, width: int):
        key = (search, rows, width)
        if key not in self._functions:
            name = self.manifest["functions"][search][f"{rows}x{width}"]
            path = os.path.join(self.directory, name)
            with open(path, "rb") as f:
                data = bytearray(f.read())
            try:
                self._functions[key] = jax.jit(export.deserialize(data).call)
            except Exception as err:  # noqa: BLE001 - damaged (flatbuffers' struct.error, ...) or from another jax
                raise InputError(
                    f"{path}: not a function this jax {jax.__version__} can load (exported with jax "
                    f"{self.manifest.get('jax_version')}): {err}"
                ) from None
        return self._functions[key]

    def encode(self, lines: list[str], warn=lambda message: print(f"warning: {message}", file=sys.stderr)):
        """Source ids of each line, normalised like the training data, at most max_len tokens."""
        m = self.manifest
        texts = [normalize(_SURROGATES.sub("\ufffd", line), m["lowercase"], m["d2l_preprocess"]) for line in lines]
        out = []
        for number, row in enumerate(self.src.encode(texts, out_type=int) if texts else [], 1):
            if len(row) > m["max_len"]:
                warn(f"line {number}: {len(row)} tokens, truncated to data.max_len={m['max_len']}")
                row = row[: m["max_len"]]
            out.append(row)
        return out

    def translate(self, lines: list[str], search: str = "default", warn=None) -> list[str]:
        """One translation per line, in order, with the exported `search` ('default' or 'greedy')."""
        m = self.manifest
        if search not in m["functions"]:
            raise InputError(f"search {search!r} was not exported (exported: {', '.join(m['functions'])})")
        ids = self.encode(lines) if warn is None else self.encode(lines, warn)
        order = sorted((i for i, row in enumerate(ids) if row), key=lambda i: len(ids[i]))
        batch = max(m["rows"])
        outputs = [""] * len(lines)
        for start in range(0, len(order), batch):
            chunk = order[start : start + batch]
            lengths = [len(ids[i]) + 1 for i in chunk]  # EOS counted
            rows = min(r for r in m["rows"] if r >= len(chunk))
            width = min(w for w in m["widths"] if w >= max(lengths))
            src = np.full((rows, width), PAD_ID, np.int32)
            caps = np.zeros((rows,), np.int32)
            for row, i in enumerate(chunk):
                src[row, : len(ids[i])] = ids[i]
                src[row, len(ids[i])] = EOS_ID
            cap = np.ceil(m["max_len_a"] * np.array(lengths) + m["max_len_b"]).astype(np.int32)
            caps[: len(chunk)] = np.minimum(np.maximum(cap, 1), m["max_steps"])
            listed = ()
            if self.shortlist is not None:
                table, frequent, vocab, min_size = self.shortlist
                sets = shortlist_rows(table, frequent, vocab, [ids[i] for i in chunk])
                listed = shortlist_batch(sets, rows, vocab, min_size)
            tokens, _ = self._function(search, rows, width)(self.params, src, caps, *listed)
            tokens = np.asarray(tokens)
            for row, i in enumerate(chunk):
                out = []
                for token in tokens[row].tolist():
                    if token in (EOS_ID, PAD_ID):
                        break
                    if token != BOS_ID:
                        out.append(token)
                outputs[i] = self.tgt.decode(out)
        return outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", default="-", help="input file, one sentence a line; - for stdin")
    parser.add_argument("--output", default="-", help="output file; - for stdout")
    parser.add_argument("--search", default="default", help="default (the config's beam search) or greedy")
    parser.add_argument(
        "--model_dir",
        default=os.path.dirname(os.path.abspath(__file__)),
        help="the exported directory (default: the one holding this file)",
    )
    args = parser.parse_args(argv)
    try:
        model = ExportedModel(args.model_dir)
        text = "".join(line + "\n" for line in model.translate(read_lines(args.input), args.search))
        if args.output == "-":
            sys.stdout.write(text)
        else:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(text)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader stopped early (`translate.py | head`): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # as Python's docs advise
        return 1
    except OSError as err:
        print(f"error: {err.filename}: {err.strerror}" if err.filename else f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
