#include "runtime/gguf_export.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>

#include "io/error.h"
#include "io/gguf.h"
#include "io/json.h"
#include "io/mapped_file.h"
#include "model/gguf_model.h"
#include "model/rope.h"
#include "model/weights.h"
#include "ops/quant.h"
#include "text/gguf_vocab.h"

namespace qrwkv {

namespace fs = std::filesystem;

namespace {

struct ExportType {
  const char* name;
  GgmlType type;   // the float types: every matrix
  bool quantized;  // the block types: per matrix, as llama-quantize chooses (mixed_type)
  QuantMix mix;
  uint32_t file_type;  // llama.cpp's general.file_type
};
constexpr ExportType kTypes[] = {
    {"f32", GgmlType::F32, false, QuantMix::Q8_0, 0},
    {"f16", GgmlType::F16, false, QuantMix::Q8_0, 1},
    {"bf16", GgmlType::BF16, false, QuantMix::Q8_0, 32},
    {"q8_0", GgmlType::Q8_0, true, QuantMix::Q8_0, 7},
    {"q4_0", GgmlType::Q4_0, true, QuantMix::Q4_0, 2},
    {"q4_k_m", GgmlType::Q4_K, true, QuantMix::Q4_K_M, 15},
    {"q5_k_m", GgmlType::Q5_K, true, QuantMix::Q5_K_M, 17},
    {"q6_k", GgmlType::Q6_K, true, QuantMix::Q6_K, 18},
};

// llama.cpp's name for the pre-tokenizer of a tokenizer.json.
std::string pre_name(const json& tj, const std::string& where) {
  const json& pre = tj.value("pre_tokenizer", json());
  std::vector<json> steps;
  if (pre.is_object() && pre.value("type", "") == "Sequence" && pre.contains("pretokenizers"))
    for (const json& s : pre["pretokenizers"]) steps.push_back(s);
  else if (pre.is_object())
    steps.push_back(pre);
  std::string regex;
  bool byte_level_regex = false;
  for (const json& s : steps) {
    const std::string type = s.value("type", "");
    if (type == "Split" && s.contains("pattern") && s["pattern"].is_object() &&
        s["pattern"].contains("Regex"))
      regex = s["pattern"]["Regex"].get<std::string>();
    else if (type == "ByteLevel" && s.value("use_regex", true))
      byte_level_regex = true;
  }
  if (regex == kQwen2SplitRegex && !byte_level_regex) return "qwen2";
  if (regex == kLlama3SplitRegex && !byte_level_regex) return "llama-bpe";
  if (regex.empty() && byte_level_regex) return "gpt-2";
  fail(where,
       "its pre-tokenizer is none that llama.cpp names (qwen2, llama-bpe, gpt-2), so a "
       "GGUF file cannot describe it");
}

// Tokenizer metadata from a model directory's tokenizer.json (+ tokenizer_config.json,
// chat_template.jinja), as llama.cpp's converter writes it.
void tokenizer_metadata(const std::string& dir, int64_t vocab_size, const Config& config,
                        GgufWriter& w, const GgufExportOptions& o) {
  const fs::path root(dir);
  const std::string tpath = (root / "tokenizer.json").string();
  if (!fs::exists(tpath)) {
    if (o.log) o.log("note: no tokenizer.json, so the file carries no vocabulary");
    return;
  }
  const json tj = load_json_file(tpath);
  const json& model = tj.value("model", json());
  if (!model.is_object() || model.value("type", "BPE") != "BPE" || !model.contains("vocab") ||
      !model["vocab"].is_object())
    fail(tpath, "only byte-level BPE tokenizers can be exported");
  std::vector<std::string> tokens(static_cast<size_t>(vocab_size));
  std::vector<int32_t> types(static_cast<size_t>(vocab_size), 0);
  for (const auto& [tok, id] : model["vocab"].items()) {
    if (!id.is_number_integer()) fail(tpath, "vocab entry '" + tok + "' has no integer id");
    const int64_t i = id.get<int64_t>();
    if (i < 0 || i >= vocab_size) continue;
    tokens[i] = tok;
    types[i] = 1;  // normal
  }
  if (tj.contains("added_tokens") && tj["added_tokens"].is_array())
    for (const json& a : tj["added_tokens"]) {
      const int64_t i = a.value("id", int64_t{-1});
      if (i < 0 || i >= vocab_size) continue;
      tokens[i] = a.value("content", "");
      types[i] = a.value("special", false) ? 3 : 4;  // control : user defined
    }
  for (int64_t i = 0; i < vocab_size; ++i)
    if (types[i] == 0) {
      tokens[i] = "[PAD" + std::to_string(i) + "]";
      types[i] = 5;  // unused
    }
  std::vector<std::string> merges;
  if (model.contains("merges"))
    for (const json& m : model["merges"]) {
      if (m.is_string()) {
        merges.push_back(m.get<std::string>());
      } else if (m.is_array() && m.size() == 2) {
        // Pairs may hold literal spaces, which the "a b" form cannot: llama.cpp's converter
        // spells them U+0120, as the byte-level alphabet does.
        auto part = [](std::string s) {
          std::string out;
          for (char c : s) out += c == ' ' ? std::string("\xc4\xa0") : std::string(1, c);
          return out;
        };
        merges.push_back(part(m[0].get<std::string>()) + " " + part(m[1].get<std::string>()));
      }
    }
  w.set_string("tokenizer.ggml.model", "gpt2");
  w.set_string("tokenizer.ggml.pre", pre_name(tj, tpath));
  w.set_strings("tokenizer.ggml.tokens", tokens);
  w.set_i32s("tokenizer.ggml.token_type", types);
  w.set_strings("tokenizer.ggml.merges", merges);

  // Special tokens: tokenizer_config.json's, else config.json's ids.
  const std::string cpath = (root / "tokenizer_config.json").string();
  json cfg = fs::exists(cpath) ? load_json_file(cpath) : json::object();
  auto id_of = [&](const char* key) -> std::optional<int64_t> {
    if (!cfg.is_object() || !cfg.contains(key)) return std::nullopt;
    const json& v = cfg[key];
    std::string text = v.is_string()   ? v.get<std::string>()
                       : v.is_object() ? v.value("content", "")
                                       : std::string();
    if (text.empty()) return std::nullopt;
    for (int64_t i = 0; i < vocab_size; ++i)
      if (tokens[i] == text) return i;
    return std::nullopt;
  };
  std::optional<int64_t> bos = id_of("bos_token"), eos = id_of("eos_token"),
                         pad = id_of("pad_token"), unk = id_of("unk_token");
  if (!bos && config.bos_token_id >= 0) bos = config.bos_token_id;
  if (!eos && !config.eos_token_ids.empty()) eos = config.eos_token_ids.front();
  if (eos) w.set_u32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(*eos));
  if (pad) w.set_u32("tokenizer.ggml.padding_token_id", static_cast<uint32_t>(*pad));
  if (bos) w.set_u32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(*bos));
  if (unk) w.set_u32("tokenizer.ggml.unknown_token_id", static_cast<uint32_t>(*unk));
  for (const char* k : {"add_bos_token", "add_eos_token"})
    if (cfg.is_object() && cfg.contains(k) && cfg[k].is_boolean())
      w.set_bool(std::string("tokenizer.ggml.") + k, cfg[k].get<bool>());
  const fs::path jinja = root / "chat_template.jinja";
  if (fs::exists(jinja))
    w.set_string("tokenizer.chat_template", read_text_file(jinja.string()));
  else if (cfg.is_object() && cfg.contains("chat_template") && cfg["chat_template"].is_string())
    w.set_string("tokenizer.chat_template", cfg["chat_template"].get<std::string>());
}

