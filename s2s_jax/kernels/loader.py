"""Loading the compiled kernel extensions and calling their XLA FFI targets: one way for every kernel.

Each kernel (the fused recurrence, the int8 matmul, the beam candidates) is an optional
extension built at install time (setup.py); its inner loops pick their instruction set in C++
when first called (S2S_JAX_KERNEL_ISA caps it). A kernel module here loads its extension with
`load`, says why it is missing with the reason `load` returns, and calls a target through
`ffi_call`, which registers the extension's targets with JAX on first use. Where a kernel is
missing, or inside `portable()`, the int8 and beam-candidate modules trace their pure-JAX path
instead; the fused recurrence has none of its own (its pure-JAX path is the model's `nn.scan`),
so a portable program is built from a model with `recurrence="scan"`, as export.py does.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import importlib.util
import os
import sys
from types import ModuleType

import jax

_REGISTERED: set[str] = set()
_PORTABLE = contextvars.ContextVar("s2s_kernels_portable", default=False)


ISA_CAPS = ("generic", "avx2", "avx512", "avx512vnni")  # S2S_JAX_KERNEL_ISA (cpu/ffi_module.h reads it)


def load(name: str) -> tuple[ModuleType | None, str]:
    """The extension s2s_jax.kernels.<name> and "" -- or None and why it is missing."""
    cap = os.environ.get("S2S_JAX_KERNEL_ISA", "")
    if cap and cap not in ISA_CAPS:
        warn_once(f"S2S_JAX_KERNEL_ISA={cap} is not one of {', '.join(ISA_CAPS)}: the kernels run their generic loops")
    qualified = f"s2s_jax.kernels.{name}"
    try:
        return importlib.import_module(qualified), ""
    except ImportError as err:  # not built (no compiler at install time, a failed build) or not loadable
        built = importlib.util.find_spec(qualified) is not None
        return None, f"it does not load: {err}" if built else "it was not built when s2s-jax was installed"


@functools.cache
def warn_once(message: str) -> None:
    """A `warning:` line on stderr, once per process per message (a missing kernel, say)."""
    print(f"warning: {message}", file=sys.stderr)


def isa(extension: ModuleType | None) -> str:
    """The instruction set the extension's inner loops run with here ("none" without it)."""
    return extension.isa() if extension is not None else "none"


def register(extension: ModuleType) -> None:
    """Registers the extension's FFI targets for the CPU, once per process."""
    if extension.__name__ in _REGISTERED:
        return
    for target, capsule in extension.handlers().items():
        jax.ffi.register_ffi_target(target, capsule, platform="cpu")
    _REGISTERED.add(extension.__name__)


def ffi_call(extension: ModuleType, target: str, results, *, vmap_method: str):
    """`jax.ffi.ffi_call` of one of the extension's targets, registered first."""
    register(extension)
    return jax.ffi.ffi_call(target, results, vmap_method=vmap_method)


@contextlib.contextmanager
def portable():
    """Within it, every kernel traces to its pure-JAX path only (no custom call): for a program that
    must run where s2s_jax is not installed (export.py's artefacts). Same results."""
    token = _PORTABLE.set(True)
    try:
        yield
    finally:
        _PORTABLE.reset(token)


def portable_only() -> bool:
    """Whether the code being traced is inside `portable()`."""
    return _PORTABLE.get()
