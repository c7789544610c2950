// The sizes and buffers of one recurrence call, shared by the dispatcher (recurrence_ffi.cc)
// and the per-instruction-set inner loops (recurrence_kernels.h).
#pragma once

#include <cstddef>

struct Rec {  // one call's sizes and buffers; unused pointers are null
  int B, T, H, G;
  const float* x;       // [B, T, G*H] input projections (with the input biases)
  const float* fwd;     // W packed for h @ W
  const float* bwd;     // W^T packed for dgates @ W^T
  const float* bias_n;  // [H] GRU: the recurrent bias of the n gate
  const float* h0;      // [B, H]
  const float* c0;      // [B, H] LSTM
  const int* len;       // [B]
  float* out;           // [B, T, H] h at every step, zero at padding
  float* c_all;         // [B, T, H] LSTM training: c at every step
  float* c_state;       // [B, H] LSTM inference: the running c
  float* acts;          // [B, T, 4*H] training: LSTM gates i, f, g, o; GRU r, z, n, h_n
  // backward
  const float* d_out;   // [B, T, H]
  const float* d_hT;    // [B, H]
  const float* d_cT;    // [B, H]
  float* d_gates;       // [B, T, G*H] gradient of the recurrent pre-activations (h @ W)
  float* d_x;           // [B, T, G*H] GRU: gradient of x_proj (LSTM: d_gates is that)
  float* d_carry;       // [B, H] running: LSTM dc, GRU the direct part z * dh
  float* d_h0;          // [B, H]
  const float* zero;    // G*H zeros
};

// The inner loops of one instruction set; recurrence_ffi.cc picks one at run time.
struct Kernels {
  const char* isa;
  int width;  // floats per vector: forward panels hold `width` units, backward panels 4 * width
  void (*pack_fwd)(const float* w, int H, int G, float* packed);
  void (*pack_bwd)(const float* w, int H, int G, float* packed);
  void (*lstm_fwd_step)(const Rec& a, int t, int p0, int p1, const int* rows, int nrows);
  void (*lstm_bwd_step)(const Rec& a, int t, int p0, int p1, const int* rows, int nrows);
  void (*gru_fwd_step)(const Rec& a, int t, int p0, int p1, const int* rows, int nrows);
  void (*gru_bwd_step)(const Rec& a, int t, int p0, int p1, const int* rows, int nrows);
  void (*dh0_step)(const Rec& a, int p0, int p1, const int* rows, int nrows);
};

const Kernels* generic_kernels();
const Kernels* avx2_kernels();    // null where the build has no AVX2 variant
const Kernels* avx512_kernels();  // null where the build has no AVX-512 variant
