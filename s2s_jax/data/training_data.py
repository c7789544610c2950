"""Everything a run needs from text: cleaned pairs, tokenizers in the workdir, buckets.

Flow: files -> normalise/filter (counted) -> sentencepiece ids -> length filter
(counted) -> bucketed numpy batches. Where a run's tokenizers come from is decided
here alone (`tokenizer_models`); the ones a run starts with are copied into its
workdir and reused when it resumes, so ids never change under a checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import re
import zlib

import numpy as np

from s2s_jax.data import batching, corpus_cache, languages, pair_sampling
from s2s_jax.data import text as text_lib
from s2s_jax.data.tokenizer import Tokenizer, workdir_model_paths
from s2s_jax.errors import DataError
from s2s_jax.files import copy_atomic, write_atomic


@dataclasses.dataclass
class Corpus:
    """A training run's data: its tokenizers, training batches and validation set."""

    src_tokenizer: Tokenizer
    tgt_tokenizer: Tokenizer
    train_batches: batching.BucketedBatches
    valid_batches: batching.BucketedBatches  # teacher-forced validation loss
    valid_src_ids: list[list[int]]  # what validation translates (without EOS)
    valid_src_text: list[str]
    valid_refs: list[str]
    # With several language pairs: (name, start, end) of each pair's slice of the validation lists.
    valid_groups: list[tuple[str, int, int]] = dataclasses.field(default_factory=list)

    def train_iterator(self, local_rows=None) -> batching.TrainIterator:
        return batching.TrainIterator(self.train_batches, local_rows)


def use_quickstart_corpus(config, workdir: str) -> None:
    """Writes the generated quickstart corpus into WORKDIR/corpus and points the config at it.

    The paths are absolute, so data.dir (resolved against relative paths) leaves them alone.
    """
    from s2s_jax.data import quickstart_data

    paths = quickstart_data.write_corpus(os.path.join(os.path.abspath(workdir), "corpus"), seed=config.seed)
    with config.unlocked():
        for key, path in paths.items():
            setattr(config.data, key, path)


def _copy_tokenizer(model: str, path: str) -> None:
    """A sentencepiece model from `tokenizer_models` into the workdir, checked first."""
    listing = Tokenizer(model).vocab_listing()  # a missing file or other special ids: a clear error
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    copy_atomic(model, path)
    write_atomic(path[: -len(".model")] + ".vocab", listing)


def parse_init_from(spec: str) -> tuple[str, str]:
    """`train.init_from`: 'W', 'W:best', 'W:latest', 'W:1500' or 'W:avg:5' -> (W, which); a colon
    not followed by one of those belongs to the path."""
    match = re.fullmatch(r"(.+?):(best|latest|\d+|avg:\d+)", spec)
    return (match.group(1), match.group(2)) if match else (spec, "best")


def tokenizer_models(config, text: corpus_cache.PreparedText, log=print, workdir: str | None = None) -> list[str]:
    """The sentencepiece model(s) a run tokenizes with, [joint] or [src, tgt]; the one place that decides.

    In order: the copies in `workdir` once it has them (a resumed run), else train.init_from's
    run's, else data.spm_model(_src/_tgt), else trained on the prepared corpus (once, cached).
    """
    cfg = config.data
    joint = bool(cfg.joint_vocab)
    if workdir is not None:
        own = workdir_model_paths(workdir, joint)
        if all(os.path.exists(p) for p in own):
            return list(own[:1] if joint else own)
    if config.train.init_from:
        source, _ = parse_init_from(config.train.init_from)
        source_joint, _ = workdir_model_paths(source, joint=True)
        if os.path.exists(source_joint) != joint:
            theirs = "one joint model" if os.path.exists(source_joint) else "one model per side"
            raise DataError(
                f"train.init_from={config.train.init_from}: that run has {theirs}; "
                f"set data.joint_vocab={not joint} to match"
            )
        return [source_joint] if joint else list(workdir_model_paths(source, joint=False))
    given = [cfg.spm_model] if joint else [cfg.spm_model_src, cfg.spm_model_tgt]
    if all(given):
        return given
    trained = corpus_cache.train_tokenizers(config, text, log)
    return [g or t for g, t in zip(given, trained)]


