// The loop over K chunks, column tiles and row tiles around one instruction set's tile; the
// including file defines MR (rows per tile), BLOCK (columns per tile) and
// template <int R, bool FULL> tile(g, r, n, cols, k0, k1, first, last), which multiplies rows
// [r, r+R) by the columns [n, n+cols) over the K groups [k0, k1): it starts from zero when
// `first` (else from the int32 sums stored in y) and writes the float result when `last` (else
// the sums). K goes in chunks of KC groups so each tile's weights come from KC neighbouring
// rows of the packed matrix, which the hardware prefetchers follow, and stay in L1 while every
// row tile uses them.
#define KC 32

template <int R>
static inline void rows_tile(const Int8Gemm& g, int r, int n, int cols, int k0, int k1, bool first, bool last) {
  if (cols == BLOCK)
    tile<R, true>(g, r, n, cols, k0, k1, first, last);
  else
    tile<R, false>(g, r, n, cols, k0, k1, first, last);
}

// The last M % MR rows: one tile of `left` rows.
template <int R>
static inline void rest_tile(const Int8Gemm& g, int left, int r, int n, int cols, int k0, int k1, bool first,
                             bool last) {
  if constexpr (R > 0) {
    if (left == R)
      rows_tile<R>(g, r, n, cols, k0, k1, first, last);
    else
      rest_tile<R - 1>(g, left, r, n, cols, k0, k1, first, last);
  }
}

static void gemm(const Int8Gemm& g, int n0, int n1) {
  for (int k0 = 0; k0 < g.K4; k0 += KC) {
    const int k1 = k0 + KC < g.K4 ? k0 + KC : g.K4;
    const bool first = k0 == 0, last = k1 == g.K4;
    for (int n = n0; n < n1; n += BLOCK) {
      const int cols = n1 - n < BLOCK ? n1 - n : BLOCK;
      int r = 0;
      for (; r + MR <= g.M; r += MR) rows_tile<MR>(g, r, n, cols, k0, k1, first, last);
      rest_tile<MR - 1>(g, g.M - r, r, n, cols, k0, k1, first, last);
    }
  }
}

static const Int8Kernels kKernels = {KERNELS_ISA, BLOCK, gemm};
