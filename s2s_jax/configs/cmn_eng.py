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

from s2s_jax.configs import multi30k_attention

DATA = "cmn-eng/cmn.txt"  # relative to data.dir


def get_config():
    config = multi30k_attention.get_config()  # its model, optimiser, label smoothing and beam
    config.data.update(multi30k_attention.NO_FILES)
    config.data.train_tsv = DATA
    config.data.holdout_valid = 1000
    config.data.joint_vocab = False
    config.data.vocab_size = 4000
    config.data.max_len = 40
    config.train.num_steps = 700
    config.train.eval_every = 350
    config.train.checkpoint_every = 350
    config.decode.bleu_tokenize = "zh"
    return config
