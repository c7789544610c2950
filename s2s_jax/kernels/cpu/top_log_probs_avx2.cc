// The row function for x86-64 CPUs with AVX2 and FMA; this file alone is compiled with
// -mavx2 -mfma (setup.py), and top_log_probs_ffi.cc calls it only where the CPU has both.
#include "top_log_probs_types.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <cmath>
#include <cstring>
#include <immintrin.h>

namespace top_log_probs_avx2 {
#define KERNELS_ISA "avx2"
#define VW 8
#include "top_log_probs_row.h"
}  // namespace top_log_probs_avx2

const TopLogProbsKernels* top_log_probs_avx2_kernels() { return &top_log_probs_avx2::kKernels; }
#else
const TopLogProbsKernels* top_log_probs_avx2_kernels() { return nullptr; }
#endif
