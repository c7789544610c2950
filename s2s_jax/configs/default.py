"""Every configuration key, documented. Recipes start from this and change a few values.

Override any key from the command line: `--config.train.num_steps=2000`.
Unknown keys are an error (the config is locked).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # decides initialisation, shuffling, dropout, scheduled sampling, subword and pair sampling, the
    # held-out validation pairs, the tokenizer's training sample and the quickstart corpus
    config.seed = 0
    config.data = data_config()
    config.model = model_config()
    config.train = train_config()
    config.decode = decode_config()
    config.lock()
    return config


def data_config() -> ml_collections.ConfigDict:
    """config.data: the corpus, its tokenizer and its batches."""
    data = ml_collections.ConfigDict()
    # A corpus is either line-aligned source and target files per split or TSV files per split;
    # each key may list several files, comma-separated (the i-th source file with the i-th target).
    # Relative paths in data.{train,valid,test}_{src,tgt,tsv} are resolved against data.dir
    # when the data is loaded, so `--config.data.dir=/path/to/data` moves them all; an
    # absolute path is used as is. "" = the current directory.
    data.dir = ""
    data.train_src = ""
    data.train_tgt = ""
    data.train_tsv = ""
    data.valid_src = ""
    data.valid_tgt = ""
    data.valid_tsv = ""
    data.test_src = ""
    data.test_tgt = ""
    data.test_tsv = ""
    # Several language pairs in one model: data.pairs lists them ("de-en,fr-en,cs-en"; "" = the
    # single pair above) and the files are named by language: data.train_prefix="multi30k/train"
    # means multi30k/train.de + multi30k/train.en for de-en (resolved against data.dir like the
    # paths above; data.{train,valid,test}_{src,tgt,tsv} stay empty). Every pair needs its training
    # and validation files; a pair without test files is left out of testing with a note.
    # One joint sentencepiece model is trained over all pairs' text.
    data.pairs = ""
    data.train_prefix = ""
    data.valid_prefix = ""
    data.test_prefix = ""
    # Target-language tags, "<2fr>" before each source (one sentencepiece piece, s2s_jax/data/languages.py);
    # auto: when the pairs have more than one target language.
    data.lang_tags = "auto"  # auto | always | never
    # Sampling across pairs, each epoch: pair i's share of the epoch ~ n_i^(1/T) for n_i training pairs
    # (1 = proportional to size; > 1 flattens: small pairs up-sampled, large ones down-sampled).
    data.pair_temperature = 1.0
    data.tsv_src_col = 0  # which TSV columns hold source and target (Tatoeba: 0 = English, 1 = other)
    data.tsv_tgt_col = 1
    data.quickstart_corpus = False  # generate the offline English->French numbers/dates corpus into WORKDIR/corpus
    data.lowercase = False
    data.d2l_preprocess = False  # d2l.ai's text preprocessing: "i lost." -> "i lost ." (and ’ -> '), inputs too
    data.max_train_pairs = 0  # use only the first N training pairs (0 = all); with data.pairs, N per pair
    data.valid_max_pairs = 2000  # validate on at most the first N pairs (0 = all); with data.pairs, N per pair
    # with no validation files: hold out N random distinct source sentences with all their pairs (at
    # most half of the distinct sources), so no held-out source is also trained on
    data.holdout_valid = 0
    data.vocab_size = 8000  # sentencepiece vocabulary size (shrinks on a corpus too small for it)
    data.joint_vocab = True  # one sentencepiece model for both sides, else one per side
    data.spm_model_type = "unigram"  # unigram | bpe | word | char (sentencepiece algorithms)
    data.spm_model = ""  # an existing joint sentencepiece model to copy into the workdir instead of training one
    data.spm_model_src = ""  # the same per side, with data.joint_vocab=False
    data.spm_model_tgt = ""
    data.spm_alpha = 0.0  # > 0: subword regularisation, training segmentations re-sampled every epoch with this alpha
    data.spm_nbest = -1  # with spm_alpha: sample from the n best segmentations (-1: the whole lattice; 0 and 1 refused)
    data.spm_input_sentences = (
        1_000_000  # a trained tokenizer reads at most this many sentences (a seeded sample; 0 = all)
    )
    data.cache_dir = ""  # prepared corpora; "" = $S2S_JAX_CORPUS_CACHE or ~/.cache/s2s_jax/corpora
    data.prepare_workers = 0  # processes that clean text when preparing a corpus (0 = one per CPU)
    data.max_len = 64  # subword tokens per side; longer training pairs are dropped and counted
    data.num_buckets = 8  # length buckets = distinct batch shapes = jit compiles
    data.pad_multiple = 2  # bucket lengths are rounded up to this multiple
    return data


def model_config() -> ml_collections.ConfigDict:
    """config.model: the network."""
    model = ml_collections.ConfigDict()
    model.cell = "lstm"  # lstm | gru (reset-after, as flax nn.GRUCell and torch nn.GRU)
    model.emb_dim = 256
    model.hidden_size = 512
    model.num_layers = 2
    model.dropout = 0.2
    model.bidirectional = False  # bidirectional encoder with a learned bridge to the decoder state
    model.feed_context = False  # concatenate the encoder context to every decoder input (d2l)
    model.tie_embeddings = False  # share the target embedding with the output layer
    model.attention = "none"  # none | bahdanau | luong_dot | luong_general (global attention over encoder states)
    model.input_feeding = False  # with attention: previous attentional vector joins the next input (Luong)
    # The recurrences' time loop. fused: the compiled CPU kernel (built at install time, s2s_jax/kernels);
    # scan: nn.scan (the reference, and the GPU/TPU path); auto: fused on one CPU device in float32
    # where it is built, else scan. Same parameters either way.
    model.recurrence = "auto"  # auto | scan | fused
    model.scan_unroll = 1  # nn.scan unroll factor for the recurrences (recurrence=scan)
    # Skip padded steps in the encoder and the teacher-forced decoder (rows sorted by length, a few
    # time segments per batch: s2s_jax/models/time_segments.py). Same results; one device only.
    model.skip_padding = True
    return model


def train_config() -> ml_collections.ConfigDict:
    """config.train: the optimisation, evaluation and checkpoint schedule."""
    train = ml_collections.ConfigDict()
    train.batch_size = 64  # sentence pairs per batch (per micro-batch with accum_steps > 1)
    train.max_tokens = 0  # > 0: batches by tokens, rows x max(padded src, tgt length) <= this (replaces batch_size)
    train.accum_steps = 1  # micro-batches per update: the gradient of their summed loss over their total target tokens
    train.init_from = (
        ""  # WORKDIR[:best|latest|STEP|avg:K]: a new run starts from that run's parameters and tokenizer(s)
    )
    train.init_keep_optimizer = False  # with init_from: also its optimizer state and schedule position
    train.num_steps = 10000
    train.optimizer = "adam"  # adam | adamw
    train.learning_rate = 1e-3
    train.lr_schedule = "cosine"  # constant | cosine | rsqrt | plateau (each after linear warmup)
    train.plateau_factor = (
        0.5  # lr_schedule=plateau: the rate is multiplied by this after an evaluation without improvement
    )
    train.warmup_steps = 200
    train.weight_decay = 0.0  # adamw only
    train.clip_norm = 1.0  # global gradient-norm clipping (0 = off)
    train.label_smoothing = 0.0
    train.ema_decay = (
        0.0  # > 0: keep an exponential moving average of the parameters; validation, best/ and decoding use it
    )
    # With ema_decay: the decay at update t is min(ema_decay, (1 + t) / (10 + t)), so early validations
    # average recent weights instead of the initial ones (TensorFlow's num_updates rule).
    train.ema_warmup = False
    train.teacher_forcing_ratio = 1.0  # < 1: scheduled sampling with the model's own greedy tokens
    train.dtype = "float32"  # float32 | bfloat16: compute dtype; parameters, optimizer state and loss stay float32
    train.on_nonfinite = "stop"  # stop | skip: what to do when a step's loss or gradient is NaN/Inf
    train.log_every = 50
    train.eval_every = 1000
    train.checkpoint_every = 1000
    train.early_stop_metric = "bleu"  # bleu | chrf | loss: what picks best/ and drives early stopping and plateau
    train.early_stop_patience = 0  # stop after this many evaluations without a better early_stop_metric (0 = never)
    train.max_to_keep = 3  # latest checkpoints kept; the best by train.early_stop_metric is kept separately
    train.num_samples = 3  # sample translations printed at each evaluation (per pair with data.pairs)
    return train


def decode_config() -> ml_collections.ConfigDict:
    """config.decode: the search for validation, decode.py and the server."""
    decode = ml_collections.ConfigDict()
    decode.beam_size = 1  # 1 = greedy (also used for validation BLEU)
    decode.alpha = 0.6  # GNMT length penalty exponent for beam search
    decode.max_len_a = 1.5  # output length cap: a * source_length + b tokens
    decode.max_len_b = 10
    decode.batch_size = 128
    decode.bleu_tokenize = ""  # sacrebleu tokenizer ('' = 13a; 'zh' for Chinese targets)
    return decode
