"""Multi30k en -> {de, fr, cs} in one model: multi30k_tuned's architecture over three pairs.

multi30k_many2en's recipe the other way round: three target languages, so every source starts
with a target-language tag (<2de>, <2fr>, <2cs>: data.lang_tags=auto) and decoding names the
language (`decode.py --target_lang de`, the server's `target_lang`). 2 hours on 2 CPU cores.

Data as in multi30k.py: DATA_DIR/multi30k/{train,val,test_2016_flickr}.{en,de,fr,cs}
(`python download.py multi30k`); `--config.data.dir=/path/to/data` if not ./data.
"""

from s2s_jax.configs import multi30k_many2en


def get_config():
    return multi30k_many2en.multilingual("en-de,en-fr,en-cs")
