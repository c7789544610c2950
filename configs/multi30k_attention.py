"""Multi30k de->en with attention: bidirectional encoder, Luong attention, input feeding.

The seed model is configs/multi30k.py; this differs only in the model section, so
the two train on the same data with the same budget.
"""

from configs import multi30k


def get_config():
    config = multi30k.get_config()
    config.model.bidirectional = True
    config.model.attention = "luong_general"
    config.model.input_feeding = True
    config.decode.beam_size = 5
    return config