// Writes the metadata of the architecture, as llama.cpp's converter does.
void arch_metadata(const Config& c, GgufWriter& w) {
  const std::string A = arch_name(c.arch);
  auto u32 = [&](const std::string& k, int64_t v) {
    w.set_u32(A + "." + k, static_cast<uint32_t>(v));
  };
  w.set_string("general.architecture", A);
  w.set_string("general.type", "model");
  u32("embedding_length", c.hidden_size);
  u32("block_count", c.num_layers);
  u32("feed_forward_length", c.intermediate_size);
  w.set_f32(A + ".attention.layer_norm_rms_epsilon", c.rms_norm_eps);
  if (c.arch == Arch::QRWKV6) {
    u32("context_length", 1048576);
    u32("wkv.head_size", c.head_dim);
    u32("time_mix_extra_dim", c.lora_rank_tokenshift);
    u32("time_decay_extra_dim", c.lora_rank_decay);
    u32("token_shift_count", 1);
    u32("attention.head_count_kv", c.num_kv_heads);
    u32("attention.head_count", 0);
    return;
  }
  u32("context_length", c.max_position_embeddings > 0 ? c.max_position_embeddings : 32768);
  u32("attention.head_count", c.num_heads);
  u32("attention.head_count_kv", c.num_kv_heads);
  if (c.head_dim * c.num_heads != c.hidden_size) {
    u32("attention.key_length", c.head_dim);
    u32("attention.value_length", c.head_dim);
  }
  w.set_f32(A + ".rope.freq_base", static_cast<float>(c.rope.theta));
  if (c.arch == Arch::Llama) {
    u32("vocab_size", c.vocab_size);
    u32("rope.dimension_count", c.head_dim);
  }
  if (c.rope.type == RopeConfig::Type::Linear) {
    w.set_string(A + ".rope.scaling.type", "linear");
    w.set_f32(A + ".rope.scaling.factor", static_cast<float>(c.rope.factor));
  }
}

