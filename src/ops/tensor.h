// A non-owning view of a weight tensor as stored in a checkpoint (F32, BF16 or F16), usually
// pointing into a memory-mapped safetensors file. Kernels read it row by row and convert to
// float32, so a model never needs a float32 copy of its weights.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace qrwkv {

// How the bytes of a 2-D weight [out, in] are arranged.
//   RowMajor  row r at r · tensor_bytes(dtype, in): as checkpoints store it.
//   Panel32   rows in panels of 32 (the last padded with zero rows), each panel contiguous and
//             interleaved so that one 64-byte load holds the same few columns of 16 rows: the
//             layout the CPU backend's matrix kernels and AMX tiles read (ops/panel.h). Made
//             by a backend's prepare step; BF16, Q8_0 and Q4_0 only.
enum class Layout : uint8_t { RowMajor, Panel32 };

struct Tensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // not necessarily aligned
  Layout layout = Layout::RowMajor;

  bool empty() const { return data == nullptr; }
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  // Number of elements in one row of the last dimension.
  int64_t cols() const { return shape.empty() ? 1 : shape.back(); }
  int64_t rows() const { return cols() == 0 ? 0 : numel() / cols(); }
};

// Elements per block of a block format (32, or 256 for the k-quants), 1 for the plain types.
inline int64_t block_elems(DType dt) {
  switch (dt) {
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q5_0:
    case DType::Q5_1:
    case DType::IQ4_NL:
      return 32;
    case DType::Q2_K:
    case DType::Q3_K:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
      return 256;
    default:
      return 1;
  }
}
// Bytes per block (ggml's layouts, ops/quant.h); dtype_size for the plain types.
inline int64_t block_bytes(DType dt) {
  switch (dt) {
    case DType::Q8_0:
      return 34;  // f16 d, 32 int8
    case DType::Q4_0:
      return 18;  // f16 d, 32 nibbles
    case DType::Q4_1:
      return 20;  // f16 d, f16 m, 32 nibbles
    case DType::Q5_0:
      return 22;  // f16 d, 32 high bits, 32 nibbles
    case DType::Q5_1:
      return 24;  // f16 d, f16 m, 32 high bits, 32 nibbles
    case DType::Q2_K:
      return 84;  // 16 scale bytes, 256 2-bit, f16 d, f16 dmin
    case DType::Q3_K:
      return 110;  // 256 high bits, 256 2-bit, 12 scale bytes, f16 d
    case DType::Q4_K:
      return 144;  // f16 d, f16 dmin, 12 scale bytes, 256 nibbles
    case DType::Q5_K:
      return 176;  // f16 d, f16 dmin, 12 scale bytes, 256 high bits, nibbles
    case DType::Q6_K:
      return 210;  // 256 low nibbles, 256 2-bit highs, 16 int8 scales, f16 d
    case DType::IQ4_NL:
      return 18;  // f16 d, 32 nibbles indexing a table of 16 int8 levels
    default:
      return static_cast<int64_t>(dtype_size(dt));
  }
}
// Bytes taken by n consecutive elements of a dtype. A row of a block-format tensor is always a
// whole number of blocks.
inline int64_t tensor_bytes(DType dt, int64_t n) { return n / block_elems(dt) * block_bytes(dt); }
// Bytes of a whole tensor, padding rows of a Panel32 layout included.
inline int64_t tensor_bytes(const Tensor& t) {
  if (t.layout == Layout::Panel32 && t.shape.size() == 2)
    return tensor_bytes(t.dtype, (t.shape[0] + 31) / 32 * 32 * t.shape[1]);
  return tensor_bytes(t.dtype, t.numel());
}

// The view t[i] of a row-major tensor with at least two dimensions (the first dimension
// removed).
inline Tensor slice0(const Tensor& t, int64_t i) {
  Tensor s;
  s.name = t.name + "[" + std::to_string(i) + "]";
  s.dtype = t.dtype;
  s.shape.assign(t.shape.begin() + 1, t.shape.end());
  s.data = t.data + i * tensor_bytes(t.dtype, s.numel());
  return s;
}

// Converts n stored elements starting at element `offset` (in row-major order, whatever the
// layout) to float32.
void load_f32(const Tensor& t, int64_t offset, int64_t n, float* dst);
// The whole tensor as float32.
std::vector<float> to_f32(const Tensor& t);

float bf16_to_f32(uint16_t v);
float f16_to_f32(uint16_t v);
uint16_t f32_to_bf16(float v);  // round to nearest even

}  // namespace qrwkv
