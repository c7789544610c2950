// What every kernel library shares: the instruction-set choice (the CPU's features, capped by
// S2S_JAX_KERNEL_ISA for tests and benchmarks) and its Python module, whose handlers() gives
// {target name: PyCapsule} for jax.ffi.register_ffi_target and isa() the instruction set its
// loops run with (s2s_jax/kernels/loader.py reads both).
#pragma once

#include <Python.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace s2s_ffi {

// Whether S2S_JAX_KERNEL_ISA (generic, avx2, avx512 or avx512vnni; unset: no cap) allows `level`
// ("avx2" or "avx512"). Any other value caps at generic (s2s_jax/kernels/loader.py warns).
inline bool Allows(const char* level) {
  const char* cap = std::getenv("S2S_JAX_KERNEL_ISA");
  if (cap == nullptr || *cap == '\0') return true;
  const bool avx512 = std::strcmp(cap, "avx512") == 0 || std::strcmp(cap, "avx512vnni") == 0;
  const bool avx2 = avx512 || std::strcmp(cap, "avx2") == 0;
  return std::strcmp(level, "avx2") == 0 ? avx2 : avx512;
}

#if defined(__x86_64__) || defined(__i386__)
// The AVX-512 subsets the float loops are compiled for (setup.py's AVX512 flags).
inline bool HasAvx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
}
inline bool HasAvx2Fma() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
#endif

struct Target {
  const char* name;
  void* handler;
};

inline PyObject* Handlers(const Target* targets, std::size_t count) {
  PyObject* dict = PyDict_New();
  if (dict == nullptr) return nullptr;
  for (std::size_t i = 0; i < count; ++i) {
    PyObject* capsule = PyCapsule_New(targets[i].handler, nullptr, nullptr);
    if (capsule == nullptr || PyDict_SetItemString(dict, targets[i].name, capsule) != 0) {
      Py_XDECREF(capsule);
      Py_DECREF(dict);
      return nullptr;
    }
    Py_DECREF(capsule);
  }
  return dict;
}

}  // namespace s2s_ffi

// The module `name` (PyInit_<name>): handlers() over the {"target", handler} pairs after `doc`,
// isa() -> `isa` (an expression naming the chosen loops' instruction set).
#define S2S_FFI_MODULE(name, doc, isa, ...)                                                         \
  static PyObject* S2sHandlers(PyObject*, PyObject*) {                                              \
    static const s2s_ffi::Target targets[] = {__VA_ARGS__};                                         \
    return s2s_ffi::Handlers(targets, sizeof(targets) / sizeof(targets[0]));                        \
  }                                                                                                 \
  static PyObject* S2sIsa(PyObject*, PyObject*) { return PyUnicode_FromString(isa); }              \
  static PyMethodDef kS2sMethods[] = {                                                              \
      {"handlers", S2sHandlers, METH_NOARGS, "FFI targets by name, as PyCapsules."},                \
      {"isa", S2sIsa, METH_NOARGS, "The instruction set of the inner loops."},                      \
      {nullptr, nullptr, 0, nullptr},                                                               \
  };                                                                                                \
  static PyModuleDef kS2sModule = {PyModuleDef_HEAD_INIT, #name, doc, -1, kS2sMethods};             \
  PyMODINIT_FUNC PyInit_##name() { return PyModule_Create(&kS2sModule); }
