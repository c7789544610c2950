// The XLA FFI custom call behind s2s_jax/kernels/top_log_probs.py: each row of x [..., V] ->
// its n best tokens' log-softmax values [..., n] (float32) and indices [..., n] (int32), best
// first, as lax.top_k orders them. One call replaces XLA's three to four passes over beam
// search's [K, V] logits per step (max, sum-exp, top-k); a row costs a few microseconds, so
// the rows run one after the other on the calling thread. The row function of the widest
// instruction set this CPU has is picked once (top_log_probs_row.h).
#include <Python.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "top_log_probs_types.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

const TopLogProbsKernels* PickKernels() {
  // S2S_JAX_KERNEL_ISA caps the instruction set as for the other kernels: generic, avx2; unset
  // (or avx512) allows the widest this CPU has.
  const char* want = std::getenv("S2S_JAX_KERNEL_ISA");
  const std::string cap = want != nullptr ? want : "";
#if defined(__x86_64__) || defined(__i386__)
  if ((cap.empty() || cap == "avx512" || cap == "avx512vnni") && top_log_probs_avx512_kernels() != nullptr &&
      __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw"))
    return top_log_probs_avx512_kernels();
  if (cap != "generic" && top_log_probs_avx2_kernels() != nullptr && __builtin_cpu_supports("avx2") &&
      __builtin_cpu_supports("fma"))
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

// The Python module: handlers() -> {target name: PyCapsule} for jax.ffi.register_ffi_target,
// and isa() -> the instruction set the row function runs with.
static PyObject* Handlers(PyObject*, PyObject*) {
  PyObject* dict = PyDict_New();
  if (dict == nullptr) return nullptr;
  PyObject* capsule = PyCapsule_New(reinterpret_cast<void*>(S2sTopLogProbs), nullptr, nullptr);
  if (capsule == nullptr || PyDict_SetItemString(dict, "s2s_top_log_probs", capsule) != 0) {
    Py_XDECREF(capsule);
    Py_DECREF(dict);
    return nullptr;
  }
  Py_DECREF(capsule);
  return dict;
}

static PyObject* Isa(PyObject*, PyObject*) { return PyUnicode_FromString(Chosen().isa); }

static PyMethodDef kMethods[] = {
    {"handlers", Handlers, METH_NOARGS, "FFI targets by name, as PyCapsules."},
    {"isa", Isa, METH_NOARGS, "The instruction set of the row function."},
    {nullptr, nullptr, 0, nullptr},
};

static PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "top_log_probs_cpu", "Rows' top-n log-probabilities (XLA FFI).",
                              -1, kMethods};

PyMODINIT_FUNC PyInit_top_log_probs_cpu() { return PyModule_Create(&kModule); }
