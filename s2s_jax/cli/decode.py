"""The `s2s-decode` command (also `python decode.py`): its flags, then read lines, translate, write, score."""

from __future__ import annotations

from s2s_jax.cli import runtime  # first: OPENBLAS_NUM_THREADS must be set before numpy/jax load

runtime.limit_openblas_threads()

import dataclasses
import json
import os
import sys

from tqdm.auto import tqdm

from s2s_jax import bleu
from s2s_jax.cli import model_flags
from s2s_jax.cli.decode_constraints import constrained_search, line_constraints
from s2s_jax.data.text import lines_from_bytes, read_lines
from s2s_jax.decoding import alignment, pairwise_metrics
from s2s_jax.decoding.inference import SearchOptions, ensemble_weights_flag
from s2s_jax.decoding.mbr import CANDIDATES, MBROptions
from s2s_jax.decoding.search import length_penalty
from s2s_jax.decoding.translator import Hypothesis, Translator
from s2s_jax.decoding.word_scores import format_probs
from s2s_jax.errors import CheckpointError, DataError


def format_hypotheses(hyps: list[Hypothesis], nbest: int, line: int) -> list[str]:
    """The text alone, or with --nbest > 1 one `line<TAB>rank<TAB>score<TAB>text` row per hypothesis
    (line: the input line, counted from 0; rank 0 is the best); hypotheses with words (--word_scores)
    get `<TAB>` and their words' probabilities after the text."""
    texts = [h.text if h.words is None else f"{h.text}\t{format_probs(h.words)}" for h in hyps]
    if nbest == 1:
        return texts[:1]
    return [f"{line}\t{k}\t{h.score:.4f}\t{text}" for k, (h, text) in enumerate(zip(hyps, texts))]


def read_nbest(path: str, num_lines: int) -> list[tuple[int, str]]:
    """(input line, text) of each row of an n-best file as --nbest writes it; the word probabilities
    that --word_scores appends as a fifth field are another model's, and are dropped."""
    rows = []
    for number, row in enumerate(read_lines(path), 1):
        fields = row.split("\t")
        if len(fields) not in (4, 5) or not fields[0].isdigit():
            raise DataError(
                f"{path}:{number}: expected 'line<TAB>rank<TAB>score<TAB>text' and optionally <TAB>word "
                "probabilities (decode.py --nbest, --word_scores)"
            )
        if int(fields[0]) >= num_lines:
            raise DataError(f"{path}:{number}: input line {fields[0]} does not exist (the input has {num_lines} lines)")
        rows.append((int(fields[0]), fields[3]))
    return rows


def _read_input(path: str) -> list[str]:
    """Input lines, split on '\\n' only and strictly UTF-8, from a file or stdin.

    Stdin is read as bytes and decoded like a file: text-mode stdin would, under a
    non-UTF-8 locale, pass undecodable bytes on as surrogates (sentencepiece then
    fails with a TypeError) and, under a UTF-8 one, raise UnicodeDecodeError
    without a line number.
    """
    if path == "-":
        return lines_from_bytes(sys.stdin.buffer.read(), "<stdin>", allow_empty=True)
    return read_lines(path, allow_empty=True)


def _interactive(translator: Translator, opts: SearchOptions, flags, mbr: MBROptions | None) -> None:
    print("Type a sentence and press Enter (Ctrl-D to quit).", file=sys.stderr)
    for raw in sys.stdin.buffer:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if "\ufffd" in line and b"\xef\xbf\xbd" not in raw:
            print("warning: that line is not valid UTF-8; undecodable bytes became U+FFFD", file=sys.stderr)
        split = getattr(flags, "split_sentences", False)
        hyps = translator.translate([line], opts, batch_size=1, seed=flags.seed, split_sentences=split, mbr=mbr)[0]
        print("\n".join(format_hypotheses(hyps[: flags.nbest], flags.nbest, 0)), flush=True)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _positive_or_default(name: str, value, default):
    if value is None:
        return default
    if value < 1:
        raise ValueError(f"--{name} must be at least 1, got {value}")
    return value


def _plot(translator: Translator, lines: list[str], results: list[list[Hypothesis]], directory: str) -> None:
    """One heatmap per non-empty input line, named by its 1-based line number."""
    from s2s_jax.decoding.plotting import plot_attention
    from s2s_jax.decoding.translator import attention_maps

    maps = attention_maps(translator, lines, [hyps[0].tokens for hyps in results])
    for number, item in enumerate(maps, 1):
        if item["src"]:
            plot_attention(item["weights"], item["src"], item["tgt"], f"{directory}/{number:05d}.png")


