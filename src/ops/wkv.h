// The WKV recurrence of one head over T tokens, in two forms that compute the same thing:
//
//   S_t = diag(w_t) S_{t-1} + k_tᵀ v_t          (update first)
//   o_t = q_t S_t                               (then read)
//
// q, k, v, log_w are rows of N floats (row t at base + t·stride); S is N×N (row i: key
// dimension, column j: value dimension), read and advanced in place; o receives T rows.
#pragma once

#include <cstdint>

namespace qrwkv {

struct WkvHead {
  const float* q;  // receptance / sqrt(N)
  int64_t q_stride;
  const float* k;  // k ⊙ (1 − w)
  int64_t k_stride;
  const float* v;
  int64_t v_stride;
  const float* log_w;  // log of the decay, ≤ 0
  int64_t w_stride;
  float* o;
  int64_t o_stride;
  float* S;  // [N, N]
  int64_t N;
  int64_t T;
  // Optional: the decays exp(log_w) themselves (rows at w_stride), which the recurrent forms
  // then need not recompute.
  const float* w = nullptr;
};

// One token after another: the definition.
void wkv_recurrent(const WkvHead& h);

// The same recurrence with each row of S updated and read in one pass (o += q_i · S_i right
// after S_i is updated, since rows are independent), vectorized over the value dimension with
// AVX-512 where the CPU has it. This is the fastest form on CPUs: S stays in L1 and every
// element costs two fused multiply-adds.
void wkv_recurrent_fused(const WkvHead& h);

// Chunked-parallel form (gated linear attention): chunks of `chunk` tokens entering with state
// S0, with inclusive cumulative log-decays Γ_i = Σ_{l≤i} log w_l (per channel, ≤ 0):
//
//   o_i  = (q_i ⊙ exp(Γ_i)) S0 + Σ_{j≤i} A[i,j] v_j,   A[i,j] = Σ_d q_i[d] k_j[d] exp(Γ_i[d] −
//   Γ_j[d]) S'   = diag(exp(Γ_last)) S0 + Σ_j (k_j ⊙ exp(Γ_last − Γ_j))ᵀ v_j
//
// exp(Γ_i − Γ_j) is never split as exp(Γ_i)·exp(−Γ_j) over a whole chunk (exp(−Γ) overflows
// within a few tokens of fast decay). Queries go in sub-chunks of 16; for keys of earlier
// sub-chunks the factor is split around Γ_ref, the cumulative decay just before the query
// sub-chunk: exp(Γ_i − Γ_ref) · exp(Γ_ref − Γ_j), both exponents ≤ 0. Keys of the query's own
// sub-chunk are computed element by element. Every exponent is ≤ 0, so nothing overflows.
void wkv_chunked(const WkvHead& h, int64_t chunk = 64);

}  // namespace qrwkv
