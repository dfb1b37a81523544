#include "model/config.h"

#include "io/error.h"

namespace qrwkv {

const char* arch_name(Arch a) {
  switch (a) {
    case Arch::QRWKV6:
      return "rwkv6qwen2";
    case Arch::Qwen2:
      return "qwen2";
    case Arch::Llama:
      return "llama";
  }
  return "?";
}

namespace {

// Reads a required positive integer key.
int64_t get_dim(const json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) fail(where, std::string("missing config key '") + key + "'");
  if (!it->is_number_integer() || it->get<int64_t>() <= 0)
    fail(where,
         std::string("config key '") + key + "' must be a positive integer, found " + it->dump());
  return it->get<int64_t>();
}

int64_t get_dim_or(const json& j, const char* key, int64_t fallback, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  return get_dim(j, key, where);
}

double get_number_or(const json& j, const char* key, double fallback, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number())
    fail(where, std::string("config key '") + key + "' must be a number, found " + it->dump());
  return it->get<double>();
}

bool get_bool_or(const json& j, const char* key, bool fallback, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean())
    fail(where, std::string("config key '") + key + "' must be true or false, found " + it->dump());
  return it->get<bool>();
}

// Rope settings live either in `rope_parameters` (transformers >= 5) or in top-level
// `rope_theta` + `rope_scaling` (older checkpoints such as the published Qwen2.5).
RopeConfig parse_rope(const json& j, const std::string& where) {
  RopeConfig r;
  json params = json::object();
  if (auto it = j.find("rope_parameters"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) fail(where, "config key 'rope_parameters' must be an object");
    params = *it;
  } else {
    if (auto s = j.find("rope_scaling"); s != j.end() && !s->is_null()) {
      if (!s->is_object()) fail(where, "config key 'rope_scaling' must be an object or null");
      params = *s;
    }
    if (auto t = j.find("rope_theta"); t != j.end()) params["rope_theta"] = *t;
  }
  r.theta = get_number_or(params, "rope_theta", 10000.0, where);
  if (r.theta <= 0) fail(where, "rope_theta must be positive");
  std::string type = "default";
  for (const char* key : {"rope_type", "type"}) {
    if (auto it = params.find(key); it != params.end() && it->is_string()) {
      type = it->get<std::string>();
      break;
    }
  }
  if (type == "default") {
    r.type = RopeConfig::Type::Default;
  } else if (type == "linear") {
    r.type = RopeConfig::Type::Linear;
    r.factor = get_number_or(params, "factor", 1.0, where);
  } else if (type == "llama3") {
    r.type = RopeConfig::Type::Llama3;
    r.factor = get_number_or(params, "factor", 8.0, where);
    r.low_freq_factor = get_number_or(params, "low_freq_factor", 1.0, where);
    r.high_freq_factor = get_number_or(params, "high_freq_factor", 4.0, where);
    r.original_max_position_embeddings =
        get_dim_or(params, "original_max_position_embeddings", 8192, where);
    if (r.high_freq_factor <= r.low_freq_factor)
      fail(where, "llama3 rope scaling needs high_freq_factor > low_freq_factor");
  } else {
    fail(where, "unsupported rope type '" + type + "' (supported: default, linear, llama3)");
  }
  if (r.factor <= 0) fail(where, "rope scaling factor must be positive");
  return r;
}

std::vector<int64_t> parse_token_ids(const json& j, const char* key, const std::string& where) {
  std::vector<int64_t> ids;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return ids;
  if (it->is_number_integer()) {
    ids.push_back(it->get<int64_t>());
  } else if (it->is_array()) {
    for (const auto& v : *it) {
      if (!v.is_number_integer())
        fail(where, std::string("config key '") + key + "' must hold integers");
      ids.push_back(v.get<int64_t>());
    }
  } else {
    fail(where, std::string("config key '") + key + "' must be an integer or a list of integers");
  }
  return ids;
}

}  // namespace

