"""s2s-jax: LSTM encoder-decoder neural machine translation in JAX/Flax."""

__version__ = "0.1.0"
