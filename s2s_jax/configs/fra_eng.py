"""Tatoeba English->French, the d2l.ai setting: `fra.txt`, English<TAB>French.

Text goes through d2l's preprocessing (lowercased, a space before , . ! ?), so
the model reads "i lost ." and writes "j'ai perdu ." exactly like the book's
examples. The model is the Multi30k attention recipe (1-layer bidirectional LSTM
encoder, Luong "general" attention, tied target embeddings) on Tatoeba's short
sentences. Tatoeba ships one TSV, so 1,000 source sentences (with all their
translations) are held out for validation and never trained on.

Data: DATA_DIR/fra-eng/fra.txt, where DATA_DIR is data.dir = "data" (what
`python download.py fra-eng` fills, relative to the current directory). Point it
at another copy with one override: `--config.data.dir=/path/to/data` (on the
development machines `--config.data.dir=../shared/data`).
"""

from s2s_jax.configs import default

DATA = "fra-eng/fra.txt"  # relative to data.dir


def get_config():
    config = default.get_config()
    config.data.dir = "data"
    config.data.train_tsv = DATA
    config.data.holdout_valid = 1000
    config.data.lowercase = True
    config.data.d2l_preprocess = True
    config.data.vocab_size = 8000
    config.data.max_len = 40
    config.model.emb_dim = 256
    config.model.hidden_size = 512
    config.model.num_layers = 1
    config.model.bidirectional = True
    config.model.attention = "luong_general"
    config.model.tie_embeddings = True
    config.model.dropout = 0.2
    config.train.batch_size = 128
    config.train.num_steps = 2000
    config.train.learning_rate = 2e-3
    config.train.label_smoothing = 0.1
    config.train.eval_every = 1000
    config.train.checkpoint_every = 1000
    config.train.early_stop_patience = 2  # evaluations without a better validation BLEU
    config.decode.beam_size = 5
    return config
