// The int8 inner loops for x86-64 CPUs with AVX2; this file alone is compiled with -mavx2
// (setup.py), and int8_ffi.cc calls it only where the CPU has it. A 32-byte vector holds 4
// K-values of 8 columns; with the sign trick maddubs(|x|, sign(w, x)) multiplies unsigned by
// signed bytes and adds pairs into int16 (at most 2 * 127 * 127: no saturation), and madd
// with ones adds those pairs into one int32 lane per column.
#include "int8_types.h"

#if defined(__AVX2__)
#include <immintrin.h>

namespace int8_avx2 {
#define KERNELS_ISA "avx2"
#define NV 4  // vectors per tile
#define MR 2  // 8 accumulators + 2 broadcasts + 2 absolutes + weights + ones of 16 registers
#define BLOCK (8 * NV)

template <int R, bool FULL>
static void tile(const Int8Gemm& g, int r, int n, int cols, int k0, int k1, bool first, bool last) {
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256i mask[NV], acc[R][NV];
  for (int v = 0; v < NV; ++v) mask[v] = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols - 8 * v), iota);
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < NV; ++v) {
      const int* y = reinterpret_cast<const int*>(g.y + static_cast<size_t>(r + i) * g.N + n + 8 * v);
      acc[i][v] = first  ? _mm256_setzero_si256()
                  : FULL ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y))
                         : _mm256_maskload_epi32(y, mask[v]);
    }
  const __m256i ones = _mm256_set1_epi16(1);
  const int* x[R];
  for (int i = 0; i < R; ++i) x[i] = reinterpret_cast<const int*>(g.xq) + static_cast<size_t>(r + i) * g.K4;
  const int* w = reinterpret_cast<const int*>(g.w) + static_cast<size_t>(k0) * g.N + n;
  for (int k = k0; k < k1; ++k, w += g.N) {
    __m256i xb[R], xa[R];
    for (int i = 0; i < R; ++i) {
      xb[i] = _mm256_set1_epi32(x[i][k]);
      xa[i] = _mm256_abs_epi8(xb[i]);
    }
    for (int v = 0; v < NV; ++v) {
      const __m256i wv = FULL ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 8 * v))
                              : _mm256_maskload_epi32(w + 8 * v, mask[v]);
      for (int i = 0; i < R; ++i) {
        const __m256i pairs = _mm256_maddubs_epi16(xa[i], _mm256_sign_epi8(wv, xb[i]));
        acc[i][v] = _mm256_add_epi32(acc[i][v], _mm256_madd_epi16(pairs, ones));
      }
    }
  }
  for (int i = 0; i < R; ++i) {
    float* y = g.y + static_cast<size_t>(r + i) * g.N + n;
    const __m256 rs = _mm256_set1_ps(g.row_scale[r + i]);
    for (int v = 0; v < NV; ++v) {
      if (last) {
        const __m256 s = FULL ? _mm256_loadu_ps(g.scale + n + 8 * v) : _mm256_maskload_ps(g.scale + n + 8 * v, mask[v]);
        const __m256 out = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[i][v]), rs), s);
        if (FULL)
          _mm256_storeu_ps(y + 8 * v, out);
        else
          _mm256_maskstore_ps(y + 8 * v, mask[v], out);
      } else if (FULL) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + 8 * v), acc[i][v]);
      } else {
        _mm256_maskstore_epi32(reinterpret_cast<int*>(y + 8 * v), mask[v], acc[i][v]);
      }
    }
  }
}

#include "int8_loops.h"
}  // namespace int8_avx2

const Int8Kernels* int8_avx2_kernels() { return &int8_avx2::kKernels; }
#else
const Int8Kernels* int8_avx2_kernels() { return nullptr; }
#endif
