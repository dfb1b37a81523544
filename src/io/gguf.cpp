#include "io/gguf.h"

#include <cstring>
#include <limits>
#include <set>

#include "io/bytes.h"
#include "io/error.h"

namespace qrwkv {

namespace {

struct TypeEntry {
  GgmlType type;
  GgmlTypeTraits traits;
};

// Every type llama.cpp writes into GGUF files, so that a file is validated whole even where
// qrwkv computes only some of its types.
constexpr TypeEntry kTypes[] = {
    {GgmlType::F32, {"F32", 1, 4}},
    {GgmlType::F16, {"F16", 1, 2}},
    {GgmlType::Q4_0, {"Q4_0", 32, 18}},
    {GgmlType::Q4_1, {"Q4_1", 32, 20}},
    {GgmlType::Q5_0, {"Q5_0", 32, 22}},
    {GgmlType::Q5_1, {"Q5_1", 32, 24}},
    {GgmlType::Q8_0, {"Q8_0", 32, 34}},
    {GgmlType::Q8_1, {"Q8_1", 32, 36}},
    {GgmlType::Q2_K, {"Q2_K", 256, 84}},
    {GgmlType::Q3_K, {"Q3_K", 256, 110}},
    {GgmlType::Q4_K, {"Q4_K", 256, 144}},
    {GgmlType::Q5_K, {"Q5_K", 256, 176}},
    {GgmlType::Q6_K, {"Q6_K", 256, 210}},
    {GgmlType::Q8_K, {"Q8_K", 256, 292}},
    {GgmlType::IQ2_XXS, {"IQ2_XXS", 256, 66}},
    {GgmlType::IQ2_XS, {"IQ2_XS", 256, 74}},
    {GgmlType::IQ3_XXS, {"IQ3_XXS", 256, 98}},
    {GgmlType::IQ1_S, {"IQ1_S", 256, 50}},
    {GgmlType::IQ4_NL, {"IQ4_NL", 32, 18}},
    {GgmlType::IQ3_S, {"IQ3_S", 256, 110}},
    {GgmlType::IQ2_S, {"IQ2_S", 256, 82}},
    {GgmlType::IQ4_XS, {"IQ4_XS", 256, 136}},
    {GgmlType::I8, {"I8", 1, 1}},
    {GgmlType::I16, {"I16", 1, 2}},
    {GgmlType::I32, {"I32", 1, 4}},
    {GgmlType::I64, {"I64", 1, 8}},
    {GgmlType::F64, {"F64", 1, 8}},
    {GgmlType::IQ1_M, {"IQ1_M", 256, 56}},
    {GgmlType::BF16, {"BF16", 1, 2}},
    {GgmlType::TQ1_0, {"TQ1_0", 256, 54}},
    {GgmlType::TQ2_0, {"TQ2_0", 256, 66}},
};

constexpr std::pair<GgmlType, DType> kComputed[] = {
    {GgmlType::F32, DType::F32},   {GgmlType::F16, DType::F16},       {GgmlType::BF16, DType::BF16},
    {GgmlType::Q8_0, DType::Q8_0}, {GgmlType::Q4_0, DType::Q4_0},     {GgmlType::Q4_1, DType::Q4_1},
    {GgmlType::Q5_0, DType::Q5_0}, {GgmlType::Q5_1, DType::Q5_1},     {GgmlType::Q2_K, DType::Q2_K},
    {GgmlType::Q3_K, DType::Q3_K}, {GgmlType::Q4_K, DType::Q4_K},     {GgmlType::Q5_K, DType::Q5_K},
    {GgmlType::Q6_K, DType::Q6_K}, {GgmlType::IQ4_NL, DType::IQ4_NL},
};

// ggml's limit on dimensions.
constexpr uint32_t kMaxDims = 4;
// Arrays nest at most this deep (llama.cpp writes one level); deeper input is refused rather
// than followed down the stack.
constexpr int kMaxNesting = 8;
constexpr uint64_t kMaxAlignment = 1u << 20;

// Bytes the smallest encoding of one value of type t takes (for bounding counts before any
// allocation), or 0 for an unknown type.
uint64_t min_value_bytes(uint32_t t) {
  switch (static_cast<GgufValueType>(t)) {
    case GgufValueType::U8:
    case GgufValueType::I8:
    case GgufValueType::Bool:
      return 1;
    case GgufValueType::U16:
    case GgufValueType::I16:
      return 2;
    case GgufValueType::U32:
    case GgufValueType::I32:
    case GgufValueType::F32:
      return 4;
    case GgufValueType::U64:
    case GgufValueType::I64:
    case GgufValueType::F64:
    case GgufValueType::String:
      return 8;
    case GgufValueType::Array:
      return 12;
  }
  return 0;
}

class Parser {
 public:
  Parser(const uint8_t* data, size_t size, const std::string& where)
      : r_(std::string_view(reinterpret_cast<const char*>(data), size), where, "GGUF file"),
        where_(where) {}

