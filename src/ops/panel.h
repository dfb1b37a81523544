// The Panel32 layout (ops/tensor.h): how the CPU backend holds projection matrices, and the
// packing into it, done once at load.
//
// A weight W [out, in] (in a multiple of 32) becomes ⌈out / 32⌉ panels of 32 rows; panel p holds
// rows 32p .. 32p + 31 (zero rows past out) in panel_bytes(dtype, in) contiguous bytes, which is
// exactly what the 32 rows take row-major, so a packed tensor is no larger than a stored one:
//
//   BF16  word (kp, r) at byte 4·(32·kp + r), kp < in/2: the bf16 pair (W[r][2kp], W[r][2kp+1]).
//         A 64-byte load at (kp, 0) or (kp, 16) holds one k-pair of 16 rows, the operand of
//         vdpbf16ps against a broadcast activation pair; 16 consecutive k-pairs of 16 rows,
//         128 bytes apart, are an AMX-BF16 B tile.
//   Q8_0  per block b of 32 columns, kQ8PanelBlock bytes at kQ8PanelBlock·b: the 32 rows' float16
//         scales d[r] (64 bytes), then word (j, r) at 64 + 4·(32·j + r), j < 8, holding the signed
//         bytes q[r][32b + 4j + i], i = 0..3: the "quad" operand of vpdpbusd and, 16 rows at a
//         time (8 quads × 128 bytes apart), an AMX-INT8 B tile of one block.
//   Q4_0  per block, kQ4PanelBlock bytes: the scales, then word (j, r) at 64 + 4·(32·j + r),
//         j < 4, whose byte i holds the nibbles n[r][32b + 4j + i] (low) and n[r][32b + 4j + 16
//         + i] (high), n = q + 8; so (v & 0x0f0f0f0f) is quad j of the block and
//         (v >> 4 & 0x0f0f0f0f) is quad j + 4, both unsigned.
//
// Every value is kept exactly (the packing only moves bytes), so
// a packed weight computes the same function as the row-major one.
#pragma once

#include <cstdint>
#include <memory>

#include "ops/tensor.h"
#include "ops/threadpool.h"

namespace qrwkv {

constexpr int64_t kPanelRows = 32;
constexpr int64_t kQ8PanelBlock = 64 + 32 * 32;  // 1088 = 32 rows · 34 bytes
constexpr int64_t kQ4PanelBlock = 64 + 32 * 16;  // 576 = 32 rows · 18 bytes

// Bytes of one panel of 32 rows of `in` columns.
inline int64_t panel_bytes(DType dt, int64_t in) { return kPanelRows * tensor_bytes(dt, in); }
inline int64_t panel_count(int64_t out) { return (out + kPanelRows - 1) / kPanelRows; }

// Whether a 2-D weight of this shape can be held as Panel32 in `dt` (BF16, Q8_0 or Q4_0):
// rows of a multiple of 32 columns.
bool packable(const Tensor& t, DType dt);

// Memory for weights, aligned to 64 bytes (every panel starts on a cache line), asked to be
// backed by huge pages where the kernel allows it. Zero-filled.
std::shared_ptr<uint8_t> alloc_weight_bytes(size_t bytes);

// W (row-major, any dtype load_f32 reads) converted to `dt` (BF16, Q8_0 or Q4_0, quantized as
// convert_tensor does) and packed as Panel32 into new memory, panels split across the pool's
// threads. `keep` receives the memory the returned view points into.
Tensor pack_panels(const Tensor& w, DType dt, std::shared_ptr<uint8_t>& keep, ThreadPool* pool);

// The same into memory the caller provides (panel_count(out) · panel_bytes(dt, in) bytes,
// 64-byte aligned); the rows that pad the last panel are left as they were.
Tensor pack_panels_into(const Tensor& w, DType dt, uint8_t* dst, ThreadPool* pool);

// Row r of a Panel32 tensor as float32 (in values).
void load_panel_row(const Tensor& t, int64_t r, float* dst);

}  // namespace qrwkv
