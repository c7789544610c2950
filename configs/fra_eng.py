"""Tatoeba English->French (the d2l.ai seq2seq setting): `fra.txt`, English<TAB>French.

Tatoeba ships one TSV, so 1,000 training pairs (chosen by source sentence, all
translations of a held-out English sentence go with it) are held out for validation.
"""

from configs import default

DATA = "../shared/data/fra-eng/fra.txt"


def get_config():
    config = default.get_config()
    config.data.train_tsv = DATA
    config.data.holdout_valid = 1000  # random pairs held out by source sentence, never trained on
    config.data.max_train_pairs = 0
    config.data.lowercase = True
    config.data.vocab_size = 8000
    config.data.max_len = 40
    config.model.emb_dim = 256
    config.model.hidden_size = 512
    config.model.num_layers = 2
    config.model.dropout = 0.2
    config.model.feed_context = True
    config.train.batch_size = 128
    config.train.num_steps = 6000
    config.train.learning_rate = 2e-3
    config.train.eval_every = 1000
    config.train.checkpoint_every = 1000
    return config
