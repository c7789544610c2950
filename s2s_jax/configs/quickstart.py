"""The README's main job: English->French spoken numbers and dates, generated offline.

Trains in a few minutes on a 2-core CPU. The corpus is written into WORKDIR/corpus
from num2words and CLDR (babel) data, deterministically from the seed.
"""

from s2s_jax.configs import default


def get_config():
    config = default.get_config()
    config.data.quickstart_corpus = True
    config.data.vocab_size = 200  # about all a numbers-and-dates corpus supports (it has ~200 distinct pieces)
    config.data.max_len = 32
    config.data.num_buckets = 4
    config.model.emb_dim = 128
    config.model.hidden_size = 256
    config.model.num_layers = 1
    config.model.dropout = 0.1
    config.train.batch_size = 64
    config.train.num_steps = 1500
    config.train.learning_rate = 3e-3
    config.train.warmup_steps = 100
    config.train.eval_every = 500
    config.train.checkpoint_every = 500
    config.train.log_every = 50
    return config
