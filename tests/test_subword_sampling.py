"""Subword regularisation (data.spm_alpha): sampled segmentations per epoch, reproducible, resumable."""

import numpy as np
import pytest

from s2s_jax import errors
from s2s_jax.config import checks
from s2s_jax.data import batching
from s2s_jax.data.tokenizer import EOS_ID, train_tokenizer
from tests.helpers import WORDS_EN, tiny_config, write_tiny_corpus


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("sampling")
    paths = write_tiny_corpus(str(base), n_train=300)
    with open(paths["train_src"], encoding="utf-8") as f:
        texts = f.read().splitlines()
    tok = train_tokenizer(texts + [" ".join(WORDS_EN)], str(base / "spm"), vocab_size=60)
    return tok, texts


def test_sampling_is_seeded_and_round_trips(setup):
    tok, texts = setup
    a = tok.sample(texts[:50], alpha=0.5, nbest=-1, seed=3)
    assert a == tok.sample(texts[:50], alpha=0.5, nbest=-1, seed=3)
    assert a != tok.sample(texts[:50], alpha=0.5, nbest=-1, seed=4)
    assert a != tok.tokenize(texts[:50])
    assert tok.detokenize(a) == texts[:50]


def test_each_epoch_reads_new_segmentations_of_every_pair_once(setup):
    tok, texts = setup
    targets = [t[::-1] for t in texts]

    def resample(epoch):
        return tok.sample(texts, 0.5, -1, 100 + epoch), tok.sample(targets, 0.5, -1, 200 + epoch)

    batches = batching.BucketedBatches(
        tok.tokenize(texts), tok.tokenize(targets), batch_size=16, num_buckets=3, seed=1, resample=resample
    )
    segmentations = []
    for epoch in (0, 1, 1):
        seen, rows = [], {}
        for batch in batches.epoch(epoch):
            for row, index in enumerate(batch["index"]):
                if index >= 0:
                    ids = batch["src"][row].tolist()
                    rows[int(index)] = ids[: ids.index(EOS_ID)]
                    seen.append(int(index))
        assert sorted(seen) == list(range(len(texts)))
        assert tok.detokenize([rows[i] for i in range(len(texts))]) == texts  # the same sentences
        segmentations.append([rows[i] for i in range(len(texts))])
    assert segmentations[0] != segmentations[1] and segmentations[1] == segmentations[2]
    it = batching.TrainIterator(batches)
    for _ in range(batches.num_batches + 2):
        next(it)
    state, expected = it.get_state(), next(it)
    again = batching.TrainIterator(batches)
    again.set_state(state)
    got = next(again)
    assert all(np.array_equal(expected[k], got[k]) for k in expected)


def test_nbest_that_switches_sampling_off_is_refused():
    config = tiny_config({})
    config.data.spm_alpha = 0.2
    for nbest in (0, 1, -2):
        config.data.spm_nbest = nbest
        with pytest.raises(errors.ConfigError, match="data.spm_nbest"):
            checks.validate(config)
    config.data.spm_nbest = 16
    checks.validate(config)