  GgufHeader parse(size_t size) {
    GgufHeader h;
    if (size < 4 || std::memcmp(r_.bytes(4, "the magic").data(), "GGUF", 4) != 0)
      fail(where_, "not a GGUF file (bad magic)");
    h.version = r_.get<uint32_t>("the version");
    if (h.version == 1)
      fail(where_,
           "GGUF version 1 is not supported (versions 2 and 3 are); convert the file "
           "again with a current llama.cpp");
    if (h.version != 2 && h.version != 3) {
      // A big-endian file reads its version byte-swapped.
      const bool swapped = h.version == 0x02000000u || h.version == 0x03000000u;
      fail(where_, swapped ? "big-endian GGUF file (only little-endian files are supported)"
                           : "unsupported GGUF version " + std::to_string(h.version) +
                                 " (versions 2 and 3 are supported)");
    }
    const uint64_t n_tensors = r_.get<uint64_t>("the tensor count");
    const uint64_t n_kv = r_.get<uint64_t>("the metadata count");
    if (n_kv > r_.left() / 13)
      fail(where_, "truncated GGUF file, or a corrupt count: " + std::to_string(n_kv) +
                       " metadata entries cannot fit in the rest of the file");
    for (uint64_t k = 0; k < n_kv; ++k) {
      const std::string key(string("a metadata key"));
      const uint32_t type = r_.get<uint32_t>("a metadata type");
      GgufValue v = value(type, 0, key);
      if (!h.metadata.emplace(key, std::move(v)).second)
        fail(where_, "duplicate metadata key '" + key + "'");
    }
    if (auto it = h.metadata.find("general.alignment"); it != h.metadata.end()) {
      const GgufValue& a = it->second;
      if (!a.is_integer() || a.type == GgufValueType::Bool || a.i < 0 || a.u == 0 ||
          a.u > kMaxAlignment || (a.u & (a.u - 1)) != 0)
        fail(where_, "general.alignment must be a power of two up to 2^20");
      h.alignment = a.u;
    }
    // A tensor info takes at least 8 (name length) + 4 + 8 + 4 + 8 bytes.
    if (n_tensors > r_.left() / 32)
      fail(where_, "truncated GGUF file, or a corrupt count: " + std::to_string(n_tensors) +
                       " tensor infos cannot fit in the rest of the file");
    h.tensors.reserve(static_cast<size_t>(n_tensors));
    for (uint64_t k = 0; k < n_tensors; ++k) {
      GgufTensorInfo t;
      t.name = std::string(string("a tensor name"));
      const std::string what = "tensor '" + t.name + "'";
      const uint32_t n_dims = r_.get<uint32_t>("a tensor's dimension count");
      if (n_dims == 0 || n_dims > kMaxDims)
        fail(where_, what + " has " + std::to_string(n_dims) + " dimensions (1 to 4 allowed)");
      for (uint32_t d = 0; d < n_dims; ++d) {
        const uint64_t ne = r_.get<uint64_t>("a tensor's dimensions");
        if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
          fail(where_, what + " has a negative dimension");
        t.ne.push_back(static_cast<int64_t>(ne));
      }
      const uint32_t type = r_.get<uint32_t>("a tensor's type");
      const GgmlTypeTraits* tr = ggml_type_traits(type);
      if (tr == nullptr) fail(where_, what + " has unknown type " + std::to_string(type));
      t.type = static_cast<GgmlType>(type);
      t.offset = r_.get<uint64_t>("a tensor's offset");
      bool ok = true;
      t.bytes = ggml_tensor_bytes(t.type, t.ne, ok);
      if (!ok)
        fail(where_, what + " of type " + tr->name + " has rows of " + std::to_string(t.ne[0]) +
                         " elements, not whole blocks of " + std::to_string(tr->block) +
                         " (or a size that overflows)");
      if (t.offset % h.alignment != 0)
        fail(where_, what + " data offset " + std::to_string(t.offset) +
                         " is not a multiple of the alignment " + std::to_string(h.alignment));
      if (!h.tensor_index.emplace(t.name, h.tensors.size()).second)
        fail(where_, "duplicate tensor name '" + t.name + "'");
      h.tensors.push_back(std::move(t));
    }
    const uint64_t pos = r_.pos();
    const uint64_t data_start = (pos + h.alignment - 1) / h.alignment * h.alignment;
    if (n_tensors > 0 && data_start > size)
      fail(where_, "truncated GGUF file: it ends before its data section");
    h.data_offset = static_cast<size_t>(std::min<uint64_t>(data_start, size));
    const uint64_t data_size = size - h.data_offset;
    // Tensors must lie inside the data section and must not overlap.
    std::map<uint64_t, const GgufTensorInfo*> by_offset;
    for (const GgufTensorInfo& t : h.tensors) {
      if (t.offset > data_size || t.bytes > data_size - t.offset)
        fail(where_, "truncated GGUF file: tensor '" + t.name + "' needs bytes [" +
                         std::to_string(t.offset) + ", " + std::to_string(t.offset + t.bytes) +
                         ") of a data section of " + std::to_string(data_size) + " bytes");
      if (t.bytes > 0) by_offset.emplace(t.offset, &t);
    }
    uint64_t end = 0;
    const GgufTensorInfo* prev = nullptr;
    for (const auto& [off, t] : by_offset) {
      if (prev != nullptr && off < end)
        fail(where_, "tensors '" + prev->name + "' and '" + t->name + "' overlap");
      end = off + t->bytes;
      prev = t;
    }
    return h;
  }

