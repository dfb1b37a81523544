#include "model/gguf_model.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>

#include "io/error.h"
#include "ops/tensor.h"

namespace qrwkv {

namespace {

const char* ftype_name(uint64_t t) {
  switch (t) {
    case 0:
      return "F32";
    case 1:
      return "F16";
    case 2:
      return "Q4_0";
    case 3:
      return "Q4_1";
    case 7:
      return "Q8_0";
    case 8:
      return "Q5_0";
    case 9:
      return "Q5_1";
    case 10:
      return "Q2_K";
    case 11:
      return "Q3_K_S";
    case 12:
      return "Q3_K_M";
    case 13:
      return "Q3_K_L";
    case 14:
      return "Q4_K_S";
    case 15:
      return "Q4_K_M";
    case 16:
      return "Q5_K_S";
    case 17:
      return "Q5_K_M";
    case 18:
      return "Q6_K";
    case 19:
      return "IQ2_XXS";
    case 20:
      return "IQ2_XS";
    case 21:
      return "Q2_K_S";
    case 22:
      return "IQ3_XS";
    case 23:
      return "IQ3_XXS";
    case 24:
      return "IQ1_S";
    case 25:
      return "IQ4_NL";
    case 26:
      return "IQ3_S";
    case 27:
      return "IQ3_M";
    case 28:
      return "IQ2_S";
    case 29:
      return "IQ2_M";
    case 30:
      return "IQ4_XS";
    case 31:
      return "IQ1_M";
    case 32:
      return "BF16";
    case 36:
      return "TQ1_0";
    case 37:
      return "TQ2_0";
    default:
      return nullptr;
  }
}

// Builds the store: GGUF tensors under Hugging Face names.
class Mapper {
 public:
  Mapper(std::shared_ptr<const GgufFile> f, WeightStore& ws) : f_(std::move(f)), ws_(ws) {}

  const GgufTensorInfo* find(const std::string& name) const { return f_->find_tensor(name); }
  bool has(const std::string& name) const { return find(name) != nullptr; }

  const GgufTensorInfo& need(const std::string& name) const {
    const GgufTensorInfo* t = find(name);
    if (t == nullptr) fail(f_->path(), "missing tensor '" + name + "'");
    return *t;
  }

  // The GGUF tensor as a view (row-major shape = ne reversed), in its stored format.
  Tensor view(const GgufTensorInfo& g, const std::string& hf_name) const {
    const std::optional<DType> dt = dtype_of_ggml(g.type);
    if (!dt)
      fail(f_->path(), "tensor '" + g.name + "' has type " +
                           ggml_type_traits(static_cast<uint32_t>(g.type))->name +
                           ", which qrwkv does not compute (supported: F32, F16, BF16, Q8_0, Q4_0, "
                           "Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL)");
    Tensor t;
    t.name = hf_name;
    t.dtype = *dt;
    t.shape = g.shape();
    t.data = f_->data(g);
    return t;
  }

  // Same bytes, new name (and optionally another shape of the same elements).
  void rename(const std::string& gguf, const std::string& hf, std::vector<int64_t> shape = {}) {
    const GgufTensorInfo* g = find(gguf);
    if (g == nullptr) return ws_.alias(hf, gguf);
    Tensor t = view(*g, hf);
    if (!shape.empty()) reshape(t, std::move(shape), gguf);
    ws_.add(std::move(t), f_->path());
  }

  void reshape(Tensor& t, std::vector<int64_t> shape, const std::string& gguf) const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    if (n != t.numel())
      fail(f_->path(), "tensor '" + gguf + "' has " + std::to_string(t.numel()) +
                           " elements, expected " + shape_str(shape));
    t.shape = std::move(shape);
  }

  // The whole tensor as float32 (exact for every format: dequantization is exact).
  std::vector<float> floats(const GgufTensorInfo& g) const { return to_f32(view(g, g.name)); }

  // An owned float32 tensor.
  void add_owned(const std::string& hf, std::vector<int64_t> shape, std::vector<float> v) {
    auto buf = std::make_shared<std::vector<float>>(std::move(v));
    Tensor t;
    t.name = hf;
    t.dtype = DType::F32;
    t.shape = std::move(shape);
    t.data = reinterpret_cast<const uint8_t*>(buf->data());
    ws_.keep(buf);
    ws_.add(std::move(t), f_->path());
  }

