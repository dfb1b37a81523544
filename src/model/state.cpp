#include "model/state.h"

#include <algorithm>
#include <cstring>

#include "io/bytes.h"
#include "io/error.h"
#include "io/mapped_file.h"
#include "model/architecture.h"

namespace qrwkv {

namespace {

constexpr char kMagic[8] = {'Q', 'R', 'W', 'K', 'V', 'S', 'T', 'A'};
constexpr uint32_t kVersion = 1;

}  // namespace

size_t State::bytes() const {
  size_t n = 0;
  for (const auto& l : layers)
    n += (l.x_prev.size() + l.wkv.size() + l.k_cache.size() + l.v_cache.size()) * sizeof(float);
  return n;
}

std::string model_shape_desc(const Config& c) {
  std::string d = std::string(arch_name(c.arch)) + " L=" + std::to_string(c.num_layers) +
                  " C=" + std::to_string(c.hidden_size) + " H=" + std::to_string(c.num_heads) +
                  " Hkv=" + std::to_string(c.num_kv_heads) + " N=" + std::to_string(c.head_dim);
  return d;
}

uint64_t model_fingerprint(const Config& c) {
  const std::string d = model_shape_desc(c);
  return fnv1a(d.data(), d.size());
}

State new_state(const Config& c) {
  State s;
  s.arch = c.arch;
  s.fingerprint = model_fingerprint(c);
  s.shape_desc = model_shape_desc(c);
  s.layers.resize(static_cast<size_t>(c.num_layers));
  const Architecture& a = architecture(c.arch);
  for (auto& l : s.layers) a.init_layer_state(c, l);
  return s;
}

void check_state_matches(const State& s, const Config& c, const std::string& where) {
  check_state_matches(s, c, model_fingerprint(c), where);
}

void check_state_matches(const State& s, const Config& c, uint64_t fingerprint,
                         const std::string& where) {
  if (s.fingerprint != fingerprint || s.arch != c.arch)
    fail(where, "state was made for a different model (" + s.shape_desc + ") than this one (" +
                    model_shape_desc(c) + ")");
  // A matching fingerprint with wrong sizes means a corrupted or hand-made state.
  if (static_cast<int64_t>(s.layers.size()) != c.num_layers || s.n_tokens < 0)
    fail(where, "state has " + std::to_string(s.layers.size()) + " layers, model has " +
                    std::to_string(c.num_layers));
  const Architecture& a = architecture(c.arch);
  for (size_t i = 0; i < s.layers.size(); ++i)
    if (!a.layer_state_ok(c, s.layers[i], s.n_tokens))
      fail(where, "state layer " + std::to_string(i) + " has the wrong size for this model");
}

void truncate_state(State& s, const Config& c, int64_t n) {
  if (n < 0 || n > s.n_tokens)
    fail("", "cannot truncate a state of " + std::to_string(s.n_tokens) + " tokens to " +
                 std::to_string(n));
  if (!architecture(c.arch).truncate(c, s, n))
    fail("", std::string("a ") + arch_name(c.arch) + " state cannot be truncated");
  s.n_tokens = n;
}

bool states_can_truncate(const Config& c) { return !architecture(c.arch).recurrent(); }

void reserve_state(State& s, const Config& c, int64_t n) {
  // Per layer and token: half the bytes are keys, half values.
  const size_t floats = architecture(c.arch).state_bytes_per_token(c) / sizeof(float) / 2 /
                        static_cast<size_t>(std::max<int64_t>(1, c.num_layers));
  for (auto& l : s.layers) {
    l.k_cache.reserve(static_cast<size_t>(n) * floats);
    l.v_cache.reserve(static_cast<size_t>(n) * floats);
  }
}

std::string serialize_state(const State& s) {
  std::string out(kMagic, sizeof kMagic);
  put_le<uint32_t>(out, kVersion);
  put_le<uint32_t>(out, static_cast<uint32_t>(s.arch));
  put_le<uint64_t>(out, s.fingerprint);
  put_le<uint64_t>(out, static_cast<uint64_t>(s.n_tokens));
  put_le<uint32_t>(out, static_cast<uint32_t>(s.layers.size()));
  put_le<uint32_t>(out, static_cast<uint32_t>(s.shape_desc.size()));
  out += s.shape_desc;
  for (const auto& l : s.layers) {
    for (const auto* v : {&l.x_prev, &l.wkv, &l.k_cache, &l.v_cache})
      put_le<uint64_t>(out, v->size());
    for (const auto* v : {&l.x_prev, &l.wkv, &l.k_cache, &l.v_cache})
      put_array(out, v->data(), v->size());
  }
  put_le<uint64_t>(out, fnv1a(out.data(), out.size()));
  return out;
}

State deserialize_state(const std::string& bytes, const std::string& where) {
  if (bytes.size() < sizeof kMagic || std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0)
    fail(where, "not a qrwkv state file (bad magic)");
  if (bytes.size() < sizeof kMagic + 8)
    fail(where, "truncated state file (ends inside the header)");
  // Everything but the trailing checksum is payload.
  const size_t end = bytes.size() - 8;
  ByteReader r(std::string_view(bytes).substr(0, end), where, "state file");
  r.bytes(sizeof kMagic, "magic");
  const uint32_t version = r.get<uint32_t>("header");
  if (version != kVersion)
    fail(where, "state format version " + std::to_string(version) +
                    " is not supported (this build reads " + std::to_string(kVersion) + ")");
  State s;
  const uint32_t arch = r.get<uint32_t>("header");
  if (arch >= kArchCount) fail(where, "unknown architecture in state file");
  s.arch = static_cast<Arch>(arch);
  s.fingerprint = r.get<uint64_t>("header");
  const uint64_t n_tokens = r.get<uint64_t>("header");
  if (n_tokens > (uint64_t{1} << 40)) fail(where, "corrupt state file (token count)");
  s.n_tokens = static_cast<int64_t>(n_tokens);
  const uint32_t n_layers = r.get<uint32_t>("header");
  const uint32_t desc_len = r.get<uint32_t>("header");
  s.shape_desc = std::string(r.bytes(desc_len, "header"));
  // Each layer needs at least its four counts: refuse absurd layer counts before allocating.
  if (n_layers > r.left() / 32) r.truncated("the layers");
  s.layers.resize(n_layers);
  for (auto& l : s.layers) {
    uint64_t n[4];
    for (auto& x : n) x = r.get<uint64_t>("a layer header");
    r.array(l.x_prev, n[0], "layer data");
    r.array(l.wkv, n[1], "layer data");
    r.array(l.k_cache, n[2], "layer data");
    r.array(l.v_cache, n[3], "layer data");
  }
  if (r.left() != 0) fail(where, "corrupt state file (unexpected bytes after the layers)");
  if (get_le<uint64_t>(bytes.data() + end) != fnv1a(bytes.data(), end))
    fail(where, "corrupt state file (checksum mismatch)");
  return s;
}

void save_state(const State& s, const std::string& path) {
  const std::string bytes = serialize_state(s);
  write_file_atomic(path, bytes.data(), bytes.size());
}

State load_state(const std::string& path) { return deserialize_state(read_text_file(path), path); }

}  // namespace qrwkv
