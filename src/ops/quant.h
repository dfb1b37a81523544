// Block-quantized weight formats, made from F32/BF16/F16 weights at load time (`--dtype`).
//
// Both formats cut each row into blocks of 32 consecutive elements with one scale d per block,
// stored as float16, and store element j of a block as a small integer q_j:
//
//   Q8_0:  w_j = d · q_j,        q_j ∈ [-127, 127]  (int8);     34 bytes per block, 8.5 bits/weight
//   Q4_0:  w_j = d · (n_j − 8),  n_j ∈ [0, 15]      (nibbles);  18 bytes per block, 4.5 bits/weight
//
// In a Q4_0 block, byte i holds element i in its low nibble and element i + 16 in its high
// nibble, so one 16-byte load unpacks into two 16-lane vectors of consecutive elements.
//
// Because d has 11 significant bits and |q| < 2^7, every product d · q is exact in float32:
// the kernels may apply the scale before or after summing a block's products and agree to
// float32 rounding.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "ops/tensor.h"
#include "ops/threadpool.h"

namespace qrwkv {

constexpr int64_t kQuantBlock = 32;

struct BlockQ8_0 {
  uint16_t d;    // float16 scale
  int8_t q[32];  // w_j = d · q_j
};
struct BlockQ4_0 {
  uint16_t d;     // float16 scale
  uint8_t q[16];  // low nibble: element i, high nibble: element i + 16; w = d · (n − 8)
};
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18, "blocks must be packed");

uint16_t f32_to_f16(float v);  // round to nearest even

// The little-endian float16 at p (a block's scale), as float32.
inline float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K super-block, packed in its 12
// scale bytes: for j < 4 the low 6 bits of byte j (scale) and byte j + 4 (min); for j ≥ 4 the low
// 4 bits from the nibbles of byte j + 4 (scale: low, min: high) and the top 2 bits from the top
// bits of bytes j − 4 (scale) and j (min).
inline void k_scale_min(int j, const uint8_t* s12, int& sc, int& m) {
  if (j < 4) {
    sc = s12[j] & 63;
    m = s12[j + 4] & 63;
  } else {
    sc = (s12[j + 4] & 0xF) | ((s12[j - 4] >> 6) << 4);
    m = (s12[j + 4] >> 4) | ((s12[j] >> 6) << 4);
  }
}
// Sub-block j of the Q4_K / Q5_K super-block at b (f16 d, f16 dmin, 12 scale bytes, ...): its
// weights are scale · n − offset with scale = d · sc and offset = dmin · m, each a float32
// product as llama.cpp rounds it.
inline void k_sub_block(const uint8_t* b, int j, float& scale, float& offset) {
  int sc, m;
  k_scale_min(j, b + 4, sc, m);
  scale = f16_at(b) * static_cast<float>(sc);
  offset = f16_at(b + 2) * static_cast<float>(m);
}

// Quantizes n values (n a multiple of 32) into n / 32 blocks at `out`, as llama.cpp does:
// d = max|x| / 127 stored as float16, q = round-half-away-from-zero(x / d) with the unrounded d.
void quantize_row_q8_0(const float* x, int64_t n, BlockQ8_0* out);
// Q4_0 chooses each block's scale by least squares over a few candidate ranges, not simply
// max / 8: with 16 levels the choice of range changes the error noticeably.
void quantize_row_q4_0(const float* x, int64_t n, BlockQ4_0* out);
// Activations of the int8 kernels (the CPU backend's AVX512VNNI level), quantized per block of
// 32 values x_j, all in float32:
//   a = max_j |x_j|,   d = a / 127,   q_j = nearest-even(x_j · (127 / a)) ∈ [-127, 127]
// (d = q_j = 0 where a = 0), and s = Σ_j q_j, which kernels with offset weights need. Unlike a
// Q8_0 weight's, the scale stays float32: |x_j − d · q_j| ≤ d / 2 (plus float32 rounding).
// n is a multiple of 32; d and s get n / 32 values.
void quantize_act_int8(const float* x, int64_t n, int8_t* q, float* d, int32_t* s);
// The same with 16-bit integers: d = a / 32767, q_j = nearest-even(x_j · (32767 / a)) ∈
// [-32767, 32767], s = Σ_j q_j. Each element is within d / 2 of x_j: 256 times closer than with
// int8, and, for the elements of a block that are not far below its largest, closer than a
// bfloat16 rounding (relative error up to 2⁻⁹). With int8 weights a block's products still sum
// exactly in int32 (32 · 127 · 32767 < 2³¹).
void quantize_act_int16(const float* x, int64_t n, int16_t* q, float* d, int32_t* s);
// Dequantizes blocks [b0, b0 + nb) of a row of any block format at `blocks` into
// block_elems(dt) · nb floats.
void dequantize_blocks(DType dt, const uint8_t* blocks, int64_t b0, int64_t nb, float* out);
// The same for the formats of GGUF files other than Q8_0 and Q4_0 (ops/ggml_blocks.cpp):
// Q4_1, Q5_0, Q5_1 and the k-quants Q2_K ... Q6_K, bit for bit as llama.cpp decodes them.
void dequantize_ggml_blocks(DType dt, const uint8_t* blocks, int64_t b0, int64_t nb, float* out);

