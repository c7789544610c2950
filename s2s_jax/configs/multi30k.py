"""Multi30k de->en, the seed model without attention: the 45-minute CPU recipe.

The whole source reaches the decoder only through a fixed context (no attention):
a 1-layer bidirectional LSTM encoder (512 per direction) whose final states a
learned bridge maps to the decoder's initial state, and that context also
concatenated to every decoder input (`feed_context`, Cho et al. 2014 / d2l), so
the decoder need not carry it in its own state. Target embeddings are tied to
the output layer through a 512->256 projection, dropout 0.3, label smoothing
0.1, beam 5. For en->de swap the *_src/*_tgt paths (see README).

Data: DATA_DIR/multi30k/{train,val,test_2016_flickr}.{de,en}, where DATA_DIR is
data.dir = "data" (what `python download.py multi30k` fills, relative to the
current directory). Point it at another copy with one override:
`--config.data.dir=/path/to/data` (on the development machines
`--config.data.dir=../shared/data`).
"""

from s2s_jax.configs import default

DATA = "multi30k"  # relative to data.dir


def get_config():
    config = default.get_config()
    config.data.dir = "data"
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
    config.model.num_layers = 1
    config.model.bidirectional = True
    config.model.feed_context = True
    config.model.tie_embeddings = True
    config.model.dropout = 0.3
    config.train.batch_size = 128
    config.train.num_steps = 1500
    config.train.learning_rate = 2e-3
    config.train.warmup_steps = 200
    config.train.label_smoothing = 0.1
    config.train.eval_every = 500
    config.train.checkpoint_every = 500
    config.train.early_stop_patience = 2  # evaluations without a better validation BLEU
    config.decode.beam_size = 5
    return config
