// Dequantization of the block formats that GGUF files bring besides Q8_0 and Q4_0: Q4_1, Q5_0,
// Q5_1 (blocks of 32) and the k-quants Q2_K ... Q6_K (super-blocks of 256 with 16 or 8
// sub-block scales). The layouts are ggml's; the formulas are written out above each decoder.
//
// Every product and sum is rounded to float32 on its own, in the order written (this file is
// compiled without floating-point contraction): that is what llama.cpp's reference decoders
// and its Python package compute, bit for bit, and what the golden tests demand.
#include <cstring>

#include "io/error.h"
#include "ops/quant.h"

namespace qrwkv {

namespace {

// Q4_1 (20 bytes): f16 d, f16 m, 16 bytes of nibbles (byte j: element j low, j + 16 high).
//   w = d · n + m,  n ∈ [0, 15]
void q4_1(const uint8_t* b, float* y) {
  const float d = f16_at(b), m = f16_at(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>(qs[j] & 0xF) * d + m;
    y[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
  }
}

// Q5_0 (22 bytes): f16 d, 32 high bits (u32, bit j for element j), nibbles as Q4_0.
//   w = d · (n − 16),  n = nibble | high bit · 16 ∈ [0, 31]
void q5_0(const uint8_t* b, float* y) {
  const float d = f16_at(b);
  uint32_t qh;
  std::memcpy(&qh, b + 2, 4);
  const uint8_t* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    const int h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
    y[j] = static_cast<float>(((qs[j] & 0xF) | h0) - 16) * d;
    y[j + 16] = static_cast<float>(((qs[j] >> 4) | h1) - 16) * d;
  }
}

// Q5_1 (24 bytes): f16 d, f16 m, 32 high bits, nibbles.   w = d · n + m,  n ∈ [0, 31]
void q5_1(const uint8_t* b, float* y) {
  const float d = f16_at(b), m = f16_at(b + 2);
  uint32_t qh;
  std::memcpy(&qh, b + 4, 4);
  const uint8_t* qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    const int h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
    y[j] = static_cast<float>((qs[j] & 0xF) | h0) * d + m;
    y[j + 16] = static_cast<float>((qs[j] >> 4) | h1) * d + m;
  }
}

// Q2_K (84 bytes): 16 scale bytes (low nibble: scale s, high nibble: min m of a sub-block of
// 16), 64 bytes of 2-bit values, f16 d, f16 dmin. Each half of 128 elements reads 32 bytes four
// times, shifting by 0, 2, 4, 6: element 128h + 32i + l (l < 32) is bits 2i of byte 32h + l.
//   w = (d · s) · q − (dmin · m),  q ∈ [0, 3]
void q2_k(const uint8_t* b, float* y) {
  const uint8_t* sc = b;
  const uint8_t* q = b + 16;
  const float d = f16_at(b + 80), dmin = f16_at(b + 82);
  int is = 0;
  for (int h = 0; h < 2; ++h, q += 32) {
    for (int shift = 0; shift < 8; shift += 2) {
      for (int part = 0; part < 2; ++part) {
        const uint8_t s = sc[is++];
        const float dl = d * static_cast<float>(s & 0xF), ml = dmin * static_cast<float>(s >> 4);
        for (int l = 0; l < 16; ++l)
          *y++ = dl * static_cast<float>((q[16 * part + l] >> shift) & 3) - ml;
      }
    }
  }
}

// The 16 6-bit scales of a Q3_K block, packed in 12 bytes: the low 4 bits of scale j are the
// low nibble of byte j (j < 8) or the high nibble of byte j − 8 (j ≥ 8); the top 2 bits are
// bits 2·(j / 4) and up of byte 8 + j mod 4. Returned as signed values, less the offset 32.
void q3_k_scales(const uint8_t* s12, int8_t* out) {
  for (int j = 0; j < 16; ++j) {
    const int lo = j < 8 ? (s12[j] & 0xF) : (s12[j - 8] >> 4);
    const int hi = (s12[8 + (j % 4)] >> (2 * (j / 4))) & 3;
    out[j] = static_cast<int8_t>((lo | (hi << 4)) - 32);
  }
}

// Q3_K (110 bytes): 32 bytes of high bits (hmask), 64 bytes of 2-bit values, 12 bytes of 6-bit
// scales, f16 d. The 2-bit values are laid out as in Q2_K; element 128h + 32i + l takes its
// high bit from bit 4h + i of hmask[l]; a clear high bit subtracts 4.
//   w = (d · (s − 32)) · (q − 4 · !high),  q ∈ [0, 3]
void q3_k(const uint8_t* b, float* y) {
  const uint8_t* hm = b;
  const uint8_t* q = b + 32;
  int8_t sc[16];
  q3_k_scales(b + 96, sc);
  const float d = f16_at(b + 108);
  int is = 0;
  uint8_t m = 1;
  for (int h = 0; h < 2; ++h, q += 32) {
    for (int shift = 0; shift < 8; shift += 2, m = static_cast<uint8_t>(m << 1)) {
      for (int part = 0; part < 2; ++part) {
        const float dl = d * static_cast<float>(sc[is++]);
        for (int l = 0; l < 16; ++l) {
          const int k = 16 * part + l;
          const int v = ((q[k] >> shift) & 3) - ((hm[k] & m) ? 0 : 4);
          *y++ = dl * static_cast<float>(v);
        }
      }
    }
  }
}

// Q4_K (144 bytes): f16 d, f16 dmin, 12 scale bytes, 128 bytes of nibbles. Each 64 elements
// read 32 bytes: their low nibbles are the first 32 elements (sub-block 2i), their high
// nibbles the next 32 (sub-block 2i + 1).
//   w = (d · s) · n − (dmin · m),  n ∈ [0, 15]
void q4_k(const uint8_t* b, float* y) {
  const uint8_t* q = b + 16;
  for (int i = 0; i < 4; ++i, q += 32) {
    float d0, n0, d1, n1;
    k_sub_block(b, 2 * i, d0, n0);
    k_sub_block(b, 2 * i + 1, d1, n1);
    for (int l = 0; l < 32; ++l) *y++ = d0 * static_cast<float>(q[l] & 0xF) - n0;
    for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] >> 4) - n1;
  }
}

