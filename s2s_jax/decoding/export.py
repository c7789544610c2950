"""A trained model as a self-contained artefact (the `s2s-export` command is s2s_jax/cli/export.py).

The directory holds
- one `jax.export` file (serialised StableHLO) per search and batch shape: the encoder and
  the search in one function of (params, source ids [rows, width], output-length caps
  [rows]) -> (tokens, scores). The searches are the config's default (decode.beam_size,
  decode.alpha) and greedy; the shapes are every pair of `--rows` and `--widths`;
- params.npz (the parameters, once, '/'-joined paths), the sentencepiece model(s), and
  manifest.json (shapes, length caps, normalisation, platform);
- translate.py (s2s_jax/decoding/export_loader.py), which needs only jax, jaxlib, numpy, sentencepiece and
  flatbuffers, and requirements.txt, which pins them to the versions this export ran with.
With `shortlist` (`export.py --shortlist`) the run's vocabulary shortlist travels too
(shortlist.npz, s2s_jax/decoding/shortlist.py): each function then also takes the batch's
shortlist ids [S] and row mask [rows, S], S a symbolic dimension (one function for every size),
and the loader builds them as decode.py --shortlist does.
The functions are those decode.py runs (s2s_jax.decoding.inference), so the loader's output equals
decode.py's. The artefact runs on the platform it was exported on (`jax.default_backend()`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from importlib import metadata

import jax
import numpy as np

from s2s_jax.decoding import export_loader, inference
from s2s_jax.decoding import shortlist as lexical
from s2s_jax.decoding.inference import SearchOptions
from s2s_jax.decoding.translator import Translator
from s2s_jax.kernels import loader as kernels

LOADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "export_loader.py")


def default_rows(batch_size: int) -> list[int]:
    """1, 16 and decode.batch_size: a lone sentence, a short tail, and full batches."""
    return sorted({1, min(16, batch_size), batch_size})


def default_widths(max_len: int) -> list[int]:
    """Source widths (EOS included) at every multiple of 16 up to the widest, data.max_len + 1
    rounded up to a multiple of 8 as decode.py pads it."""
    widest = inference.source_width(max_len + 1)
    return sorted({*range(16, widest, 16), widest})


def _search_function(model, opts: SearchOptions, max_steps: int) -> Callable:
    """(params, src [R, W], caps [R][, shortlist ids [S], mask [R, S]]) -> (tokens [R, max_steps],
    scores [R]): the best output of decode.py's search for these options."""

    def search(params, src, caps, *shortlist):
        per_row = inference.row_settings([opts] * src.shape[0], [(0, 0)] * src.shape[0])  # constants in the export
        tokens, scores = inference.search_batch(
            (model,), (1.0,), opts.compiled_key(), max_steps, (params,), (src,), caps, per_row,
            shortlist=tuple(shortlist) or None,
        )  # fmt: skip
        return tokens[:, 0], scores[:, 0]

    return jax.jit(search)


def requirements_text() -> str:
    """The artefact's requirements.txt: what translate.py imports, pinned to the installed versions."""
    pins = "".join(f"{name}=={metadata.version(name)}\n" for name in sorted(export_loader.REQUIREMENTS))
    comment = "# what translate.py needs, as installed when this artefact was exported"
    return f"{comment}: pip install -r {export_loader.REQUIREMENTS_FILE}\n{pins}"