 private:
  std::string_view string(const char* what) {
    const uint64_t n = r_.get<uint64_t>(what);
    return r_.bytes(n, what);
  }

  GgufValue value(uint32_t type, int depth, const std::string& key) {
    if (min_value_bytes(type) == 0)
      fail(where_, "metadata '" + key + "' has unknown value type " + std::to_string(type));
    GgufValue v;
    v.type = static_cast<GgufValueType>(type);
    switch (v.type) {
      case GgufValueType::U8:
        v.u = r_.get<uint8_t>("a metadata value");
        v.i = static_cast<int64_t>(v.u);
        break;
      case GgufValueType::I8:
        v.i = r_.get<int8_t>("a metadata value");
        v.u = static_cast<uint64_t>(v.i);
        break;
      case GgufValueType::U16:
        v.u = r_.get<uint16_t>("a metadata value");
        v.i = static_cast<int64_t>(v.u);
        break;
      case GgufValueType::I16:
        v.i = r_.get<int16_t>("a metadata value");
        v.u = static_cast<uint64_t>(v.i);
        break;
      case GgufValueType::U32:
        v.u = r_.get<uint32_t>("a metadata value");
        v.i = static_cast<int64_t>(v.u);
        break;
      case GgufValueType::I32:
        v.i = r_.get<int32_t>("a metadata value");
        v.u = static_cast<uint64_t>(v.i);
        break;
      case GgufValueType::U64:
        v.u = r_.get<uint64_t>("a metadata value");
        v.i = static_cast<int64_t>(v.u);  // negative when above INT64_MAX; getters check
        break;
      case GgufValueType::I64:
        v.i = r_.get<int64_t>("a metadata value");
        v.u = static_cast<uint64_t>(v.i);
        break;
      case GgufValueType::F32:
        v.f = r_.get<float>("a metadata value");
        break;
      case GgufValueType::F64:
        v.f = r_.get<double>("a metadata value");
        break;
      case GgufValueType::Bool: {
        const uint8_t b = r_.get<uint8_t>("a metadata value");
        if (b > 1) fail(where_, "metadata '" + key + "' is a bool of value " + std::to_string(b));
        v.u = b;
        v.i = b;
        break;
      }
      case GgufValueType::String:
        v.s = string("a metadata string");
        break;
      case GgufValueType::Array: {
        if (depth >= kMaxNesting) fail(where_, "metadata '" + key + "' nests arrays too deeply");
        const uint32_t elem = r_.get<uint32_t>("an array's element type");
        const uint64_t per = min_value_bytes(elem);
        if (per == 0)
          fail(where_,
               "metadata '" + key + "' is an array of unknown type " + std::to_string(elem));
        v.elem = static_cast<GgufValueType>(elem);
        const uint64_t n = r_.get<uint64_t>("an array's length");
        if (n > r_.left() / per)
          fail(where_, "truncated GGUF file: metadata array '" + key + "' of " + std::to_string(n) +
                           " elements runs past the end");
        v.arr.reserve(static_cast<size_t>(n));
        for (uint64_t k = 0; k < n; ++k) v.arr.push_back(value(elem, depth + 1, key));
        break;
      }
    }
    return v;
  }

