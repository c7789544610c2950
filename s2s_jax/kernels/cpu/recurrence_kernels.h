// The recurrences' inner loops, written once with GCC/Clang vector extensions and compiled
// once per instruction set (recurrence_generic.cc, recurrence_avx2.cc include this file
// inside their own namespace); recurrence_ffi.cc picks one at run time and runs the time
// loop. Nothing here allocates or uses the C++ library, so the two builds share no symbol.
//
// Layouts (row-major, float32): x_proj [B, T, G*H] with gates in flax's order (LSTM i, f,
// g, o; GRU r, z, n); the recurrent kernel W [H, G*H]. For the forward GEMM h @ W, W is
// packed into panels of 8 hidden units: panel p holds, for k < H, the G*8 columns
// (gate, unit p*8..p*8+7), so one 3-row tile of h times one panel gives every gate of
// 8 units and the cell update runs in the GEMM's epilogue. For the backward GEMM
// dgates @ W^T, W^T is packed into panels of 32 units: panel p holds, for k < G*H, the
// 32 entries W[p*32 .. p*32+31, k].

typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));
typedef int v8i __attribute__((vector_size(32)));

static inline v8 load8(const float* p) { return *(const v8u*)p; }
static inline void store8(float* p, v8 v) { *(v8u*)p = v; }
static inline v8 splat(float x) { return (v8){x, x, x, x, x, x, x, x}; }

// Loads n <= 8 floats (the rest zero) / stores the first n lanes: the last panel of an H
// that is not a multiple of 8.
static inline v8 load_n(const float* p, int n) {
  if (n == 8) return load8(p);
  float tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int i = 0; i < n; ++i) tmp[i] = p[i];
  return load8(tmp);
}
static inline void store_n(float* p, v8 v, int n) {
  if (n == 8) {
    store8(p, v);
    return;
  }
  float tmp[8];
  store8(tmp, v);
  for (int i = 0; i < n; ++i) p[i] = tmp[i];
}

static inline v8 vmin(v8 a, v8 b) { return a < b ? a : b; }
static inline v8 vmax(v8 a, v8 b) { return a > b ? a : b; }

// exp, Cephes' single-precision polynomial (relative error ~1e-7), clamped to finite results.
static inline v8 vexp(v8 x) {
  x = vmax(vmin(x, splat(88.0f)), splat(-87.0f));
  v8 fx = x * 1.44269504088896341f + 0.5f;
  v8 t = __builtin_convertvector(__builtin_convertvector(fx, v8i), v8);
  t -= __builtin_convertvector(-(t > fx), v8);  // floor
  x -= t * 0.693359375f;
  x -= t * -2.12194440e-4f;
  v8 z = x * x;
  v8 y = splat(1.9875691500e-4f);
  y = y * x + 1.3981999507e-3f;
  y = y * x + 8.3334519073e-3f;
  y = y * x + 4.1665795894e-2f;
  y = y * x + 1.6666665459e-1f;
  y = y * x + 5.0000001201e-1f;
  y = y * z + x + 1.0f;
  v8i e = (__builtin_convertvector(t, v8i) + 127) << 23;
  return y * (v8)e;
}

static inline v8 vsigmoid(v8 x) { return 1.0f / (1.0f + vexp(-x)); }

// tanh, Eigen's rational approximation (relative error < 4e-7 over the floats).
static inline v8 vtanh(v8 x) {
  v8 c = vmax(vmin(x, splat(7.90531110763549805f)), splat(-7.90531110763549805f));
  v8 x2 = c * c;
  v8 p = splat(-2.76076847742355e-16f);
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  p = p * c;
  v8 q = splat(1.19825839466702e-06f);
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  v8 small = __builtin_convertvector(-((x < 0.0004f) & (x > -0.0004f)), v8);
  return small * x + (1.0f - small) * (p / q);
}