  // llama.cpp's adjacent-pair rope layout back to Hugging Face's half-split one: GGUF row
  // h·D + p is row h·D + (p mod 2)·D/2 + ⌊p/2⌋. Whole rows move, so any format is copied as is.
  void unpermute_rows(const std::string& gguf, const std::string& hf, int64_t heads) {
    const GgufTensorInfo* g = find(gguf);
    if (g == nullptr) return ws_.alias(hf, gguf);
    Tensor src = view(*g, hf);
    const int64_t rows = src.shape.size() == 2 ? src.shape[0] : src.numel();
    if (heads <= 0 || rows % heads != 0 || (rows / heads) % 2 != 0)
      fail(f_->path(), "tensor '" + gguf + "' has " + std::to_string(rows) +
                           " rows, not a whole number of rope heads of even size");
    const int64_t D = rows / heads, half = D / 2;
    const int64_t row_bytes =
        src.shape.size() == 2 ? tensor_bytes(src.dtype, src.shape[1]) : tensor_bytes(src.dtype, 1);
    auto buf = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(rows * row_bytes));
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t p = 0; p < D; ++p) {
        const int64_t to = h * D + (p % 2) * half + p / 2;
        std::memcpy(buf->data() + to * row_bytes, src.data + (h * D + p) * row_bytes,
                    static_cast<size_t>(row_bytes));
      }
    src.data = buf->data();
    ws_.keep(buf);
    ws_.add(std::move(src), f_->path());
  }

  void add_view(Tensor t) { ws_.add(std::move(t), f_->path()); }
  const GgufFile& file() const { return *f_; }

 private:
  std::shared_ptr<const GgufFile> f_;
  WeightStore& ws_;
};

std::string arch_key(const std::string& arch, const std::string& key) { return arch + "." + key; }

int64_t dim(const GgufFile& f, const std::string& key) {
  const GgufValue* v = f.find(key);
  if (v != nullptr && v->type == GgufValueType::Array) {
    // Per-layer values (llama.cpp allows them); qrwkv's layers share one shape.
    const std::vector<int64_t> all = f.get_ints(key);
    if (all.empty()) fail(f.path(), "metadata '" + key + "' is an empty array");
    for (int64_t x : all)
      if (x != all[0])
        fail(f.path(),
             "metadata '" + key + "' differs between layers, which qrwkv does not support");
    if (all[0] <= 0) fail(f.path(), "metadata '" + key + "' must be positive");
    return all[0];
  }
  const uint64_t x = f.get_uint(key);
  if (x == 0 || x > (uint64_t{1} << 31))
    fail(f.path(), "metadata '" + key + "' = " + std::to_string(x) + " is out of range");
  return static_cast<int64_t>(x);
}

int64_t dim_or(const GgufFile& f, const std::string& key, int64_t dflt) {
  return f.has(key) ? dim(f, key) : dflt;
}

