// The recurrences' inner loops, written once with GCC/Clang vector extensions and compiled
// once per instruction set (recurrence_generic.cc, recurrence_avx2.cc and recurrence_avx512.cc
// include this file inside their own namespace); recurrence_ffi.cc picks one at run time and runs
// the time loop. Nothing here allocates or uses the C++ library, so the builds share no symbol.
//
// Layouts (row-major, float32): x_proj [B, T, G*H] with gates in flax's order (LSTM i, f,
// g, o; GRU r, z, n); the recurrent kernel W [H, G*H]. For the forward GEMM h @ W, W is
// packed into panels of VW hidden units: panel p holds, for k < H, the G*VW columns
// (gate, unit p*VW .. p*VW+VW-1), so one MR-row tile of h times one panel gives every
// gate of VW units and the cell update runs in the GEMM's epilogue. For the backward
// GEMM dgates @ W^T, W^T is packed into panels of 4*VW units: panel p holds, for
// k < G*H, the 4*VW entries W[p*4*VW .. p*4*VW+4*VW-1, k].

// VW (floats per vector: 8 for AVX2, 16 for AVX-512, set by the including file) and MR (rows
// of a GEMM tile: MR x 4 accumulators + MR broadcasts + 1 must fit in the vector registers).
typedef float vf __attribute__((vector_size(4 * VW)));
typedef float vfu __attribute__((vector_size(4 * VW), aligned(4)));
typedef int vi __attribute__((vector_size(4 * VW)));

static inline vf loadv(const float* p) { return *(const vfu*)p; }
static inline void storev(float* p, vf v) { *(vfu*)p = v; }
static inline vf splat(float x) {
  vf v = {};
  return v + x;
}

// Loads n <= VW floats (the rest zero) / stores the first n lanes: the last panel of an H
// that is not a multiple of VW.
static inline vf load_n(const float* p, int n) {
  if (n == VW) return loadv(p);
  float tmp[VW] = {};
  for (int i = 0; i < n; ++i) tmp[i] = p[i];
  return loadv(tmp);
}
static inline void store_n(float* p, vf v, int n) {
  if (n == VW) {
    storev(p, v);
    return;
  }
  float tmp[VW];
  storev(tmp, v);
  for (int i = 0; i < n; ++i) p[i] = tmp[i];
}

static inline vf vmin(vf a, vf b) { return a < b ? a : b; }
static inline vf vmax(vf a, vf b) { return a > b ? a : b; }

// exp, Cephes' single-precision polynomial (relative error ~1e-7), clamped to finite results.
static inline vf vexp(vf x) {
  x = vmax(vmin(x, splat(88.0f)), splat(-87.0f));
  vf fx = x * 1.44269504088896341f + 0.5f;
  vf t = __builtin_convertvector(__builtin_convertvector(fx, vi), vf);
  t -= __builtin_convertvector(-(t > fx), vf);  // floor
  x -= t * 0.693359375f;
  x -= t * -2.12194440e-4f;
  vf z = x * x;
  vf y = splat(1.9875691500e-4f);
  y = y * x + 1.3981999507e-3f;
  y = y * x + 8.3334519073e-3f;
  y = y * x + 4.1665795894e-2f;
  y = y * x + 1.6666665459e-1f;
  y = y * x + 5.0000001201e-1f;
  y = y * z + x + 1.0f;
  vi e = (__builtin_convertvector(t, vi) + 127) << 23;
  return y * (vf)e;
}

static inline vf vsigmoid(vf x) { return 1.0f / (1.0f + vexp(-x)); }

// tanh, Eigen's rational approximation (relative error < 4e-7 over the floats).
static inline vf vtanh(vf x) {
  vf c = vmax(vmin(x, splat(7.90531110763549805f)), splat(-7.90531110763549805f));
  vf x2 = c * c;
  vf p = splat(-2.76076847742355e-16f);
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  p = p * c;
  vf q = splat(1.19825839466702e-06f);
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  vf small = __builtin_convertvector(-((x < 0.0004f) & (x > -0.0004f)), vf);
  return small * x + (1.0f - small) * (p / q);
}

