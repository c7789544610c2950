"""Tatoeba English->Chinese (`cmn.txt`: English<TAB>Chinese<TAB>attribution).

The Multi30k attention recipe (1-layer bidirectional LSTM encoder, Luong "general"
attention, tied target embeddings) with one 4k sentencepiece model per side:
Chinese has no spaces and shares no script with English, so a joint vocabulary
would only split the budget. BLEU uses sacrebleu's 'zh' tokenizer for Chinese
targets. For zh->en pass --config.data.tsv_src_col=1 --config.data.tsv_tgt_col=0
--config.decode.bleu_tokenize=13a. 1,000 source sentences are held out for
validation and never trained on.

Data: DATA_DIR/cmn-eng/cmn.txt, where DATA_DIR is data.dir = "data" (what
`python download.py cmn-eng` fills, relative to the current directory). Point it
at another copy with one override: `--config.data.dir=/path/to/data` (on the
development machines `--config.data.dir=../shared/data`).
"""

from s2s_jax.configs import default

DATA = "cmn-eng/cmn.txt"  # relative to data.dir


def get_config():
    config = default.get_config()
    config.data.dir = "data"
    config.data.train_tsv = DATA
    config.data.holdout_valid = 1000
    config.data.joint_vocab = False
    config.data.vocab_size = 4000
    config.data.max_len = 40
    config.model.emb_dim = 256
    config.model.hidden_size = 512
    config.model.num_layers = 1
    config.model.bidirectional = True
    config.model.attention = "luong_general"
    config.model.tie_embeddings = True
    config.model.dropout = 0.3
    config.train.batch_size = 128
    config.train.num_steps = 700
    config.train.learning_rate = 2e-3
    config.train.label_smoothing = 0.1
    config.train.eval_every = 350
    config.train.checkpoint_every = 350
    config.train.early_stop_patience = 2  # evaluations without a better validation BLEU
    config.decode.beam_size = 5
    config.decode.bleu_tokenize = "zh"
    return config