  ByteReader r_;
  std::string where_;
};

void put_string(std::string& out, std::string_view s) {
  put_le<uint64_t>(out, s.size());
  out.append(s);
}

}  // namespace

const GgmlTypeTraits* ggml_type_traits(uint32_t type) {
  for (const auto& e : kTypes)
    if (static_cast<uint32_t>(e.type) == type) return &e.traits;
  return nullptr;
}

std::optional<DType> dtype_of_ggml(GgmlType t) {
  for (const auto& [g, d] : kComputed)
    if (g == t) return d;
  return std::nullopt;
}

std::optional<GgmlType> ggml_of_dtype(DType t) {
  for (const auto& [g, d] : kComputed)
    if (d == t) return g;
  return std::nullopt;
}

const char* gguf_value_type_name(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8:
      return "uint8";
    case GgufValueType::I8:
      return "int8";
    case GgufValueType::U16:
      return "uint16";
    case GgufValueType::I16:
      return "int16";
    case GgufValueType::U32:
      return "uint32";
    case GgufValueType::I32:
      return "int32";
    case GgufValueType::F32:
      return "float32";
    case GgufValueType::Bool:
      return "bool";
    case GgufValueType::String:
      return "string";
    case GgufValueType::Array:
      return "array";
    case GgufValueType::U64:
      return "uint64";
    case GgufValueType::I64:
      return "int64";
    case GgufValueType::F64:
      return "float64";
  }
  return "?";
}

bool is_integer_type(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8:
    case GgufValueType::I8:
    case GgufValueType::U16:
    case GgufValueType::I16:
    case GgufValueType::U32:
    case GgufValueType::I32:
    case GgufValueType::U64:
    case GgufValueType::I64:
      return true;
    default:
      return false;
  }
}

bool GgufValue::is_integer() const { return is_integer_type(type); }