Config parse_config(const json& j, const std::string& where) {
  if (!j.is_object()) fail(where, "config is not a JSON object");
  Config c;
  auto mt = j.find("model_type");
  if (mt == j.end() || !mt->is_string()) fail(where, "missing config key 'model_type'");
  const std::string model_type = mt->get<std::string>();
  if (model_type == "rwkv6qwen2") {
    c.arch = Arch::QRWKV6;
  } else if (model_type == "qwen2") {
    c.arch = Arch::Qwen2;
  } else if (model_type == "llama") {
    c.arch = Arch::Llama;
  } else {
    fail(where, "unknown model_type '" + model_type + "' (supported: rwkv6qwen2, qwen2, llama)");
  }

  c.hidden_size = get_dim(j, "hidden_size", where);
  c.num_layers = get_dim(j, "num_hidden_layers", where);
  c.num_heads = get_dim(j, "num_attention_heads", where);
  c.num_kv_heads = get_dim_or(j, "num_key_value_heads", c.num_heads, where);
  c.intermediate_size = get_dim(j, "intermediate_size", where);
  c.vocab_size = get_dim(j, "vocab_size", where);
  c.rms_norm_eps = static_cast<float>(get_number_or(j, "rms_norm_eps", 1e-6, where));
  c.max_position_embeddings = get_dim_or(j, "max_position_embeddings", 0, where);
  c.tie_word_embeddings = get_bool_or(j, "tie_word_embeddings", false, where);

  if (c.num_heads % c.num_kv_heads != 0)
    fail(where, "num_attention_heads (" + std::to_string(c.num_heads) +
                    ") is not a multiple of num_key_value_heads (" +
                    std::to_string(c.num_kv_heads) + ")");
  if (auto it = j.find("head_dim"); it != j.end() && !it->is_null()) {
    c.head_dim = get_dim(j, "head_dim", where);
  } else {
    if (c.hidden_size % c.num_heads != 0)
      fail(where, "hidden_size (" + std::to_string(c.hidden_size) +
                      ") is not a multiple of num_attention_heads (" + std::to_string(c.num_heads) +
                      ") and no head_dim is given");
    c.head_dim = c.hidden_size / c.num_heads;
  }

  if (auto it = j.find("hidden_act"); it != j.end() && !it->is_null()) {
    if (!it->is_string() || it->get<std::string>() != "silu")
      fail(where, "unsupported hidden_act " + it->dump() + " (only silu)");
  }

  switch (c.arch) {
    case Arch::QRWKV6:
      // The time mix reads whole heads of the hidden state: no separate head_dim is possible.
      if (c.head_dim * c.num_heads != c.hidden_size)
        fail(where, "rwkv6qwen2 needs head_dim * num_attention_heads == hidden_size");
      c.qkv_bias = get_bool_or(j, "attention_bias", true, where);
      c.o_bias = get_bool_or(j, "attention_output_bias", false, where);
      c.lora_rank_tokenshift = get_dim_or(j, "lora_rank_tokenshift", 0, where);
      c.lora_rank_decay = get_dim_or(j, "lora_rank_decay", 0, where);
      break;
    case Arch::Qwen2:
      c.qkv_bias = true;  // Qwen2 always has q/k/v biases and none on o_proj.
      c.rope = parse_rope(j, where);
      break;
    case Arch::Llama:
      c.qkv_bias = c.o_bias = get_bool_or(j, "attention_bias", false, where);
      c.mlp_bias = get_bool_or(j, "mlp_bias", false, where);
      c.rope = parse_rope(j, where);
      break;
  }
  if (c.arch != Arch::QRWKV6 && c.head_dim % 2 != 0)
    fail(where, "head_dim must be even for rotary embeddings");

  c.eos_token_ids = parse_token_ids(j, "eos_token_id", where);
  auto bos = parse_token_ids(j, "bos_token_id", where);
  if (!bos.empty()) c.bos_token_id = bos[0];
  if (auto it = j.find("torch_dtype"); it != j.end() && it->is_string()) c.torch_dtype = *it;
  if (auto it = j.find("dtype"); it != j.end() && it->is_string()) c.torch_dtype = *it;
  return c;
}

Config load_config(const std::string& path) { return parse_config(load_json_file(path), path); }

}  // namespace qrwkv
