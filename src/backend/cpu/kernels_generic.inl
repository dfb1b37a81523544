// Kernels written once for every vector type of ops/vec.h: the row-dot products of linear, the
// axpy rows of matmul, the fused WKV recurrence and a sum. kernels_portable.cpp,
// kernels_avx2.cpp and kernels_avx512.cpp include this file inside their namespaces, with `V`
// and QRWKV_TARGET defined, and fill their level's table entries with what it defines.
//
// Numerics: weights are widened exactly to float32 and every product is summed in float32 in
// the order of the reference loops per lane; only the split of a sum into W lanes (and their
// final reduction) differs from the reference. With W = 1 the row-dot and WKV kernels compute
// exactly the reference's sums.

using F = V::F;
constexpr int W = V::W;

#include "ops/block_decode.inl"

template <DType DT>
constexpr bool kIsBlock = DT == DType::Q8_0 || DT == DType::Q4_0;

// Bytes per element of the element-wise dtypes.
template <DType DT>
constexpr int64_t kElemBytes = DT == DType::F32 ? 4 : 2;

// W consecutive weights of a row stored as DT (F32, BF16, F16), widened to float32; the _n
// forms read the first n < W and zero the other lanes.
template <DType DT>
QRWKV_TARGET inline F load_w(const uint8_t* p) {
  if constexpr (DT == DType::F32)
    return V::load_f32(p);
  else if constexpr (DT == DType::BF16)
    return V::load_bf16(p);
  else
    return V::load_f16(p);
}

template <DType DT>
QRWKV_TARGET inline F load_w_n(const uint8_t* p, int n) {
  if constexpr (DT == DType::F32)
    return V::load_f32_n(p, n);
  else if constexpr (DT == DType::BF16)
    return V::load_bf16_n(p, n);
  else
    return V::load_f16_n(p, n);
}

// ---- Y = X Wᵀ, few tokens: row-dot products ------------------------------------------------
//
// One call computes an RT × TT block of Y: rows w[0 .. RT) of W (rb bytes apart) against tokens
// x[0 .. TT) (K floats apart), with RT·TT vector accumulators. Every step loads RT weight vectors
// and TT activation vectors and issues RT·TT fused multiply-adds, so each weight byte read from
// memory serves TT tokens.
//
//   acc[r][t] += W[r][i .. i+W) · X[t][i .. i+W)        y[t][r] = Σ lanes of acc[r][t]
template <int RT, int TT, DType DT>
QRWKV_TARGET void dot_block(const float* x, int64_t K, const uint8_t* w, int64_t rb, float* y,
                            int64_t ldy) {
  F acc[RT][TT];
  for (int r = 0; r < RT; ++r)
    for (int t = 0; t < TT; ++t) acc[r][t] = V::zero();
  if constexpr (kIsBlock<DT>) {
    // Block formats: a row is K / 32 blocks; each block's 32 weights are decoded once (d · q,
    // exact) and serve the TT tokens.
    constexpr int NV = 32 / W;
    const int64_t bb = tensor_bytes(DT, 32);
    for (int64_t b = 0; b < K / 32; ++b) {
      F xv[TT][NV];
      for (int t = 0; t < TT; ++t)
        for (int v = 0; v < NV; ++v) xv[t][v] = V::load(x + t * K + b * 32 + v * W);
      for (int r = 0; r < RT; ++r) {
        const uint8_t* blk = w + r * rb + b * bb;
        // The next block of rows follows these in memory: fetch its bytes at the same position
        // now, so that decode streams W at memory speed rather than at the speed of demand misses.
        V::prefetch(blk + RT * rb);
        V::prefetch_far(blk + kPrefetchFar);
        F wv[NV];
        dequant_block<DT>(blk, wv);
        for (int t = 0; t < TT; ++t)
          for (int v = 0; v < NV; ++v) acc[r][t] = V::fmadd(wv[v], xv[t][v], acc[r][t]);
      }
    }
  } else {
    constexpr int64_t es = kElemBytes<DT>;
    int64_t i = 0;
    for (; i + W <= K; i += W) {
      F xv[TT];
      for (int t = 0; t < TT; ++t) xv[t] = V::load(x + t * K + i);
      for (int r = 0; r < RT; ++r) {
        const uint8_t* p = w + r * rb + i * es;
        V::prefetch(p + RT * rb);
        V::prefetch_far(p + kPrefetchFar);
        const F wv = load_w<DT>(p);
        for (int t = 0; t < TT; ++t) acc[r][t] = V::fmadd(wv, xv[t], acc[r][t]);
      }
    }
    if (i < K) {
      const int n = static_cast<int>(K - i);
      F xv[TT];
      for (int t = 0; t < TT; ++t) xv[t] = V::load_n(x + t * K + i, n);
      for (int r = 0; r < RT; ++r) {
        const F wv = load_w_n<DT>(w + r * rb + i * es, n);
        for (int t = 0; t < TT; ++t) acc[r][t] = V::fmadd(wv, xv[t], acc[r][t]);
      }
    }
  }
  for (int r = 0; r < RT; ++r)
    for (int t = 0; t < TT; ++t) y[t * ldy + r] = V::reduce(acc[r][t]);
}

