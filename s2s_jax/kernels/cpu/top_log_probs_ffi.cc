// The XLA FFI custom call behind s2s_jax/kernels/top_log_probs.py: each row of x [..., V] ->
// its n best tokens' log-softmax values [..., n] (float32) and indices [..., n] (int32), best
// first, as lax.top_k orders them. One call replaces XLA's three to four passes over beam
// search's [K, V] logits per step (max, sum-exp, top-k); a row costs a few microseconds, so
// the rows run one after the other on the calling thread. The row function of the widest
// instruction set this CPU has is picked once (top_log_probs_row.h).
#include "ffi_module.h"  // first: it includes Python.h

#include <cstdint>
#include <cstdlib>
#include <vector>

#include "top_log_probs_types.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

const TopLogProbsKernels* PickKernels() {
#if defined(__x86_64__) || defined(__i386__)
  if (s2s_ffi::Allows("avx512") && top_log_probs_avx512_kernels() != nullptr && s2s_ffi::HasAvx512())
    return top_log_probs_avx512_kernels();
  if (s2s_ffi::Allows("avx2") && top_log_probs_avx2_kernels() != nullptr && s2s_ffi::HasAvx2Fma())
    return top_log_probs_avx2_kernels();
#endif
  return top_log_probs_generic_kernels();
}

const TopLogProbsKernels& Chosen() {
  static const TopLogProbsKernels* kernels = PickKernels();
  return *kernels;
}

ffi::Error TopLogProbsImpl(ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> values,
                           ffi::ResultBuffer<ffi::S32> indices) {
  ffi::Span<const int64_t> xd = x.dimensions(), vd = values->dimensions();
  if (xd.size() == 0 || vd.size() != xd.size() || indices->element_count() != values->element_count())
    return ffi::Error::InvalidArgument("top_log_probs: inconsistent shapes");
  const int64_t V = xd.back(), n = vd.back();
  const int64_t rows = V == 0 ? 0 : static_cast<int64_t>(x.element_count()) / V;
  if (V > INT32_MAX || n < 1 || n > V || static_cast<int64_t>(values->element_count()) != rows * n)
    return ffi::Error::InvalidArgument("top_log_probs: need 1 <= n <= V and matching row counts");
  std::vector<int32_t> scratch(2 * n);
  const TopLogProbsKernels& kernels = Chosen();
  for (int64_t r = 0; r < rows; ++r)
    kernels.row(x.typed_data() + r * V, static_cast<int>(V), static_cast<int>(n), values->typed_data() + r * n,
                indices->typed_data() + r * n, scratch.data(), scratch.data() + n);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(S2sTopLogProbs, TopLogProbsImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>());

S2S_FFI_MODULE(top_log_probs_cpu, "Rows' top-n log-probabilities (XLA FFI).", Chosen().isa,
               {"s2s_top_log_probs", reinterpret_cast<void*>(S2sTopLogProbs)})
