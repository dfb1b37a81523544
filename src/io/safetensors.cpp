#include "io/safetensors.h"

#include <cstring>
#include <limits>

#include "io/error.h"
#include "io/json.h"

namespace qrwkv {

namespace {

struct DTypeEntry {
  DType type;
  const char* name;
  size_t size;
};

constexpr DTypeEntry kDTypes[] = {
    {DType::F64, "F64", 8},   {DType::F32, "F32", 4}, {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2}, {DType::I64, "I64", 8}, {DType::I32, "I32", 4},
    {DType::I16, "I16", 2},   {DType::I8, "I8", 1},   {DType::U8, "U8", 1},
    {DType::BOOL, "BOOL", 1},
};

// A header larger than this is not a real checkpoint; refusing it avoids huge allocations
// when a corrupted length field is read.
constexpr uint64_t kMaxHeaderBytes = 100u * 1024 * 1024;

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

const char* dtype_name(DType t) {
  for (const auto& e : kDTypes)
    if (e.type == t) return e.name;
  switch (t) {
    case DType::Q8_0:
      return "Q8_0";
    case DType::Q4_0:
      return "Q4_0";
    case DType::Q4_1:
      return "Q4_1";
    case DType::Q5_0:
      return "Q5_0";
    case DType::Q5_1:
      return "Q5_1";
    case DType::Q2_K:
      return "Q2_K";
    case DType::Q3_K:
      return "Q3_K";
    case DType::Q4_K:
      return "Q4_K";
    case DType::Q5_K:
      return "Q5_K";
    case DType::Q6_K:
      return "Q6_K";
    case DType::IQ4_NL:
      return "IQ4_NL";
    default:
      return "?";
  }
}

size_t dtype_size(DType t) {
  for (const auto& e : kDTypes)
    if (e.type == t) return e.size;
  return 0;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsHeader parse_safetensors(const uint8_t* data, size_t size, const std::string& where) {
  if (size < 8)
    fail(where, "truncated safetensors file: " + std::to_string(size) +
                    " bytes, too short to hold the 8-byte header length");
  const uint64_t header_len = read_u64_le(data);
  if (header_len > kMaxHeaderBytes)
    fail(where, "safetensors header length " + std::to_string(header_len) +
                    " is implausibly large (corrupt or not a safetensors file)");
  if (header_len > size - 8)
    fail(where, "truncated safetensors file: header needs " + std::to_string(header_len) +
                    " bytes but only " + std::to_string(size - 8) + " follow the length field");

  SafetensorsHeader out;
  out.data_offset = 8 + header_len;
  const uint64_t data_size = size - out.data_offset;
  const json header = parse_json(
      std::string_view(reinterpret_cast<const char*>(data + 8), header_len), where + " header");
  if (!header.is_object()) fail(where, "safetensors header is not a JSON object");

  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) fail(where, "__metadata__ is not an object");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) fail(where, "__metadata__ value of '" + k + "' is not a string");
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string what = "tensor '" + name + "'";
    if (!entry.is_object()) fail(where, what + ": header entry is not an object");
    TensorInfo t;
    t.name = name;

    const auto dt = entry.find("dtype");
    if (dt == entry.end() || !dt->is_string()) fail(where, what + ": missing dtype");
    const std::string dts = dt->get<std::string>();
    bool known = false;
    for (const auto& e : kDTypes) {
      if (dts == e.name) {
        t.dtype = e.type;
        known = true;
      }
    }
    if (!known) fail(where, what + ": unsupported dtype " + dts);

    const auto sh = entry.find("shape");
    if (sh == entry.end() || !sh->is_array()) fail(where, what + ": missing shape");
    uint64_t numel = 1;
    for (const auto& d : *sh) {
      if (!d.is_number_unsigned())
        fail(where, what + ": shape entries must be non-negative integers");
      const uint64_t v = d.get<uint64_t>();
      if (v != 0 && numel > std::numeric_limits<uint64_t>::max() / 16 / v)
        fail(where, what + ": shape is too large");
      numel *= v;
      t.shape.push_back(static_cast<int64_t>(v));
    }

    const auto off = entry.find("data_offsets");
    if (off == entry.end() || !off->is_array() || off->size() != 2 ||
        !(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned())
      fail(where, what + ": data_offsets must be two non-negative integers");
    t.begin = (*off)[0].get<uint64_t>();
    t.end = (*off)[1].get<uint64_t>();
    if (t.end < t.begin) fail(where, what + ": data_offsets end before they begin");
    if (t.end > data_size)
      fail(where, what + ": data_offsets [" + std::to_string(t.begin) + ", " +
                      std::to_string(t.end) + "] lie outside the " + std::to_string(data_size) +
                      "-byte data section (truncated file?)");
    const uint64_t expected = numel * dtype_size(t.dtype);
    if (t.end - t.begin != expected)
      fail(where, what + ": holds " + std::to_string(t.end - t.begin) +
                      " bytes but its shape and " + dts + " need " + std::to_string(expected));
    out.tensors.emplace(name, std::move(t));
  }
  return out;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(path) {
  header_ = parse_safetensors(file_.data(), file_.size(), path);
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = header_.tensors.find(name);
  return it == header_.tensors.end() ? nullptr : &it->second;
}

std::string serialize_safetensors(const std::vector<TensorToWrite>& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  // Keep the caller's tensor order in the header (json's default object sorts keys).
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    if (dtype_size(t.dtype) == 0)
      fail(t.name,
           std::string("dtype ") + dtype_name(t.dtype) + " cannot be stored in safetensors");
    uint64_t numel = 1;
    for (int64_t d : t.shape) numel *= static_cast<uint64_t>(d);
    const uint64_t bytes = numel * dtype_size(t.dtype);
    header[t.name] = {{"dtype", dtype_name(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string h = header.dump();
  while ((8 + h.size()) % 8 != 0) h.push_back(' ');
  std::string out(8, '\0');
  uint64_t len = h.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((len >> (8 * i)) & 0xff);
  out += h;
  out.reserve(out.size() + offset);
  for (const auto& t : tensors) {
    uint64_t numel = 1;
    for (int64_t d : t.shape) numel *= static_cast<uint64_t>(d);
    if (numel > 0) out.append(static_cast<const char*>(t.data), numel * dtype_size(t.dtype));
  }
  return out;
}

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::string bytes = serialize_safetensors(tensors, metadata);
  write_file_atomic(path, bytes.data(), bytes.size());
}

}  // namespace qrwkv
