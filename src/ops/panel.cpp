#include "ops/panel.h"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "io/error.h"
#include "ops/quant.h"

namespace qrwkv {

bool packable(const Tensor& t, DType dt) {
  return (dt == DType::BF16 || dt == DType::Q8_0 || dt == DType::Q4_0) && t.shape.size() == 2 &&
         t.shape[0] > 0 && t.shape[1] > 0 && t.shape[1] % kQuantBlock == 0;
}

std::shared_ptr<uint8_t> alloc_weight_bytes(size_t bytes) {
  // Large buffers on 2 MiB boundaries, so that whole huge pages back them (decode streams every
  // byte once per token: fewer TLB misses).
  constexpr size_t kHuge = size_t(2) << 20;
  const size_t align = bytes >= kHuge ? kHuge : 64;
  const size_t rounded = (bytes + align - 1) / align * align;
  void* p = std::aligned_alloc(align, rounded == 0 ? align : rounded);
  if (p == nullptr) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
  if (align == kHuge) madvise(p, rounded, MADV_HUGEPAGE);
#endif
  std::memset(p, 0, rounded);
  return std::shared_ptr<uint8_t>(static_cast<uint8_t*>(p), [](uint8_t* q) { std::free(q); });
}

namespace {

// Writes row r (0 ≤ r < 32) of a panel from the row-major bytes of that row.
void scatter_row(DType dt, int64_t in, const uint8_t* row, int64_t r, uint8_t* panel) {
  switch (dt) {
    case DType::BF16:
      for (int64_t kp = 0; kp < in / 2; ++kp)
        std::memcpy(panel + 4 * (kPanelRows * kp + r), row + 4 * kp, 4);
      return;
    case DType::Q8_0:
      for (int64_t b = 0; b < in / kQuantBlock; ++b) {
        const uint8_t* blk = row + b * 34;
        uint8_t* pb = panel + b * kQ8PanelBlock;
        std::memcpy(pb + 2 * r, blk, 2);
        for (int j = 0; j < 8; ++j)
          for (int i = 0; i < 4; ++i) pb[64 + 4 * (kPanelRows * j + r) + i] = blk[2 + 4 * j + i];
      }
      return;
    default:
      for (int64_t b = 0; b < in / kQuantBlock; ++b) {
        const uint8_t* blk = row + b * 18;
        uint8_t* pb = panel + b * kQ4PanelBlock;
        std::memcpy(pb + 2 * r, blk, 2);
        // Row-major byte e (e < 16) holds element e (low) and e + 16 (high); the panel wants
        // element 4j + i low and 4j + 16 + i high in byte i of word j: the same pairing.
        std::memcpy(pb + 64 + 4 * (kPanelRows * 0 + r), blk + 2, 4);
        std::memcpy(pb + 64 + 4 * (kPanelRows * 1 + r), blk + 6, 4);
        std::memcpy(pb + 64 + 4 * (kPanelRows * 2 + r), blk + 10, 4);
        std::memcpy(pb + 64 + 4 * (kPanelRows * 3 + r), blk + 14, 4);
      }
  }
}

}  // namespace

Tensor pack_panels(const Tensor& w, DType dt, std::shared_ptr<uint8_t>& keep, ThreadPool* pool) {
  if (!packable(w, dt))
    fail(w.name, std::string("cannot be packed as ") + dtype_name(dt) + " panels (shape " +
                     std::to_string(w.shape.size() == 2 ? w.shape[1] : -1) + " columns)");
  keep = alloc_weight_bytes(
      static_cast<size_t>(panel_count(w.shape[0]) * panel_bytes(dt, w.shape[1])));
  return pack_panels_into(w, dt, keep.get(), pool);
}

Tensor pack_panels_into(const Tensor& w, DType dt, uint8_t* base, ThreadPool* pool) {
  if (!packable(w, dt))
    fail(w.name, std::string("cannot be packed as ") + dtype_name(dt) + " panels (shape " +
                     std::to_string(w.shape.size() == 2 ? w.shape[1] : -1) + " columns)");
  if (w.layout != Layout::RowMajor) fail(w.name, "already packed");
  const int64_t out = w.shape[0], in = w.shape[1], pb = panel_bytes(dt, in);
  const int64_t panels = panel_count(out);
  auto pack = [&](int64_t p0, int64_t p1, int) {
    std::vector<float> f(static_cast<size_t>(in));
    std::vector<uint8_t> row(static_cast<size_t>(tensor_bytes(dt, in)));
    for (int64_t p = p0; p < p1; ++p)
      for (int64_t r = 0; r < kPanelRows && p * kPanelRows + r < out; ++r) {
        convert_row(w, p * kPanelRows + r, dt, f.data(), row.data());
        scatter_row(dt, in, row.data(), r, base + p * pb);
      }
  };
  if (pool != nullptr)
    pool->parallel_for(panels, 1, pack);
  else
    pack(0, panels, 0);
  Tensor t = w;
  t.dtype = dt;
  t.data = base;
  t.layout = Layout::Panel32;
  return t;
}

void load_panel_row(const Tensor& t, int64_t r, float* dst) {
  const int64_t in = t.shape[1];
  const uint8_t* panel = t.data + r / kPanelRows * panel_bytes(t.dtype, in);
  const int64_t pr = r % kPanelRows;
  switch (t.dtype) {
    case DType::BF16:
      for (int64_t kp = 0; kp < in / 2; ++kp) {
        uint16_t h[2];
        std::memcpy(h, panel + 4 * (kPanelRows * kp + pr), 4);
        dst[2 * kp] = bf16_to_f32(h[0]);
        dst[2 * kp + 1] = bf16_to_f32(h[1]);
      }
      return;
    case DType::Q8_0:
    case DType::Q4_0: {
      const bool q8 = t.dtype == DType::Q8_0;
      for (int64_t b = 0; b < in / kQuantBlock; ++b) {
        const uint8_t* pb = panel + b * (q8 ? kQ8PanelBlock : kQ4PanelBlock);
        uint16_t dh;
        std::memcpy(&dh, pb + 2 * pr, 2);
        const float d = f16_to_f32(dh);
        float* o = dst + b * kQuantBlock;
        for (int j = 0; j < (q8 ? 8 : 4); ++j)
          for (int i = 0; i < 4; ++i) {
            const uint8_t v = pb[64 + 4 * (kPanelRows * j + pr) + i];
            if (q8) {
              o[4 * j + i] = d * static_cast<float>(static_cast<int8_t>(v));
            } else {
              o[4 * j + i] = d * static_cast<float>((v & 15) - 8);
              o[4 * j + 16 + i] = d * static_cast<float>((v >> 4) - 8);
            }
          }
      }
      return;
    }
    default:
      fail(t.name, std::string("no Panel32 layout for ") + dtype_name(t.dtype));
  }
}

}  // namespace qrwkv
