// The RWKV-7 time mix of QRWKV7 after its projections, for T tokens of one sequence
// (model/qrwkv7.cpp; the conversion's doc calls it RAD-RWKV7). Per token and head h (kv head
// ⌊h/G⌋ for k and v), channel c = h·N + i:
//
//   w_c = exp(−e^−0.5 · sigmoid(w0_c + d_c))          decay, in (0.5452, 1)
//   a_c = sigmoid(a0_c + a_c)                          in-context learning rate
//   layer 0: v_first = v;  later: ν = sigmoid(v0 + nu), v ← v + (v_first − v) ⊙ ν
//   classic: κ = normalize(k ⊙ k_k),  k̃ = k ⊙ (1 + (a − 1) ⊙ k_a)
//   balance: κ = normalize(k),        k̃ = k ⊙ (1 − w + a)
//   S ← diag(w) S − (κ ⊙ a)(κᵀ S) + k̃ vᵀ             (κᵀ S of the S before the update)
//   y = Sᵀ r                                           (read after the update; no 1/√N on r)
//   GroupNorm over the head's N channels (eps N·1e-5, ln_x) or y · N^-½
//
// normalize(u) = u / max(‖u‖₂, 1e-12). S is N×N per head, S[i][j] = key i × value j, float32.
#pragma once

#include "backend/backend.h"

namespace qrwkv {

// The largest head size the operation takes (the model refuses larger ones when it loads).
constexpr int64_t kWkv7MaxHead = 512;

// The per-channel values of token t and head h that every form of the recurrence uses (rows
// of N floats): decay w and log w, κ, κ ⊙ a (the removal's weights), k̃ and v (the value
// residual applied; layer 0 writes v_first).
struct Wkv7Token {
  float w[kWkv7MaxHead], log_w[kWkv7MaxHead], kap[kWkv7MaxHead], ka[kWkv7MaxHead], kt[kWkv7MaxHead],
      v[kWkv7MaxHead];
};
void wkv7_token(const Wkv7Args& a, int64_t t, int64_t h, Wkv7Token& out);

// The output stage of token t and head h from y = Sᵀ r (N floats): GroupNorm or · N^-½ into
// a.y.
void wkv7_output(const Wkv7Args& a, int64_t t, int64_t h, const float* y);

// One token of one head on its state S [N, N] (key × value), plain loops: sa = κᵀ S, then
// S ← diag(w) S − (κ ⊙ a) saᵀ + k̃ vᵀ and y = Sᵀ r row by row.
void wkv7_step_reference(float* S, int64_t N, const Wkv7Token& x, const float* r, float* y);

// Plain loops, one token after another: the reference. Heads [h0, h1) only, so that a backend
// can run heads on several threads (each head's channels, state and outputs are its own).
void wkv7_reference(const Wkv7Args& a, int64_t h0, int64_t h1);

// The chunked form (docs/model.md, "Chunked delta rule"): chunks of kWkv7Chunk tokens entering
// with state S0. With Γ_t = Σ_{l≤t} log w_l inside the chunk and Γ⁻_t = Γ_t − log w_t,
//
//   u_t = κ_tᵀ S_{t−1} = (κ_t e^{Γ⁻_t})ᵀ S0 − Σ_{j<t} [(κ_t e^{Γ⁻_t})·((κa)_j e^{−Γ_j})] u_j
//                                            + Σ_{j<t} [(κ_t e^{Γ⁻_t})·(k̃_j e^{−Γ_j})] v_j
//   y_t = (r_t e^{Γ_t})ᵀ S0 − Σ_{j≤t} [(r_t e^{Γ_t})·((κa)_j e^{−Γ_j})] u_j + [(r_t e^{Γ_t})·(k̃_j
//   e^{−Γ_j})] v_j S'  = diag(e^{Γ_L}) S0 − Σ_j ((κa)_j e^{Γ_L−Γ_j}) u_jᵀ + (k̃_j e^{Γ_L−Γ_j}) v_jᵀ
//
// (u by forward substitution: the WY / UT transform of the unit lower-triangular system). QRWKV7's
// log w > −0.61, so over 16 tokens e^{−Γ} < e^{9.8} and every factor stays far inside float32;
// their products are the true e^{Γ_t − Γ_j} ≤ 1. Equal to the recurrence up to float32
// rounding; the state's reads and writes become products of a chunk's rows with S0.
constexpr int64_t kWkv7Chunk = 16;
void wkv7_chunked(const Wkv7Args& a, int64_t h0, int64_t h1);

}  // namespace qrwkv