// All T tokens against RT rows starting at row o: blocks of 4 tokens, then the rest.
template <int RT, DType DT>
QRWKV_TARGET void dot_tokens(const float* x, int64_t T, int64_t K, const uint8_t* wr, int64_t rb,
                             float* y, int64_t ldy) {
  int64_t t = 0;
  for (; t + 4 <= T; t += 4) dot_block<RT, 4, DT>(x + t * K, K, wr, rb, y + t * ldy, ldy);
  switch (T - t) {
    case 3:
      dot_block<RT, 3, DT>(x + t * K, K, wr, rb, y + t * ldy, ldy);
      break;
    case 2:
      dot_block<RT, 2, DT>(x + t * K, K, wr, rb, y + t * ldy, ldy);
      break;
    case 1:
      dot_block<RT, 1, DT>(x + t * K, K, wr, rb, y + t * ldy, ldy);
      break;
    default:
      break;
  }
}

template <DType DT>
QRWKV_TARGET void rowdot_dt(const float* x, int64_t T, const Tensor& w, int64_t r0, int64_t r1,
                            float* y) {
  const int64_t out = w.shape[0], K = w.shape[1], rb = tensor_bytes(DT, K);
  int64_t o = r0;
  for (; o + 4 <= r1; o += 4) dot_tokens<4, DT>(x, T, K, w.data + o * rb, rb, y + o, out);
  for (; o < r1; ++o) dot_tokens<1, DT>(x, T, K, w.data + o * rb, rb, y + o, out);
}

QRWKV_TARGET void rowdot(const float* x, int64_t T, const Tensor& w, int64_t r0, int64_t r1,
                         float* y) {
  switch (w.dtype) {
    case DType::F32:
      return rowdot_dt<DType::F32>(x, T, w, r0, r1, y);
    case DType::BF16:
      return rowdot_dt<DType::BF16>(x, T, w, r0, r1, y);
    case DType::F16:
      return rowdot_dt<DType::F16>(x, T, w, r0, r1, y);
    case DType::Q8_0:
      return rowdot_dt<DType::Q8_0>(x, T, w, r0, r1, y);
    case DType::Q4_0:
      return rowdot_dt<DType::Q4_0>(x, T, w, r0, r1, y);
    default:
      fail(w.name, std::string("linear: unsupported weight dtype ") + dtype_name(w.dtype));
  }
}

// ---- Y = X M: axpy rows --------------------------------------------------------------------

