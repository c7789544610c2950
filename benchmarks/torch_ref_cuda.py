#!/usr/bin/env python3
"""Run ../shared/bench/torch_ref.py unchanged on a CUDA GPU: the PyTorch side of a GPU comparison.

    python3 benchmarks/versus_pytorch.py --torch-python python3 --torch-ref benchmarks/torch_ref_cuda.py

The reference is written for the CPU. Two patches put it on the GPU without editing it: every
tensor it creates lands on `cuda` (torch.set_default_device), and what it draws from its seeded CPU
`torch.Generator` is drawn on the host and moved (a CPU generator cannot draw CUDA tensors; the
batches are the CPU run's). `time.perf_counter` synchronises the GPU first, so each timed region
ends when the GPU's work does, not when the last kernel was queued. The reference is
found at $S2S_BENCH_REF/torch_ref.py (benchmarks/_common.REF_DIR); arguments pass through.
"""

from __future__ import annotations

import runpy
import sys
import time

import _common
import torch


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("error: torch_ref_cuda.py needs a CUDA GPU (torch.cuda.is_available() is False)")
    torch.set_default_device("cuda")
    randint = torch.randint

    def randint_drawn_on_host(*args, generator=None, **kwargs):
        if generator is not None and generator.device.type == "cpu":
            return randint(*args, generator=generator, device="cpu", **kwargs).to("cuda")
        return randint(*args, generator=generator, **kwargs)

    torch.randint = randint_drawn_on_host
    clock = time.perf_counter

    def synchronised_clock():
        torch.cuda.synchronize()
        return clock()

    time.perf_counter = synchronised_clock
    ref = _common.REF_DIR / "torch_ref.py"
    sys.path.insert(0, str(ref.parent))
    sys.argv = [str(ref), *sys.argv[1:]]
    runpy.run_path(str(ref), run_name="__main__")


if __name__ == "__main__":
    main()
