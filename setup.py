"""Builds the optional fused CPU recurrence (s2s_jax/kernels/cpu, an XLA FFI custom call).

Everything else about the package is in pyproject.toml. The kernel is compiled with the
machine's C++ compiler against the XLA FFI headers that jaxlib ships (a build requirement).
Its inner loops are compiled for the baseline instruction set and, on x86-64, for AVX2+FMA
and for AVX-512, and the library picks one at run time: never -march=native. Where the build
fails (no compiler, no headers) the package installs without it and runs the nn.scan
recurrence instead (s2s_jax.kernels.recurrence.available() is False).
"""

from __future__ import annotations

import os
import platform

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = "s2s_jax/kernels/cpu"
FLAGS = ["-O3", "-g0", "-std=c++17", "-fvisibility=hidden", "-Wno-psabi"]
X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
ISA_VARIANTS = [  # x86: (source, its own flags); the others are stubs that report "no variant"
    ("recurrence_avx2.cc", ["-mavx2", "-mfma"]),
    ("recurrence_avx512.cc", ["-mavx2", "-mfma", "-mavx512f", "-mavx512dq", "-mavx512vl", "-mavx512bw"]),
]


class BuildKernels(build_ext):
    """build_ext that adds the FFI headers and compiles each x86 variant with its own flags."""

    def build_extension(self, ext: Extension) -> None:
        from distutils.errors import CompileError

        try:
            import jaxlib
        except ImportError as err:
            raise CompileError(f"jaxlib (for the XLA FFI headers) is not importable: {err}") from err
        ext.include_dirs.append(os.path.join(os.path.dirname(jaxlib.__file__), "include"))
        for source, flags in ISA_VARIANTS if X86 else []:
            objects = self.compiler.compile(
                [f"{KERNELS}/{source}"], output_dir=self.build_temp, extra_postargs=FLAGS + ["-fPIC", *flags]
            )
            ext.extra_objects = list(ext.extra_objects or []) + objects
        super().build_extension(ext)


setup(
    ext_modules=[
        Extension(
            "s2s_jax.kernels.recurrence_cpu",
            sources=[f"{KERNELS}/recurrence_ffi.cc", f"{KERNELS}/recurrence_generic.cc"]
            + ([] if X86 else [f"{KERNELS}/{source}" for source, _ in ISA_VARIANTS]),
            depends=[f"{KERNELS}/recurrence_kernels.h", f"{KERNELS}/recurrence_types.h"],
            extra_compile_args=FLAGS,
            language="c++",
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildKernels},
)
