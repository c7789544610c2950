"""Builds the optional fused CPU recurrence (s2s_jax/kernels/cpu, an XLA FFI custom call).

Everything else about the package is in pyproject.toml. The kernel is compiled with the
machine's C++ compiler against the XLA FFI headers that jaxlib ships (a build requirement).
Its inner loops are compiled twice, for the baseline instruction set and, on x86-64, for
AVX2+FMA, and the library picks one at run time: never -march=native. Where the build
fails (no compiler, no headers) the package installs without it and runs the nn.scan
recurrence instead (s2s_jax.kernels.recurrence.available() is False).
"""

from __future__ import annotations

import os
import platform

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = "s2s_jax/kernels/cpu"
FLAGS = ["-O3", "-std=c++17", "-fvisibility=hidden", "-Wno-psabi"]
X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


class BuildKernels(build_ext):
    """build_ext that adds the FFI headers and compiles the AVX2 variant with its own flags."""

    def build_extension(self, ext: Extension) -> None:
        from distutils.errors import CompileError

        try:
            import jaxlib
        except ImportError as err:
            raise CompileError(f"jaxlib (for the XLA FFI headers) is not importable: {err}") from err
        ext.include_dirs.append(os.path.join(os.path.dirname(jaxlib.__file__), "include"))
        if X86:
            objects = self.compiler.compile(
                [f"{KERNELS}/recurrence_avx2.cc"],
                output_dir=self.build_temp,
                extra_postargs=FLAGS + ["-fPIC", "-mavx2", "-mfma"],
            )
            ext.extra_objects = list(ext.extra_objects or []) + objects
        super().build_extension(ext)


setup(
    ext_modules=[
        Extension(
            "s2s_jax.kernels.recurrence_cpu",
            sources=[f"{KERNELS}/recurrence_ffi.cc", f"{KERNELS}/recurrence_generic.cc"]
            + ([] if X86 else [f"{KERNELS}/recurrence_avx2.cc"]),  # elsewhere it only says "none"
            depends=[f"{KERNELS}/recurrence_kernels.h", f"{KERNELS}/recurrence_types.h"],
            extra_compile_args=FLAGS,
            language="c++",
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildKernels},
)