def tokenizers(config, workdir: str, text: corpus_cache.PreparedText, log=print) -> tuple[Tokenizer, Tokenizer]:
    """The run's tokenizers, from the workdir's copies of `tokenizer_models` (copied in on a run's
    first start, and kept after)."""
    cfg = config.data
    paths = workdir_model_paths(workdir, cfg.joint_vocab)
    models = tokenizer_models(config, text, log, workdir)
    for path, model in zip(paths, models * (2 if cfg.joint_vocab else 1)):
        if not os.path.exists(path):
            _copy_tokenizer(model, path)
    src = Tokenizer(paths[0])
    missing = [tag for tag in languages.run_languages(cfg).symbols if src.piece_id(tag) is None]
    if missing:
        raise DataError(
            f"{models[0]} has no piece {missing[0]}: a multilingual run's sentencepiece model keeps each "
            "target-language tag as one piece (user_defined_symbols); let the run train its own"
        )
    return src, (src if cfg.joint_vocab else Tokenizer(paths[1]))


def _files(cfg, split: str) -> str:
    return ", ".join(text_lib.split_files(cfg, split)[1])


def _encode(pairs, src_tok: Tokenizer, tgt_tok: Tokenizer):
    return src_tok.tokenize([s for s, _ in pairs]), tgt_tok.tokenize([t for _, t in pairs])


def _shapes(batches: batching.BucketedBatches) -> str:
    """(S, T) per shape, or with a token budget rows x (S, T)."""
    if not batches.max_tokens:
        return str(batches.shapes)
    return "[" + ", ".join(f"{r}x{shape}" for r, shape in zip(batches.rows, batches.shapes)) + "]"


def prepare(config, workdir: str, verbose: bool = True, row_multiple: int = 1) -> Corpus:
    """Opens (preparing it first when needed) the run's prepared corpus, its tokenizers and batches.

    The training pairs stay on disk (memory-mapped ids, s2s_jax/data/corpus_cache.py); only their
    lengths and an epoch's order are in memory. `row_multiple` (the device count) divides every
    training batch's rows under a token budget.
    """
    cfg = config.data
    log = print if verbose else (lambda message: None)
    if cfg.quickstart_corpus and not cfg.train_src:
        use_quickstart_corpus(config, workdir)
    text = corpus_cache.open_text(config, log)
    src_tok, tgt_tok = tokenizers(config, workdir, text, log)
    ids = corpus_cache.open_ids(text, src_tok.model_path, tgt_tok.model_path, log)
    train = text.train_indices(int(cfg.max_train_pairs))
    meta = text.meta
    stats = text_lib.FilterStats(
        total=meta["total"] - meta["heldout_pairs"], kept=len(train), empty=meta["empty"], too_long=0
    )
    if cfg.max_train_pairs:
        stats.total = stats.empty + len(train)
    keep = train[(ids.src_len[train] <= cfg.max_len) & (ids.tgt_len[train] <= cfg.max_len)]
    stats.too_long, stats.kept, stats.max_len = len(train) - len(keep), len(keep), cfg.max_len
    if not len(keep):
        raise DataError(f"no training pair is at most data.max_len={cfg.max_len} tokens long")
    src_all = batching.Packed(ids.src_ids, ids.src_len)
    tgt_all = batching.Packed(ids.tgt_ids, ids.tgt_len)
    resample = None
    if cfg.spm_alpha > 0:
        texts = (text.lines("src", keep), text.lines("tgt", keep))

        def resample(epoch: int):
            """This epoch's sampled segmentations of the kept training pairs (subword regularisation)."""
            return tuple(
                tok.sample(side, cfg.spm_alpha, cfg.spm_nbest, zlib.crc32(f"{config.seed}:{epoch}:{n}".encode()))
                for n, (tok, side) in enumerate(zip((src_tok, tgt_tok), texts))
            )

    pair_ids = text.pair_of(keep)
    if text.pair_starts:  # a pair the length filter emptied would be sampled from nothing, or never trained
        sizes = np.bincount(pair_ids, minlength=len(text.pair_starts))
        for (name, _, _), size in zip(text.pair_starts, sizes):
            if not size:
                raise DataError(f"pair {name}: no training pair is at most data.max_len={cfg.max_len} tokens long")
    train_batches = batching.BucketedBatches(
        src_all.subset(keep),
        tgt_all.subset(keep),
        config.train.batch_size,
        cfg.num_buckets,
        config.seed,
        cfg.pad_multiple,
        config.train.max_tokens,
        row_multiple,
        resample,
        pair_sampling.sampler(pair_ids, len(text.pair_starts), cfg.pair_temperature, config.seed),
    )
    if text.pair_starts:
        log(f"train: {_pair_shares(text, pair_ids, cfg.pair_temperature)}")
    valid_pairs, valid_stats, groups = _validation_pairs(cfg, text, log)
    v_src, v_tgt = _encode(valid_pairs, src_tok, tgt_tok)
    # Validation keeps every pair (it is what BLEU is reported on); over-long ones are cut.
    v_src = [ids[: cfg.max_len] for ids in v_src]
    v_tgt = [ids[: cfg.max_len] for ids in v_tgt]
    valid_batches = batching.BucketedBatches(v_src, v_tgt, config.decode.batch_size, 1, config.seed, cfg.pad_multiple)
    if verbose:
        print(f"train: {stats.summary()}", flush=True)
        sizes = {src_tok.vocab_size, tgt_tok.vocab_size}
        if max(sizes) < cfg.vocab_size:
            print(
                f"vocab: data.vocab_size={cfg.vocab_size} is more than this corpus supports; "
                f"the tokenizer has {' and '.join(map(str, sorted(sizes)))} ids",
                flush=True,
            )
        print(f"valid: {valid_stats.summary()}", flush=True)
        print(
            f"vocab: src {src_tok.vocab_size}, tgt {tgt_tok.vocab_size}; train batch shapes "
            f"{_shapes(train_batches)}; padding efficiency {train_batches.padding_efficiency()}",
            flush=True,
        )
    return Corpus(
        src_tok,
        tgt_tok,
        train_batches,
        valid_batches,
        v_src,
        [s for s, _ in valid_pairs],
        [t for _, t in valid_pairs],
        groups,
    )