// acc[r][v] = sum_k a[r][k] * panel[k][8v .. 8v+7] for MR rows and NV vectors of columns.
template <int MR, int NV>
static inline void tile(const float* const* a, const float* panel, int K, v8 (&acc)[MR][NV]) {
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = splat(0.0f);
  for (int k = 0; k < K; ++k) {
    const float* p = panel + k * (NV * 8);
    v8 ar[MR];
    for (int r = 0; r < MR; ++r) ar[r] = splat(a[r][k]);
    for (int v = 0; v < NV; ++v) {
      v8 b = load8(p + 8 * v);
      for (int r = 0; r < MR; ++r) acc[r][v] += ar[r] * b;
    }
  }
}

// Runs `tile` over `nrows` rows (row pointers `a`) in blocks of 3 and calls epi(row index,
// acc row) for each row: the GEMM's epilogue sees one row's NV vectors at a time.
template <int NV, typename Epilogue>
static inline void rows_times_panel(const float* const* a, int nrows, const float* panel, int K, Epilogue epi) {
  int i = 0;
  for (; i + 3 <= nrows; i += 3) {
    v8 acc[3][NV];
    tile<3, NV>(a + i, panel, K, acc);
    for (int r = 0; r < 3; ++r) epi(i + r, acc[r]);
  }
  for (; i < nrows; ++i) {
    v8 acc[1][NV];
    tile<1, NV>(a + i, panel, K, acc);
    epi(i, acc[0]);
  }
}



static void pack_fwd(const float* w, int H, int G, float* packed) {
  int panels = (H + 7) / 8;
  for (int p = 0; p < panels; ++p)
    for (int k = 0; k < H; ++k)
      for (int g = 0; g < G; ++g)
        for (int u = 0; u < 8; ++u) {
          int unit = p * 8 + u;
          packed[((size_t)p * H + k) * G * 8 + g * 8 + u] = unit < H ? w[(size_t)k * G * H + g * H + unit] : 0.0f;
        }
}

static void pack_bwd(const float* w, int H, int G, float* packed) {
  int panels = (H + 31) / 32, K = G * H;
  for (int p = 0; p < panels; ++p)
    for (int k = 0; k < K; ++k)
      for (int u = 0; u < 32; ++u) {
        int unit = p * 32 + u;
        packed[((size_t)p * K + k) * 32 + u] = unit < H ? w[(size_t)unit * K + k] : 0.0f;
      }
}

static inline size_t at(const Rec& a, int b, int t, int width) { return ((size_t)b * a.T + t) * width; }

