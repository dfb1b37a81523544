#include "model/state.h"

#include <cstring>

#include "io/bytes.h"
#include "io/error.h"
#include "io/mapped_file.h"

namespace qrwkv {

namespace {

constexpr char kMagic[8] = {'Q', 'R', 'W', 'K', 'V', 'S', 'T', 'A'};
constexpr uint32_t kVersion = 1;

class Reader {
 public:
  Reader(const std::string& bytes, size_t end, const std::string& where)
      : bytes_(bytes), end_(end), where_(where) {}
  template <typename T>
  T get(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  void floats(std::vector<float>& dst, uint64_t n, const char* what) {
    if (n > (end_ - pos_) / sizeof(float)) truncated(what);
    dst.resize(static_cast<size_t>(n));
    if (n > 0) std::memcpy(dst.data(), bytes_.data() + pos_, n * sizeof(float));
    pos_ += n * sizeof(float);
  }
  std::string str(uint64_t n, const char* what) {
    need(n, what);
    std::string s = bytes_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  size_t pos() const { return pos_; }

 private:
  void need(uint64_t n, const char* what) {
    if (n > end_ - pos_) truncated(what);
  }
  [[noreturn]] void truncated(const char* what) {
    fail(where_, std::string("truncated state file (ends inside ") + what + ")");
  }
  const std::string& bytes_;
  size_t end_;
  const std::string& where_;
  size_t pos_ = 0;
};

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
  if (c.arch == Arch::QRWKV6) {
    const size_t C = static_cast<size_t>(c.hidden_size);
    const size_t N = static_cast<size_t>(c.head_dim);
    for (auto& l : s.layers) {
      l.x_prev.assign(C, 0.0f);
      l.wkv.assign(static_cast<size_t>(c.num_heads) * N * N, 0.0f);
    }
  }
  return s;
}

void check_state_matches(const State& s, const Config& c, const std::string& where) {
  if (s.fingerprint != model_fingerprint(c) || s.arch != c.arch)
    fail(where, "state was made for a different model (" + s.shape_desc + ") than this one (" +
                    model_shape_desc(c) + ")");
  // A matching fingerprint with wrong sizes means a corrupted or hand-made state.
  if (static_cast<int64_t>(s.layers.size()) != c.num_layers || s.n_tokens < 0)
    fail(where, "state has " + std::to_string(s.layers.size()) + " layers, model has " +
                    std::to_string(c.num_layers));
  const size_t C = static_cast<size_t>(c.hidden_size);
  const size_t wkv = static_cast<size_t>(c.num_heads * c.head_dim * c.head_dim);
  const size_t kv = static_cast<size_t>(s.n_tokens * c.kv_dim());
  for (size_t i = 0; i < s.layers.size(); ++i) {
    const LayerState& l = s.layers[i];
    const bool ok =
        c.arch == Arch::QRWKV6
            ? l.x_prev.size() == C && l.wkv.size() == wkv && l.k_cache.empty() && l.v_cache.empty()
            : l.x_prev.empty() && l.wkv.empty() && l.k_cache.size() == kv && l.v_cache.size() == kv;
    if (!ok) fail(where, "state layer " + std::to_string(i) + " has the wrong size for this model");
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
    for (const auto* v : {&l.x_prev, &l.wkv, &l.k_cache, &l.v_cache}) put_le<uint64_t>(out, v->size());
    for (const auto* v : {&l.x_prev, &l.wkv, &l.k_cache, &l.v_cache})
      if (!v->empty())
        out.append(reinterpret_cast<const char*>(v->data()), v->size() * sizeof(float));
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
  Reader r(bytes, end, where);
  r.str(sizeof kMagic, "magic");
  const uint32_t version = r.get<uint32_t>("header");
  if (version != kVersion)
    fail(where, "state format version " + std::to_string(version) +
                    " is not supported (this build reads " + std::to_string(kVersion) + ")");
  State s;
  const uint32_t arch = r.get<uint32_t>("header");
  if (arch > static_cast<uint32_t>(Arch::Llama)) fail(where, "unknown architecture in state file");
  s.arch = static_cast<Arch>(arch);
  s.fingerprint = r.get<uint64_t>("header");
  const uint64_t n_tokens = r.get<uint64_t>("header");
  if (n_tokens > (uint64_t{1} << 40)) fail(where, "corrupt state file (token count)");
  s.n_tokens = static_cast<int64_t>(n_tokens);
  const uint32_t n_layers = r.get<uint32_t>("header");
  const uint32_t desc_len = r.get<uint32_t>("header");
  s.shape_desc = r.str(desc_len, "header");
  // Each layer needs at least its four counts: refuse absurd layer counts before allocating.
  if (n_layers > (end - r.pos()) / 32) fail(where, "truncated state file (ends inside the layers)");
  s.layers.resize(n_layers);
  for (auto& l : s.layers) {
    uint64_t n[4];
    for (auto& x : n) x = r.get<uint64_t>("a layer header");
    r.floats(l.x_prev, n[0], "layer data");
    r.floats(l.wkv, n[1], "layer data");
    r.floats(l.k_cache, n[2], "layer data");
    r.floats(l.v_cache, n[3], "layer data");
  }
  if (r.pos() != end) fail(where, "corrupt state file (unexpected bytes after the layers)");
  uint64_t stored;
  std::memcpy(&stored, bytes.data() + end, 8);
  if (stored != fnv1a(bytes.data(), end)) fail(where, "corrupt state file (checksum mismatch)");
  return s;
}

void save_state(const State& s, const std::string& path) {
  const std::string bytes = serialize_state(s);
  write_file_atomic(path, bytes.data(), bytes.size());
}

State load_state(const std::string& path) { return deserialize_state(read_text_file(path), path); }

}  // namespace qrwkv