// y[j] += a · row[j] for j < n.
template <DType DT>
QRWKV_TARGET inline void axpy_row(float a, const uint8_t* row, float* y, int64_t n) {
  constexpr int64_t es = kElemBytes<DT>;
  const F av = V::set1(a);
  int64_t j = 0;
  for (; j + W <= n; j += W)
    V::store(y + j, V::fmadd(av, load_w<DT>(row + j * es), V::load(y + j)));
  if (j < n) {
    const int m = static_cast<int>(n - j);
    V::store_n(y + j, V::fmadd(av, load_w_n<DT>(row + j * es, m), V::load_n(y + j, m)), m);
  }
}

template <DType DT>
QRWKV_TARGET void matmul_rows_dt(const float* x, int64_t ldx, const Tensor& m, int64_t t0,
                                 int64_t t1, float* y) {
  const int64_t in = m.shape[0], out = m.shape[1], rb = out * kElemBytes<DT>;
  std::fill(y + t0 * out, y + t1 * out, 0.0f);
  for (int64_t i = 0; i < in; ++i)
    for (int64_t t = t0; t < t1; ++t)
      axpy_row<DT>(x[t * ldx + i], m.data + i * rb, y + t * out, out);
}

// Columns [j0, j1) of Y for all T tokens: each thread reads only its strip of M.
template <DType DT>
QRWKV_TARGET void matmul_cols_dt(const float* x, int64_t T, int64_t ldx, const Tensor& m,
                                 int64_t j0, int64_t j1, float* y) {
  const int64_t in = m.shape[0], out = m.shape[1], rb = out * kElemBytes<DT>;
  for (int64_t t = 0; t < T; ++t) std::fill(y + t * out + j0, y + t * out + j1, 0.0f);
  for (int64_t i = 0; i < in; ++i)
    for (int64_t t = 0; t < T; ++t)
      axpy_row<DT>(x[t * ldx + i], m.data + i * rb + j0 * kElemBytes<DT>, y + t * out + j0,
                   j1 - j0);
}

QRWKV_TARGET void matmul_cols(const float* x, int64_t T, int64_t ldx, const Tensor& m, int64_t j0,
                              int64_t j1, float* y) {
  switch (m.dtype) {
    case DType::F32:
      return matmul_cols_dt<DType::F32>(x, T, ldx, m, j0, j1, y);
    case DType::BF16:
      return matmul_cols_dt<DType::BF16>(x, T, ldx, m, j0, j1, y);
    case DType::F16:
      return matmul_cols_dt<DType::F16>(x, T, ldx, m, j0, j1, y);
    default:
      fail(m.name, std::string("matmul: unsupported matrix dtype ") + dtype_name(m.dtype));
  }
}

QRWKV_TARGET void matmul_rows(const float* x, int64_t ldx, const Tensor& m, int64_t t0, int64_t t1,
                              float* y) {
  switch (m.dtype) {
    case DType::F32:
      return matmul_rows_dt<DType::F32>(x, ldx, m, t0, t1, y);
    case DType::BF16:
      return matmul_rows_dt<DType::BF16>(x, ldx, m, t0, t1, y);
    case DType::F16:
      return matmul_rows_dt<DType::F16>(x, ldx, m, t0, t1, y);
    default:
      fail(m.name, std::string("matmul: unsupported matrix dtype ") + dtype_name(m.dtype));
  }
}