// Q5_0 blocks as the Q8_0 blocks of the same values (nb blocks): w = d · (n − 16) is d · q with
// q = n − 16 ∈ [−16, 15], so only the bytes change. GGUF files put many 4-bit matrices in Q5_0
// (llama-quantize's fallback for rows that are not whole 256-blocks); held as Q8_0 they run on
// the Q8_0 kernels.
void q5_0_to_q8_0(const uint8_t* q5, int64_t nb, uint8_t* q8);
// IQ4_NL blocks likewise: w = d · level[n] with integer levels in [−127, 113] (llama-quantize's
// fallback for Q2_K/Q3_K rows that are not whole 256-blocks).
void iq4_nl_to_q8_0(const uint8_t* src, int64_t nb, uint8_t* q8);
// Whether blocks of dt are held as the Q8_0 of the same values (Q5_0, IQ4_NL), and that
// conversion of nb blocks.
inline bool held_as_q8_0(DType dt) { return dt == DType::Q5_0 || dt == DType::IQ4_NL; }
inline void to_q8_0(DType dt, const uint8_t* src, int64_t nb, uint8_t* q8) {
  if (dt == DType::Q5_0)
    q5_0_to_q8_0(src, nb, q8);
  else
    iq4_nl_to_q8_0(src, nb, q8);
}

// llama.cpp's own quantizers (ops/ggml_quantize.cpp), without an importance matrix: n values
// (whole blocks) into the blocks of `dt` at `out`, the same bytes llama-quantize writes.
// Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K.
void quantize_ggml(DType dt, const float* x, int64_t n, uint8_t* out);
bool ggml_quantizable(DType dt);

// llama-quantize's choice of type per matrix for a file type (src/llama-quant.cpp, dense
// models, no importance matrix), which export-gguf and the in-memory k-quant formats follow:
//   the output head (or the tied embedding): Q6_K for every type below Q8_0 (Q8_0 when its rows
//   are not whole blocks of the base type);
//   Q4_K_M / Q5_K_M: ffn_down, and attention's v (not QRWKV6's value projection), in Q6_K for
//   the layers where more bits help most: the first and last eighth and every third between;
//   everything else the base type (Q4_0, Q8_0, Q4_K, Q5_K, Q6_K). A row length that is not whole
//   blocks of the chosen type falls back: Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, and to F16
//   when not even a multiple of 32.
enum class QuantMix { Q8_0, Q4_0, Q4_K_M, Q5_K_M, Q6_K, Q4_K, Q5_K };
enum class MatrixKind { Output, AttentionV, FfnDown, Other };
DType mixed_type(QuantMix mix, MatrixKind kind, int64_t layer, int64_t n_layers, int64_t cols);

// Whether a weight of this shape can be stored in a block format: 2-D with a row length that
// is a multiple of 32.
bool quantizable(const Tensor& t);

// Row r of a 2-D tensor (any layout load_f32 reads) in `target`, row-major, at dst
// (tensor_bytes(target, cols) bytes): the bytes themselves when the dtype is the same, the Q8_0
// of the same values for Q5_0 and IQ4_NL, else through float32 (`scratch`, cols floats) and
// the format's quantizer. convert_tensor and the panel packer convert rows with it.
void convert_row(const Tensor& src, int64_t r, DType target, float* scratch, uint8_t* dst);

// Converts a 2-D tensor to `target` (F32, BF16, F16, Q8_0 or Q4_0), with rows split across the
// pool's threads. The bytes live in `storage` (resized here); the returned view points into it.
Tensor convert_tensor(const Tensor& src, DType target, std::vector<uint8_t>& storage,
                      ThreadPool* pool);

}  // namespace qrwkv
