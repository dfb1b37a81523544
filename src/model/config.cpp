#include "model/config.h"

#include "io/error.h"
#include "model/architecture.h"
#include "model/config_keys.h"

namespace qrwkv {

const char* arch_name(Arch a) { return architecture(a).model_type(); }

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

namespace {

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
  const Architecture* arch = find_architecture(model_type);
  if (arch == nullptr) {
    std::string names;
    for (const Architecture* a : architectures())
      names += std::string(names.empty() ? "" : ", ") + a->model_type();
    fail(where, "unknown model_type '" + model_type + "' (supported: " + names + ")");
  }
  c.arch = arch->id();

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

  arch->parse_config(j, c, where);

  c.eos_token_ids = parse_token_ids(j, "eos_token_id", where);
  auto bos = parse_token_ids(j, "bos_token_id", where);
  if (!bos.empty()) c.bos_token_id = bos[0];
  if (auto it = j.find("torch_dtype"); it != j.end() && it->is_string()) c.torch_dtype = *it;
  if (auto it = j.find("dtype"); it != j.end() && it->is_string()) c.torch_dtype = *it;
  return c;
}

Config load_config(const std::string& path) { return parse_config(load_json_file(path), path); }

}  // namespace qrwkv
