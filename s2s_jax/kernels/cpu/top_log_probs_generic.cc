// The row function for any CPU: the compiler's baseline instruction set (SSE2 on x86-64).
#include "top_log_probs_types.h"

#include <cmath>
#include <cstring>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace top_log_probs_generic {
#define KERNELS_ISA "generic"
#define VW 4
#include "top_log_probs_row.h"
}  // namespace top_log_probs_generic

const TopLogProbsKernels* top_log_probs_generic_kernels() { return &top_log_probs_generic::kKernels; }
