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

// Plain loops, one token after another: the reference. Heads [h0, h1) only, so that a backend
// can run heads on several threads (each head's channels, state and outputs are its own).
void wkv7_reference(const Wkv7Args& a, int64_t h0, int64_t h1);

}  // namespace qrwkv