// A tensor to write: its GGUF name, type and ne, and how to make its values.
class Exporter {
 public:
  Exporter(GgufWriter& w, const ExportType& type, int64_t n_layers, const GgufExportOptions& o)
      : w_(w), type_(type), n_layers_(n_layers), o_(o) {}

  // A tensor whose values are the source's (same row-major order), written as `type`.
  void values(const std::string& name, const Tensor& src, std::vector<int64_t> ne, GgmlType type) {
    log(name, type, ne);
    const std::optional<DType> same = dtype_of_ggml(type);
    if (same && *same == src.dtype && src.layout == Layout::RowMajor) {
      w_.add_tensor(name, type, ne, src.data);  // bytes as they are
      return;
    }
    const int64_t cols = ne[0], rows = src.numel() / cols;
    w_.add_tensor(name, type, ne, [src, cols, rows, type](std::string& out) {
      std::vector<float> row(static_cast<size_t>(cols));
      for (int64_t r = 0; r < rows; ++r) {
        load_f32(src, r * cols, cols, row.data());
        encode(type, row.data(), cols, out);
      }
    });
  }
  // A matrix: the export type, or for the quantized types llama-quantize's choice for its
  // kind and layer.
  void matrix(const std::string& name, const Tensor& src, MatrixKind kind = MatrixKind::Other,
              int64_t layer = 0) {
    GgmlType type = type_.type;
    if (type_.quantized) {
      const DType dt = mixed_type(type_.mix, kind, layer, n_layers_, src.shape.back());
      type = dt == DType::F16 ? GgmlType::F16 : *ggml_of_dtype(dt);
    }
    values(name, src, {src.shape.rbegin(), src.shape.rend()}, type);
  }
  // A vector or small tensor kept in float32.
  void f32(const std::string& name, const Tensor& src, std::vector<int64_t> ne) {
    values(name, src, std::move(ne), GgmlType::F32);
  }
  // Values computed here (rearranged LoRA matrices, rope factors), in float32.
  void owned(const std::string& name, std::vector<float> v, std::vector<int64_t> ne) {
    auto buf = std::make_shared<std::vector<float>>(std::move(v));
    log(name, GgmlType::F32, ne);
    w_.add_tensor(name, GgmlType::F32, ne, [buf](std::string& out) {
      out.append(reinterpret_cast<const char*>(buf->data()), buf->size() * 4);
    });
  }