// Config from the metadata (and a few tensor shapes: the vocabulary, biases, a tied head).
Config gguf_config(const GgufFile& f, const std::string& arch) {
  Config c;
  const std::string A = arch;
  if (arch == "rwkv6qwen2")
    c.arch = Arch::QRWKV6;
  else if (arch == "qwen2")
    c.arch = Arch::Qwen2;
  else if (arch == "llama")
    c.arch = Arch::Llama;
  else
    fail(f.path(), "architecture '" + arch + "' is not supported (rwkv6qwen2, qwen2, llama)");

  c.hidden_size = dim(f, arch_key(A, "embedding_length"));
  c.num_layers = dim(f, arch_key(A, "block_count"));
  c.intermediate_size = dim(f, arch_key(A, "feed_forward_length"));
  c.max_position_embeddings = static_cast<int64_t>(
      f.has(arch_key(A, "context_length")) ? f.get_uint(arch_key(A, "context_length")) : 0);
  const GgufTensorInfo* emb = f.find_tensor("token_embd.weight");
  if (emb == nullptr) fail(f.path(), "missing tensor 'token_embd.weight'");
  if (emb->ne.size() != 2 || emb->ne[0] != c.hidden_size)
    fail(f.path(), "tensor 'token_embd.weight' has shape " + shape_str(emb->shape()) +
                       ", expected [vocab, " + std::to_string(c.hidden_size) + "]");
  c.vocab_size = emb->ne[1];
  c.rms_norm_eps = static_cast<float>(f.get_float(arch_key(A, "attention.layer_norm_rms_epsilon")));
  c.tie_word_embeddings = f.find_tensor("output.weight") == nullptr;

  if (c.arch == Arch::QRWKV6) {
    c.head_dim = dim(f, arch_key(A, "wkv.head_size"));
    if (c.hidden_size % c.head_dim != 0)
      fail(f.path(), "embedding_length is not a multiple of wkv.head_size");
    c.num_heads = c.hidden_size / c.head_dim;
    const uint64_t kv = f.has(arch_key(A, "attention.head_count_kv"))
                            ? f.get_uint(arch_key(A, "attention.head_count_kv"))
                            : 0;
    c.num_kv_heads = kv == 0 ? c.num_heads : static_cast<int64_t>(kv);
    if (c.num_kv_heads > c.num_heads || c.num_heads % c.num_kv_heads != 0)
      fail(f.path(), "attention.head_count_kv = " + std::to_string(c.num_kv_heads) +
                         " does not divide the " + std::to_string(c.num_heads) + " heads");
    c.lora_rank_tokenshift = dim(f, arch_key(A, "time_mix_extra_dim"));
    c.lora_rank_decay = dim(f, arch_key(A, "time_decay_extra_dim"));
    if (f.has(arch_key(A, "token_shift_count")) &&
        f.get_uint(arch_key(A, "token_shift_count")) != 1)
      fail(f.path(), "token_shift_count must be 1 for rwkv6qwen2");
    if (f.find_tensor("blk.0.time_mix_first.weight") != nullptr)
      fail(f.path(),
           "time_mix_first (RWKV-6's bonus u) is present: that is an RWKV-6 model, "
           "not QRWKV6, and qrwkv does not run it");
    c.qkv_bias = f.find_tensor("blk.0.time_mix_receptance.bias") != nullptr;
    c.o_bias = f.find_tensor("blk.0.time_mix_output.bias") != nullptr;
    c.tie_word_embeddings = false;  // llama.cpp requires output.weight for this architecture
  } else {
    c.num_heads = dim(f, arch_key(A, "attention.head_count"));
    c.num_kv_heads = dim_or(f, arch_key(A, "attention.head_count_kv"), c.num_heads);
    if (c.num_kv_heads > c.num_heads || c.num_heads % c.num_kv_heads != 0)
      fail(f.path(), "attention.head_count_kv = " + std::to_string(c.num_kv_heads) +
                         " does not divide the " + std::to_string(c.num_heads) + " heads");
    c.head_dim = dim_or(f, arch_key(A, "attention.key_length"), c.hidden_size / c.num_heads);
    if (dim_or(f, arch_key(A, "attention.value_length"), c.head_dim) != c.head_dim)
      fail(f.path(), "attention.value_length differs from key_length");
    if (dim_or(f, arch_key(A, "rope.dimension_count"), c.head_dim) != c.head_dim)
      fail(f.path(),
           "rope.dimension_count differs from the head size (partial rope is not "
           "supported)");
    c.qkv_bias = f.find_tensor("blk.0.attn_q.bias") != nullptr;
    c.o_bias = f.find_tensor("blk.0.attn_output.bias") != nullptr;
    c.mlp_bias = f.find_tensor("blk.0.ffn_gate.bias") != nullptr;
    c.rope.theta =
        f.has(arch_key(A, "rope.freq_base")) ? f.get_float(arch_key(A, "rope.freq_base")) : 10000.0;
    const std::string type = f.has(arch_key(A, "rope.scaling.type"))
                                 ? f.get_string(arch_key(A, "rope.scaling.type"))
                                 : std::string("none");
    const double factor = f.has(arch_key(A, "rope.scaling.factor"))
                              ? f.get_float(arch_key(A, "rope.scaling.factor"))
                              : 0.0;
    if (type == "linear" && factor != 0.0 && factor != 1.0) {
      c.rope.type = RopeConfig::Type::Linear;
      c.rope.factor = factor;
    } else if (type != "none" && type != "linear") {
      fail(f.path(), "rope scaling '" + type + "' is not supported (none, linear, llama3)");
    }
    if (const GgufTensorInfo* rf = f.find_tensor("rope_freqs.weight")) {
      if (rf->ne.size() != 1 || rf->ne[0] * 2 != c.head_dim || rf->type != GgmlType::F32)
        fail(f.path(), "tensor 'rope_freqs.weight' must be F32 [head_dim / 2]");
      const auto* p = reinterpret_cast<const uint8_t*>(f.data(*rf));
      for (int64_t i = 0; i < rf->ne[0]; ++i) {
        float v;
        std::memcpy(&v, p + 4 * i, 4);
        if (!(v > 0.0f))
          fail(f.path(), "tensor 'rope_freqs.weight' holds a factor that is not positive");
        c.rope.freq_factors.push_back(v);
      }
    }
  }
  for (const char* k : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                        "tokenizer.ggml.eom_token_id"})
    if (f.has(k)) c.eos_token_ids.push_back(static_cast<int64_t>(f.get_uint(k)));
  if (f.has("tokenizer.ggml.bos_token_id"))
    c.bos_token_id = static_cast<int64_t>(f.get_uint("tokenizer.ggml.bos_token_id"));
  c.torch_dtype = "gguf";
  return c;
}