// Q5_K (176 bytes): f16 d, f16 dmin, 12 scale bytes, 32 bytes of high bits, 128 bytes of
// nibbles laid out as Q4_K; sub-block k takes its fifth bit from bit k of qh[l].
//   w = (d · s) · (n + 16 · high) − (dmin · m)
void q5_k(const uint8_t* b, float* y) {
  const uint8_t* qh = b + 16;
  const uint8_t* q = b + 48;
  for (int i = 0; i < 4; ++i, q += 32) {
    float d0, n0, d1, n1;
    k_sub_block(b, 2 * i, d0, n0);
    k_sub_block(b, 2 * i + 1, d1, n1);
    const uint8_t u0 = static_cast<uint8_t>(1u << (2 * i)),
                  u1 = static_cast<uint8_t>(2u << (2 * i));
    for (int l = 0; l < 32; ++l)
      *y++ = d0 * static_cast<float>((q[l] & 0xF) + ((qh[l] & u0) ? 16 : 0)) - n0;
    for (int l = 0; l < 32; ++l)
      *y++ = d1 * static_cast<float>((q[l] >> 4) + ((qh[l] & u1) ? 16 : 0)) - n1;
  }
}

// Q6_K (210 bytes): 128 bytes of low nibbles (ql), 64 bytes of 2-bit highs (qh), 16 int8
// scales (one per 16 elements), f16 d. In each half of 128 elements, position l < 32 gives
// four elements l, l + 32, l + 64, l + 96 from ql[l] low, ql[l + 32] low, ql[l] high,
// ql[l + 32] high, with high bits 0-1, 2-3, 4-5, 6-7 of qh[l].
//   w = (d · s) · (q − 32),  q ∈ [0, 63]
void q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = f16_at(b + 208);
  for (int h = 0; h < 2; ++h, y += 128, ql += 64, qh += 32, sc += 8) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
  }
}

// The 16 levels of IQ4_NL, a non-uniform 4-bit grid (denser near zero).
constexpr int8_t kIq4nlLevels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                     1,    13,   25,  38,  53,  69,  89,  113};

// IQ4_NL (18 bytes): f16 d, 16 bytes of nibbles laid out as Q4_0's (byte j: element j low,
// element j + 16 high), each nibble an index into the levels.   w = d · level[n]
void iq4_nl(const uint8_t* b, float* y) {
  const float d = f16_at(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * static_cast<float>(kIq4nlLevels[qs[j] & 0xF]);
    y[j + 16] = d * static_cast<float>(kIq4nlLevels[qs[j] >> 4]);
  }
}

}  // namespace

void iq4_nl_to_q8_0(const uint8_t* src, int64_t nb, uint8_t* q8) {
  for (int64_t b = 0; b < nb; ++b, src += 18, q8 += 34) {
    std::memcpy(q8, src, 2);  // d
    for (int j = 0; j < 16; ++j) {
      q8[2 + j] = static_cast<uint8_t>(kIq4nlLevels[src[2 + j] & 0xF]);
      q8[2 + j + 16] = static_cast<uint8_t>(kIq4nlLevels[src[2 + j] >> 4]);
    }
  }
}

void dequantize_ggml_blocks(DType dt, const uint8_t* blocks, int64_t b0, int64_t nb, float* out) {
  void (*f)(const uint8_t*, float*) = nullptr;
  switch (dt) {
    case DType::Q4_1:
      f = q4_1;
      break;
    case DType::Q5_0:
      f = q5_0;
      break;
    case DType::Q5_1:
      f = q5_1;
      break;
    case DType::Q2_K:
      f = q2_k;
      break;
    case DType::Q3_K:
      f = q3_k;
      break;
    case DType::Q4_K:
      f = q4_k;
      break;
    case DType::Q5_K:
      f = q5_k;
      break;
    case DType::Q6_K:
      f = q6_k;
      break;
    case DType::IQ4_NL:
      f = iq4_nl;
      break;
    default:
      fail("", std::string("dequantize_ggml_blocks: not a ggml block format: ") + dtype_name(dt));
  }
  const int64_t bytes = block_bytes(dt), n = block_elems(dt);
  for (int64_t b = b0; b < b0 + nb; ++b, out += n) f(blocks + b * bytes, out);
}

}  // namespace qrwkv