// ---- the fused WKV recurrence ----------------------------------------------------------------
//
// Per token and per block of up to 4 vectors of value channels j: for every key channel i,
//   S[i][j] = w_i · S[i][j] + k̃_i · v[j]      o[j] += q_i · S[i][j]
// with the block's o in registers; k̃_i = k_i · (1 − w_i) and q_i = r_i · scale as in the
// reference.
QRWKV_TARGET void wkv_head(const WkvHead& h) {
  const int64_t N = h.N;
  for (int64_t t = 0; t < h.T; ++t) {
    const float* r = h.r + t * h.r_stride;
    const float* k = h.k + t * h.k_stride;
    const float* v = h.v + t * h.v_stride;
    const float* w = h.w + t * h.w_stride;
    const float* omw = h.one_minus_w + t * h.w_stride;
    float* o = h.o + t * h.o_stride;
    for (int64_t j0 = 0; j0 < N; j0 += 4 * W) {
      const int nv = static_cast<int>(std::min<int64_t>(4, (N - j0 + W - 1) / W));
      int lanes[4];
      F vv[4], acc[4];
      for (int u = 0; u < nv; ++u) {
        lanes[u] = static_cast<int>(std::min<int64_t>(W, N - j0 - u * W));
        vv[u] = lanes[u] == W ? V::load(v + j0 + u * W) : V::load_n(v + j0 + u * W, lanes[u]);
        acc[u] = V::zero();
      }
      for (int64_t i = 0; i < N; ++i) {
        const F wi = V::set1(w[i]);
        const F ki = V::set1(k[i] * omw[i]);
        const F qi = V::set1(r[i] * h.scale);
        float* Si = h.S + i * N + j0;
        for (int u = 0; u < nv; ++u) {
          float* p = Si + u * W;
          F s = lanes[u] == W ? V::load(p) : V::load_n(p, lanes[u]);
          s = V::fmadd(wi, s, V::mul(ki, vv[u]));
          if (lanes[u] == W)
            V::store(p, s);
          else
            V::store_n(p, s, lanes[u]);
          acc[u] = V::fmadd(qi, s, acc[u]);
        }
      }
      for (int u = 0; u < nv; ++u) {
        if (lanes[u] == W)
          V::store(o + j0 + u * W, acc[u]);
        else
          V::store_n(o + j0 + u * W, acc[u], lanes[u]);
      }
    }
  }
}

// ---- the RWKV-7 delta rule, one token of one head ---------------------------------------------
//
// Per block of up to 4 vectors of value channels j:  sa[j] = Σ_i κ_i S[i][j]  (the state before
// the token), then for every key channel i
//   S[i][j] = w_i · S[i][j] − (κa)_i · sa[j] + k̃_i · v[j]      y[j] += r_i · S[i][j]
// with the block's sa, v and y in registers.
// NV vectors of value channels from j0, the last one holding `tail` lanes: NV is a constant so
// that sa, v and y stay in registers.
template <int NV>
QRWKV_TARGET inline void wkv7_block(float* S, int64_t N, int64_t j0, int tail, const Wkv7Token& x,
                                    const float* r, float* y) {
  auto load = [&](const float* p, int u) QRWKV_TARGET {
    return u < NV - 1 || tail == W ? V::load(p) : V::load_n(p, tail);
  };
  auto store = [&](float* p, F v, int u) QRWKV_TARGET {
    if (u < NV - 1 || tail == W)
      V::store(p, v);
    else
      V::store_n(p, v, tail);
  };
  F sa[NV], vv[NV], acc[NV];
  for (int u = 0; u < NV; ++u) {
    vv[u] = load(x.v + j0 + u * W, u);
    sa[u] = V::zero();
    acc[u] = V::zero();
  }
  for (int64_t i = 0; i < N; ++i) {
    const F ki = V::set1(x.kap[i]);
    const float* Si = S + i * N + j0;
    for (int u = 0; u < NV; ++u) sa[u] = V::fmadd(ki, load(Si + u * W, u), sa[u]);
  }
  for (int64_t i = 0; i < N; ++i) {
    const F wi = V::set1(x.w[i]), ai = V::set1(-x.ka[i]), ki = V::set1(x.kt[i]);
    const F ri = V::set1(r[i]);
    float* Si = S + i * N + j0;
    for (int u = 0; u < NV; ++u) {
      const F s = V::fmadd(wi, load(Si + u * W, u), V::fmadd(ai, sa[u], V::mul(ki, vv[u])));
      store(Si + u * W, s, u);
      acc[u] = V::fmadd(ri, s, acc[u]);
    }
  }
  for (int u = 0; u < NV; ++u) store(y + j0 + u * W, acc[u], u);
}

