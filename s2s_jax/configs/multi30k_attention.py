"""Multi30k de->en with attention: the 45-minute CPU recipe.

A 1-layer bidirectional LSTM encoder (512 per direction) with a learned bridge,
a 1-layer LSTM decoder (512) with Luong "general" attention, target embeddings
tied to the output layer through a 512->256 projection (halves the V=8000 output
matmul, the largest in the model, and regularises a 29k-pair corpus), dropout 0.3,
label smoothing 0.1, beam 5 for validation and test. Input feeding is off: it
turns the decoder into a step loop that costs more CPU time than it returns in
BLEU within this budget.

Data as in multi30k.py: DATA_DIR/multi30k/..., data.dir = "data" (what
`python download.py multi30k` fills). Point it at another copy with one override:
`--config.data.dir=/path/to/data` (on the development machines
`--config.data.dir=../shared/data`).
"""

from s2s_jax.configs import multi30k

# The recipe without Multi30k's files: what the Tatoeba configs start from before naming theirs.
NO_FILES = {f"{split}_{side}": "" for split in ("train", "valid", "test") for side in ("src", "tgt")}


def get_config():
    config = multi30k.get_config()  # its model, training schedule and beam, with attention:
    config.model.attention = "luong_general"
    config.model.feed_context = False  # attention supplies the context
    config.model.input_feeding = False
    return config
