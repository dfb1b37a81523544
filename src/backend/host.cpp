#include "backend/host.h"

#include <cstdint>
#include <cstring>
#include <new>

#include "io/error.h"
#include "io/mapped_file.h"
#include "ops/panel.h"
#include "ops/quant.h"

namespace qrwkv {

WeightFormat parse_weight_format(const std::string& name) {
  for (WeightFormat f : {WeightFormat::F32, WeightFormat::BF16, WeightFormat::F16,
                         WeightFormat::Q8_0, WeightFormat::Q4_0, WeightFormat::Q4_0_PURE})
    if (name == weight_format_name(f)) return f;
  if (name.empty()) return WeightFormat::Stored;
  fail("--dtype", "unknown weight format '" + name + "' (f32, bf16, f16, q8_0, q4_0, q4_0_pure)");
}

const char* weight_format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::Stored:
      return "";
    case WeightFormat::F32:
      return "f32";
    case WeightFormat::BF16:
      return "bf16";
    case WeightFormat::F16:
      return "f16";
    case WeightFormat::Q8_0:
      return "q8_0";
    case WeightFormat::Q4_0:
      return "q4_0";
    case WeightFormat::Q4_0_PURE:
      return "q4_0_pure";
  }
  return "?";
}

namespace {

// The dtype a projection of this role is stored in under `format` (the stored dtype for
// WeightFormat::Stored and for matrices a block format cannot hold).
DType projection_dtype(const Tensor& t, WeightRole role, WeightFormat format) {
  DType target = t.dtype;
  switch (format) {
    case WeightFormat::Stored:
      return t.dtype;
    case WeightFormat::F32:
      target = DType::F32;
      break;
    case WeightFormat::BF16:
      target = DType::BF16;
      break;
    case WeightFormat::F16:
      target = DType::F16;
      break;
    case WeightFormat::Q8_0:
      target = DType::Q8_0;
      break;
    case WeightFormat::Q4_0:
      // Only the MLP matrices go to 4 bits; see WeightFormat.
      target = role == WeightRole::MlpProjection ? DType::Q4_0 : DType::Q8_0;
      break;
    case WeightFormat::Q4_0_PURE:
      target = DType::Q4_0;
      break;
  }
  const bool block = target == DType::Q8_0 || target == DType::Q4_0;
  return block && !quantizable(t) ? t.dtype : target;
}

// Mᵀ of a row-major 2-D BF16 tensor, in memory that lives until the tensor is packed (a LoRA
// matrix is small).
Tensor transpose_bf16(const Tensor& m) {
  thread_local std::vector<uint16_t> buf;
  const int64_t rows = m.shape[0], cols = m.shape[1];
  buf.resize(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      std::memcpy(&buf[static_cast<size_t>(c * rows + r)], m.data + 2 * (r * cols + c), 2);
  Tensor t = m;
  t.shape = {cols, rows};
  t.data = reinterpret_cast<const uint8_t*>(buf.data());
  return t;
}

}  // namespace

void prepare_host_weights(const std::vector<WeightRef>& weights, WeightFormat format,
                          WeightArena& arena, ThreadPool* pool, bool panels) {
  if (panels) {
    // Packing copies the projections that keep their dtype out of the mapped checkpoint. A
    // checkpoint larger than memory (a 14B model in bf16 on a 24 GiB machine) could not hold
    // that copy: its unconverted projections then stay mapped, row-major, and are read from the
    // file as the row-major kernels need them.
    uint64_t copied = 0;
    for (const WeightRef& ref : weights) {
      const Tensor& t = *ref.tensor;
      const bool projection =
          ref.role == WeightRole::Projection || ref.role == WeightRole::MlpProjection;
      if (!t.empty() && projection && projection_dtype(t, ref.role, format) == t.dtype)
        copied += static_cast<uint64_t>(tensor_bytes(t));
    }
    const uint64_t avail = available_memory_bytes();
    if (avail != 0 && copied > avail / 10 * 8) panels = false;
  }
  for (const WeightRef& ref : weights) {
    Tensor& t = *ref.tensor;
    if (t.empty()) continue;
    DType target = t.dtype;
    // Vectors are read as float arrays: F32 ones that a checkpoint stores at an address that is
    // not a multiple of 4 are copied too.
    const bool misaligned = reinterpret_cast<uintptr_t>(t.data) % alignof(float) != 0;
    const bool projection =
        ref.role == WeightRole::Projection || ref.role == WeightRole::MlpProjection;
    if (ref.role == WeightRole::Vector) target = DType::F32;
    if (projection) target = projection_dtype(t, ref.role, format);
    if (projection && panels && t.layout == Layout::RowMajor && packable(t, target)) {
      // Converted and packed in one pass, panel by panel.
      const Tensor src = t;
      std::shared_ptr<uint8_t> bytes;
      t = pack_panels(src, target, bytes, pool);
      release_pages(src.data, static_cast<size_t>(tensor_bytes(src)));
      arena.push_back(std::move(bytes));
      continue;
    }
    if (ref.role == WeightRole::LoraMatrix && panels && t.dtype == DType::BF16 &&
        t.layout == Layout::RowMajor && t.shape.size() == 2 && t.shape[0] % kQuantBlock == 0) {
      // Held as its transpose Mᵀ [out, in], packed as a BF16 projection (values unchanged), so
      // that the panel kernels read it: a packed LoRA matrix has shape [out, in].
      const Tensor tr = transpose_bf16(t);
      std::shared_ptr<uint8_t> bytes;
      t = pack_panels(tr, DType::BF16, bytes, pool);
      arena.push_back(std::move(bytes));
      continue;
    }
    if (target == t.dtype && !(ref.role == WeightRole::Vector && misaligned)) continue;
    auto bytes = std::make_shared<std::vector<uint8_t>>();
    if (ref.role == WeightRole::Vector) {
      // Vectors are small; widen them in one piece.
      bytes->resize(static_cast<size_t>(t.numel()) * 4);
      load_f32(t, 0, t.numel(), reinterpret_cast<float*>(bytes->data()));
      t.dtype = DType::F32;
      t.data = bytes->data();
    } else {
      const Tensor src = t;
      t = convert_tensor(src, target, *bytes, pool);
      // The source bytes (usually mapped from the checkpoint) are not read again by this
      // weight: let them leave memory, so that the peak stays near the converted size.
      release_pages(src.data, static_cast<size_t>(tensor_bytes(src)));
    }
    arena.push_back(std::move(bytes));
  }
}

void* HostBackend::alloc(size_t bytes) { return ::operator new (bytes, std::align_val_t{64}); }

void HostBackend::free(void* p) noexcept { ::operator delete (p, std::align_val_t{64}); }

void HostBackend::download(float* host, const float* src, int64_t n) {
  if (n > 0) std::memcpy(host, src, static_cast<size_t>(n) * sizeof(float));
}

void HostBackend::gather_rows(const float* src, int64_t C, const int64_t* rows, int64_t R,
                              float* dst) {
  for (int64_t r = 0; r < R; ++r)
    std::memcpy(dst + r * C, src + rows[r] * C, static_cast<size_t>(C) * sizeof(float));
}

void HostBackend::kv_append(std::vector<float>& k_cache, std::vector<float>& v_cache,
                            const float* k, const float* v, int64_t T, int64_t kv_dim) {
  k_cache.insert(k_cache.end(), k, k + T * kv_dim);
  v_cache.insert(v_cache.end(), v, v + T * kv_dim);
}

}  // namespace qrwkv