// ---------------------------------------------------------------------------- LSTM forward
// Step t for forward panels [p0, p1) over the rows `rows` (each with t < len).
static void lstm_fwd_step(const Rec& a, int t, int p0, int p1, const int* rows, int nrows) {
  const int H = a.H, G4 = 4 * H;
  const float* hp[512];
  for (int base = 0; base < nrows; base += 510) {
    int n = nrows - base < 510 ? nrows - base : 510;
    for (int i = 0; i < n; ++i) {
      int b = rows[base + i];
      hp[i] = t == 0 ? a.h0 + (size_t)b * H : a.out + at(a, b, t - 1, H);
    }
    for (int p = p0; p < p1; ++p) {
      const int u = p * 8, nu = H - u < 8 ? H - u : 8;
      rows_times_panel<4>(hp, n, a.fwd + (size_t)p * H * 32, H, [&](int i, v8* acc) {
        const int b = rows[base + i];
        const float* x = a.x + at(a, b, t, G4) + u;
        const float* c_prev = a.c_all ? (t == 0 ? a.c0 + (size_t)b * H : a.c_all + at(a, b, t - 1, H))
                                      : (t == 0 ? a.c0 : a.c_state) + (size_t)b * H;
        v8 ig = vsigmoid(acc[0] + load_n(x, nu));
        v8 fg = vsigmoid(acc[1] + load_n(x + H, nu));
        v8 gg = vtanh(acc[2] + load_n(x + 2 * H, nu));
        v8 og = vsigmoid(acc[3] + load_n(x + 3 * H, nu));
        v8 c = fg * load_n(c_prev + u, nu) + ig * gg;
        v8 h = og * vtanh(c);
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
  }
}

// ---------------------------------------------------------------------------- LSTM backward
// Step t (T-1 down to 0) for backward panels [p0, p1): dh = d_out + dgates[t+1] @ W^T
// (+ d_hT at the row's last step), then the cell's backward writes dgates[t] and dc.
static void lstm_bwd_step(const Rec& a, int t, int p0, int p1, const int* rows, int nrows) {
  const int H = a.H, G4 = 4 * H;
  const float* gp[512];
  for (int base = 0; base < nrows; base += 510) {
    int n = nrows - base < 510 ? nrows - base : 510;
    for (int i = 0; i < n; ++i) {
      int b = rows[base + i];
      gp[i] = t + 1 < a.len[b] ? a.d_gates + at(a, b, t + 1, G4) : a.zero;
    }
    for (int p = p0; p < p1; ++p) {
      rows_times_panel<4>(gp, n, a.bwd + (size_t)p * G4 * 32, G4, [&](int i, v8* acc) {
        const int b = rows[base + i];
        const bool last = t + 1 == a.len[b];
        for (int v = 0; v < 4; ++v) {
          const int u = p * 32 + v * 8;
          if (u >= H) break;
          const int nu = H - u < 8 ? H - u : 8;
          const size_t bu = (size_t)b * H + u;
          v8 dh = acc[v] + load_n(a.d_out + at(a, b, t, H) + u, nu);
          v8 dc = last ? load_n(a.d_cT + bu, nu) : load_n(a.d_carry + bu, nu);
          if (last) dh += load_n(a.d_hT + bu, nu);
          const float* s = a.acts + at(a, b, t, G4) + u;
          v8 ig = load_n(s, nu), fg = load_n(s + H, nu), gg = load_n(s + 2 * H, nu), og = load_n(s + 3 * H, nu);
          v8 tc = vtanh(load_n(a.c_all + at(a, b, t, H) + u, nu));
          v8 c_prev = load_n(t == 0 ? a.c0 + bu : a.c_all + at(a, b, t - 1, H) + u, nu);
          dc += dh * og * (1.0f - tc * tc);
          v8 d_o = dh * tc * og * (1.0f - og);
          v8 d_i = dc * gg * ig * (1.0f - ig);
          v8 d_g = dc * ig * (1.0f - gg * gg);
          v8 d_f = dc * c_prev * fg * (1.0f - fg);
          store_n(a.d_carry + bu, dc * fg, nu);
          float* d = a.d_gates + at(a, b, t, G4) + u;
          store_n(d, d_i, nu);
          store_n(d + H, d_f, nu);
          store_n(d + 2 * H, d_g, nu);
          store_n(d + 3 * H, d_o, nu);
        }
      });
    }
  }
}

// d_h0 = dgates[0] @ W^T (+ the GRU's direct part) for rows with len > 0 (panels [p0, p1)).
static void dh0_step(const Rec& a, int p0, int p1, const int* rows, int nrows) {
  const int H = a.H, GH = a.G * H;
  const float* gp[512];
  for (int base = 0; base < nrows; base += 510) {
    int n = nrows - base < 510 ? nrows - base : 510;
    for (int i = 0; i < n; ++i) gp[i] = a.d_gates + at(a, rows[base + i], 0, GH);
    for (int p = p0; p < p1; ++p) {
      rows_times_panel<4>(gp, n, a.bwd + (size_t)p * GH * 32, GH, [&](int i, v8* acc) {
        const int b = rows[base + i];
        for (int v = 0; v < 4; ++v) {
          const int u = p * 32 + v * 8;
          if (u >= H) break;
          const int nu = H - u < 8 ? H - u : 8;
          const size_t bu = (size_t)b * H + u;
          v8 dh = acc[v];
          if (a.G == 3) dh += load_n(a.d_carry + bu, nu);  // GRU: h0 also reaches h1 directly
          store_n(a.d_h0 + bu, dh, nu);
        }
      });
    }
  }
}

// ---------------------------------------------------------------------------- GRU forward
// r = s(x_r + h W_r), z = s(x_z + h W_z), n = tanh(x_n + r (h W_n + b_n)), h' = (1 - z) n + z h.
static void gru_fwd_step(const Rec& a, int t, int p0, int p1, const int* rows, int nrows) {
  const int H = a.H, G3 = 3 * H;
  const float* hp[512];
  for (int base = 0; base < nrows; base += 510) {
    int n = nrows - base < 510 ? nrows - base : 510;
    for (int i = 0; i < n; ++i) {
      int b = rows[base + i];
      hp[i] = t == 0 ? a.h0 + (size_t)b * H : a.out + at(a, b, t - 1, H);
    }
    for (int p = p0; p < p1; ++p) {
      const int u = p * 8, nu = H - u < 8 ? H - u : 8;
      const v8 bias_n = load_n(a.bias_n + u, nu);
      rows_times_panel<3>(hp, n, a.fwd + (size_t)p * H * 24, H, [&](int i, v8* acc) {
        const int b = rows[base + i];
        const float* x = a.x + at(a, b, t, G3) + u;
        v8 r = vsigmoid(acc[0] + load_n(x, nu));
        v8 z = vsigmoid(acc[1] + load_n(x + H, nu));
        v8 hn = acc[2] + bias_n;
        v8 nn = vtanh(load_n(x + 2 * H, nu) + r * hn);
        v8 h = (1.0f - z) * nn + z * load_n(hp[i] + u, nu);
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
  }
}

// ---------------------------------------------------------------------------- GRU backward
static void gru_bwd_step(const Rec& a, int t, int p0, int p1, const int* rows, int nrows) {
  const int H = a.H, G3 = 3 * H;
  const float* gp[512];
  for (int base = 0; base < nrows; base += 510) {
    int n = nrows - base < 510 ? nrows - base : 510;
    for (int i = 0; i < n; ++i) {
      int b = rows[base + i];
      gp[i] = t + 1 < a.len[b] ? a.d_gates + at(a, b, t + 1, G3) : a.zero;
    }
    for (int p = p0; p < p1; ++p) {
      rows_times_panel<4>(gp, n, a.bwd + (size_t)p * G3 * 32, G3, [&](int i, v8* acc) {
        const int b = rows[base + i];
        const bool last = t + 1 == a.len[b];
        for (int v = 0; v < 4; ++v) {
          const int u = p * 32 + v * 8;
          if (u >= H) break;
          const int nu = H - u < 8 ? H - u : 8;
          const size_t bu = (size_t)b * H + u;
          v8 dh = acc[v] + load_n(a.d_out + at(a, b, t, H) + u, nu);
          dh += last ? load_n(a.d_hT + bu, nu) : load_n(a.d_carry + bu, nu);
          const float* s = a.acts + at(a, b, t, 4 * H) + u;
          v8 r = load_n(s, nu), z = load_n(s + H, nu), nn = load_n(s + 2 * H, nu), hn = load_n(s + 3 * H, nu);
          v8 h_prev = load_n(t == 0 ? a.h0 + bu : a.out + at(a, b, t - 1, H) + u, nu);
          v8 dn = dh * (1.0f - z) * (1.0f - nn * nn);
          v8 dz = dh * (h_prev - nn) * z * (1.0f - z);
          v8 dr = dn * hn * r * (1.0f - r);
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
  }
}

static const Kernels kKernels = {
    KERNELS_ISA, pack_fwd, pack_bwd, lstm_fwd_step, lstm_bwd_step, gru_fwd_step, gru_bwd_step, dh0_step,
};