uint64_t ggml_tensor_bytes(GgmlType type, const std::vector<int64_t>& ne, bool& ok) {
  ok = false;
  const GgmlTypeTraits* tr = ggml_type_traits(static_cast<uint32_t>(type));
  if (tr == nullptr || ne.empty() || ne[0] % tr->block != 0) return 0;
  // Bound every product well below 2^63 so that offsets plus sizes cannot overflow either.
  constexpr uint64_t kMax = uint64_t{1} << 60;
  uint64_t bytes = static_cast<uint64_t>(ne[0] / tr->block) * static_cast<uint64_t>(tr->bytes);
  if (static_cast<uint64_t>(ne[0]) > kMax || bytes > kMax) return 0;
  for (size_t d = 1; d < ne.size(); ++d) {
    const auto n = static_cast<uint64_t>(ne[d]);
    if (n != 0 && bytes > kMax / n) return 0;
    bytes *= n;
  }
  ok = true;
  return bytes;
}

GgufHeader parse_gguf(const uint8_t* data, size_t size, const std::string& where) {
  return Parser(data, size, where).parse(size);
}

GgufFile::GgufFile(const std::string& path)
    : file_(path), header_(parse_gguf(file_.data(), file_.size(), path)) {}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = header_.metadata.find(key);
  return it == header_.metadata.end() ? nullptr : &it->second;
}

const GgufValue& GgufFile::need(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) fail(path(), "missing metadata key '" + key + "'");
  return *v;
}

void GgufFile::wrong_type(const std::string& key, const GgufValue& v, const char* expected) const {
  std::string got = gguf_value_type_name(v.type);
  if (v.type == GgufValueType::Array) got += std::string(" of ") + gguf_value_type_name(v.elem);
  fail(path(), "metadata '" + key + "' is " + got + ", expected " + expected);
}

uint64_t GgufFile::get_uint(const std::string& key) const {
  const GgufValue& v = need(key);
  if (!v.is_integer()) wrong_type(key, v, "an integer");
  if (v.type != GgufValueType::U64 && v.i < 0)
    fail(path(), "metadata '" + key + "' is negative (" + std::to_string(v.i) + ")");
  return v.u;
}

int64_t GgufFile::get_int(const std::string& key) const {
  const GgufValue& v = need(key);
  if (!v.is_integer()) wrong_type(key, v, "an integer");
  if (v.type == GgufValueType::U64 && v.u > static_cast<uint64_t>(INT64_MAX))
    fail(path(), "metadata '" + key + "' is out of range");
  return v.i;
}

double GgufFile::get_float(const std::string& key) const {
  const GgufValue& v = need(key);
  if (v.is_float()) return v.f;
  if (v.is_integer()) return static_cast<double>(v.i);
  wrong_type(key, v, "a number");
}

bool GgufFile::get_bool(const std::string& key) const {
  const GgufValue& v = need(key);
  if (v.type != GgufValueType::Bool) wrong_type(key, v, "a bool");
  return v.u != 0;
}

std::string GgufFile::get_string(const std::string& key) const {
  const GgufValue& v = need(key);
  if (v.type != GgufValueType::String) wrong_type(key, v, "a string");
  return std::string(v.s);
}

std::vector<std::string> GgufFile::get_strings(const std::string& key) const {
  const GgufValue& v = need(key);
  if (v.type != GgufValueType::Array || v.elem != GgufValueType::String)
    wrong_type(key, v, "an array of strings");
  std::vector<std::string> out;
  out.reserve(v.arr.size());
  for (const GgufValue& e : v.arr) out.emplace_back(e.s);
  return out;
}

std::vector<int64_t> GgufFile::get_ints(const std::string& key) const {
  const GgufValue& v = need(key);
  if (v.type != GgufValueType::Array || !is_integer_type(v.elem))
    wrong_type(key, v, "an array of integers");
  std::vector<int64_t> out;
  out.reserve(v.arr.size());
  for (const GgufValue& e : v.arr) out.push_back(e.i);
  return out;
}

