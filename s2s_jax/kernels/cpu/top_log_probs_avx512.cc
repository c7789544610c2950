// The row function for x86-64 CPUs with AVX-512 (F, DQ, VL, BW); this file alone is compiled
// with those flags (setup.py), and top_log_probs_ffi.cc calls it only where the CPU has them.
#include "top_log_probs_types.h"

#if defined(__AVX512F__) && defined(__AVX512DQ__)
#include <cmath>
#include <cstring>
#include <immintrin.h>

namespace top_log_probs_avx512 {
#define KERNELS_ISA "avx512"
#define VW 16
#include "top_log_probs_row.h"
}  // namespace top_log_probs_avx512

const TopLogProbsKernels* top_log_probs_avx512_kernels() { return &top_log_probs_avx512::kKernels; }
#else
const TopLogProbsKernels* top_log_probs_avx512_kernels() { return nullptr; }
#endif
