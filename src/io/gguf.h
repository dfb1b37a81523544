// The GGUF container (llama.cpp's model files), versions 2 and 3:
//
//   "GGUF"  u32 version  u64 tensor_count  u64 kv_count
//   kv_count × (string key, u32 value_type, value)
//   tensor_count × (string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset)
//   zero padding to `general.alignment` (default 32)
//   data: each tensor at data_start + offset (a multiple of the alignment)
//
// Strings are u64 length + UTF-8 bytes (no terminator); an array value is u32 element type,
// u64 count and the elements (arrays may nest). ne[0] is the contiguous dimension: a GGUF
// tensor with ne = [cols, rows] is the row-major [rows, cols] matrix of a safetensors file.
// The block formats store each row as ne[0] / block_size blocks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "io/mapped_file.h"
#include "io/safetensors.h"

namespace qrwkv {

// ggml's type numbers as stored in a GGUF tensor info.
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
};

struct GgmlTypeTraits {
  const char* name;  // "Q4_K", as llama.cpp prints it
  int64_t block;     // elements per block (1 for the plain types)
  int64_t bytes;     // bytes per block
};
// The traits of a known type, or nullptr.
const GgmlTypeTraits* ggml_type_traits(uint32_t type);
// The DType that computes a GGUF tensor type in place, if qrwkv has one.
std::optional<DType> dtype_of_ggml(GgmlType t);
// The GGUF type of a DType (for writing).
std::optional<GgmlType> ggml_of_dtype(DType t);

enum class GgufValueType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  Bool = 7,
  String = 8,
  Array = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};
const char* gguf_value_type_name(GgufValueType t);
bool is_integer_type(GgufValueType t);

// One metadata value. Scalars keep their value in the member of their kind; strings view the
// mapped file; arrays hold their elements (all of type `elem`).
struct GgufValue {
  GgufValueType type = GgufValueType::U8;
  uint64_t u = 0;  // U8 .. U64, Bool
  int64_t i = 0;   // I8 .. I64
  double f = 0;    // F32, F64
  std::string_view s;
  GgufValueType elem = GgufValueType::U8;
  std::vector<GgufValue> arr;

  bool is_integer() const;
  bool is_float() const { return type == GgufValueType::F32 || type == GgufValueType::F64; }
};

struct GgufTensorInfo {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<int64_t> ne;  // ggml order: ne[0] contiguous
  uint64_t offset = 0;      // relative to the data section
  uint64_t bytes = 0;
  // The row-major shape a safetensors file would give it: ne reversed.
  std::vector<int64_t> shape() const { return {ne.rbegin(), ne.rend()}; }
};

struct GgufHeader {
  uint32_t version = 0;
  uint64_t alignment = 32;
  size_t data_offset = 0;  // absolute offset of the data section
  std::map<std::string, GgufValue> metadata;
  std::vector<GgufTensorInfo> tensors;  // in file order
  std::map<std::string, size_t> tensor_index;
};

// Validates and parses a GGUF file held in data[0, size). Any inconsistency (bad magic or
// version, counts or lengths past the end, unknown value or tensor types, too many or zero
// dimensions, rows that are not whole blocks, offsets out of range or misaligned, duplicate
// names or keys, a truncated data section) throws Error prefixed with `where`. After success
// every tensor's bytes lie inside `data`.
GgufHeader parse_gguf(const uint8_t* data, size_t size, const std::string& where);

// A memory-mapped, validated GGUF file with typed metadata getters. The getters throw Error
// naming the file and key when a key is missing or holds another type.
class GgufFile {
 public:
  explicit GgufFile(const std::string& path);
  const GgufHeader& header() const { return header_; }
  const std::string& path() const { return file_.path(); }
  const MappedFile& file() const { return file_; }

  const GgufValue* find(const std::string& key) const;
  bool has(const std::string& key) const { return find(key) != nullptr; }
  uint64_t get_uint(const std::string& key) const;  // any non-negative integer type
  int64_t get_int(const std::string& key) const;    // any integer type
  double get_float(const std::string& key) const;   // F32, F64 or an integer
  bool get_bool(const std::string& key) const;
  std::string get_string(const std::string& key) const;
  std::vector<std::string> get_strings(const std::string& key) const;  // array of strings
  std::vector<int64_t> get_ints(const std::string& key) const;         // array of integers
  std::vector<double> get_floats(const std::string& key) const;        // array of numbers

  const GgufTensorInfo* find_tensor(const std::string& name) const;
  const uint8_t* data(const GgufTensorInfo& t) const {
    return file_.data() + header_.data_offset + t.offset;
  }

 private:
  const GgufValue& need(const std::string& key) const;
  [[noreturn]] void wrong_type(const std::string& key, const GgufValue& v,
                               const char* expected) const;
  MappedFile file_;
  GgufHeader header_;
};

// Builds GGUF files: metadata and tensors in the order added. serialize() returns the whole
// file; write() streams it to `path` atomically (temp file + rename), asking each tensor's
// bytes from its source only when they are written, so a model larger than memory exports.
class GgufWriter {
 public:
  explicit GgufWriter(uint64_t alignment = 32) : alignment_(alignment) {}
  void set_u32(const std::string& key, uint32_t v);
  void set_i32(const std::string& key, int32_t v);
  void set_u64(const std::string& key, uint64_t v);
  void set_f32(const std::string& key, float v);
  void set_bool(const std::string& key, bool v);
  void set_string(const std::string& key, const std::string& v);
  void set_strings(const std::string& key, const std::vector<std::string>& v);
  void set_i32s(const std::string& key, const std::vector<int32_t>& v);
  void set_f32s(const std::string& key, const std::vector<float>& v);
  // A raw value (key excluded): type tag and encoded bytes, for tests that build odd files.
  void set_raw(const std::string& key, GgufValueType type, const std::string& encoded);
  // A value read from another file, copied as it is.
  void set_value(const std::string& key, const GgufValue& v);
  void remove(const std::string& key);

  // `fill` writes exactly `bytes` bytes of the tensor through `out`.
  using Fill = std::function<void(std::string& out)>;
  void add_tensor(const std::string& name, GgmlType type, const std::vector<int64_t>& ne,
                  Fill fill);
  void add_tensor(const std::string& name, GgmlType type, const std::vector<int64_t>& ne,
                  const void* data);

  std::string serialize() const;
  void write(const std::string& path) const;

 private:
  struct PendingTensor {
    std::string name;
    GgmlType type;
    std::vector<int64_t> ne;
    uint64_t bytes;
    Fill fill;
  };
  std::string header_bytes() const;
  uint64_t alignment_;
  std::vector<std::pair<std::string, std::string>> kv_;  // key, type tag + encoded value
  std::vector<PendingTensor> tensors_;
};

// Bytes of a GGUF tensor of this type and ne (whole rows of blocks); 0 with `ok` false when
// ne[0] is not a whole number of blocks or the size overflows.
uint64_t ggml_tensor_bytes(GgmlType type, const std::vector<int64_t>& ne, bool& ok);

}  // namespace qrwkv
