// Writing any model qrwkv runs (a Hugging Face directory, including what `qrwkv convert`
// writes, or a GGUF file) as a GGUF file with llama.cpp's metadata keys, tensor names, layouts
// and per-tensor types, so that llama.cpp loads and runs it.
#pragma once

#include <functional>
#include <string>

namespace qrwkv {

struct GgufExportOptions {
  // f32, f16, bf16, q8_0, q4_0, q4_k_m, q5_k_m or q6_k (the type of the matrices, the
  // quantized ones per matrix as llama-quantize chooses; vectors, norms, biases and QRWKV6's
  // LoRA and token-shift tensors stay F32, as llama.cpp's converter keeps them).
  std::string type = "f16";
  // Receives a line per tensor written ("name type shape").
  std::function<void(const std::string&)> log;
};

// Exports the model at `model_path` to `out_path`, written through a temporary file and renamed
// into place; tensors are converted one at a time as they are written, so a model larger than
// memory exports. Throws Error naming what is wrong (an unknown type, a tokenizer whose
// pre-tokenizer llama.cpp has no name for, an unwritable path).
void export_gguf(const std::string& model_path, const std::string& out_path,
                 const GgufExportOptions& options);

// The export types, for usage messages.
const char* gguf_export_types();

}  // namespace qrwkv
