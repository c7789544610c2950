// XLA FFI custom calls that run a whole LSTM or GRU layer's time loop on the CPU
// (s2s_jax/kernels/recurrence.py registers and calls them). Each step's GEMM h @ W_hh is
// split into chunks of hidden units; the calling thread and tasks on XLA's intra-op
// thread pool take chunks in order from one counter, and a chunk of step t starts once
// every chunk of step t-1 is done. The caller never waits for a particular task: a task
// that starts late finds no chunk left and returns, so the loop cannot stall on a busy pool.
#include "ffi_module.h"  // first: it includes Python.h

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <thread>
#include <vector>

#include "recurrence_types.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

const Kernels* PickKernels() {
#if defined(__x86_64__) || defined(__i386__)
  if (s2s_ffi::Allows("avx512") && avx512_kernels() != nullptr && s2s_ffi::HasAvx512()) return avx512_kernels();
  if (s2s_ffi::Allows("avx2") && avx2_kernels() != nullptr && s2s_ffi::HasAvx2Fma()) return avx2_kernels();
#endif
  return generic_kernels();
}

const Kernels& K() {
  static const Kernels* kernels = PickKernels();
  return *kernels;
}

struct Tickets {
  explicit Tickets(int64_t total) : claimed(new std::atomic<bool>[total]) {
    for (int64_t i = 0; i < total; ++i) claimed[i].store(false, std::memory_order_relaxed);
  }
  std::atomic<int64_t> arrivals{0};
  std::atomic<int64_t> done{0};
  std::unique_ptr<std::atomic<bool>[]> claimed;  // per (step, chunk)
};

inline void Pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Spins for up to ~20 us (a chunk takes ~0.1 ms), then yields the core on every check, so a
// waiting participant does not hold a core that a descheduled one needs on a busy machine.
inline void WaitFor(const std::atomic<int64_t>& counter, int64_t target) {
  if (counter.load(std::memory_order_acquire) >= target) return;
  const auto start = std::chrono::steady_clock::now();
  for (int spins = 0; counter.load(std::memory_order_acquire) < target; ++spins) {
    if (spins < 64 || (spins % 64 != 0 && spins < 1 << 20)) {
      Pause();
    } else if (std::chrono::steady_clock::now() - start > std::chrono::microseconds(20)) {
      std::this_thread::yield();
      spins = 1 << 20;  // from now on every check yields
    }
  }
}

// Runs work(step, chunk) for step < steps, chunk < chunks, steps in order, the chunks of one
// step in parallel on the caller and up to `helpers` pool tasks. Participant j first takes
// the chunks j, j + n, ... of each step (the same ones every step, so each core keeps its
// part of the packed weights in its own cache), then any chunk of the step nobody took yet;
// so the caller finishes every step alone if a pool task never starts.
template <typename Work>
void RunSteps(ffi::ThreadPool& pool, int64_t steps, int64_t chunks, const Work& work) {
  const int64_t total = steps * chunks;
  int64_t threads = pool.num_threads();
  const int64_t n = 1 + std::min<int64_t>(threads > 1 ? threads - 1 : 0, chunks - 1);
  auto tickets = std::make_shared<Tickets>(total);
  auto take = [tickets, steps, chunks, n, &work]() {
    const int64_t id = tickets->arrivals.fetch_add(1, std::memory_order_relaxed);
    auto claim_and_run = [&](int64_t step, int64_t chunk) {
      if (!tickets->claimed[step * chunks + chunk].exchange(true, std::memory_order_acq_rel)) {
        work(step, chunk);
        tickets->done.fetch_add(1, std::memory_order_release);
      }
    };
    for (int64_t step = 0; step < steps; ++step) {
      if (tickets->done.load(std::memory_order_acquire) >= (step + 1) * chunks) continue;  // a late arrival
      WaitFor(tickets->done, step * chunks);
      for (int64_t chunk = id % n; chunk < chunks; chunk += n) claim_and_run(step, chunk);
      for (int64_t chunk = 0; chunk < chunks; ++chunk) claim_and_run(step, chunk);
    }
  };
  // A task holds only `tickets` once every chunk is claimed (a late one then claims nothing),
  // so it may outlive this call: it never calls `work` after that, which `claimed` guarantees.
  for (int64_t i = 1; i < n; ++i) pool.Schedule(decltype(take)(take));
  take();
  WaitFor(tickets->done, total);
}

