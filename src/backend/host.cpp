#include "backend/host.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include "io/error.h"
#include "io/mapped_file.h"
#include "ops/panel.h"
#include "ops/quant.h"

namespace qrwkv {

WeightFormat parse_weight_format(const std::string& name) {
  for (WeightFormat f :
       {WeightFormat::F32, WeightFormat::BF16, WeightFormat::F16, WeightFormat::Q8_0,
        WeightFormat::Q4_0, WeightFormat::Q4_0_PURE, WeightFormat::Q4_K, WeightFormat::Q5_K,
        WeightFormat::Q6_K, WeightFormat::Q4_K_M, WeightFormat::Q5_K_M})
    if (name == weight_format_name(f)) return f;
  if (name.empty()) return WeightFormat::Stored;
  fail("--dtype",
       "unknown weight format '" + name +
           "' (f32, bf16, f16, q8_0, q4_0, q4_0_pure, q4_k, q5_k, q6_k, q4_k_m, q5_k_m)");
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
    case WeightFormat::Q4_K:
      return "q4_k";
    case WeightFormat::Q5_K:
      return "q5_k";
    case WeightFormat::Q6_K:
      return "q6_k";
    case WeightFormat::Q4_K_M:
      return "q4_k_m";
    case WeightFormat::Q5_K_M:
      return "q5_k_m";
  }
  return "?";
}

namespace {

// Where a projection sits, for the k-quant mixes: its kind and layer (from its name).
struct MatrixPlace {
  MatrixKind kind = MatrixKind::Other;
  int64_t layer = 0;
};
MatrixPlace place_of(const Tensor& t, bool recurrent) {
  MatrixPlace p;
  const std::string& n = t.name;
  if (n == "lm_head.weight" || n == "model.embed_tokens.weight")
    p.kind = MatrixKind::Output;
  else if (n.find("mlp.down_proj") != std::string::npos)
    p.kind = MatrixKind::FfnDown;
  else if (!recurrent && n.find("self_attn.v_proj") != std::string::npos)
    p.kind = MatrixKind::AttentionV;
  const std::string pre = "model.layers.";
  if (n.rfind(pre, 0) == 0) p.layer = std::atoll(n.c_str() + pre.size());
  return p;
}

// The dtype a projection of this role is stored in under `format` (the stored dtype for
// WeightFormat::Stored and for matrices a block format cannot hold).
DType projection_dtype(const Tensor& t, WeightRole role, WeightFormat format,
                       const MatrixPlace& place = {}, int64_t n_layers = 1) {
  DType target = t.dtype;
  auto mix = [&](QuantMix m) {
    return t.shape.size() == 2 ? mixed_type(m, place.kind, place.layer, n_layers, t.shape[1])
                               : t.dtype;
  };
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
    case WeightFormat::Q4_K:
      return mix(QuantMix::Q4_K);
    case WeightFormat::Q5_K:
      return mix(QuantMix::Q5_K);
    case WeightFormat::Q6_K:
      return mix(QuantMix::Q6_K);
    case WeightFormat::Q4_K_M:
      return mix(QuantMix::Q4_K_M);
    case WeightFormat::Q5_K_M:
      return mix(QuantMix::Q5_K_M);
  }
  if (!is_block_dtype(target)) return target;
  const bool fits = t.shape.size() == 2 && t.shape[1] % block_elems(target) == 0;
  return fits ? target : t.dtype;
}

// Whether every value of an F32 tensor is a bfloat16 value (its low 16 bits are zero).
bool bf16_exact(const Tensor& t) {
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, t.data + 4 * i, 4);
    if ((bits & 0xffffu) != 0) return false;
  }
  return true;
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
  // Layers and the kind of model, for the k-quant mixes.
  int64_t n_layers = 1;
  bool recurrent = false;
  const uint8_t* embedding = nullptr;
  bool tied = false;
  for (const WeightRef& ref : weights) {
    const MatrixPlace p = place_of(*ref.tensor, false);
    n_layers = std::max(n_layers, p.layer + 1);
    recurrent = recurrent || ref.role == WeightRole::LoraMatrix;
    if (ref.role == WeightRole::Embedding) embedding = ref.tensor->data;
  }
  for (const WeightRef& ref : weights)
    tied = tied || (ref.role == WeightRole::Projection && ref.tensor->data == embedding);
  const bool kquant_mix = format == WeightFormat::Q4_K || format == WeightFormat::Q5_K ||
                          format == WeightFormat::Q6_K || format == WeightFormat::Q4_K_M ||
                          format == WeightFormat::Q5_K_M;
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
    // The k-quant formats quantize an untied embedding too, as llama-quantize does (a tied one
    // stays as stored: its lm_head view takes the output's type).
    if (ref.role == WeightRole::Embedding && kquant_mix && !tied)
      target = projection_dtype(t, ref.role, format, {MatrixKind::Other, 0}, n_layers);
    if (projection)
      target = projection_dtype(t, ref.role, format, place_of(t, recurrent), n_layers);
    // Q5_0 is held as the Q8_0 of the same values (ops/quant.h, q5_0_to_q8_0): every backend
    // then runs it on its Q8_0 kernels. A matrix that a k-quant format puts in Q5_0 is quantized
    // to Q5_0 first.
    if (projection && target == DType::IQ4_NL) target = DType::Q8_0;  // the same values
    if (projection && target == DType::Q5_0) {
      if (t.dtype != DType::Q5_0) {
        auto q5 = std::make_shared<std::vector<uint8_t>>();
        const Tensor src = t;
        t = convert_tensor(src, DType::Q5_0, *q5, pool);
        release_pages(src.data, static_cast<size_t>(tensor_bytes(src)));
        arena.push_back(std::move(q5));
      }
      target = DType::Q8_0;
    }
    if (projection && panels && t.layout == Layout::RowMajor && packable(t, target)) {
      // Converted and packed in one pass, panel by panel.
      const Tensor src = t;
      std::shared_ptr<uint8_t> bytes;
      t = pack_panels(src, target, bytes, pool);
      release_pages(src.data, static_cast<size_t>(tensor_bytes(src)));
      arena.push_back(std::move(bytes));
      continue;
    }
    if (ref.role == WeightRole::LoraMatrix && panels && t.dtype == DType::F32 &&
        t.layout == Layout::RowMajor && t.shape.size() == 2 && t.shape[0] % kQuantBlock == 0 &&
        bf16_exact(t)) {
      // A float32 LoRA matrix whose values are all bfloat16 values (GGUF files keep the bf16
      // weights of a checkpoint widened to F32) is the same matrix in BF16: held so, it takes
      // the packed path below.
      auto bytes = std::make_shared<std::vector<uint8_t>>();
      t = convert_tensor(Tensor(t), DType::BF16, *bytes, pool);
      arena.push_back(std::move(bytes));
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
