// The XLA FFI custom call behind s2s_jax/kernels/int8.py: y = x @ dequantized(w) with the rows
// of x quantized to int8 on the fly (per row, so a row's result never depends on the others)
// and int8 x int8 -> int32 sums. The rows are quantized here once, in the baseline
// instruction set for every variant; the sums run in the inner loops that this CPU supports
// (int8_generic.cc, int8_avx2.cc, int8_avx512vnni.cc). Large products split their columns
// over XLA's intra-op thread pool.
#include "ffi_module.h"  // first: it includes Python.h

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "int8_types.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

const Int8Kernels* PickKernels() {
#if defined(__x86_64__) || defined(__i386__)
  // int8_avx512vnni.cc is compiled with setup.py's AVX-512 flags (HasAvx512's subsets) and VNNI
  if (s2s_ffi::Allows("avx512") && int8_avx512vnni_kernels() != nullptr && s2s_ffi::HasAvx512() &&
      __builtin_cpu_supports("avx512vnni"))
    return int8_avx512vnni_kernels();
  if (s2s_ffi::Allows("avx2") && int8_avx2_kernels() != nullptr && __builtin_cpu_supports("avx2"))
    return int8_avx2_kernels();
#endif
  return int8_generic_kernels();
}

const Int8Kernels& Chosen() {
  static const Int8Kernels* kernels = PickKernels();
  return *kernels;
}

// rint(v) for |v| < 2^22 with round-half-to-even: adding 1.5 * 2^23 leaves no fraction bits.
inline float RoundHalfEven(float v) { return (v + 12582912.0f) - 12582912.0f; }

// Each row: amax = max |x|; xq = clip(rint(x * (127 / amax)), -127, 127), zero past K; its step
// amax / 127 (an all-zero row: xq = 0 and step 0).
void QuantizeRows(const float* x, int M, int K, int K4, int8_t* xq, float* row_scale) {
  typedef float v8 __attribute__((vector_size(32)));
  for (int r = 0; r < M; ++r) {
    const float* row = x + static_cast<size_t>(r) * K;
    int8_t* q = xq + static_cast<size_t>(r) * K4 * 4;
    v8 most = {};
    int k = 0;
    for (; k + 8 <= K; k += 8) {
      v8 a;
      std::memcpy(&a, row + k, sizeof(a));
      a = a < 0 ? -a : a;
      most = a > most ? a : most;
    }
    float amax = 0.0f;
    for (int i = 0; i < 8; ++i) amax = most[i] > amax ? most[i] : amax;
    for (; k < K; ++k) amax = std::fabs(row[k]) > amax ? std::fabs(row[k]) : amax;
    std::memset(q, 0, static_cast<size_t>(K4) * 4);
    row_scale[r] = amax / 127.0f;
    if (amax == 0.0f) continue;
    const float inv = 127.0f / amax;
    for (k = 0; k < K; ++k) {
      float v = RoundHalfEven(row[k] * inv);
      v = v < -127.0f ? -127.0f : v > 127.0f ? 127.0f : v;
      q[k] = static_cast<int8_t>(static_cast<int>(v));
    }
  }
}

inline void Pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Runs work(c) for c < chunks on the caller and up to `helpers` pool tasks, each taking the next
// chunk from one counter; the caller waits only for chunks already taken. A task that starts
// after the last chunk was taken returns without touching `work`, so it may outlive this call.
template <typename Work>
void ParallelChunks(ffi::ThreadPool& pool, int64_t chunks, int64_t helpers, const Work& work) {
  struct State {
    std::atomic<int64_t> next{0}, done{0};
  };
  auto state = std::make_shared<State>();
  auto take = [state, chunks, &work]() {
    for (int64_t c; (c = state->next.fetch_add(1, std::memory_order_relaxed)) < chunks;) {
      work(c);
      state->done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule(decltype(take)(take));
  take();
  const auto start = std::chrono::steady_clock::now();
  for (int spins = 0; state->done.load(std::memory_order_acquire) < chunks; ++spins) {
    if (spins < 256 || std::chrono::steady_clock::now() - start < std::chrono::microseconds(20))
      Pause();
    else
      std::this_thread::yield();  // a helper was descheduled: give it the core
  }
}

// Below this many multiply-adds one thread is faster than waking the pool. At one row a step's
// int8 matrices (several MB together) stream from L3, and two cores stream them faster than one:
// batch-1 greedy on the protocol model 5.2 ms/sentence at 8 M, 4.1 ms at 256 K (benchmarks/README.md).
constexpr int64_t kParallelMacs = int64_t{1} << 18;

ffi::Error Int8MatmulImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S8> w,
                          ffi::Buffer<ffi::F32> scale, ffi::ResultBuffer<ffi::F32> y, int64_t k) {
  ffi::Span<const int64_t> wd = w.dimensions(), xd = x.dimensions();
  if (wd.size() != 3 || wd[2] != 4 || k < 0 || wd[0] != (k + 3) / 4 || xd.size() == 0 || xd.back() != k ||
      static_cast<int64_t>(scale.element_count()) != wd[1])
    return ffi::Error::InvalidArgument("int8 matmul: inconsistent shapes");
  const int K = static_cast<int>(k), K4 = static_cast<int>(wd[0]), N = static_cast<int>(wd[1]);
  const int M = K == 0 ? 0 : static_cast<int>(x.element_count() / K);
  if (K != 0 && y->element_count() != static_cast<size_t>(M) * N)
    return ffi::Error::InvalidArgument("int8 matmul: inconsistent result shape");
  if (K == 0 || M == 0 || N == 0) {
    std::memset(y->typed_data(), 0, sizeof(float) * y->element_count());
    return ffi::Error::Success();
  }
  std::vector<int8_t> xq(static_cast<size_t>(M) * K4 * 4);
  std::vector<float> row_scale(M);
  QuantizeRows(x.typed_data(), M, K, K4, xq.data(), row_scale.data());
  const Int8Gemm g{M, K4, N, xq.data(), row_scale.data(), w.typed_data(), scale.typed_data(), y->typed_data()};
  const Int8Kernels& kernels = Chosen();
  const int64_t blocks = (N + kernels.block - 1) / kernels.block, threads = pool.num_threads();
  if (threads <= 1 || blocks < 2 || static_cast<int64_t>(M) * K * N < kParallelMacs) {
    kernels.gemm(g, 0, N);
    return ffi::Error::Success();
  }
  const int64_t chunks = std::min<int64_t>(blocks, 2 * threads), per = (blocks + chunks - 1) / chunks;
  ParallelChunks(pool, chunks, std::min<int64_t>(threads, chunks) - 1, [&](int64_t c) {
    const int n0 = static_cast<int>(c * per * kernels.block);
    const int n1 = static_cast<int>(std::min<int64_t>(N, (c + 1) * per * kernels.block));
    if (n0 < n1) kernels.gemm(g, n0, n1);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(S2sInt8Matmul, Int8MatmulImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S8>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("k"));

S2S_FFI_MODULE(int8_cpu, "int8 matmul on the CPU (XLA FFI).", Chosen().isa,
               {"s2s_int8_matmul", reinterpret_cast<void*>(S2sInt8Matmul)})
