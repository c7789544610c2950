"""Tatoeba English->Chinese (`cmn.txt`: English<TAB>Chinese<TAB>attribution).

For zh->en pass --config.data.tsv_src_col=1 --config.data.tsv_tgt_col=0
--config.decode.bleu_tokenize=13a. Chinese has no spaces: sentencepiece handles
it, and BLEU uses sacrebleu's 'zh' tokenizer for Chinese targets.
"""

from configs import default

DATA = "../shared/data/cmn-eng/cmn.txt"


def get_config():
    config = default.get_config()
    config.data.train_tsv = DATA
    config.data.holdout_valid = 1000  # random pairs held out by source sentence, never trained on
    config.data.joint_vocab = False
    config.data.vocab_size = 4000
    config.data.max_len = 40
    config.model.emb_dim = 256
    config.model.hidden_size = 512
    config.model.num_layers = 2
    config.model.dropout = 0.3
    config.train.batch_size = 128
    config.train.num_steps = 4000
    config.train.learning_rate = 2e-3
    config.train.eval_every = 1000
    config.train.checkpoint_every = 1000
    config.decode.bleu_tokenize = "zh"
    return config