// acc[r][v] = sum_k a[r][k] * panel[k][VW v .. VW v + VW-1] for MR rows and NV vectors of columns.
template <int ROWS, int NV>
static inline void tile(const float* const* a, const float* panel, int K, vf (&acc)[ROWS][NV]) {
  for (int r = 0; r < ROWS; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = splat(0.0f);
  for (int k = 0; k < K; ++k) {
    const float* p = panel + k * (NV * VW);
    vf ar[ROWS];
    for (int r = 0; r < ROWS; ++r) ar[r] = splat(a[r][k]);
    for (int v = 0; v < NV; ++v) {
      vf b = loadv(p + VW * v);
      for (int r = 0; r < ROWS; ++r) acc[r][v] += ar[r] * b;
    }
  }
}

// Runs `tile` over `nrows` rows (row pointers `a`) in blocks of MR and calls epi(row index,
// acc row) for each row: the GEMM's epilogue sees one row's NV vectors at a time.
template <int NV, typename Epilogue>
static inline void rows_times_panel(const float* const* a, int nrows, const float* panel, int K, Epilogue epi) {
  int i = 0;
  for (; i + MR <= nrows; i += MR) {
    vf acc[MR][NV];
    tile<MR, NV>(a + i, panel, K, acc);
    for (int r = 0; r < MR; ++r) epi(i + r, acc[r]);
  }
  for (; i < nrows; ++i) {
    vf acc[1][NV];
    tile<1, NV>(a + i, panel, K, acc);
    epi(i, acc[0]);
  }
}



// Multiplies each row's vector (row_of(b): K floats) by the packed panels [p0, p1) (panel_of(p))
// and calls epi(p, b, acc) for every row and panel; the rows go 510 at a time.
template <int NV, typename RowOf, typename PanelOf, typename Epilogue>
static inline void rows_times_panels(const int* rows, int nrows, int p0, int p1, int K, RowOf row_of, PanelOf panel_of,
                                     Epilogue epi) {
  const float* ptr[510];
  for (int base = 0; base < nrows; base += 510) {
    const int n = nrows - base < 510 ? nrows - base : 510;
    for (int i = 0; i < n; ++i) ptr[i] = row_of(rows[base + i]);
    for (int p = p0; p < p1; ++p)
      rows_times_panel<NV>(ptr, n, panel_of(p), K, [&](int i, vf* acc) { epi(p, rows[base + i], acc); });
  }
}

static void pack_fwd(const float* w, int H, int G, float* packed) {
  int panels = (H + VW - 1) / VW;
  for (int p = 0; p < panels; ++p)
    for (int k = 0; k < H; ++k)
      for (int g = 0; g < G; ++g)
        for (int u = 0; u < VW; ++u) {
          int unit = p * VW + u;
          packed[((size_t)p * H + k) * G * VW + g * VW + u] = unit < H ? w[(size_t)k * G * H + g * H + unit] : 0.0f;
        }
}

static void pack_bwd(const float* w, int H, int G, float* packed) {
  int panels = (H + 4 * VW - 1) / (4 * VW), K = G * H;
  for (int p = 0; p < panels; ++p)
    for (int k = 0; k < K; ++k)
      for (int u = 0; u < 4 * VW; ++u) {
        int unit = p * 4 * VW + u;
        packed[((size_t)p * K + k) * 4 * VW + u] = unit < H ? w[(size_t)unit * K + k] : 0.0f;
      }
}

static inline size_t at(const Rec& a, int b, int t, int width) { return ((size_t)b * a.T + t) * width; }

// ---------------------------------------------------------------------------- LSTM forward
// Step t for forward panels [p0, p1) over the rows `rows` (each with t < len).
static void lstm_fwd_step(const Rec& a, int t, int p0, int p1, const int* rows, int nrows) {
  const int H = a.H, G4 = 4 * H;
  auto row_of = [&](int b) { return t == 0 ? a.h0 + (size_t)b * H : a.out + at(a, b, t - 1, H); };
  auto panel_of = [&](int p) { return a.fwd + (size_t)p * H * 4 * VW; };
  rows_times_panels<4>(rows, nrows, p0, p1, H, row_of, panel_of, [&](int p, int b, vf* acc) {
    const int u = p * VW, nu = H - u < VW ? H - u : VW;
    const float* x = a.x + at(a, b, t, G4) + u;
    const float* c_prev = a.c_all ? (t == 0 ? a.c0 + (size_t)b * H : a.c_all + at(a, b, t - 1, H))
                                  : (t == 0 ? a.c0 : a.c_state) + (size_t)b * H;
    vf ig = vsigmoid(acc[0] + load_n(x, nu));
    vf fg = vsigmoid(acc[1] + load_n(x + H, nu));
    vf gg = vtanh(acc[2] + load_n(x + 2 * H, nu));
    vf og = vsigmoid(acc[3] + load_n(x + 3 * H, nu));
    vf c = fg * load_n(c_prev + u, nu) + ig * gg;
    vf h = og * vtanh(c);
    store_n(a.out + at(a, b, t, H) + u, h, nu);
    store_n((a.c_all ? a.c_all + at(a, b, t, H) : a.c_state + (size_t)b * H) + u, c, nu);
    if (a.acts) {
      float* s = a.acts + at(a, b, t, G4) + u;
      store_n(s, ig, nu);
      store_n(s + H, fg, nu);
      store_n(s + 2 * H, gg, nu);
      store_n(s + 3 * H, og, nu);
    }
  });
}

// ---------------------------------------------------------------------------- LSTM backward
// Step t (T-1 down to 0) for backward panels [p0, p1): dh = d_out + dgates[t+1] @ W^T
// (+ d_hT at the row's last step), then the cell's backward writes dgates[t] and dc.
static void lstm_bwd_step(const Rec& a, int t, int p0, int p1, const int* rows, int nrows) {
  const int H = a.H, G4 = 4 * H;
  auto row_of = [&](int b) { return t + 1 < a.len[b] ? a.d_gates + at(a, b, t + 1, G4) : a.zero; };
  auto panel_of = [&](int p) { return a.bwd + (size_t)p * G4 * 4 * VW; };
  rows_times_panels<4>(rows, nrows, p0, p1, G4, row_of, panel_of, [&](int p, int b, vf* acc) {
    const bool last = t + 1 == a.len[b];
    for (int v = 0; v < 4; ++v) {
      const int u = p * 4 * VW + v * VW;
      if (u >= H) break;
      const int nu = H - u < VW ? H - u : VW;
      const size_t bu = (size_t)b * H + u;
      vf dh = acc[v] + load_n(a.d_out + at(a, b, t, H) + u, nu);
      vf dc = last ? load_n(a.d_cT + bu, nu) : load_n(a.d_carry + bu, nu);
      if (last) dh += load_n(a.d_hT + bu, nu);
      const float* s = a.acts + at(a, b, t, G4) + u;
      vf ig = load_n(s, nu), fg = load_n(s + H, nu), gg = load_n(s + 2 * H, nu), og = load_n(s + 3 * H, nu);
      vf tc = vtanh(load_n(a.c_all + at(a, b, t, H) + u, nu));
      vf c_prev = load_n(t == 0 ? a.c0 + bu : a.c_all + at(a, b, t - 1, H) + u, nu);
      dc += dh * og * (1.0f - tc * tc);
      vf d_o = dh * tc * og * (1.0f - og);
      vf d_i = dc * gg * ig * (1.0f - ig);
      vf d_g = dc * ig * (1.0f - gg * gg);
      vf d_f = dc * c_prev * fg * (1.0f - fg);
      store_n(a.d_carry + bu, dc * fg, nu);
      float* d = a.d_gates + at(a, b, t, G4) + u;
      store_n(d, d_i, nu);
      store_n(d + H, d_f, nu);
      store_n(d + 2 * H, d_g, nu);
      store_n(d + 3 * H, d_o, nu);
    }
  });
}

// d_h0 = dgates[0] @ W^T (+ the GRU's direct part) for rows with len > 0 (panels [p0, p1)).
static void dh0_step(const Rec& a, int p0, int p1, const int* rows, int nrows) {
  const int H = a.H, GH = a.G * H;
  auto row_of = [&](int b) { return a.d_gates + at(a, b, 0, GH); };
  auto panel_of = [&](int p) { return a.bwd + (size_t)p * GH * 4 * VW; };
  rows_times_panels<4>(rows, nrows, p0, p1, GH, row_of, panel_of, [&](int p, int b, vf* acc) {
    for (int v = 0; v < 4; ++v) {
      const int u = p * 4 * VW + v * VW;
      if (u >= H) break;
      const int nu = H - u < VW ? H - u : VW;
      const size_t bu = (size_t)b * H + u;
      vf dh = acc[v];
      if (a.G == 3) dh += load_n(a.d_carry + bu, nu);  // GRU: h0 also reaches h1 directly
      store_n(a.d_h0 + bu, dh, nu);
    }
  });
}

// ---------------------------------------------------------------------------- GRU forward
// r = s(x_r + h W_r), z = s(x_z + h W_z), n = tanh(x_n + r (h W_n + b_n)), h' = (1 - z) n + z h.
static void gru_fwd_step(const Rec& a, int t, int p0, int p1, const int* rows, int nrows) {
  const int H = a.H, G3 = 3 * H;
  auto row_of = [&](int b) { return t == 0 ? a.h0 + (size_t)b * H : a.out + at(a, b, t - 1, H); };
  auto panel_of = [&](int p) { return a.fwd + (size_t)p * H * 3 * VW; };
  rows_times_panels<3>(rows, nrows, p0, p1, H, row_of, panel_of, [&](int p, int b, vf* acc) {
    const int u = p * VW, nu = H - u < VW ? H - u : VW;
    const vf bias_n = load_n(a.bias_n + u, nu);
    const float* x = a.x + at(a, b, t, G3) + u;
    vf r = vsigmoid(acc[0] + load_n(x, nu));
    vf z = vsigmoid(acc[1] + load_n(x + H, nu));
    vf hn = acc[2] + bias_n;
    vf nn = vtanh(load_n(x + 2 * H, nu) + r * hn);
    vf h = (1.0f - z) * nn + z * load_n(row_of(b) + u, nu);
    store_n(a.out + at(a, b, t, H) + u, h, nu);
    if (a.acts) {
      float* s = a.acts + at(a, b, t, 4 * H) + u;
      store_n(s, r, nu);
      store_n(s + H, z, nu);
      store_n(s + 2 * H, nn, nu);
      store_n(s + 3 * H, hn, nu);
    }
  });
}

// ---------------------------------------------------------------------------- GRU backward
static void gru_bwd_step(const Rec& a, int t, int p0, int p1, const int* rows, int nrows) {
  const int H = a.H, G3 = 3 * H;
  auto row_of = [&](int b) { return t + 1 < a.len[b] ? a.d_gates + at(a, b, t + 1, G3) : a.zero; };
  auto panel_of = [&](int p) { return a.bwd + (size_t)p * G3 * 4 * VW; };
  rows_times_panels<4>(rows, nrows, p0, p1, G3, row_of, panel_of, [&](int p, int b, vf* acc) {
    const bool last = t + 1 == a.len[b];
    for (int v = 0; v < 4; ++v) {
      const int u = p * 4 * VW + v * VW;
      if (u >= H) break;
      const int nu = H - u < VW ? H - u : VW;
      const size_t bu = (size_t)b * H + u;
      vf dh = acc[v] + load_n(a.d_out + at(a, b, t, H) + u, nu);
      dh += last ? load_n(a.d_hT + bu, nu) : load_n(a.d_carry + bu, nu);
      const float* s = a.acts + at(a, b, t, 4 * H) + u;
      vf r = load_n(s, nu), z = load_n(s + H, nu), nn = load_n(s + 2 * H, nu), hn = load_n(s + 3 * H, nu);
      vf h_prev = load_n(t == 0 ? a.h0 + bu : a.out + at(a, b, t - 1, H) + u, nu);
      vf dn = dh * (1.0f - z) * (1.0f - nn * nn);
      vf dz = dh * (h_prev - nn) * z * (1.0f - z);
      vf dr = dn * hn * r * (1.0f - r);
      store_n(a.d_carry + bu, dh * z, nu);
      float* d = a.d_gates + at(a, b, t, G3) + u;
      store_n(d, dr, nu);
      store_n(d + H, dz, nu);
      store_n(d + 2 * H, dn * r, nu);
      float* dx = a.d_x + at(a, b, t, G3) + u;
      store_n(dx, dr, nu);
      store_n(dx + H, dz, nu);
      store_n(dx + 2 * H, dn, nu);
    }
  });
}

static const Kernels kKernels = {
    KERNELS_ISA, VW, pack_fwd, pack_bwd, lstm_fwd_step, lstm_bwd_step, gru_fwd_step, gru_bwd_step, dh0_step,
};
