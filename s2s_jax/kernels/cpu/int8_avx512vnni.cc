// The int8 inner loops for x86-64 CPUs with AVX-512 VNNI; this file alone is compiled with
// -mavx2 -mfma -mavx512f -mavx512dq -mavx512vl -mavx512bw -mavx512vnni (setup.py), and int8_ffi.cc
// calls it only where the CPU has them. A 64-byte vector holds 4 K-values of 16 columns; vpdpbusd multiplies
// unsigned by signed bytes and adds each column's 4 products into its int32 lane, so the
// sign trick runs it on |x| and w negated where x < 0 (a byte mask: AVX-512 has no vpsignb).
#include "int8_types.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#include <immintrin.h>

namespace int8_avx512vnni {
#define KERNELS_ISA "avx512vnni"
#define NV 4  // vectors per tile
#define MR 4  // 16 accumulators + 4 absolutes + weights + temporaries of 32 registers
#define BLOCK (16 * NV)

template <int R, bool FULL>
static void tile(const Int8Gemm& g, int r, int n, int cols, int k0, int k1, bool first, bool last) {
  __mmask16 mask[NV];
  for (int v = 0; v < NV; ++v) {
    const int c = cols - 16 * v;
    mask[v] = c >= 16 ? 0xFFFF : c <= 0 ? 0 : static_cast<__mmask16>((1u << c) - 1);
  }
  __m512i acc[R][NV];
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < NV; ++v) {
      const float* y = g.y + static_cast<size_t>(r + i) * g.N + n + 16 * v;
      acc[i][v] = first  ? _mm512_setzero_si512()
                  : FULL ? _mm512_loadu_si512(y)
                         : _mm512_maskz_loadu_epi32(mask[v], y);
    }
  const __m512i zero = _mm512_setzero_si512();
  const int* x[R];
  for (int i = 0; i < R; ++i) x[i] = reinterpret_cast<const int*>(g.xq) + static_cast<size_t>(r + i) * g.K4;
  const int* w = reinterpret_cast<const int*>(g.w) + static_cast<size_t>(k0) * g.N + n;
  for (int k = k0; k < k1; ++k, w += g.N) {
    __m512i xa[R];
    __mmask64 negative[R];
    for (int i = 0; i < R; ++i) {
      const __m512i xb = _mm512_set1_epi32(x[i][k]);
      xa[i] = _mm512_abs_epi8(xb);
      negative[i] = _mm512_movepi8_mask(xb);
    }
    for (int v = 0; v < NV; ++v) {
      const __m512i wv = FULL ? _mm512_loadu_si512(w + 16 * v) : _mm512_maskz_loadu_epi32(mask[v], w + 16 * v);
      for (int i = 0; i < R; ++i)
        acc[i][v] = _mm512_dpbusd_epi32(acc[i][v], xa[i], _mm512_mask_sub_epi8(wv, negative[i], zero, wv));
    }
  }
  for (int i = 0; i < R; ++i) {
    float* y = g.y + static_cast<size_t>(r + i) * g.N + n;
    const __m512 rs = _mm512_set1_ps(g.row_scale[r + i]);
    for (int v = 0; v < NV; ++v) {
      if (last) {
        const __m512 s = FULL ? _mm512_loadu_ps(g.scale + n + 16 * v) : _mm512_maskz_loadu_ps(mask[v], g.scale + n + 16 * v);
        const __m512 out = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[i][v]), rs), s);
        if (FULL)
          _mm512_storeu_ps(y + 16 * v, out);
        else
          _mm512_mask_storeu_ps(y + 16 * v, mask[v], out);
      } else if (FULL) {
        _mm512_storeu_si512(y + 16 * v, acc[i][v]);
      } else {
        _mm512_mask_storeu_epi32(y + 16 * v, mask[v], acc[i][v]);
      }
    }
  }
}

#include "int8_loops.h"
}  // namespace int8_avx512vnni

const Int8Kernels* int8_avx512vnni_kernels() { return &int8_avx512vnni::kKernels; }
#else
const Int8Kernels* int8_avx512vnni_kernels() { return nullptr; }
#endif
