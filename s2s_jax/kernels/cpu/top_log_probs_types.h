// The row function of one instruction set, shared by the dispatcher (top_log_probs_ffi.cc)
// and the per-instruction-set builds of top_log_probs_row.h.
#pragma once

#include <cstdint>

struct TopLogProbsKernels {
  const char* isa;
  // One row x[0:V] -> its n (1 <= n <= V) best tokens, best first: values[t] = log_softmax(x)
  // at indices[t]. keys and slots are scratch space of n entries each.
  void (*row)(const float* x, int V, int n, float* values, int32_t* indices, int32_t* keys, int32_t* slots);
};

const TopLogProbsKernels* top_log_probs_generic_kernels();
const TopLogProbsKernels* top_log_probs_avx2_kernels();    // null where the build has no AVX2 variant
const TopLogProbsKernels* top_log_probs_avx512_kernels();  // null where the build has no AVX-512 variant
