"""Everything a run needs from text: cleaned pairs, tokenizers in the workdir, buckets.

Flow: files -> normalise/filter (counted) -> sentencepiece ids -> length filter
(counted) -> bucketed numpy batches. Tokenizers trained on the first run are
reused when the run resumes, so ids never change under a checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import zlib

import numpy as np

from s2s_jax import batching
from s2s_jax import text as text_lib
from s2s_jax.tokenizer import Tokenizer, train_tokenizer, workdir_model_paths


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

    def train_iterator(self) -> batching.TrainIterator:
        return batching.TrainIterator(self.train_batches)


def use_quickstart_corpus(config, workdir: str) -> None:
    """Writes the generated quickstart corpus into WORKDIR/corpus and points the config at it.

    The paths are absolute, so data.dir (resolved against relative paths) leaves them alone.
    """
    from s2s_jax import quickstart_data

    paths = quickstart_data.write_corpus(os.path.join(os.path.abspath(workdir), "corpus"), seed=config.seed)
    with config.unlocked():
        for key, path in paths.items():
            setattr(config.data, key, path)


def _copy_tokenizer(model: str, path: str) -> None:
    """An existing sentencepiece model (data.spm_model*, or train.init_from's run's) into the workdir, checked first."""
    listing = Tokenizer(model).vocab_listing()  # a missing file or other special ids: a clear error
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    shutil.copyfile(model, tmp)
    os.replace(tmp, path)
    with open(path[: -len(".model")] + ".vocab", "w", encoding="utf-8") as f:
        f.write(listing)


def tokenizers(config, workdir: str, train_pairs) -> tuple[Tokenizer, Tokenizer]:
    """Loads the workdir's sentencepiece model(s). On the first run they are copied from
    train.init_from's run or data.spm_model(_src/_tgt) when set, else trained on the data."""
    cfg = config.data
    src_path, tgt_path = workdir_model_paths(workdir, cfg.joint_vocab)
    if config.train.init_from and not all(os.path.exists(p) for p in (src_path, tgt_path)):
        from s2s_jax import init_from

        given = init_from.tokenizer_models(config.train.init_from, cfg.joint_vocab)
    else:
        given = [cfg.spm_model] if cfg.joint_vocab else [cfg.spm_model_src, cfg.spm_model_tgt]
    for path, model in zip((src_path, tgt_path), given):
        if model and not os.path.exists(path):
            _copy_tokenizer(model, path)
    sides = [(src_path, [s for s, _ in train_pairs]), (tgt_path, [t for _, t in train_pairs])]
    if cfg.joint_vocab:
        sides = [(src_path, sides[0][1] + sides[1][1])]
    for path, texts in sides:
        if not os.path.exists(path):
            train_tokenizer(texts, path[: -len(".model")], cfg.vocab_size, cfg.spm_model_type)
    src = Tokenizer(src_path)
    return src, (src if cfg.joint_vocab else Tokenizer(tgt_path))