void map_tensors(Mapper& m, const Config& c) {
  const int64_t C = c.hidden_size;
  m.rename("token_embd.weight", "model.embed_tokens.weight");
  m.rename("output_norm.weight", "model.norm.weight");
  m.rename("output.weight", "lm_head.weight");
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    const std::string p = "model.layers." + std::to_string(i) + ".";
    m.rename(b + "attn_norm.weight", p + "input_layernorm.weight");
    m.rename(b + "ffn_norm.weight", p + "post_attention_layernorm.weight");
    for (const char* w : {"weight", "bias"}) {
      m.rename(b + "ffn_gate." + w, p + "mlp.gate_proj." + w);
      m.rename(b + "ffn_up." + w, p + "mlp.up_proj." + w);
      m.rename(b + "ffn_down." + w, p + "mlp.down_proj." + w);
    }
    const std::string a = p + "self_attn.";
    if (c.arch == Arch::QRWKV6) {
      for (const char* w : {"weight", "bias"}) {
        m.rename(b + "time_mix_receptance." + w, a + "q_proj." + w);
        m.rename(b + "time_mix_key." + w, a + "k_proj." + w);
        m.rename(b + "time_mix_value." + w, a + "v_proj." + w);
        m.rename(b + "time_mix_output." + w, a + "o_proj." + w);
      }
      m.rename(b + "time_mix_gate.weight", a + "gate.weight");
      m.rename(b + "time_mix_lerp_x.weight", a + "time_maa_x", {1, 1, C});
      m.rename(b + "time_mix_decay.weight", a + "time_decay", {1, 1, C});
      // The five token-shift vectors, stored w, k, v, r, g.
      const GgufTensorInfo& fused = m.need(b + "time_mix_lerp_fused.weight");
      Tensor all = m.view(fused, b + "time_mix_lerp_fused.weight");
      m.reshape(all, {5, C}, fused.name);
      const char* maa[5] = {"time_maa_w", "time_maa_k", "time_maa_v", "time_maa_r", "time_maa_g"};
      for (int k = 0; k < 5; ++k) {
        Tensor s = slice0(all, k);
        s.name = a + maa[k];
        s.shape = {1, 1, C};
        m.add_view(std::move(s));
      }
      // LoRA matrices: GGUF w1 is [5·Dm, C] (blocks w, k, v, r, g), w2 is [5, C, Dm]; the
      // checkpoint's time_maa_w1 is [C, 5·Dm] and time_maa_w2 [5, Dm, C], blocks r, k, v, w, g.
      const int64_t Dm = c.lora_rank_tokenshift, Dd = c.lora_rank_decay;
      constexpr int perm[5] = {3, 1, 2, 0, 4};  // checkpoint block b is GGUF block perm[b]
      {
        const GgufTensorInfo& g = m.need(b + "time_mix_w1.weight");
        if (g.shape() != std::vector<int64_t>{5 * Dm, C})
          fail(m.file().path(), "tensor '" + g.name + "' has shape " + shape_str(g.shape()) +
                                    ", expected " + shape_str({5 * Dm, C}));
        const std::vector<float> w = m.floats(g);
        std::vector<float> hf(static_cast<size_t>(C * 5 * Dm));
        for (int64_t cc = 0; cc < C; ++cc)
          for (int k = 0; k < 5; ++k)
            for (int64_t d = 0; d < Dm; ++d)
              hf[cc * 5 * Dm + k * Dm + d] = w[(perm[k] * Dm + d) * C + cc];
        m.add_owned(a + "time_maa_w1", {C, 5 * Dm}, std::move(hf));
      }
      {
        const GgufTensorInfo& g = m.need(b + "time_mix_w2.weight");
        if (g.shape() != std::vector<int64_t>{5, C, Dm})
          fail(m.file().path(), "tensor '" + g.name + "' has shape " + shape_str(g.shape()) +
                                    ", expected " + shape_str({5, C, Dm}));
        const std::vector<float> w = m.floats(g);
        std::vector<float> hf(static_cast<size_t>(5 * Dm * C));
        for (int k = 0; k < 5; ++k)
          for (int64_t d = 0; d < Dm; ++d)
            for (int64_t cc = 0; cc < C; ++cc)
              hf[(k * Dm + d) * C + cc] = w[(perm[k] * C + cc) * Dm + d];
        m.add_owned(a + "time_maa_w2", {5, Dm, C}, std::move(hf));
      }
      // Decay LoRA: GGUF decay_w1 [Dd, C] and decay_w2 [C, Dd] are the transposes.
      auto transposed = [&](const std::string& gname, const std::string& hf, int64_t rows,
                            int64_t cols) {
        const GgufTensorInfo& g = m.need(gname);
        if (g.shape() != std::vector<int64_t>{cols, rows})
          fail(m.file().path(), "tensor '" + gname + "' has shape " + shape_str(g.shape()) +
                                    ", expected " + shape_str({cols, rows}));
        const std::vector<float> w = m.floats(g);
        std::vector<float> t(static_cast<size_t>(rows * cols));
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t q = 0; q < cols; ++q) t[r * cols + q] = w[q * rows + r];
        m.add_owned(hf, {rows, cols}, std::move(t));
      };
      transposed(b + "time_mix_decay_w1.weight", a + "time_decay_w1", C, Dd);
      transposed(b + "time_mix_decay_w2.weight", a + "time_decay_w2", Dd, C);
    } else {
      const bool llama = c.arch == Arch::Llama;
      for (const char* w : {"weight", "bias"}) {
        if (llama) {
          m.unpermute_rows(b + "attn_q." + w, a + "q_proj." + w, c.num_heads);
          m.unpermute_rows(b + "attn_k." + w, a + "k_proj." + w, c.num_kv_heads);
        } else {
          m.rename(b + "attn_q." + w, a + "q_proj." + w);
          m.rename(b + "attn_k." + w, a + "k_proj." + w);
        }
        m.rename(b + "attn_v." + w, a + "v_proj." + w);
        m.rename(b + "attn_output." + w, a + "o_proj." + w);
      }
    }
  }
}

}  // namespace