std::vector<double> GgufFile::get_floats(const std::string& key) const {
  const GgufValue& v = need(key);
  if (v.type != GgufValueType::Array) wrong_type(key, v, "an array of numbers");
  std::vector<double> out;
  out.reserve(v.arr.size());
  for (const GgufValue& e : v.arr) {
    if (e.is_float())
      out.push_back(e.f);
    else if (e.is_integer())
      out.push_back(static_cast<double>(e.i));
    else
      wrong_type(key, v, "an array of numbers");
  }
  return out;
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  auto it = header_.tensor_index.find(name);
  return it == header_.tensor_index.end() ? nullptr : &header_.tensors[it->second];
}

// ---------------------------------------------------------------------------------------------
// Writing

void GgufWriter::set_raw(const std::string& key, GgufValueType type, const std::string& encoded) {
  std::string v;
  put_le<uint32_t>(v, static_cast<uint32_t>(type));
  v += encoded;
  for (auto& [k, old] : kv_)
    if (k == key) {
      old = std::move(v);
      return;
    }
  kv_.emplace_back(key, std::move(v));
}

namespace {

// The encoding of a value without its type tag (arrays: element type, count, elements).
void encode_value(std::string& out, const GgufValue& v) {
  switch (v.type) {
    case GgufValueType::U8:
      put_le<uint8_t>(out, static_cast<uint8_t>(v.u));
      break;
    case GgufValueType::I8:
      put_le<int8_t>(out, static_cast<int8_t>(v.i));
      break;
    case GgufValueType::U16:
      put_le<uint16_t>(out, static_cast<uint16_t>(v.u));
      break;
    case GgufValueType::I16:
      put_le<int16_t>(out, static_cast<int16_t>(v.i));
      break;
    case GgufValueType::U32:
      put_le<uint32_t>(out, static_cast<uint32_t>(v.u));
      break;
    case GgufValueType::I32:
      put_le<int32_t>(out, static_cast<int32_t>(v.i));
      break;
    case GgufValueType::U64:
      put_le<uint64_t>(out, v.u);
      break;
    case GgufValueType::I64:
      put_le<int64_t>(out, v.i);
      break;
    case GgufValueType::F32:
      put_le<float>(out, static_cast<float>(v.f));
      break;
    case GgufValueType::F64:
      put_le<double>(out, v.f);
      break;
    case GgufValueType::Bool:
      put_le<uint8_t>(out, v.u ? 1 : 0);
      break;
    case GgufValueType::String:
      put_string(out, v.s);
      break;
    case GgufValueType::Array:
      put_le<uint32_t>(out, static_cast<uint32_t>(v.elem));
      put_le<uint64_t>(out, v.arr.size());
      for (const GgufValue& e : v.arr) encode_value(out, e);
      break;
  }
}

}  // namespace

void GgufWriter::set_value(const std::string& key, const GgufValue& v) {
  std::string e;
  encode_value(e, v);
  set_raw(key, v.type, e);
}

void GgufWriter::remove(const std::string& key) {
  std::erase_if(kv_, [&](const auto& kv) { return kv.first == key; });
}