int64_t Chunks(ffi::ThreadPool& pool, int64_t panels) {
  int64_t threads = std::max<int64_t>(pool.num_threads(), 1);
  return std::max<int64_t>(1, std::min<int64_t>(panels, 4 * threads));
}

// Rows in the order they stay active: longest first; rows_at(t) = the first active[t] of them.
struct ActiveRows {
  std::vector<int> order;
  std::vector<int> active;
  ActiveRows(const int* len, int B, int T) : order(B), active(T + 1, 0) {
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [len](int x, int y) { return len[x] > len[y]; });
    for (int b = 0; b < B; ++b)
      for (int t = 0; t < std::min(std::max(len[b], 0), T); ++t) ++active[t];
  }
};

struct Shape {
  int B, T, H, G;
};

// [..., T, G*H] inputs, [..., H, G*H] weights (leading dims all 1: a vmapped call), [...] lengths.
ffi::Error CheckShapes(ffi::Span<const int64_t> x, ffi::Span<const int64_t> w, int G, size_t lengths, Shape* s) {
  if (x.size() < 2 || w.size() < 2) return ffi::Error::InvalidArgument("recurrence: rank too small");
  int64_t H = w[w.size() - 2], rows = 1, wrest = 1;
  for (size_t i = 0; i + 2 < x.size(); ++i) rows *= x[i];
  for (size_t i = 0; i + 2 < w.size(); ++i) wrest *= w[i];
  if (w.back() != G * H || x.back() != G * H || wrest != 1 || rows != static_cast<int64_t>(lengths))
    return ffi::Error::InvalidArgument("recurrence: inconsistent shapes");
  *s = Shape{static_cast<int>(rows), static_cast<int>(x[x.size() - 2]), static_cast<int>(H), G};
  return ffi::Error::Success();
}

template <typename T>
size_t Count(const T& buffer) {
  return buffer.element_count();
}