QRWKV_TARGET void wkv7_step(float* S, int64_t N, const Wkv7Token& x, const float* r, float* y) {
  for (int64_t j0 = 0; j0 < N; j0 += 4 * W) {
    const int nv = static_cast<int>(std::min<int64_t>(4, (N - j0 + W - 1) / W));
    const int tail = static_cast<int>(std::min<int64_t>(W, N - j0 - (nv - 1) * W));
    switch (nv) {
      case 1:
        wkv7_block<1>(S, N, j0, tail, x, r, y);
        break;
      case 2:
        wkv7_block<2>(S, N, j0, tail, x, r, y);
        break;
      case 3:
        wkv7_block<3>(S, N, j0, tail, x, r, y);
        break;
      default:
        wkv7_block<4>(S, N, j0, tail, x, r, y);
        break;
    }
  }
}

// ---- vectorized exp, sigmoid and tanh --------------------------------------------------------
//
// e^x: n = round(x · log2 e), r = x − n · ln 2 (ln 2 in two parts, so r is nearly exact),
// e^r by Cephes' degree-7 polynomial for expf on |r| ≤ ln2 / 2, then · 2^n. x is clamped to
// [-87, 88] (2^n stays a normal number): e^x then saturates at e^-87 ≈ 1.6e-38 and e^88 ≈ 1.7e38
// instead of reaching 0 and inf, which the callers below (1 / (1 + e^x)) do not notice. Within
// the range, the error is a few ulp.
QRWKV_TARGET inline F vexp(F x) {
  x = V::min(V::max(x, V::set1(-87.0f)), V::set1(88.0f));
  const F n = V::round(V::mul(x, V::set1(1.44269504088896341f)));
  F r = V::fmadd(n, V::set1(-0.693359375f), x);
  r = V::fmadd(n, V::set1(2.12194440e-4f), r);
  F p = V::set1(1.9875691500e-4f);
  p = V::fmadd(p, r, V::set1(1.3981999507e-3f));
  p = V::fmadd(p, r, V::set1(8.3334519073e-3f));
  p = V::fmadd(p, r, V::set1(4.1665795894e-2f));
  p = V::fmadd(p, r, V::set1(1.6666665459e-1f));
  p = V::fmadd(p, r, V::set1(5.0000001201e-1f));
  const F e = V::add(V::fmadd(V::mul(p, r), r, r), V::set1(1.0f));
  return V::ldexp(e, n);
}

// σ(x) = 1 / (1 + e^−x).
QRWKV_TARGET inline F vsigmoid(F x) {
  const F one = V::set1(1.0f);
  return V::div(one, V::add(one, vexp(V::sub(V::zero(), x))));
}

// tanh x: Cephes' odd polynomial x + x³ P(x²) for |x| < 0.625, where 1 − 2 / (e^{2|x|} + 1)
// would lose the leading digits; that form with x's sign elsewhere.
QRWKV_TARGET inline F vtanh(F x) {
  const F a = V::abs(x), x2 = V::mul(x, x), one = V::set1(1.0f);
  F p = V::set1(-5.70498872745e-3f);
  p = V::fmadd(p, x2, V::set1(2.06390887954e-2f));
  p = V::fmadd(p, x2, V::set1(-5.37397155531e-2f));
  p = V::fmadd(p, x2, V::set1(1.33314422036e-1f));
  p = V::fmadd(p, x2, V::set1(-3.33332819422e-1f));
  const F small = V::fmadd(V::mul(p, x2), x, x);
  const F big = V::sub(one, V::div(V::set1(2.0f), V::add(vexp(V::add(a, a)), one)));
  return V::select_lt(a, V::set1(0.625f), small, V::copysign(big, x));
}

