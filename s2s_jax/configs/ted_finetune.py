"""Fine-tuning the Multi30k de->en attention recipe on TED talks (IWSLT 2016): a domain-adaptation recipe.

    python download.py multi30k iwslt16-de-en
    python train.py --config multi30k_attention --workdir runs/multi30k_attention
    python train.py --config ted_finetune --workdir runs/ted_finetune \
        --config.train.init_from=runs/multi30k_attention
    python decode.py --workdir runs/ted_finetune --input data/iwslt16-de-en-devtest/IWSLT16.TED.tst2013.de-en.de \
        --reference data/iwslt16-de-en-devtest/IWSLT16.TED.tst2013.de-en.en

The model settings are multi30k_attention's (init_from requires the same shapes; the
tokenizer comes from that run). It trains on TED tst2010-2012 (4,698 segments; IWSLT's
training set is not freely fetchable), validates on dev2010 and is tested on tst2013.
Without init_from the same config trains from scratch on those segments: the baseline.
"""

from s2s_jax.configs import multi30k_attention


def _ted(*sets: str, side: str) -> str:
    return ",".join(f"iwslt16-de-en-devtest/IWSLT16.TED.{name}.de-en.{side}" for name in sets)


def get_config():
    config = multi30k_attention.get_config()
    data = config.data
    data.train_src, data.train_tgt = (
        _ted("tst2010", "tst2011", "tst2012", side="de"),
        _ted("tst2010", "tst2011", "tst2012", side="en"),
    )
    data.valid_src, data.valid_tgt = _ted("dev2010", side="de"), _ted("dev2010", side="en")
    data.test_src, data.test_tgt = _ted("tst2013", side="de"), _ted("tst2013", side="en")
    config.train.num_steps = 300
    config.train.eval_every = 100
    config.train.checkpoint_every = 100
    config.train.warmup_steps = 50
    config.train.learning_rate = 5e-4
    return config
