"""Multi30k de->en with attention: bidirectional encoder, Luong (general) attention.

The seed model is configs/multi30k.py; this differs only in the model section, so
the two train on the same data with the same budget.
"""

from configs import multi30k


def get_config():
    config = multi30k.get_config()
    config.model.bidirectional = True
    config.model.attention = "luong_general"
    config.model.input_feeding = False  # True is Luong's input feeding: a step loop, ~2.5x slower on CPU today
    config.decode.beam_size = 5
    return config
