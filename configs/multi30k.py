"""Multi30k de->en (29k image captions), the seed model: 2-layer LSTM, no attention.

Data paths point at ../shared/data on the development machines; pass your own with
--config.data.train_src=... etc. Reverse the direction with --config.data.*_src/tgt swapped.
"""

from configs import default

DATA = "../shared/data/multi30k"


def get_config():
    config = default.get_config()
    config.data.train_src = f"{DATA}/train.de"
    config.data.train_tgt = f"{DATA}/train.en"
    config.data.valid_src = f"{DATA}/val.de"
    config.data.valid_tgt = f"{DATA}/val.en"
    config.data.test_src = f"{DATA}/test_2016_flickr.de"
    config.data.test_tgt = f"{DATA}/test_2016_flickr.en"
    config.data.vocab_size = 8000
    config.data.max_len = 64
    config.model.emb_dim = 256
    config.model.hidden_size = 512
    config.model.num_layers = 2
    config.model.dropout = 0.3
    config.train.batch_size = 128
    config.train.num_steps = 4000
    config.train.learning_rate = 2e-3
    config.train.warmup_steps = 200
    config.train.label_smoothing = 0.1
    config.train.eval_every = 500
    config.train.checkpoint_every = 500
    return config