// Element-wise stages over [b, e), their tails through partial loads.
template <typename Op>
QRWKV_TARGET inline void map_range(int64_t b, int64_t e, Op op) {
  int64_t j = b;
  for (; j + W <= e; j += W) op(j, W);
  if (j < e) op(j, static_cast<int>(e - j));
}

// g ← silu(g) · u = g · σ(g) · u
QRWKV_TARGET void swiglu(float* g, const float* u, int64_t b, int64_t e) {
  map_range(b, e, [&](int64_t j, int n) QRWKV_TARGET {
    const F gv = V::load_n(g + j, n);
    V::store_n(g + j, V::mul(V::mul(gv, vsigmoid(gv)), V::load_n(u + j, n)), n);
  });
}

// o ← o · σ(g)
QRWKV_TARGET void gate(float* o, const float* g, int64_t b, int64_t e) {
  map_range(b, e, [&](int64_t j, int n) QRWKV_TARGET {
    V::store_n(o + j, V::mul(V::load_n(o + j, n), vsigmoid(V::load_n(g + j, n))), n);
  });
}

QRWKV_TARGET void tanh(float* x, int64_t b, int64_t e) {
  map_range(b, e, [&](int64_t j, int n) QRWKV_TARGET {
    V::store_n(x + j, vtanh(V::load_n(x + j, n)), n);
  });
}

// The per-token channel values of the RWKV-7 delta rule (backend/wkv7.h, wkv7_token), vectorized
// with the polynomial exp above: the same formulas, each transcendental within a few ulp of the
// C library's, ‖κ‖² summed in float32.
QRWKV_TARGET void wkv7_token(const Wkv7Args& p, int64_t t, int64_t h, Wkv7Token& x) {
  const int64_t N = p.N, C = p.H * N, KVD = p.Hkv * N, G = p.H / p.Hkv;
  auto vecp = [](const Tensor* v) {
    return v->empty() ? nullptr : reinterpret_cast<const float*>(v->data);
  };
  const float* w0 = vecp(p.w0);
  const float* a0 = vecp(p.a0);
  const float* v0 = p.nu != nullptr ? vecp(p.v0) : nullptr;
  const float* kk = vecp(p.k_k);
  const float* kka = vecp(p.k_a);
  const int64_t c0 = h * N, kv0 = (h / G) * N;
  const float* k = p.k + t * KVD + kv0;
  const float* vin = p.v + t * KVD + kv0;
  const float* d = p.d + t * C + c0;
  const float* ap = p.a + t * C + c0;
  const float* nup = p.nu != nullptr ? p.nu + t * C + c0 : nullptr;
  float* vf = p.v_first + t * C + c0;
  const F one = V::set1(1.0f), minus_scale = V::set1(-std::exp(-0.5f));
  F norm2 = V::zero();
  map_range(0, N, [&](int64_t i, int n) QRWKV_TARGET {
    const int64_t c = c0 + i;
    const F lw = V::mul(minus_scale, vsigmoid(V::add(V::load_n(w0 + c, n), V::load_n(d + i, n))));
    const F w = vexp(lw);
    const F a = vsigmoid(V::add(V::load_n(a0 + c, n), V::load_n(ap + i, n)));
    const F vi = V::load_n(vin + i, n);
    F v;
    if (v0 == nullptr) {
      v = vi;
      V::store_n(vf + i, v, n);
    } else {
      const F nu = vsigmoid(V::add(V::load_n(v0 + c, n), V::load_n(nup + i, n)));
      v = V::fmadd(V::sub(V::load_n(vf + i, n), vi), nu, vi);
    }
    const F ki = V::load_n(k + i, n);
    const F kap = kk != nullptr ? V::mul(ki, V::load_n(kk + c, n)) : ki;
    norm2 = V::fmadd(kap, kap, norm2);
    const F kt = kka != nullptr ? V::mul(ki, V::fmadd(V::sub(a, one), V::load_n(kka + c, n), one))
                                : V::mul(ki, V::add(V::sub(one, w), a));
    V::store_n(x.log_w + i, lw, n);
    V::store_n(x.w + i, w, n);
    V::store_n(x.v + i, v, n);
    V::store_n(x.kap + i, kap, n);
    V::store_n(x.kt + i, kt, n);
    V::store_n(x.ka + i, a, n);
  });
  const F inv = V::set1(1.0f / std::max(std::sqrt(V::reduce(norm2)), 1e-12f));
  map_range(0, N, [&](int64_t i, int n) QRWKV_TARGET {
    const F kap = V::mul(V::load_n(x.kap + i, n), inv);
    V::store_n(x.kap + i, kap, n);
    V::store_n(x.ka + i, V::mul(V::load_n(x.ka + i, n), kap), n);
  });
}