  static void encode(GgmlType type, const float* x, int64_t n, std::string& out) {
    switch (type) {
      case GgmlType::F32:
        out.append(reinterpret_cast<const char*>(x), static_cast<size_t>(n) * 4);
        return;
      case GgmlType::F16:
        for (int64_t i = 0; i < n; ++i) {
          const uint16_t h = f32_to_f16(x[i]);
          out.append(reinterpret_cast<const char*>(&h), 2);
        }
        return;
      case GgmlType::BF16:
        for (int64_t i = 0; i < n; ++i) {
          const uint16_t h = f32_to_bf16(x[i]);
          out.append(reinterpret_cast<const char*>(&h), 2);
        }
        return;
      default: {
        // llama.cpp's own quantizers: the bytes llama-quantize writes for these values.
        const DType dt = *dtype_of_ggml(type);
        std::string blocks(static_cast<size_t>(tensor_bytes(dt, n)), '\0');
        quantize_ggml(dt, x, n, reinterpret_cast<uint8_t*>(blocks.data()));
        out += blocks;
        return;
      }
    }
  }

 private:
  void log(const std::string& name, GgmlType type, const std::vector<int64_t>& ne) {
    if (!o_.log) return;
    std::string s = name + " " + ggml_type_traits(static_cast<uint32_t>(type))->name + " [";
    for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
    o_.log(s + "]");
  }
  GgufWriter& w_;
  const ExportType& type_;
  int64_t n_layers_;
  const GgufExportOptions& o_;
};

// Hugging Face rows in half-split rope order to llama.cpp's adjacent-pair order: row
// h·D + j·D/2 + i goes to h·D + 2i + j (the inverse of model/gguf_model.cpp's).
Tensor permuted_rows(const Tensor& src, int64_t heads, std::vector<std::shared_ptr<void>>& keep) {
  const int64_t rows = src.shape[0];
  const int64_t row_bytes =
      src.shape.size() == 2 ? tensor_bytes(src.dtype, src.shape[1]) : tensor_bytes(src.dtype, 1);
  const int64_t D = rows / heads, half = D / 2;
  auto buf = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(rows * row_bytes));
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t j = 0; j < 2; ++j)
      for (int64_t i = 0; i < half; ++i)
        std::memcpy(buf->data() + (h * D + 2 * i + j) * row_bytes,
                    src.data + (h * D + j * half + i) * row_bytes, static_cast<size_t>(row_bytes));
  keep.push_back(buf);
  Tensor t = src;
  t.data = buf->data();
  return t;
}

}  // namespace

const char* gguf_export_types() { return "f32, f16, bf16, q8_0, q4_0, q4_k_m, q5_k_m, q6_k"; }

