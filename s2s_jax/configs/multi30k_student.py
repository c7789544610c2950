"""Multi30k de->en, a small student to distill a big teacher into (distill.py): cheap to serve on a CPU.

multi30k_tuned's recipe (GRU, batches of <= 3072 tokens, parameter EMA, Luong attention, tied
target embeddings) at half its width (a third of its parameters): embeddings 128, one
bidirectional GRU encoder layer of 256 per direction, a GRU decoder of 256, dropout 0.2. Sequence-level distillation (Kim & Rush 2016) trains it
on the teachers' beam-search translations of the training sources instead of the references:

    python distill.py --teacher runs/m30k_tuned_s0 --teacher runs/m30k_tuned_s1 \\
        --config configs/multi30k_student.py --workdir runs/m30k_student

`python train.py --config configs/multi30k_student.py` trains the same model on the references
(the README's table compares the two). Data as in multi30k.py: `--config.data.dir=/path/to/data`.
"""

from s2s_jax.configs import multi30k_tuned


def get_config():
    config = multi30k_tuned.get_config()
    config.model.emb_dim = 128
    config.model.hidden_size = 256
    config.model.dropout = 0.2
    config.train.num_steps = 2200
    return config
