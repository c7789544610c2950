// The int8 inner loops for any CPU: plain C++ at the compiler's baseline instruction set.
#include <cstring>

#include "int8_types.h"

namespace int8_generic {
#define KERNELS_ISA "generic"
#define MR 4
#define BLOCK 16

template <int R, bool FULL>
static void tile(const Int8Gemm& g, int r, int n, int cols, int k0, int k1, bool first, bool last) {
  const int C = FULL ? BLOCK : cols;
  int32_t acc[R][BLOCK];
  for (int i = 0; i < R; ++i) {
    float* y = g.y + static_cast<size_t>(r + i) * g.N + n;
    if (first)
      std::memset(acc[i], 0, sizeof(acc[i]));
    else
      std::memcpy(acc[i], y, sizeof(int32_t) * C);  // the int32 sums of the chunks before
  }
  for (int k = k0; k < k1; ++k) {
    const int8_t* w = g.w + (static_cast<size_t>(k) * g.N + n) * 4;
    for (int i = 0; i < R; ++i) {
      const int8_t* x = g.xq + (static_cast<size_t>(r + i) * g.K4 + k) * 4;
      for (int c = 0; c < C; ++c)
        acc[i][c] += x[0] * w[4 * c] + x[1] * w[4 * c + 1] + x[2] * w[4 * c + 2] + x[3] * w[4 * c + 3];
    }
  }
  for (int i = 0; i < R; ++i) {
    float* y = g.y + static_cast<size_t>(r + i) * g.N + n;
    if (last) {
      const float rs = g.row_scale[r + i];
      for (int c = 0; c < C; ++c) y[c] = (static_cast<float>(acc[i][c]) * rs) * g.scale[n + c];
    } else {
      std::memcpy(y, acc[i], sizeof(int32_t) * C);
    }
  }
}

#include "int8_loops.h"
}  // namespace int8_generic

const Int8Kernels* int8_generic_kernels() { return &int8_generic::kKernels; }