ffi::Error Forward(ffi::ThreadPool pool, int G, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                   ffi::Buffer<ffi::F32> h0, const float* c0, const float* bias_n, ffi::Buffer<ffi::S32> len,
                   float* out, float* h_last, float* c_last, float* c_all, float* acts) {
  Shape s;
  if (auto err = CheckShapes(x.dimensions(), w.dimensions(), G, Count(len), &s); err.failure()) return err;
  const int B = s.B, T = s.T, H = s.H;
  const Kernels& k = K();
  const int panels = (H + k.width - 1) / k.width;
  std::vector<float> packed(static_cast<size_t>(panels) * H * G * k.width);
  k.pack_fwd(w.typed_data(), H, G, packed.data());
  std::vector<float> c_state(G == 4 && c_all == nullptr ? static_cast<size_t>(B) * H : 0);
  std::memset(out, 0, sizeof(float) * B * T * H);
  Rec a{};
  a.B = B, a.T = T, a.H = H, a.G = G;
  a.x = x.typed_data(), a.fwd = packed.data(), a.bias_n = bias_n, a.h0 = h0.typed_data(), a.c0 = c0;
  a.len = len.typed_data(), a.out = out, a.c_all = c_all, a.c_state = c_state.data(), a.acts = acts;
  ActiveRows rows(a.len, B, T);
  const int64_t chunks = Chunks(pool, panels), per = (panels + chunks - 1) / chunks;
  auto step = G == 4 ? k.lstm_fwd_step : k.gru_fwd_step;
  RunSteps(pool, T, chunks, [&](int64_t t, int64_t chunk) {
    int p0 = static_cast<int>(chunk * per), p1 = std::min(panels, static_cast<int>((chunk + 1) * per));
    if (p0 < p1 && rows.active[t] > 0) step(a, static_cast<int>(t), p0, p1, rows.order.data(), rows.active[t]);
  });
  // The final carry: the state after each row's last real step (the initial one for an empty row).
  for (int b = 0; b < B; ++b) {
    const int n = std::min(std::max(a.len[b], 0), T);
    const size_t row = static_cast<size_t>(b) * H;
    std::memcpy(h_last + row, n ? out + (static_cast<size_t>(b) * T + n - 1) * H : a.h0 + row, sizeof(float) * H);
    if (G == 4) {
      const float* c = n == 0 ? c0 + row : c_all ? c_all + (static_cast<size_t>(b) * T + n - 1) * H : c_state.data() + row;
      std::memcpy(c_last + row, c, sizeof(float) * H);
    }
  }
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, int G, ffi::Buffer<ffi::F32> w, const float* h0, const float* c0,
                    ffi::Buffer<ffi::S32> len, const float* out, const float* c_all, ffi::Buffer<ffi::F32> acts,
                    ffi::Buffer<ffi::F32> d_out, const float* d_hT, const float* d_cT, float* d_gates, float* d_x,
                    float* d_h0, float* d_c0) {
  ffi::Span<const int64_t> dims = d_out.dimensions();
  const int H = static_cast<int>(w.dimensions()[w.dimensions().size() - 2]);
  const int T = static_cast<int>(dims[dims.size() - 2]);
  const int B = static_cast<int>(Count(len));
  if (Count(d_out) != static_cast<size_t>(B) * T * H || Count(acts) != static_cast<size_t>(B) * T * 4 * H)
    return ffi::Error::InvalidArgument("recurrence backward: inconsistent shapes");
  const Kernels& k = K();
  const int GH = G * H, panels = (H + 4 * k.width - 1) / (4 * k.width);
  std::vector<float> packed(static_cast<size_t>(panels) * GH * 4 * k.width), carry(static_cast<size_t>(B) * H, 0.0f),
      zero(GH, 0.0f);
  k.pack_bwd(w.typed_data(), H, G, packed.data());
  std::memset(d_gates, 0, sizeof(float) * B * T * GH);
  if (d_x != nullptr) std::memset(d_x, 0, sizeof(float) * B * T * GH);
  Rec a{};
  a.B = B, a.T = T, a.H = H, a.G = G, a.bwd = packed.data(), a.h0 = h0, a.c0 = c0, a.len = len.typed_data();
  a.out = const_cast<float*>(out), a.c_all = const_cast<float*>(c_all), a.acts = acts.typed_data();
  a.d_out = d_out.typed_data(), a.d_hT = d_hT, a.d_cT = d_cT, a.d_gates = d_gates, a.d_x = d_x;
  a.d_carry = carry.data(), a.d_h0 = d_h0, a.zero = zero.data();
  ActiveRows rows(a.len, B, T);
  const int64_t chunks = Chunks(pool, panels), per = (panels + chunks - 1) / chunks;
  auto step = G == 4 ? k.lstm_bwd_step : k.gru_bwd_step;
  // Steps T-1 .. 0, then one more GEMM for d_h0.
  RunSteps(pool, T + 1, chunks, [&](int64_t i, int64_t chunk) {
    int p0 = static_cast<int>(chunk * per), p1 = std::min(panels, static_cast<int>((chunk + 1) * per));
    if (p0 >= p1) return;
    if (i < T) {
      int t = T - 1 - static_cast<int>(i);
      if (rows.active[t] > 0) step(a, t, p0, p1, rows.order.data(), rows.active[t]);
    } else if (rows.active[0] > 0) {
      k.dh0_step(a, p0, p1, rows.order.data(), rows.active[0]);
    }
  });
  for (int b = 0; b < B; ++b) {
    const size_t row = static_cast<size_t>(b) * H;
    const bool empty = a.len[b] <= 0 || T == 0;
    if (empty) std::memcpy(d_h0 + row, d_hT + row, sizeof(float) * H);
    if (G == 4) std::memcpy(d_c0 + row, empty ? d_cT + row : carry.data() + row, sizeof(float) * H);
  }
  return ffi::Error::Success();
}

ffi::Error LstmForwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                           ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> c0, ffi::Buffer<ffi::S32> len,
                           ffi::ResultBuffer<ffi::F32> out, ffi::ResultBuffer<ffi::F32> h_last,
                           ffi::ResultBuffer<ffi::F32> c_last) {
  return Forward(pool, 4, x, w, h0, c0.typed_data(), nullptr, len, out->typed_data(), h_last->typed_data(),
                 c_last->typed_data(), nullptr, nullptr);
}

