"""Builds the optional compiled CPU kernels (s2s_jax/kernels/cpu, XLA FFI custom calls).

Everything else about the package is in pyproject.toml. Each kernel is its own extension
(the fused recurrence, the int8 matmul, the rows' top log-probabilities of beam search),
compiled with the machine's C++ compiler against the XLA FFI headers that jaxlib ships (a
build requirement), so one that fails to build leaves the others. Their inner loops are compiled for the baseline instruction set and, on x86-64, for
wider ones (AVX2, AVX-512, AVX-512 VNNI), and each library picks one at run time: never
-march=native. Where a build fails (no compiler, no headers) the package installs without it
and runs the pure-JAX path instead (the kernel module's available() is False).
"""

from __future__ import annotations

import functools
import os
import platform

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = "s2s_jax/kernels/cpu"
FLAGS = ["-O3", "-g0", "-std=c++17", "-fvisibility=hidden", "-Wno-psabi"]
X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
AVX512 = ["-mavx2", "-mfma", "-mavx512f", "-mavx512dq", "-mavx512vl", "-mavx512bw"]
ISA_VARIANTS = {  # x86: (source, its own flags) per extension; elsewhere they are stubs that report "no variant"
    "s2s_jax.kernels.recurrence_cpu": [
        ("recurrence_avx2.cc", ["-mavx2", "-mfma"]),
        ("recurrence_avx512.cc", AVX512),
    ],
    "s2s_jax.kernels.int8_cpu": [
        ("int8_avx2.cc", ["-mavx2"]),
        ("int8_avx512vnni.cc", [*AVX512, "-mavx512vnni"]),
    ],
    "s2s_jax.kernels.top_log_probs_cpu": [
        ("top_log_probs_avx2.cc", ["-mavx2", "-mfma"]),
        ("top_log_probs_avx512.cc", AVX512),
    ],
}


class BuildKernels(build_ext):
    """build_ext that adds the FFI headers and compiles each x86 variant with its own flags."""

    def build_extension(self, ext: Extension) -> None:
        from setuptools.errors import CompileError

        try:
            import jaxlib
        except ImportError as err:
            raise CompileError(f"jaxlib (for the XLA FFI headers) is not importable: {err}") from err
        ext.include_dirs.append(os.path.join(os.path.dirname(jaxlib.__file__), "include"))
        for source, flags in ISA_VARIANTS[ext.name] if X86 else []:
            compile_variant = functools.partial(
                self.compiler.compile,
                [f"{KERNELS}/{source}"],
                output_dir=self.build_temp,
                include_dirs=ext.include_dirs,
            )
            try:
                objects = compile_variant(extra_postargs=FLAGS + ["-fPIC", *flags])
            except CompileError as err:  # a compiler without these flags: the variant is left out, not the kernel
                self.warn(f"{source} does not build with {' '.join(flags)} ({err}); its instruction set is left out")
                objects = compile_variant(extra_postargs=FLAGS + ["-fPIC"])  # the stub that reports "no variant"
            ext.extra_objects = list(ext.extra_objects or []) + objects
        super().build_extension(ext)


def kernel(name: str, sources: list[str], headers: list[str]) -> Extension:
    """One optional kernel library: its dispatcher and baseline loops, plus the variants' stubs off x86."""
    variants = [source for source, _ in ISA_VARIANTS[f"s2s_jax.kernels.{name}"]]
    return Extension(
        f"s2s_jax.kernels.{name}",
        sources=[f"{KERNELS}/{source}" for source in sources + ([] if X86 else variants)],
        # x86 compiles the variants itself (BuildKernels): an edit to one must still rebuild the library
        depends=[f"{KERNELS}/{header}" for header in [*headers, "ffi_module.h", *(variants if X86 else [])]],
        extra_compile_args=FLAGS,
        language="c++",
        optional=True,
    )


setup(
    ext_modules=[
        kernel(
            "recurrence_cpu",
            ["recurrence_ffi.cc", "recurrence_generic.cc"],
            ["recurrence_kernels.h", "recurrence_types.h"],
        ),
        kernel("int8_cpu", ["int8_ffi.cc", "int8_generic.cc"], ["int8_loops.h", "int8_types.h"]),
        kernel(
            "top_log_probs_cpu",
            ["top_log_probs_ffi.cc", "top_log_probs_generic.cc"],
            ["top_log_probs_row.h", "top_log_probs_types.h"],
        ),
    ],
    cmdclass={"build_ext": BuildKernels},
)