def _flat(params) -> dict[str, np.ndarray]:
    return {
        "/".join(k.key for k in path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(params)
    }


def export_model(
    workdir: str,
    output: str,
    checkpoint: str = "best",
    rows: Sequence[int] | None = None,
    widths: Sequence[int] | None = None,
    beam_size: int | None = None,
    alpha: float | None = None,
    log: Callable[[str], None] = print,
    no_repeat_ngram: int = 0,
    int8: bool = False,
    shortlist: bool = False,
) -> dict:
    """Writes the artefact for `workdir` into `output` (created; must be empty or absent); returns the manifest.
    With `shortlist` the workdir's vocabulary shortlist goes with it and every search applies it.

    The default search is the config's (decode.beam_size, decode.alpha) unless `beam_size` / `alpha` say otherwise;
    `no_repeat_ngram` > 0 builds the n-gram ban into both searches. (Word scores are not exported: the functions
    return tokens and scores only.) `int8`: the artefact carries int8 weight matrices
    (s2s_jax/models/int8_weights.py) and multiplies by them in plain XLA (the int8 kernel is a custom
    call that exists only where s2s_jax is installed); its outputs equal `decode.py --int8`'s.
    """
    if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
        raise ValueError(f"--output {output} exists and is not an empty directory")
    translator = Translator(workdir, checkpoint, int8=int8, shortlist=shortlist)
    member = translator.members[0]
    if member.languages.tags:
        raise ValueError(
            f"{workdir} tags its sources with a target language (data.pairs); the exported translate.py "
            "does not: decode it with decode.py or the server"
        )
    config = member.config
    needed = default_widths(config.data.max_len)
    rows = sorted(set(rows or default_rows(config.decode.batch_size)))
    widths = sorted(set(widths or needed))
    if rows[0] < 1 or widths[0] < 1:
        raise ValueError(f"rows and widths must be positive, got rows={rows} widths={widths}")
    if widths[-1] < needed[-1]:
        raise ValueError(
            f"the widest source shape must hold data.max_len={config.data.max_len} tokens + EOS: "
            f"at least {needed[-1]}, got {widths[-1]}"
        )
    default = SearchOptions.from_config(config.decode)
    default = SearchOptions(
        beam_size=beam_size or default.beam_size,
        alpha=default.alpha if alpha is None else alpha,
        no_repeat_ngram=no_repeat_ngram,
    )
    default.check()
    searches = {"default": default, "greedy": SearchOptions(no_repeat_ngram=no_repeat_ngram)}
    if searches["default"] == searches["greedy"]:
        del searches["greedy"]
    # Written into a sibling directory and moved into place once complete: a failed or interrupted
    # export leaves no half-written `output` in the way of the next run.
    parent, name = os.path.split(os.path.abspath(output))
    staging = os.path.join(parent, f".{name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    try:
        manifest = _write_artefact(staging, workdir, translator, searches, rows, widths, int8, log)
        if os.path.isdir(output):
            os.rmdir(output)  # empty (checked above)
        os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _write_artefact(
    output: str,
    workdir: str,
    translator: Translator,
    searches: dict[str, SearchOptions],
    rows: list[int],
    widths: list[int],
    int8: bool,
    log: Callable[[str], None],
) -> dict:
    """Writes every file of the artefact into the directory `output`; returns the manifest."""
    member, engine = translator.members[0], translator.inference
    config = member.config
    params = jax.device_get(member.params)
    np.savez(os.path.join(output, "params.npz"), **_flat(params))
    spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    # The artefact runs the scan recurrences, the int8 products and beam search's top log-probabilities
    # in plain XLA: the CPU kernels are custom calls that exist only where s2s_jax is installed; the
    # outputs are the same either way.
    model = member.model.clone(config=dataclasses.replace(member.model.config, recurrence="scan"))
    listed = translator.shortlist is not None
    with kernels.portable():
        functions, platforms = _export_searches(
            model, engine.max_steps, searches, spec, rows, widths, output, log, listed
        )  # fmt: skip
    if listed:
        lexical.save(translator.shortlist, output)
    models = {}
    for side, tokenizer in (("src", member.src_tokenizer), ("tgt", member.tgt_tokenizer)):
        models[side] = os.path.basename(tokenizer.model_path)
        shutil.copyfile(tokenizer.model_path, os.path.join(output, models[side]))
    manifest = {
        "format": export_loader.FORMAT,
        "platforms": platforms,
        "jax_version": jax.__version__,
        "workdir": os.path.abspath(workdir),
        "step": member.meta.get("step"),
        "searches": {name: _described(o) for name, o in searches.items()},
        "functions": functions,
        "rows": rows,
        "widths": widths,
        "max_len": config.data.max_len,
        "max_steps": engine.max_steps,
        "max_len_a": config.decode.max_len_a,
        "max_len_b": config.decode.max_len_b,
        "lowercase": bool(config.data.lowercase),
        "d2l_preprocess": bool(config.data.d2l_preprocess),
        "int8": int8,
        "src_model": models["src"],
        "tgt_model": models["tgt"],
        "requirements": export_loader.REQUIREMENTS_FILE,
        "shortlist": {"file": lexical.TABLE_FILE, "min_size": lexical.MIN_SIZE} if listed else None,
    }
    with open(os.path.join(output, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    shutil.copyfile(LOADER, os.path.join(output, "translate.py"))
    with open(os.path.join(output, export_loader.REQUIREMENTS_FILE), "w", encoding="utf-8") as f:
        f.write(requirements_text())
    return manifest


def _described(opts: SearchOptions) -> dict:
    """A search as the manifest lists it (no_repeat_ngram only when it is on)."""
    return {"beam_size": opts.beam_size, "alpha": opts.alpha} | (
        {"no_repeat_ngram": opts.no_repeat_ngram} if opts.no_repeat_ngram else {}
    )


def _export_searches(
    model,
    max_steps: int,
    searches: dict[str, SearchOptions],
    spec,
    rows: Sequence[int],
    widths: Sequence[int],
    output: str,
    log: Callable[[str], None],
    shortlist: bool = False,
) -> tuple[dict, list[str]]:
    """Writes one serialized function per search and rows x width shape into `output`; returns the
    manifest's `functions` ({search: {"RxW": file}}, "greedy" the default's when they are the same)
    and the platforms they run on. With `shortlist` they take its ids [S] and mask [rows, S], S symbolic."""
    (size,) = jax.export.symbolic_shape("shortlist")
    functions: dict[str, dict[str, str]] = {}
    platforms: list[str] = []
    for name, opts in searches.items():
        fn = _search_function(model, opts, max_steps)
        functions[name] = {}
        for r in rows:
            for w in widths:
                start = time.perf_counter()
                listed = (
                    (jax.ShapeDtypeStruct((size,), np.int32), jax.ShapeDtypeStruct((r, size), np.bool_))
                    if shortlist
                    else ()
                )
                exported = jax.export.export(fn)(
                    spec, jax.ShapeDtypeStruct((r, w), np.int32), jax.ShapeDtypeStruct((r,), np.int32), *listed
                )
                filename = f"{name}_{r}x{w}.jaxexport"
                with open(os.path.join(output, filename), "wb") as f:
                    f.write(exported.serialize())
                functions[name][f"{r}x{w}"] = filename
                platforms = list(exported.platforms)
                log(f"exported {name} (beam {opts.beam_size}) for {r} x {w} in {time.perf_counter() - start:.1f} s")
        if name == "default" and "greedy" not in searches:
            functions["greedy"] = functions["default"]
    return functions, platforms