def _pair_shares(text: corpus_cache.PreparedText, pair_ids, temperature: float) -> str:
    """'de-en 28990 (33.3% of an epoch), ...': each pair's training rows and share."""
    sizes = np.bincount(pair_ids, minlength=len(text.pair_starts)).tolist()
    counts = pair_sampling.epoch_counts(sizes, temperature)
    return ", ".join(
        f"{name} {n} ({100 * c / counts.sum():.1f}% of an epoch)"
        for (name, _, _), n, c in zip(text.pair_starts, sizes, counts)
    ) + (f" (data.pair_temperature={temperature:g})" if temperature != 1.0 else "")


def _capped(cfg, pairs: list, stats: text_lib.FilterStats, log, name: str = "") -> list:
    """At most data.valid_max_pairs of `pairs` (the first), said in the log."""
    if cfg.valid_max_pairs and len(pairs) > cfg.valid_max_pairs:
        pairs = pairs[: cfg.valid_max_pairs]
        stats.kept = len(pairs)
        log(f"valid{' ' + name if name else ''}: capped at data.valid_max_pairs={cfg.valid_max_pairs} pairs")
    return pairs


def _validation_pairs(cfg, text: corpus_cache.PreparedText, log):
    """(cleaned validation pairs, their counts, each language pair's slice (name, start, end) or []);
    with several language pairs each one's sources tagged and capped by data.valid_max_pairs."""
    if cfg.pairs:
        pairs, groups = [], []
        stats = text_lib.FilterStats(0, 0, 0, 0)
        for files, cleaned, one in languages.cleaned_pair_files(cfg, "valid", log):
            cleaned = _capped(cfg, cleaned, one, log, files.pair.name)
            if not cleaned:
                raise DataError(f"no validation pairs left for {files.pair.name}: {one.summary()} in {files.src}")
            groups.append((files.pair.name, len(pairs), len(pairs) + len(cleaned)))
            pairs += [(languages.tagged(s, files.tag_language), t) for s, t in cleaned]
            stats = text_lib.FilterStats(stats.total + one.total, len(pairs), stats.empty + one.empty, 0)
        return pairs, stats, groups
    if cfg.holdout_valid and not text_lib.has_split(cfg, "valid"):
        pairs = text.valid_pairs()  # held out by source sentence, duplicates dropped
        stats = text_lib.FilterStats(text.meta["heldout_pairs"], len(pairs), 0, 0)
    else:
        pairs, stats = text_lib.clean_pairs(text_lib.load_corpus(cfg, "valid"), cfg.lowercase, cfg.d2l_preprocess)
    pairs = _capped(cfg, pairs, stats, log)
    if not pairs:
        raise DataError(f"no validation pairs left: {stats.summary()} in {_files(cfg, 'valid')}")
    return pairs, stats, []
