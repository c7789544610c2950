// One int8 matmul call's sizes and buffers, shared by the dispatcher (int8_ffi.cc) and the
// per-instruction-set inner loops (int8_generic.cc, int8_avx2.cc, int8_avx512vnni.cc).
#pragma once

#include <cstdint>

struct Int8Gemm {
  int M, K4, N;            // rows, groups of 4 along K, columns
  const int8_t* xq;        // [M, 4*K4] the rows quantized (zero past K)
  const float* row_scale;  // [M] each row's step (0 for an all-zero row)
  const int8_t* w;         // [K4, N, 4] w[k4, n, j] = q[4*k4 + j, n]: one int32 lane per column
  const float* scale;      // [N] each column's step
  float* y;                // [M, N] the result; holds the int32 sums between chunks of K
};

// The inner loops of one instruction set; int8_ffi.cc picks one at run time.
struct Int8Kernels {
  const char* isa;
  int block;  // columns per tile: gemm's n0 is a multiple of it
  // y[:, n0:n1] for every row: K in chunks, each chunk over all tiles of columns [n0, n1).
  void (*gemm)(const Int8Gemm& g, int n0, int n1);
};

const Int8Kernels* int8_generic_kernels();
const Int8Kernels* int8_avx2_kernels();        // null where the build has no AVX2 variant
const Int8Kernels* int8_avx512vnni_kernels();  // null where the build has no AVX-512 VNNI variant