bool is_gguf_file(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_regular_file(path, ec);
}

GgufModel open_gguf_model(const std::string& path) {
  GgufModel out;
  auto f = std::make_shared<const GgufFile>(path);
  out.file = f;
  const std::string arch = f->get_string("general.architecture");
  out.config = gguf_config(*f, arch);
  out.store = WeightStore(path);
  out.store.add_mapped(std::shared_ptr<const MappedFile>(f, &f->file()));
  out.store.keep(f);
  Mapper m(f, out.store);
  map_tensors(m, out.config);
  return out;
}

WeightStore open_gguf_weights(const std::string& path) { return open_gguf_model(path).store; }

std::string gguf_type_mix(const GgufFile& f) {
  std::map<std::string, int> counts;
  for (const GgufTensorInfo& t : f.header().tensors)
    counts[ggml_type_traits(static_cast<uint32_t>(t.type))->name]++;
  std::vector<std::pair<int, std::string>> order;
  for (const auto& [name, n] : counts) order.emplace_back(-n, name);
  std::sort(order.begin(), order.end());
  std::string out;
  if (f.has("general.file_type")) {
    const GgufValue* v = f.find("general.file_type");
    if (v->is_integer())
      if (const char* n = ftype_name(v->u)) out = std::string(n) + ": ";
  }
  for (size_t i = 0; i < order.size(); ++i)
    out += (i ? ", " : "") + std::to_string(-order[i].first) + "×" + order[i].second;
  return out;
}

}  // namespace qrwkv