def holdout_split(pairs: list, n: int, seed: int) -> tuple[list, list]:
    """Moves every pair of n randomly chosen source sentences out of `pairs`.

    Splitting by source sentence keeps the other translations of a held-out
    sentence out of training too (Tatoeba repeats sources), so validation
    measures generalisation, not recall.
    """
    sources = sorted({s for s, _ in pairs})
    rng = np.random.default_rng(seed)
    held = set(rng.choice(len(sources), size=min(n, len(sources) // 2), replace=False).tolist())
    held_sources = {sources[i] for i in held}
    train = [p for p in pairs if p[0] not in held_sources]
    valid = [p for p in pairs if p[0] in held_sources]
    return train, valid


def _files(cfg, split: str) -> str:
    tsv = getattr(cfg, f"{split}_tsv")
    return tsv or f"{getattr(cfg, f'{split}_src')} / {getattr(cfg, f'{split}_tgt')}"


def _has_split(cfg, split: str) -> bool:
    return bool(getattr(cfg, f"{split}_tsv") or getattr(cfg, f"{split}_src"))


def _encode(pairs, src_tok: Tokenizer, tgt_tok: Tokenizer):
    return src_tok.tokenize([s for s, _ in pairs]), tgt_tok.tokenize([t for _, t in pairs])


def _shapes(batches: batching.BucketedBatches) -> str:
    """(S, T) per shape, or with a token budget rows x (S, T)."""
    if not batches.max_tokens:
        return str(batches.shapes)
    return "[" + ", ".join(f"{r}x{shape}" for r, shape in zip(batches.rows, batches.shapes)) + "]"


def prepare(config, workdir: str, verbose: bool = True, row_multiple: int = 1) -> Corpus:
    """Cleans, tokenizes (training the tokenizers on a first run) and batches a run's data.

    `row_multiple` (the device count) divides every training batch's rows under a token budget.
    """
    cfg = config.data
    if cfg.quickstart_corpus and not cfg.train_src:
        use_quickstart_corpus(config, workdir)
    train_pairs, stats = text_lib.clean_pairs(text_lib.load_corpus(cfg, "train"), cfg.lowercase, cfg.d2l_preprocess)
    if not train_pairs:
        raise text_lib.DataError(f"no training pairs left: {stats.summary()} in {_files(cfg, 'train')}")
    if cfg.holdout_valid and not _has_split(cfg, "valid"):
        train_pairs, held_out = holdout_split(train_pairs, cfg.holdout_valid, config.seed)
    if cfg.max_train_pairs:
        train_pairs = train_pairs[: cfg.max_train_pairs]
    src_tok, tgt_tok = tokenizers(config, workdir, train_pairs)
    src_ids, tgt_ids = _encode(train_pairs, src_tok, tgt_tok)
    keep = text_lib.filter_by_length(src_ids, tgt_ids, cfg.max_len, stats)
    if not keep:
        raise text_lib.DataError(f"no training pair is at most data.max_len={cfg.max_len} tokens long")
    resample = None
    if cfg.spm_alpha > 0:
        texts = ([train_pairs[i][0] for i in keep], [train_pairs[i][1] for i in keep])

        def resample(epoch: int):
            """This epoch's sampled segmentations of the kept training pairs (subword regularisation)."""
            return tuple(
                tok.sample(side, cfg.spm_alpha, cfg.spm_nbest, zlib.crc32(f"{config.seed}:{epoch}:{n}".encode()))
                for n, (tok, side) in enumerate(zip((src_tok, tgt_tok), texts))
            )

    train_batches = batching.BucketedBatches(
        [src_ids[i] for i in keep], [tgt_ids[i] for i in keep], config.train.batch_size,
        cfg.num_buckets, config.seed, cfg.pad_multiple, config.train.max_tokens, row_multiple, resample,
    )

    if cfg.holdout_valid and not _has_split(cfg, "valid"):
        valid_pairs, valid_stats = held_out, text_lib.FilterStats(len(held_out), len(held_out), 0, 0)
    else:
        valid_pairs, valid_stats = text_lib.clean_pairs(text_lib.load_corpus(cfg, "valid"), cfg.lowercase, cfg.d2l_preprocess)
    if cfg.valid_max_pairs:
        valid_pairs = valid_pairs[: cfg.valid_max_pairs]
    if not valid_pairs:
        raise text_lib.DataError(f"no validation pairs left: {valid_stats.summary()} in {_files(cfg, 'valid')}")
    v_src, v_tgt = _encode(valid_pairs, src_tok, tgt_tok)
    # Validation keeps every pair (it is what BLEU is reported on); over-long ones are cut.
    v_src = [ids[: cfg.max_len] for ids in v_src]
    v_tgt = [ids[: cfg.max_len] for ids in v_tgt]
    valid_batches = batching.BucketedBatches(
        v_src, v_tgt, config.decode.batch_size, 1, config.seed, cfg.pad_multiple
    )
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
        src_tok, tgt_tok, train_batches, valid_batches, v_src,
        [s for s, _ in valid_pairs], [t for _, t in valid_pairs],
    )