ffi::Error LstmForwardTrainImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                                ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> c0, ffi::Buffer<ffi::S32> len,
                                ffi::ResultBuffer<ffi::F32> out, ffi::ResultBuffer<ffi::F32> h_last,
                                ffi::ResultBuffer<ffi::F32> c_last, ffi::ResultBuffer<ffi::F32> c_all,
                                ffi::ResultBuffer<ffi::F32> acts) {
  return Forward(pool, 4, x, w, h0, c0.typed_data(), nullptr, len, out->typed_data(), h_last->typed_data(),
                 c_last->typed_data(), c_all->typed_data(), acts->typed_data());
}

ffi::Error LstmBackwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> h0,
                            ffi::Buffer<ffi::F32> c0, ffi::Buffer<ffi::S32> len, ffi::Buffer<ffi::F32> out,
                            ffi::Buffer<ffi::F32> c_all, ffi::Buffer<ffi::F32> acts, ffi::Buffer<ffi::F32> d_out,
                            ffi::Buffer<ffi::F32> d_hT, ffi::Buffer<ffi::F32> d_cT,
                            ffi::ResultBuffer<ffi::F32> d_gates, ffi::ResultBuffer<ffi::F32> d_h0,
                            ffi::ResultBuffer<ffi::F32> d_c0) {
  return Backward(pool, 4, w, h0.typed_data(), c0.typed_data(), len, out.typed_data(), c_all.typed_data(), acts,
                  d_out, d_hT.typed_data(), d_cT.typed_data(), d_gates->typed_data(), nullptr,
                  d_h0->typed_data(), d_c0->typed_data());
}

ffi::Error GruForwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                          ffi::Buffer<ffi::F32> bias_n, ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::S32> len,
                          ffi::ResultBuffer<ffi::F32> out, ffi::ResultBuffer<ffi::F32> h_last) {
  return Forward(pool, 3, x, w, h0, nullptr, bias_n.typed_data(), len, out->typed_data(), h_last->typed_data(),
                 nullptr, nullptr, nullptr);
}

ffi::Error GruForwardTrainImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                               ffi::Buffer<ffi::F32> bias_n, ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::S32> len,
                               ffi::ResultBuffer<ffi::F32> out, ffi::ResultBuffer<ffi::F32> h_last,
                               ffi::ResultBuffer<ffi::F32> acts) {
  return Forward(pool, 3, x, w, h0, nullptr, bias_n.typed_data(), len, out->typed_data(), h_last->typed_data(),
                 nullptr, nullptr, acts->typed_data());
}

ffi::Error GruBackwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> h0,
                           ffi::Buffer<ffi::S32> len, ffi::Buffer<ffi::F32> out, ffi::Buffer<ffi::F32> acts,
                           ffi::Buffer<ffi::F32> d_out, ffi::Buffer<ffi::F32> d_hT,
                           ffi::ResultBuffer<ffi::F32> d_gates, ffi::ResultBuffer<ffi::F32> d_x,
                           ffi::ResultBuffer<ffi::F32> d_h0) {
  return Backward(pool, 3, w, h0.typed_data(), nullptr, len, out.typed_data(), nullptr, acts, d_out,
                  d_hT.typed_data(), nullptr, d_gates->typed_data(), d_x->typed_data(), d_h0->typed_data(), nullptr);
}

using F32 = ffi::Buffer<ffi::F32>;
using R32 = ffi::ResultBuffer<ffi::F32>;
using S32 = ffi::Buffer<ffi::S32>;

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(S2sLstmForward, LstmForwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<S32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(S2sLstmForwardTrain, LstmForwardTrainImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<S32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(S2sLstmBackward, LstmBackwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<S32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(S2sGruForward, GruForwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<S32>()
                                  .Ret<F32>()
                                  .Ret<F32>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(S2sGruForwardTrain, GruForwardTrainImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<S32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(S2sGruBackward, GruBackwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<S32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>());

S2S_FFI_MODULE(recurrence_cpu, "Fused CPU recurrences (XLA FFI).", K().isa,
               {"s2s_lstm_forward", reinterpret_cast<void*>(S2sLstmForward)},
               {"s2s_lstm_forward_train", reinterpret_cast<void*>(S2sLstmForwardTrain)},
               {"s2s_lstm_backward", reinterpret_cast<void*>(S2sLstmBackward)},
               {"s2s_gru_forward", reinterpret_cast<void*>(S2sGruForward)},
               {"s2s_gru_forward_train", reinterpret_cast<void*>(S2sGruForwardTrain)},
               {"s2s_gru_backward", reinterpret_cast<void*>(S2sGruBackward)})
