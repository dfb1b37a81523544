// The WKV recurrence of RWKV-6 for one head over T tokens (docs/model.md, "WKV"):
//
//   k̃_t = k_t ⊙ (1 − w_t)                      per key channel i
//   S_t = diag(w_t) S_{t−1} + k̃_tᵀ v_t          (update first)
//   o_t = (r_t · scale) S_t                     (then read)
//
// r, k, v, w, 1 − w and log w are rows of N floats (row t at base + t·stride); S is N×N (row i:
// key channel, column j: value channel), read and advanced in place; o receives T rows. 1 − w
// comes in separately because for slow decays (w close to 1) it is computed as −expm1(log w),
// which keeps the digits that 1 − w computed in float32 would lose.
#pragma once

#include <cstdint>

namespace qrwkv {

struct WkvHead {
  const float* r;  // receptance
  int64_t r_stride;
  const float* k;
  int64_t k_stride;
  const float* v;
  int64_t v_stride;
  const float* w;            // decay, in (0, 1]
  const float* one_minus_w;  // 1 − w
  const float* log_w;        // log w ≤ 0 (the chunked form needs it; may be null otherwise)
  int64_t w_stride;          // shared by w, one_minus_w and log_w
  float* o;
  int64_t o_stride;
  float* S;  // [N, N]
  int64_t N;
  int64_t T;
  float scale;  // applied to r: 1/sqrt(N) in QRWKV6
};

// One token after another, exactly as written above: the reference.
void wkv_recurrent(const WkvHead& h);

// Chunked-parallel form (gated linear attention): chunks of `chunk` tokens entering with state
// S0, with q = r · scale and inclusive cumulative log-decays Γ_i = Σ_{l≤i} log w_l (per channel,
// ≤ 0):
//
//   o_i = (q_i ⊙ exp(Γ_i)) S0 + Σ_{j≤i} A[i,j] v_j,   A[i,j] = Σ_d q_i[d] k̃_j[d] exp(Γ_i[d] −
//   Γ_j[d]) S'  = diag(exp(Γ_last)) S0 + Σ_j (k̃_j ⊙ exp(Γ_last − Γ_j))ᵀ v_j
//
// exp(Γ_i − Γ_j) is never split as exp(Γ_i)·exp(−Γ_j) over a whole chunk (exp(−Γ) overflows
// within a few tokens of fast decay). Queries go in sub-chunks of 16; for keys of earlier
// sub-chunks the factor is split around Γ_ref, the cumulative decay just before the query
// sub-chunk: exp(Γ_i − Γ_ref) · exp(Γ_ref − Γ_j), both exponents ≤ 0. Keys of the query's own
// sub-chunk are computed element by element. Every exponent is ≤ 0, so nothing overflows; log w
// is bounded below at −200 (where w is 0 in float32 either way) so that the cumulative sums stay
// finite. It computes the recurrence up to float32 rounding and is kept, tested, for matrix
// engines: on vector CPUs the fused recurrence (backend/cpu) is faster even for prompts.
void wkv_chunked(const WkvHead& h, int64_t chunk = 64);

}  // namespace qrwkv
