// The inner loops for x86-64 CPUs with AVX2 and FMA; this file alone is compiled with
// -mavx2 -mfma (setup.py), and recurrence_ffi.cc calls it only where the CPU has both.
#include "recurrence_types.h"

#if defined(__AVX2__) && defined(__FMA__)
namespace avx2 {
#define KERNELS_ISA "avx2"
#define VW 8
#define MR 3  // 12 accumulators + 3 broadcasts + 1 of 16 registers
#include "recurrence_kernels.h"
}  // namespace avx2

const Kernels* avx2_kernels() { return &avx2::kKernels; }
#else
const Kernels* avx2_kernels() { return nullptr; }
#endif