def _ensemble_weights(flags) -> list[float] | None:
    """--ensemble_weights as checked floats, one per --workdir (None: equal weights)."""
    return ensemble_weights_flag(getattr(flags, "ensemble_weights", None), len(flags.workdir))


def _check_flags(flags) -> None:
    """Flag mistakes, found before the model is loaded and the input translated."""
    for name in ("beam_size", "batch_size"):
        _positive_or_default(name, getattr(flags, name), 1)
    if flags.nbest < 1:
        raise ValueError(f"--nbest must be at least 1, got {flags.nbest}")
    if flags.top_k < 0:
        raise ValueError(f"--top_k must be >= 0 (0 = off), got {flags.top_k}")
    if getattr(flags, "no_repeat_ngram", 0) < 0:
        raise ValueError(f"--no_repeat_ngram must be >= 0 (0 = off), got {flags.no_repeat_ngram}")
    if flags.plot_attention and os.path.exists(flags.plot_attention) and not os.path.isdir(flags.plot_attention):
        raise ValueError(f"--plot_attention {flags.plot_attention} is a file: it names the directory the plots go into")
    if flags.output != "-":
        directory = os.path.dirname(os.path.abspath(flags.output))
        if not os.path.isdir(directory):
            raise ValueError(f"--output {flags.output}: directory {directory} does not exist")
    for name in ("score_json", "sentence_bleu", "score"):
        if getattr(flags, name, None) and not flags.reference:
            raise ValueError(f"--{name} needs --reference (the scores compare against it)")
    if getattr(flags, "print_alignment", None) and flags.nbest != 1:
        raise ValueError("--print_alignment aligns the best translation: use it with --nbest 1")
    _ensemble_weights(flags)
    _check_split_sentences(flags)
    if getattr(flags, "sentence_bleu", 0) < 0:
        raise ValueError(f"--sentence_bleu must be >= 0 (0 = off), got {flags.sentence_bleu}")
    _mbr_options(flags)
    for name in ("input", "reference", "rescore", "prefix", "constraints", "terminology"):
        path = getattr(flags, name, None)
        if path and path != "-" and not os.path.isfile(path):
            raise DataError(f"--{name} {path}: file not found")


# What --split_sentences cannot rejoin: outputs tied to one sentence's tokens, or a whole line's.
_NOT_WITH_SPLIT = {
    "print_alignment": "aligns one sentence's words",
    "plot_attention": "plots one sentence's attention",
    "prefix": "forces the start of a whole line's translation",
    "score": "scores a whole reference line",
    "rescore": "rescores whole n-best lines",
}


def _check_split_sentences(flags) -> None:
    if not getattr(flags, "split_sentences", False):
        return
    for name, why in _NOT_WITH_SPLIT.items():
        if getattr(flags, name, None):
            raise ValueError(f"--{name} {why}: not with --split_sentences")


def _mbr_options(flags) -> MBROptions | None:
    """--mbr and its companions as checked MBROptions; None when --mbr is 0 (off)."""
    size = getattr(flags, "mbr", 0)
    if size == 0:
        return None
    if size < 2:
        raise ValueError(f"--mbr must be 0 (off) or at least 2 candidates to compare, got {size}")
    mbr = MBROptions(size, getattr(flags, "mbr_metric", "chrf"), getattr(flags, "mbr_candidates", "samples"))
    mbr.check()
    if flags.nbest > size:
        raise ValueError(f"--nbest {flags.nbest}: MBR ranks at most its --mbr {size} candidates")
    if flags.sample and mbr.candidates != "samples":
        raise ValueError("--sample with --mbr_candidates nbest: the candidates are either samples or the n-best")
    for name in ("score", "rescore"):
        if getattr(flags, name, None):
            raise ValueError(f"--mbr chooses among translations; --{name} translates nothing")
    return mbr