// ---- causal softmax attention ------------------------------------------------------------------
//
// The heads of one kv-head group (up to kAttentionGroup at a time) at one token share every key and
// value row they read. Keys come in blocks of kKeys with a running softmax per head (flash
// attention):
//   s_j = q · k_j / sqrt(D);  m' = max(m, max_j s_j);  o ← o · e^(m − m') + Σ_j e^(s_j − m') v_j
// and l likewise; o /= l at the end. q · k_j is D/W fused multiply-adds and one reduction, and
// o += p_j v_j is D/W more, with o of every head of the group in L1; the exponentials are the
// vectorized vexp (a few ulp from libm's).
constexpr int64_t kAttnKeys = 128;

QRWKV_TARGET void attention_item(const AttentionArgs& a, int64_t t, int64_t kvh, int64_t g0,
                                 int64_t gn) {
  const int64_t D = a.D, QD = a.H * D, KVD = a.Hkv * D, G = a.H / a.Hkv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int64_t n_ctx = a.pos0 + t + 1;
  const int64_t nv = (D + W - 1) / W;
  const int tail = static_cast<int>(D - (nv - 1) * W);  // lanes of the last vector
  float s[kAttentionGroup][kAttnKeys];
  float m[kAttentionGroup];
  double l[kAttentionGroup];
  const float* q[kAttentionGroup];
  float* o[kAttentionGroup];
  for (int64_t g = 0; g < gn; ++g) {
    const int64_t h = kvh * G + g0 + g;
    q[g] = a.q + t * QD + h * D;
    o[g] = a.o + t * QD + h * D;
    std::fill(o[g], o[g] + D, 0.0f);
    m[g] = -INFINITY;
    l[g] = 0.0;
  }
  auto ld = [&](const float* p, int64_t v) QRWKV_TARGET {
    return v + 1 < nv ? V::load(p + v * W) : V::load_n(p + v * W, tail);
  };
  for (int64_t j0 = 0; j0 < n_ctx; j0 += kAttnKeys) {
    const int64_t nb = std::min(kAttnKeys, n_ctx - j0);
    for (int64_t j = 0; j < nb; ++j) {
      const float* kj = a.k_cache + (j0 + j) * KVD + kvh * D;
      for (int64_t g = 0; g < gn; ++g) {
        F acc = V::zero();
        for (int64_t v = 0; v < nv; ++v) acc = V::fmadd(ld(q[g], v), ld(kj, v), acc);
        s[g][j] = V::reduce(acc) * scale;
      }
    }
    for (int64_t g = 0; g < gn; ++g) {
      float block_max = -INFINITY;
      for (int64_t j = 0; j < nb; ++j) block_max = std::max(block_max, s[g][j]);
      if (block_max > m[g]) {
        const float rescale = std::exp(m[g] - block_max);  // 0 for the first block
        const F r = V::set1(rescale);
        for (int64_t v = 0; v < nv; ++v) {
          const int n = v + 1 < nv ? W : tail;
          V::store_n(o[g] + v * W, V::mul(r, V::load_n(o[g] + v * W, n)), n);
        }
        l[g] *= rescale;
        m[g] = block_max;
      }
      const F mv = V::set1(m[g]);
      map_range(0, nb, [&](int64_t j, int n) QRWKV_TARGET {
        V::store_n(&s[g][j], vexp(V::sub(V::load_n(&s[g][j], n), mv)), n);
      });
      for (int64_t j = 0; j < nb; ++j) l[g] += s[g][j];
    }
    for (int64_t j = 0; j < nb; ++j) {
      const float* vj = a.v_cache + (j0 + j) * KVD + kvh * D;
      for (int64_t g = 0; g < gn; ++g) {
        const F p = V::set1(s[g][j]);
        for (int64_t v = 0; v + 1 < nv; ++v)
          V::store(o[g] + v * W, V::fmadd(p, V::load(vj + v * W), V::load(o[g] + v * W)));
        const int64_t v = nv - 1;
        V::store_n(o[g] + v * W,
                   V::fmadd(p, V::load_n(vj + v * W, tail), V::load_n(o[g] + v * W, tail)), tail);
      }
    }
  }
  for (int64_t g = 0; g < gn; ++g) {
    const float inv = static_cast<float>(1.0 / l[g]);
    for (int64_t i = 0; i < D; ++i) o[g][i] *= inv;
  }
}