void export_gguf(const std::string& model_path, const std::string& out_path,
                 const GgufExportOptions& o) {
  const ExportType* et = nullptr;
  for (const ExportType& t : kTypes)
    if (o.type == t.name) et = &t;
  if (et == nullptr)
    throw Error("export-gguf: unknown type '" + o.type + "' (" + gguf_export_types() + ")");

  Config c;
  WeightStore store;
  std::shared_ptr<const GgufFile> src_gguf;
  if (is_gguf_file(model_path)) {
    GgufModel g = open_gguf_model(model_path);
    c = g.config;
    store = std::move(g.store);
    src_gguf = g.file;
  } else {
    if (!fs::is_directory(model_path))
      fail(model_path, "model directory or GGUF file does not exist");
    c = load_config((fs::path(model_path) / "config.json").string());
    store = WeightStore::open(model_path);
  }
  // llama.cpp has rwkv7 and arwkv7, but no rwkv7qwen2: nothing would read such a file.
  if (c.arch == Arch::QRWKV7)
    fail(model_path, "rwkv7qwen2 models have no GGUF architecture in llama.cpp to export to");
  const ModelWeights mw = bind_weights(c, store);  // checks every tensor; fills the LoRA ranks
  (void)mw;

  GgufWriter w;
  arch_metadata(c, w);
  std::string name = fs::path(model_path).filename().string();
  if (name.empty()) name = fs::path(model_path).parent_path().filename().string();
  if (src_gguf && src_gguf->has("general.name")) name = src_gguf->get_string("general.name");
  w.set_string("general.name", name);
  w.set_u32("general.file_type", et->file_type);
  w.set_u32("general.quantization_version", 2);
  if (src_gguf) {
    // The vocabulary and template as they are.
    for (const auto& [k, v] : src_gguf->header().metadata)
      if (k.rfind("tokenizer.", 0) == 0) w.set_value(k, v);
  } else {
    tokenizer_metadata(model_path, c.vocab_size, c, w, o);
  }

  Exporter x(w, *et, c.num_layers, o);
  std::vector<std::shared_ptr<void>> keep;
  auto get = [&](const std::string& n) { return store.get_any_shape(n); };
  const int64_t C = c.hidden_size;
  if (c.arch == Arch::Llama &&
      (c.rope.type == RopeConfig::Type::Llama3 || !c.rope.freq_factors.empty())) {
    // llama.cpp takes the llama3 scaling as per-frequency divisors.
    RopeConfig plain;
    plain.theta = c.rope.theta;
    const std::vector<double> base = rope_inv_freq(plain, c.head_dim);
    RopeConfig scaled = c.rope;
    if (scaled.type == RopeConfig::Type::Linear) scaled.type = RopeConfig::Type::Default;
    const std::vector<double> inv = rope_inv_freq(scaled, c.head_dim);
    std::vector<float> rf(base.size());
    for (size_t i = 0; i < rf.size(); ++i) rf[i] = static_cast<float>(base[i] / inv[i]);
    x.owned("rope_freqs.weight", std::move(rf), {c.head_dim / 2});
  }
  x.matrix("token_embd.weight", get("model.embed_tokens.weight"),
           c.tie_word_embeddings ? MatrixKind::Output : MatrixKind::Other);
  x.f32("output_norm.weight", get("model.norm.weight"), {C});
  if (!c.tie_word_embeddings) x.matrix("output.weight", get("lm_head.weight"), MatrixKind::Output);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    const std::string p = "model.layers." + std::to_string(i) + ".";
    const std::string a = p + "self_attn.";
    x.f32(b + "attn_norm.weight", get(p + "input_layernorm.weight"), {C});
    x.f32(b + "ffn_norm.weight", get(p + "post_attention_layernorm.weight"), {C});
    for (const char* m : {"gate", "up", "down"}) {
      x.matrix(b + "ffn_" + m + ".weight", get(p + "mlp." + m + "_proj.weight"),
               std::string(m) == "down" ? MatrixKind::FfnDown : MatrixKind::Other, i);
      if (c.mlp_bias) {
        const Tensor bias = get(p + "mlp." + m + "_proj.bias");
        x.f32(b + "ffn_" + m + ".bias", bias, {bias.numel()});
      }
    }
    auto bias = [&](const std::string& gg, const std::string& hf) {
      const Tensor t = get(hf);
      x.f32(gg, t, {t.numel()});
    };
    if (c.arch == Arch::QRWKV6) {
      const int64_t Dm = c.lora_rank_tokenshift, Dd = c.lora_rank_decay;
      x.matrix(b + "time_mix_receptance.weight", get(a + "q_proj.weight"));
      x.matrix(b + "time_mix_key.weight", get(a + "k_proj.weight"));
      x.matrix(b + "time_mix_value.weight", get(a + "v_proj.weight"));
      x.matrix(b + "time_mix_output.weight", get(a + "o_proj.weight"));
      x.matrix(b + "time_mix_gate.weight", get(a + "gate.weight"));
      if (c.qkv_bias) {
        bias(b + "time_mix_receptance.bias", a + "q_proj.bias");
        bias(b + "time_mix_key.bias", a + "k_proj.bias");
        bias(b + "time_mix_value.bias", a + "v_proj.bias");
      }
      if (c.o_bias) bias(b + "time_mix_output.bias", a + "o_proj.bias");
      x.f32(b + "time_mix_lerp_x.weight", get(a + "time_maa_x"), {C});
      x.f32(b + "time_mix_decay.weight", get(a + "time_decay"), {C});
      // The five token-shift vectors in llama.cpp's order w, k, v, r, g.
      std::vector<float> fused;
      for (const char* n : {"time_maa_w", "time_maa_k", "time_maa_v", "time_maa_r", "time_maa_g"}) {
        const std::vector<float> v = to_f32(get(a + n));
        fused.insert(fused.end(), v.begin(), v.end());
      }
      x.owned(b + "time_mix_lerp_fused.weight", std::move(fused), {C, 1, 1, 5});
      constexpr int perm[5] = {3, 1, 2, 0, 4};  // GGUF block g holds checkpoint block perm[g]
      {
        const std::vector<float> w1 = to_f32(get(a + "time_maa_w1"));  // [C, 5·Dm]
        std::vector<float> g(static_cast<size_t>(5 * Dm * C));         // [5·Dm, C]
        for (int k = 0; k < 5; ++k)
          for (int64_t d = 0; d < Dm; ++d)
            for (int64_t cc = 0; cc < C; ++cc)
              g[(k * Dm + d) * C + cc] = w1[cc * 5 * Dm + perm[k] * Dm + d];
        x.owned(b + "time_mix_w1.weight", std::move(g), {C, 5 * Dm});
      }
      {
        const std::vector<float> w2 = to_f32(get(a + "time_maa_w2"));  // [5, Dm, C]
        std::vector<float> g(static_cast<size_t>(5 * C * Dm));         // [5, C, Dm]
        for (int k = 0; k < 5; ++k)
          for (int64_t cc = 0; cc < C; ++cc)
            for (int64_t d = 0; d < Dm; ++d)
              g[(k * C + cc) * Dm + d] = w2[(perm[k] * Dm + d) * C + cc];
        x.owned(b + "time_mix_w2.weight", std::move(g), {Dm, C, 5});
      }
      auto transposed = [&](const std::string& gname, const std::string& hf, int64_t rows,
                            int64_t cols) {
        const std::vector<float> m = to_f32(get(hf));  // [rows, cols]
        std::vector<float> t(static_cast<size_t>(rows * cols));
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t q = 0; q < cols; ++q) t[q * rows + r] = m[r * cols + q];
        x.owned(gname, std::move(t), {rows, cols});  // ne [rows, cols] = array [cols][rows]
      };
      transposed(b + "time_mix_decay_w1.weight", a + "time_decay_w1", C, Dd);
      transposed(b + "time_mix_decay_w2.weight", a + "time_decay_w2", Dd, C);
    } else {
      const bool llama = c.arch == Arch::Llama;
      Tensor q = get(a + "q_proj.weight"), k = get(a + "k_proj.weight");
      if (llama) {
        q = permuted_rows(q, c.num_heads, keep);
        k = permuted_rows(k, c.num_kv_heads, keep);
      }
      x.matrix(b + "attn_q.weight", q);
      x.matrix(b + "attn_k.weight", k);
      x.matrix(b + "attn_v.weight", get(a + "v_proj.weight"), MatrixKind::AttentionV, i);
      x.matrix(b + "attn_output.weight", get(a + "o_proj.weight"));
      if (c.qkv_bias) {
        Tensor qb = get(a + "q_proj.bias"), kb = get(a + "k_proj.bias");
        if (llama) {
          qb = permuted_rows(qb, c.num_heads, keep);
          kb = permuted_rows(kb, c.num_kv_heads, keep);
        }
        x.f32(b + "attn_q.bias", qb, {qb.numel()});
        x.f32(b + "attn_k.bias", kb, {kb.numel()});
        bias(b + "attn_v.bias", a + "v_proj.bias");
      }
      if (c.o_bias) bias(b + "attn_output.bias", a + "o_proj.bias");
    }
  }
  w.write(out_path);
}

}  // namespace qrwkv
