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

from s2s_jax.configs import multi30k_attention

DATA = "fra-eng/fra.txt"  # relative to data.dir


def get_config():
    config = multi30k_attention.get_config()  # its model, optimiser, label smoothing and beam
    config.data.update(multi30k_attention.NO_FILES)
    config.data.train_tsv = DATA
    config.data.holdout_valid = 1000
    config.data.lowercase = True
    config.data.d2l_preprocess = True
    config.data.max_len = 40
    config.model.dropout = 0.2
    config.train.num_steps = 2000
    config.train.eval_every = 1000
    config.train.checkpoint_every = 1000
    return config