// Work items [i0, i1) of attention: item i is one chunk of kAttentionGroup heads of one kv-head at
// one token. Token order alternates between the two ends of the sequence (t = 0, T−1, 1, T−2,
// …), so that contiguous ranges of items (one per thread) hold about the same causal work.
QRWKV_TARGET void attention(const AttentionArgs& a, int64_t i0, int64_t i1) {
  const int64_t G = a.H / a.Hkv, chunks = (G + kAttentionGroup - 1) / kAttentionGroup;
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t slot = i / (a.Hkv * chunks), rest = i % (a.Hkv * chunks);
    const int64_t t = slot % 2 == 0 ? slot / 2 : a.T - 1 - slot / 2;
    const int64_t kvh = rest / chunks, g0 = rest % chunks * kAttentionGroup;
    attention_item(a, t, kvh, g0, std::min(kAttentionGroup, G - g0));
  }
}

// ---- Σ x -------------------------------------------------------------------------------------

QRWKV_TARGET double sum(const float* x, int64_t n) {
  F a0 = V::zero(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 4 * W <= n; i += 4 * W) {
    a0 = V::add(a0, V::load(x + i));
    a1 = V::add(a1, V::load(x + i + W));
    a2 = V::add(a2, V::load(x + i + 2 * W));
    a3 = V::add(a3, V::load(x + i + 3 * W));
  }
  double s = V::reduce(V::add(V::add(a0, a1), V::add(a2, a3)));
  for (; i < n; ++i) s += x[i];
  return s;
}

// ---- compute probe ---------------------------------------------------------------------------

QRWKV_TARGET double fma_probe(int64_t iters) {
  F acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = V::set1(static_cast<float>(i));
  const F a = V::set1(0.999f), b = V::set1(1e-3f);
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < 12; ++i) acc[i] = V::fmadd(acc[i], a, b);
  F s = acc[0];
  for (int i = 1; i < 12; ++i) s = V::add(s, acc[i]);
  volatile float sink = V::reduce(s);
  (void)sink;
  return 2.0 * 12 * W * static_cast<double>(iters);
}

// The entries this level computes with these kernels.
void fill_generic(Kernels& k) {
  k.rowdot = rowdot;
  k.matmul_rows = matmul_rows;
  k.matmul_cols = matmul_cols;
  k.wkv_head = wkv_head;
  k.wkv7_step = wkv7_step;
  k.wkv7_token = wkv7_token;
  k.attention = attention;
  k.swiglu = swiglu;
  k.gate = gate;
  k.tanh = tanh;
  k.sum = sum;
  k.fma_probe = fma_probe;
}