void GgufWriter::set_u32(const std::string& key, uint32_t v) {
  std::string e;
  put_le(e, v);
  set_raw(key, GgufValueType::U32, e);
}
void GgufWriter::set_i32(const std::string& key, int32_t v) {
  std::string e;
  put_le(e, v);
  set_raw(key, GgufValueType::I32, e);
}
void GgufWriter::set_u64(const std::string& key, uint64_t v) {
  std::string e;
  put_le(e, v);
  set_raw(key, GgufValueType::U64, e);
}
void GgufWriter::set_f32(const std::string& key, float v) {
  std::string e;
  put_le(e, v);
  set_raw(key, GgufValueType::F32, e);
}
void GgufWriter::set_bool(const std::string& key, bool v) {
  std::string e;
  put_le<uint8_t>(e, v ? 1 : 0);
  set_raw(key, GgufValueType::Bool, e);
}
void GgufWriter::set_string(const std::string& key, const std::string& v) {
  std::string e;
  put_string(e, v);
  set_raw(key, GgufValueType::String, e);
}
void GgufWriter::set_strings(const std::string& key, const std::vector<std::string>& v) {
  std::string e;
  put_le<uint32_t>(e, static_cast<uint32_t>(GgufValueType::String));
  put_le<uint64_t>(e, v.size());
  for (const std::string& s : v) put_string(e, s);
  set_raw(key, GgufValueType::Array, e);
}
void GgufWriter::set_i32s(const std::string& key, const std::vector<int32_t>& v) {
  std::string e;
  put_le<uint32_t>(e, static_cast<uint32_t>(GgufValueType::I32));
  put_le<uint64_t>(e, v.size());
  put_array(e, v.data(), v.size());
  set_raw(key, GgufValueType::Array, e);
}
void GgufWriter::set_f32s(const std::string& key, const std::vector<float>& v) {
  std::string e;
  put_le<uint32_t>(e, static_cast<uint32_t>(GgufValueType::F32));
  put_le<uint64_t>(e, v.size());
  put_array(e, v.data(), v.size());
  set_raw(key, GgufValueType::Array, e);
}

void GgufWriter::add_tensor(const std::string& name, GgmlType type, const std::vector<int64_t>& ne,
                            Fill fill) {
  bool ok = false;
  const uint64_t bytes = ggml_tensor_bytes(type, ne, ok);
  if (!ok) fail(name, "cannot be written as a GGUF tensor of this type and shape");
  tensors_.push_back({name, type, ne, bytes, std::move(fill)});
}

void GgufWriter::add_tensor(const std::string& name, GgmlType type, const std::vector<int64_t>& ne,
                            const void* data) {
  bool ok = false;
  const uint64_t bytes = ggml_tensor_bytes(type, ne, ok);
  add_tensor(name, type, ne, [data, bytes](std::string& out) {
    out.append(static_cast<const char*>(data), bytes);
  });
}

std::string GgufWriter::header_bytes() const {
  std::string out = "GGUF";
  put_le<uint32_t>(out, 3);
  put_le<uint64_t>(out, tensors_.size());
  put_le<uint64_t>(out, kv_.size());
  for (const auto& [k, v] : kv_) {
    put_string(out, k);
    out += v;
  }
  uint64_t offset = 0;
  for (const PendingTensor& t : tensors_) {
    put_string(out, t.name);
    put_le<uint32_t>(out, static_cast<uint32_t>(t.ne.size()));
    for (int64_t n : t.ne) put_le<uint64_t>(out, static_cast<uint64_t>(n));
    put_le<uint32_t>(out, static_cast<uint32_t>(t.type));
    put_le<uint64_t>(out, offset);
    offset += (t.bytes + alignment_ - 1) / alignment_ * alignment_;
  }
  out.resize((out.size() + alignment_ - 1) / alignment_ * alignment_, '\0');
  return out;
}

std::string GgufWriter::serialize() const {
  std::string out = header_bytes();
  for (const PendingTensor& t : tensors_) {
    const size_t before = out.size();
    t.fill(out);
    if (out.size() - before != t.bytes)
      fail(t.name, "wrote " + std::to_string(out.size() - before) + " bytes, expected " +
                       std::to_string(t.bytes));
    out.resize((out.size() + alignment_ - 1) / alignment_ * alignment_, '\0');
  }
  return out;
}

void GgufWriter::write(const std::string& path) const {
  AtomicFileWriter w(path);
  w.append(header_bytes());
  std::string buf;
  for (const PendingTensor& t : tensors_) {
    buf.clear();
    t.fill(buf);
    if (buf.size() != t.bytes)
      fail(t.name,
           "wrote " + std::to_string(buf.size()) + " bytes, expected " + std::to_string(t.bytes));
    buf.resize((buf.size() + alignment_ - 1) / alignment_ * alignment_, '\0');
    w.append(buf);
  }
  w.commit();
}

}  // namespace qrwkv
