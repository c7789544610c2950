// The inner loops for x86-64 CPUs with AVX-512 (F, DQ, VL, BW); this file alone is compiled
// with those flags (setup.py), and recurrence_ffi.cc calls it only where the CPU has them.
#include "recurrence_types.h"

#if defined(__AVX512F__) && defined(__AVX512DQ__)
namespace avx512 {
#define KERNELS_ISA "avx512"
#define VW 16
#define MR 6  // 24 accumulators + 6 broadcasts + 1 of 32 registers
#include "recurrence_kernels.h"
}  // namespace avx512

const Kernels* avx512_kernels() { return &avx512::kKernels; }
#else
const Kernels* avx512_kernels() { return nullptr; }
#endif
