// One row's top-n log-probabilities, written once with GCC/Clang vector extensions and compiled
// once per instruction set (top_log_probs_generic.cc, _avx2.cc, _avx512.cc include this file
// inside their own namespace, with VW floats per vector); top_log_probs_ffi.cc picks one.
//
// What XLA computes for `lax.top_k(x, n)` and log_softmax's arithmetic, in two passes over a
// row that stays in L1/L2 (a row of 8,000 floats is 32 KB):
//   pass 1: the row maximum m and the n best entries. Entries are ordered as XLA's TopK orders
//           them: by the integer key bits ^ (bits < 0 ? 0x7fffffff : 0) of their float bits (a
//           total order, -0.0 below 0.0), ties to the lower index. The n best so far stay sorted
//           in `keys`/`slots`; a vector of entries is looked at one by one only when one of them
//           beats the n-th best (a few dozen times per row on real logits).
//   pass 2: s = log(sum(exp(x - m))), exp by range reduction and a degree-6 polynomial
//           (Cephes' expf, within about 1 ulp; 0 below -87, where exp underflows), summed in
//           short float runs that add up in double: s is within about an ulp of the exact value.
// Then values[t] = (x[i_t] - m) - s: log_softmax's own order of operations. Only s can differ
// from XLA's (XLA sums its own exp in float32), by a few ulps. Inputs are not NaN.
// The including file includes <cmath>, <cstring> and its instruction set's intrinsics first.

typedef float vf __attribute__((vector_size(4 * VW)));
typedef int32_t vi __attribute__((vector_size(4 * VW)));
typedef double vd __attribute__((vector_size(8 * VW)));

static inline vf splat(float v) { return vf{} + v; }
static inline vi splat_i(int32_t v) { return vi{} + v; }

