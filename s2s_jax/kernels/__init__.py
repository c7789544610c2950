"""Compiled CPU kernels called from JAX through the XLA FFI (built at install time; optional)."""
