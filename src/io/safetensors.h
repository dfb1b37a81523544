// The safetensors format: an 8-byte little-endian header length, a JSON header mapping each
// tensor name to {dtype, shape, data_offsets}, then the raw little-endian data. Offsets are
// relative to the first byte after the header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "io/mapped_file.h"

namespace qrwkv {

// Q8_0 and the types after it are block formats (ops/quant.h): weights are quantized to
// Q8_0 and Q4_0 at load time, and GGUF files store all of them (ggml's layouts); they never
// appear in, and are never written to, a safetensors file.
enum class DType {
  F64,
  F32,
  F16,
  BF16,
  I64,
  I32,
  I16,
  I8,
  U8,
  BOOL,
  Q8_0,
  Q4_0,
  Q4_1,
  Q5_0,
  Q5_1,
  Q2_K,
  Q3_K,
  Q4_K,
  Q5_K,
  Q6_K,
  IQ4_NL
};
// Whether a dtype is one of the block formats.
inline bool is_block_dtype(DType t) { return t >= DType::Q8_0; }

// "F32", "BF16", ... as spelled in safetensors headers ("Q8_0", "Q4_K", ... for the block
// formats, as llama.cpp spells them).
const char* dtype_name(DType t);
// Bytes per element; 0 for the block formats, whose size needs tensor_bytes (ops/tensor.h).
size_t dtype_size(DType t);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offset of the data, relative to the data section
  uint64_t end = 0;    // one past the last byte
  int64_t numel() const;
};

struct SafetensorsHeader {
  size_t data_offset = 0;  // absolute offset of the data section in the file (8 + header size)
  std::map<std::string, TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
};

// Validates and parses the header of a safetensors file held in `data[0, size)`. Every
// inconsistency (truncation, bad JSON, unknown dtype, shape/size mismatch, offsets outside the
// file) throws Error prefixed with `where`. After success every tensor's bytes lie inside
// `data`, so readers need no further bounds checks.
SafetensorsHeader parse_safetensors(const uint8_t* data, size_t size, const std::string& where);

// A memory-mapped, validated safetensors file.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  const SafetensorsHeader& header() const { return header_; }
  const std::string& path() const { return file_.path(); }
  const MappedFile& file() const { return file_; }
  const TensorInfo* find(const std::string& name) const;
  // Pointer to the first byte of a tensor's data (not necessarily aligned).
  const uint8_t* data(const TensorInfo& t) const {
    return file_.data() + header_.data_offset + t.begin;
  }

 private:
  MappedFile file_;
  SafetensorsHeader header_;
};

struct TensorToWrite {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // numel * dtype_size bytes, little-endian
};

// Serializes tensors (in the given order) into safetensors bytes; the header is padded with
// spaces to a multiple of 8 bytes so that the data section is aligned.
std::string serialize_safetensors(const std::vector<TensorToWrite>& tensors,
                                  const std::map<std::string, std::string>& metadata = {});

// Writes a safetensors file atomically (temporary file + rename).
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace qrwkv