static inline vf loadv(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// Bit i set where lane i of m (all ones or zero) is set.
static inline unsigned lane_mask(vi m) {
#if VW == 16
  return static_cast<unsigned>(_mm512_movepi32_mask(reinterpret_cast<__m512i>(m)));
#elif VW == 8
  return static_cast<unsigned>(_mm256_movemask_ps(reinterpret_cast<__m256>(m)));
#elif VW == 4 && defined(__SSE2__)
  return static_cast<unsigned>(_mm_movemask_ps(reinterpret_cast<__m128>(m)));
#else
  unsigned bits = 0;
  for (int i = 0; i < VW; ++i) bits |= static_cast<unsigned>(m[i] != 0) << i;
  return bits;
#endif
}

static inline int32_t order_key(float v) {
  int32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  return bits ^ ((bits >> 31) & 0x7fffffff);
}

static inline vi order_keys(vf v) {
  const vi bits = reinterpret_cast<vi>(v);
  return bits ^ ((bits >> 31) & 0x7fffffff);
}

// Puts (key, i) into the sorted list of `count` < n entries, or in place of the last of n (then
// key beats it). Indices arrive in increasing order, so an equal key goes after those already in.
static inline void insert(int32_t key, int32_t i, int32_t* keys, int32_t* slots, int& count, int n) {
  int p = count < n ? count++ : n - 1;
  for (; p > 0 && keys[p - 1] < key; --p) {
    keys[p] = keys[p - 1];
    slots[p] = slots[p - 1];
  }
  keys[p] = key;
  slots[p] = i;
}

// exp(y) for y <= 0 (0 below -87).
static inline vf exp_nonpositive(vf y) {
  const vf z = y < splat(-87.0f) ? splat(-87.0f) : y;
  const vf magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const vf k = (z * splat(1.44269504088896341f) + magic) - magic;
  const vf r = (z - k * splat(0.693359375f)) - k * splat(-2.12194440e-4f);
  vf p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  p = (p * (r * r) + r) + splat(1.0f);
  const vi scale = (__builtin_convertvector(k, vi) + 127) << 23;  // 2^k, k >= -126
  const vf e = p * reinterpret_cast<vf>(scale);
  return y < splat(-87.0f) ? splat(0.0f) : e;
}

// The lanes of k in `hits` (bits of lanes that beat the n-th best when compared) go into the list,
// in lane order, each only if it still beats the n-th best (which rises as they go in).
static inline void take_hits(vi k, unsigned hits, int j, int32_t* keys, int32_t* slots, int& count, int n,
                             int32_t& least) {
  for (; hits != 0; hits &= hits - 1) {
    const int lane = __builtin_ctz(hits);
    if (k[lane] > least) {
      insert(k[lane], j + lane, keys, slots, count, n);
      least = keys[n - 1];
    }
  }
}

// Pass 1: the row maximum, and the n best entries in keys/slots.
static float max_and_best(const float* x, int V, int n, int32_t* keys, int32_t* slots) {
  int count = 0;
  float m = x[0];
  for (int j = 0; j < n; ++j) {
    insert(order_key(x[j]), j, keys, slots, count, n);
    m = x[j] > m ? x[j] : m;
  }
  int32_t least = keys[n - 1];
  vf most0 = splat(m), most1 = most0;  // two maxima: two dependency chains
  int j = n;
  for (; j + 2 * VW <= V; j += 2 * VW) {
    const vf v0 = loadv(x + j), v1 = loadv(x + j + VW);
    most0 = v0 > most0 ? v0 : most0;
    most1 = v1 > most1 ? v1 : most1;
    const vi k0 = order_keys(v0), k1 = order_keys(v1);
    const vi bar = splat_i(least);
    const unsigned hits0 = lane_mask(k0 > bar), hits1 = lane_mask(k1 > bar);
    if ((hits0 | hits1) == 0) continue;  // the usual case
    take_hits(k0, hits0, j, keys, slots, count, n, least);
    take_hits(k1, hits1, j + VW, keys, slots, count, n, least);
  }
  for (; j + VW <= V; j += VW) {
    const vf v = loadv(x + j);
    most0 = v > most0 ? v : most0;
    const vi k = order_keys(v);
    take_hits(k, lane_mask(k > splat_i(least)), j, keys, slots, count, n, least);
  }
  for (; j < V; ++j) {
    m = x[j] > m ? x[j] : m;
    const int32_t k = order_key(x[j]);
    if (k > least) {
      insert(k, j, keys, slots, count, n);
      least = keys[n - 1];
    }
  }
  const vf most = most0 > most1 ? most0 : most1;
  for (int i = 0; i < VW; ++i) m = most[i] > m ? most[i] : m;
  return m;
}

// Pass 2: log(sum(exp(x - m))). Four float partial sums (four dependency chains) take 8 vectors
// each, then go into a double sum: s is within about an ulp of the exact log-sum-exp.
static float log_sum_exp_shifted(const float* x, int V, float m) {
  vd total = {};
  const vf mv = splat(m);
  int j = 0;
  while (j + 4 * VW <= V) {
    vf acc0 = {}, acc1 = {}, acc2 = {}, acc3 = {};
    for (int round = 0; round < 8 && j + 4 * VW <= V; ++round, j += 4 * VW) {
      acc0 += exp_nonpositive(loadv(x + j) - mv);
      acc1 += exp_nonpositive(loadv(x + j + VW) - mv);
      acc2 += exp_nonpositive(loadv(x + j + 2 * VW) - mv);
      acc3 += exp_nonpositive(loadv(x + j + 3 * VW) - mv);
    }
    total += __builtin_convertvector((acc0 + acc1) + (acc2 + acc3), vd);
  }
  for (; j < V; j += VW) {  // the rest, padded with -inf (exp 0)
    float tail[VW];
    for (int i = 0; i < VW; ++i) tail[i] = j + i < V ? x[j + i] : -INFINITY;
    total += __builtin_convertvector(exp_nonpositive(loadv(tail) - mv), vd);
  }
  double sum = 0.0;
  for (int i = 0; i < VW; ++i) sum += total[i];
  return static_cast<float>(std::log(sum));
}

static void row(const float* x, int V, int n, float* values, int32_t* indices, int32_t* keys, int32_t* slots) {
  const float m = max_and_best(x, V, n, keys, slots);
  const float s = log_sum_exp_shifted(x, V, m);
  for (int t = 0; t < n; ++t) {
    values[t] = (x[slots[t]] - m) - s;
    indices[t] = slots[t];
  }
}

static const TopLogProbsKernels kKernels = {KERNELS_ISA, row};
