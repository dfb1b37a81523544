// Models from GGUF files (llama.cpp's format): the metadata becomes a Config and the tensors
// become a WeightStore under their Hugging Face names and layouts, so that every architecture
// file binds them exactly as it binds a safetensors directory.
//
// Most tensors are the same bytes under another name (a GGUF tensor with ne = [in, out] is the
// row-major [out, in] matrix), mapped, in whatever block format the file stores them. What
// llama.cpp's converter rearranged is put back, into owned float32 (or row-copied) buffers:
//   llama   q/k projections: rows interleaved per head for ggml's adjacent-pair rope; GGUF row
//           h·D + p is Hugging Face row h·D + (p mod 2)·D/2 + ⌊p/2⌋.
//   rwkv6qwen2  time_mix_lerp_fused [5, C] holds time_maa_{w,k,v,r,g}; time_mix_w1 is
//           time_maa_w1 transposed and time_mix_w2 is time_maa_w2 with its last two dimensions
//           swapped, both with the five LoRA blocks in the order w, k, v, r, g where the
//           checkpoint has r, k, v, w, g; time_mix_decay_w1/w2 are time_decay_w1/w2
//           transposed.
#pragma once

#include <memory>
#include <string>

#include "io/gguf.h"
#include "model/config.h"
#include "model/weights.h"

namespace qrwkv {

// Whether `path` names a file rather than a model directory (GGUF is the one file format).
bool is_gguf_file(const std::string& path);

struct GgufModel {
  std::shared_ptr<const GgufFile> file;
  Config config;
  WeightStore store;
};

// Opens a GGUF model file; errors name the file and the key or tensor at fault.
GgufModel open_gguf_model(const std::string& path);
// The weights only (WeightStore::open of a GGUF path).
WeightStore open_gguf_weights(const std::string& path);

// "Q4_K_M: 98×Q4_K, 25×Q6_K, 49×F32" style summary of the tensor types of a file: the file
// type named by general.file_type (when known), then the count of tensors per type.
std::string gguf_type_mix(const GgufFile& f);

}  // namespace qrwkv