def run(flags) -> int:
    try:
        _check_flags(flags)
        translator = Translator(
            flags.workdir,
            flags.checkpoint,
            weights=_ensemble_weights(flags),
            int8=getattr(flags, "int8", False),
            shortlist=getattr(flags, "shortlist", False),
            target_lang=getattr(flags, "target_lang", None),
        )
        translator.check_target()  # a model with several target languages needs --target_lang
        if getattr(flags, "print_alignment", None):
            translator.check_attention("align")
        if flags.plot_attention:
            translator.check_attention("plot", first_member=True)
        cfg = translator.config.decode
        mbr = _mbr_options(flags)
        opts = SearchOptions(
            beam_size=_positive_or_default("beam_size", flags.beam_size, cfg.beam_size),
            alpha=cfg.alpha if flags.alpha is None else flags.alpha,
            nbest=1 if mbr else flags.nbest,
            sample=flags.sample,
            temperature=flags.temperature,
            top_k=flags.top_k,
            top_p=flags.top_p,
            with_scores=flags.nbest > 1 and not mbr,
            no_repeat_ngram=getattr(flags, "no_repeat_ngram", 0),
            token_scores=getattr(flags, "word_scores", False),
        )
        (mbr.search_options(opts) if mbr else opts).check()
        constrained = constrained_search(flags, opts)
        batch_size = _positive_or_default("batch_size", flags.batch_size, cfg.batch_size)
        if getattr(flags, "score", False):
            return _score(flags, translator, batch_size)
        if getattr(flags, "rescore", None):
            return _rescore(flags, translator, opts.alpha, batch_size)
        if flags.input == "-" and sys.stdin.isatty() and not getattr(flags, "prefix", None) and not constrained:
            _interactive(translator, opts, flags, mbr)
            return 0
        lines = _read_input(flags.input)
        prefixes = None
        if getattr(flags, "prefix", None):
            prefixes = read_lines(flags.prefix, allow_empty=True)
            if len(prefixes) != len(lines):
                raise DataError(f"--prefix {flags.prefix} has {len(prefixes)} lines, the input has {len(lines)}")
        constraints = line_constraints(flags, translator, lines, _warn)
        show = flags.input != "-" and sys.stderr.isatty()
        progress = (lambda chunks: tqdm(chunks, desc="translate", unit="batch")) if show else None
        results = translator.translate(
            lines,
            opts,
            batch_size=batch_size,
            seed=flags.seed,
            progress=progress,
            prefixes=prefixes,
            split_sentences=getattr(flags, "split_sentences", False),
            mbr=mbr,
            constraints=constraints,
        )
    except (DataError, CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    out_lines = [
        row
        for number, hyps in enumerate(results)
        for row in format_hypotheses(hyps[: flags.nbest], flags.nbest, number)
    ]
    if getattr(flags, "print_alignment", None):
        try:
            alignments = translator.align(lines, [hyps[0].tokens for hyps in results], flags.print_alignment)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        out_lines = [f"{line} ||| {alignment}" for line, alignment in zip(out_lines, alignments)]
    if _write_lines(flags.output, out_lines):
        return 1
    if flags.plot_attention:
        try:
            _plot(translator, lines, results, flags.plot_attention)
        except (ValueError, OSError) as err:
            print(
                f"error: --plot_attention {flags.plot_attention}: {getattr(err, 'strerror', None) or err}",
                file=sys.stderr,
            )
            return 1
    if flags.reference:
        try:
            refs = read_lines(flags.reference, allow_empty=True)
        except DataError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        if len(refs) != len(results):
            print(f"error: {flags.reference} has {len(refs)} lines, the input has {len(results)}", file=sys.stderr)
            return 1
        best = [hyps[0].text for hyps in results]
        report = bleu.score_report(best, refs, tokenize=translator.config.decode.bleu_tokenize or None)
        print(f"BLEU = {report['bleu']:.2f} ({report['bleu_signature']})", file=sys.stderr)
        print(f"BLEU (lowercased) = {report['bleu_lc']:.2f}", file=sys.stderr)
        print(f"chrF = {report['chrf']:.2f} ({report['chrf_signature']})", file=sys.stderr)
        if getattr(flags, "sentence_bleu", 0):
            _print_sentence_bleu(lines, best, refs, flags.sentence_bleu)
        if getattr(flags, "score_json", None):
            try:
                _write_scores(flags, translator, opts, report, len(results), mbr)
            except OSError as err:
                print(f"error: cannot write --score_json {flags.score_json}: {err.strerror}", file=sys.stderr)
                return 1
    return 0


def _write_lines(path: str, lines: list[str]) -> int:
    """Writes lines to a file or stdout ('-'); 1 with an error line if the file cannot be written."""
    text = "".join(line + "\n" for line in lines)
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return 0
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as err:
        print(f"error: cannot write --output {path}: {err.strerror}", file=sys.stderr)
        return 1
    return 0


def _score(flags, translator: Translator, batch_size: int) -> int:
    """--score: each --reference line's log-probability as the translation of its input line."""
    try:
        lines, refs = _read_input(flags.input), read_lines(flags.reference, allow_empty=True)
        if len(refs) != len(lines):
            raise DataError(f"{flags.reference} has {len(refs)} lines, the input has {len(lines)}")
        scores = translator.score(lines, refs, batch_size=batch_size, word_scores=getattr(flags, "word_scores", False))
    except (DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    rows = [
        f"{s.total:.4f}\t{s.per_token:.4f}" + ("" if s.words is None else f"\t{format_probs(s.words)}") for s in scores
    ]
    return _write_lines(flags.output, rows)


def _rescore(flags, translator: Translator, alpha: float, batch_size: int) -> int:
    """--rescore: the n-best file's hypotheses of each input line, reordered by this model's score.

    The score is beam search's: total log-probability (EOS included) over the GNMT length
    penalty with --alpha, so rescoring a model's own n-best list keeps its scores.
    """
    try:
        lines = _read_input(flags.input)
        rows = read_nbest(flags.rescore, len(lines))
        scores = translator.score([lines[i] for i, _ in rows], [text for _, text in rows], batch_size=batch_size)
    except (DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    by_line: dict[int, list[tuple[float, str]]] = {}
    for (line, text), s in zip(rows, scores):
        by_line.setdefault(line, []).append((s.total / float(length_penalty(s.length, alpha)), text))
    out = []
    for line in sorted(by_line):
        ranked = sorted(by_line[line], key=lambda pair: -pair[0])  # stable: ties keep the file's order
        out += [f"{line}\t{k}\t{score:.4f}\t{text}" for k, (score, text) in enumerate(ranked)]
    return _write_lines(flags.output, out)


def _print_sentence_bleu(sources: list[str], hyps: list[str], refs: list[str], k: int) -> None:
    """d2l's per-sentence report, `go . => va !, bleu 1.000`, and how many are exact."""
    for src, hyp, ref in zip(sources, hyps, refs):
        print(f"{src} => {hyp}, bleu {bleu.sentence_bleu_d2l(hyp, ref, k=k):.3f}", file=sys.stderr)
    exact = sum(hyp == ref for hyp, ref in zip(hyps, refs))
    print(f"exact: {exact} of {len(refs)}", file=sys.stderr)


def _write_scores(
    flags, translator: Translator, opts: SearchOptions, report: dict, sentences: int, mbr: MBROptions | None = None
) -> None:
    """The scores and what produced them, so a reported number can be traced to its run."""
    steps = [m.meta.get("step") for m in translator.members]
    record = dict(
        report,
        workdir=flags.workdir[0] if len(flags.workdir) == 1 else flags.workdir,
        checkpoint=flags.checkpoint,
        step=steps[0] if len(steps) == 1 else steps,
        input=flags.input,
        reference=flags.reference,
        sentences=sentences,
        beam_size=opts.beam_size,
        alpha=opts.alpha,
        sample=opts.sample,
    )
    if mbr is not None:
        record["mbr"] = dataclasses.asdict(mbr)
    if len(steps) > 1:
        record["ensemble_weights"] = list(translator.inference.weights)
    with open(flags.score_json, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
        f.write("\n")


# ---------------------------------------------------------------------------
# The `s2s-decode` command (also `python decode.py`)
# ---------------------------------------------------------------------------


def _define_flags() -> None:
    """decode's absl flags (see runtime.define_command_flags)."""
    from absl import flags

    model_flags.define_workdirs("decode")
    model_flags.define_checkpoint()
    flags.DEFINE_string(
        "target_lang",
        None,
        "The language to translate into (e.g. fr): required for a model trained on several language pairs "
        "with several target languages (data.pairs); for a model with one, optional and checked.",
    )
    flags.DEFINE_string("input", "-", "Input file, one sentence a line; - for stdin.")
    flags.DEFINE_string("output", "-", "Output file; - for stdout.")
    flags.DEFINE_integer("beam_size", None, "Beam size (1 = greedy); default: the config's decode.beam_size.")
    flags.DEFINE_float("alpha", None, "GNMT length penalty exponent; default: the config's decode.alpha.")
    flags.DEFINE_integer(
        "nbest", 1, "Hypotheses per input; > 1 writes 'line<TAB>rank<TAB>score<TAB>text' rows (both counted from 0)."
    )
    flags.DEFINE_bool("sample", False, "Sample instead of searching.")
    flags.DEFINE_float("temperature", 1.0, "Sampling temperature (> 0).")
    flags.DEFINE_integer("top_k", 0, "Sample from the k most likely tokens only (0 = off).")
    flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass (1.0 = off).")
    flags.DEFINE_integer("seed", 0, "Sampling seed.")
    flags.DEFINE_integer(
        "mbr",
        0,
        "Minimum Bayes risk decoding with N candidates per line (0 = off): write the candidate with the highest "
        "expected --mbr_metric against the others; with --nbest K the K best distinct ones, scored by it.",
    )
    flags.DEFINE_enum(
        "mbr_metric", "chrf", list(pairwise_metrics.METRICS), "--mbr's utility: sentence chrF or BLEU (sacrebleu's)."
    )
    flags.DEFINE_enum(
        "mbr_candidates",
        "samples",
        list(CANDIDATES),
        "--mbr's candidates: samples (with --temperature, --top_k, --top_p, --seed) or the beam's n-best "
        "(--beam_size, widened to --mbr, and --alpha).",
    )
    flags.DEFINE_integer(
        "no_repeat_ngram",
        0,
        "No n-gram of this many tokens twice in a translation (greedy, beam and sampling; 0 = off).",
    )
    flags.DEFINE_bool(
        "word_scores",
        False,
        "After each translation a tab and its words' probabilities, space-separated, one per whitespace word "
        "(with --score: a third column, for the reference's words; the EOS term belongs to no word).",
    )
    flags.DEFINE_string("reference", None, "Reference file: print corpus BLEU and chrF (sacrebleu) to stderr.")
    flags.DEFINE_string(
        "prefix",
        None,
        "A file with one line per input line (empty = none): each translation starts with that line's words, "
        "forced, and the search continues after them (its score is the continuation's).",
    )
    flags.DEFINE_string(
        "constraints",
        None,
        "A file with one line per input line: the phrases (tab-separated; none on an empty line) that line's "
        "translation must contain, normalised and tokenized like the targets. Beam search only (--beam_size >= 2).",
    )
    flags.DEFINE_string(
        "terminology",
        None,
        "A dictionary, 'source term<TAB>target term' a line: a source line that contains a source term (whole "
        "words, normalised like the sources) gets its target term as a constraint. Beam search only.",
    )
    flags.DEFINE_string(
        "rescore",
        None,
        "An n-best file (decode.py --nbest) for --input: write its hypotheses reordered by this model's "
        "score (beam search's: log-probability over the length penalty with --alpha), same format.",
    )
    flags.DEFINE_bool(
        "score",
        False,
        "With --reference: instead of translating, write each reference line's log-probability given its "
        "input line as 'total<TAB>per_token' (EOS counted as a token); no BLEU.",
    )
    flags.DEFINE_string(
        "score_json",
        None,
        "With --reference: also write the scores (cased and lowercased BLEU, chrF, signatures) to this JSON file.",
    )
    flags.DEFINE_integer(
        "sentence_bleu",
        0,
        "With --reference: also print each line's d2l sentence BLEU with n-grams up to K (d2l uses 2).",
    )
    flags.DEFINE_enum(
        "print_alignment",
        None,
        list(alignment.MODES),
        "Append ' ||| ' and the word alignment to each output line: hard = Pharaoh 'i-j' pairs (source word i, "
        "output word j, counted from 0), soft = one comma-separated row of source-word weights per output word. "
        "Attention models only.",
    )
    flags.DEFINE_string(
        "plot_attention",
        None,
        "Directory: write one attention heatmap PNG per input line (the first --workdir's model's attention).",
    )
    flags.DEFINE_integer("batch_size", None, "Sentences per batch; default: the config's decode.batch_size.")
    flags.DEFINE_bool(
        "int8",
        False,
        "Read int8 copies of the weight matrices, made at load time (each column quantized, each input row "
        "quantized as it comes): a quarter of the weight traffic per decoder step, for one-sentence latency on "
        "a CPU. Translations may differ slightly from the float32 model's.",
    )
    model_flags.define_shortlist("sentence")
    flags.DEFINE_bool(
        "split_sentences",
        False,
        "Each input line is a paragraph: translate its sentences (cut by sentencex, all lines' in one batch) "
        "and join their translations with the line's own spacing. With --nbest, candidate k joins every "
        "sentence's k-th (score: their sum). Not with --print_alignment, --plot_attention, --prefix, "
        "--score or --rescore.",
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of `s2s-decode` and `python decode.py`: parses the flags, translates, exits."""
    runtime.run_command("decode", _define_flags, run, argv)
