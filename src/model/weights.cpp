#include "model/weights.h"

#include <algorithm>
#include <filesystem>

#include "io/error.h"
#include "io/json.h"
#include "ops/quant.h"

namespace qrwkv {

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

WeightStore WeightStore::open(const std::string& dir) {
  namespace fs = std::filesystem;
  WeightStore ws;
  ws.dir_ = dir;
  const fs::path root(dir);
  const fs::path single = root / "model.safetensors";
  const fs::path index = root / "model.safetensors.index.json";
  if (fs::exists(index)) {
    const std::string where = index.string();
    const json j = load_json_file(where);
    auto wm = j.find("weight_map");
    if (!j.is_object() || wm == j.end() || !wm->is_object())
      fail(where, "missing 'weight_map' object");
    std::map<std::string, const SafetensorsFile*> by_name;
    for (const auto& [tensor, shard_json] : wm->items()) {
      if (!shard_json.is_string())
        fail(where, "weight_map entry '" + tensor + "' is not a file name");
      const std::string shard = shard_json.get<std::string>();
      if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
        fail(where, "weight_map entry '" + tensor + "' names an invalid shard '" + shard + "'");
      auto it = by_name.find(shard);
      if (it == by_name.end()) {
        const fs::path p = root / shard;
        if (!fs::exists(p)) fail(where, "index points to missing shard " + shard);
        ws.files_.push_back(std::make_unique<SafetensorsFile>(p.string()));
        it = by_name.emplace(shard, ws.files_.back().get()).first;
      }
      const TensorInfo* info = it->second->find(tensor);
      if (info == nullptr)
        fail(it->second->path(),
             "tensor '" + tensor + "' listed in the index is not in this shard");
      ws.index_[tensor] = {it->second, info};
    }
  } else if (fs::exists(single)) {
    ws.files_.push_back(std::make_unique<SafetensorsFile>(single.string()));
    for (const auto& [name, info] : ws.files_.back()->header().tensors)
      ws.index_[name] = {ws.files_.back().get(), &info};
  } else {
    fail(dir, "no model.safetensors or model.safetensors.index.json in the model directory");
  }
  return ws;
}

Tensor WeightStore::get_any_shape(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) {
    const std::string where = files_.size() == 1 ? files_[0]->path() : dir_;
    fail(where, "missing tensor '" + name + "'");
  }
  const auto& [file, info] = it->second;
  if (info->dtype != DType::F32 && info->dtype != DType::BF16 && info->dtype != DType::F16)
    fail(file->path(), "tensor '" + name + "' has unsupported dtype " + dtype_name(info->dtype) +
                           " (supported: F32, BF16, F16)");
  Tensor t;
  t.name = name;
  t.dtype = info->dtype;
  t.shape = info->shape;
  t.data = file->data(*info);
  return t;
}

Tensor WeightStore::get(const std::string& name, const std::vector<int64_t>& shape) const {
  Tensor t = get_any_shape(name);
  if (t.shape != shape) {
    // Size-1 leading dimensions are layout noise ([1,1,C] vs [C]); accept them.
    std::vector<int64_t> a = t.shape, b = shape;
    while (!a.empty() && a.front() == 1 && a.size() > 1) a.erase(a.begin());
    while (!b.empty() && b.front() == 1 && b.size() > 1) b.erase(b.begin());
    if (a != b) {
      const std::string where = index_.at(name).file->path();
      fail(where, "tensor '" + name + "' has shape " + shape_str(t.shape) + ", expected " +
                      shape_str(shape));
    }
  }
  return t;
}

size_t WeightStore::file_bytes() const {
  size_t n = 0;
  for (const auto& f : files_) n += f->file().size();
  return n;
}

void WeightStore::prefetch(const std::function<void(double)>& progress) const {
  const size_t total = std::max<size_t>(1, file_bytes());
  size_t done = 0, next_report = 0;
  volatile uint8_t sink = 0;
  for (const auto& f : files_) {
    const uint8_t* p = f->file().data();
    const size_t n = f->file().size();
    for (size_t off = 0; off < n; off += 4096) {
      sink = sink + p[off];
      if (done + off >= next_report) {
        progress(static_cast<double>(done + off) / static_cast<double>(total));
        next_report += total / 100 + 1;
      }
    }
    done += n;
  }
  progress(1.0);
}

std::vector<std::string> WeightStore::names() const {
  std::vector<std::string> out;
  for (const auto& [name, e] : index_) out.push_back(name);
  return out;
}

ModelWeights bind_weights(const Config& c, const WeightStore& s) {
  const int64_t C = c.hidden_size, V = c.vocab_size, F = c.intermediate_size;
  const int64_t QD = c.num_heads * c.head_dim, KVD = c.kv_dim();
  ModelWeights w;
  w.embed_tokens = s.get("model.embed_tokens.weight", {V, C});
  w.norm = to_f32(s.get("model.norm.weight", {C}));
  w.lm_head = c.tie_word_embeddings ? w.embed_tokens : s.get("lm_head.weight", {V, C});

  if (c.arch == Arch::QRWKV6) {
    // LoRA ranks come from the config when present, else from the first layer's tensors.
    const std::string p0 = "model.layers.0.self_attn.";
    const Tensor w1 = s.get_any_shape(p0 + "time_maa_w1");
    const Tensor d1 = s.get_any_shape(p0 + "time_decay_w1");
    w.lora_rank_tokenshift = c.lora_rank_tokenshift;
    if (w.lora_rank_tokenshift == 0) {
      if (w1.shape.size() != 2 || w1.shape[1] % 5 != 0 || w1.shape[1] == 0)
        fail(s.dir(), "tensor '" + w1.name + "' has shape " + shape_str(w1.shape) + ", expected [" +
                          std::to_string(C) + ", 5*rank]");
      w.lora_rank_tokenshift = w1.shape[1] / 5;
    }
    w.lora_rank_decay = c.lora_rank_decay;
    if (w.lora_rank_decay == 0) {
      if (d1.shape.size() != 2 || d1.shape[1] == 0)
        fail(s.dir(), "tensor '" + d1.name + "' has shape " + shape_str(d1.shape) + ", expected [" +
                          std::to_string(C) + ", rank]");
      w.lora_rank_decay = d1.shape[1];
    }
  }
  const int64_t Dm = w.lora_rank_tokenshift, Dd = w.lora_rank_decay;

  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    LayerWeights l;
    l.input_layernorm = to_f32(s.get(p + "input_layernorm.weight", {C}));
    l.post_attention_layernorm = to_f32(s.get(p + "post_attention_layernorm.weight", {C}));
    const std::string a = p + "self_attn.";
    l.q_proj = s.get(a + "q_proj.weight", {QD, C});
    l.k_proj = s.get(a + "k_proj.weight", {KVD, C});
    l.v_proj = s.get(a + "v_proj.weight", {KVD, C});
    l.o_proj = s.get(a + "o_proj.weight", {C, QD});
    if (c.qkv_bias) {
      l.q_bias = s.get(a + "q_proj.bias", {QD});
      l.k_bias = s.get(a + "k_proj.bias", {KVD});
      l.v_bias = s.get(a + "v_proj.bias", {KVD});
    }
    if (c.o_bias) l.o_bias = s.get(a + "o_proj.bias", {C});
    if (c.arch == Arch::QRWKV6) {
      l.time_maa_x = to_f32(s.get(a + "time_maa_x", {1, 1, C}));
      const char* names[5] = {"time_maa_r", "time_maa_k", "time_maa_v", "time_maa_w", "time_maa_g"};
      for (int k = 0; k < 5; ++k) l.time_maa[k] = to_f32(s.get(a + names[k], {1, 1, C}));
      l.time_maa_w1 = s.get(a + "time_maa_w1", {C, 5 * Dm});
      l.time_maa_w2 = s.get(a + "time_maa_w2", {5, Dm, C});
      l.time_decay = to_f32(s.get(a + "time_decay", {1, 1, C}));
      l.time_decay_w1 = s.get(a + "time_decay_w1", {C, Dd});
      l.time_decay_w2 = s.get(a + "time_decay_w2", {Dd, C});
      l.gate = s.get(a + "gate.weight", {C, C});
    }
    const std::string m = p + "mlp.";
    l.gate_proj = s.get(m + "gate_proj.weight", {F, C});
    l.up_proj = s.get(m + "up_proj.weight", {F, C});
    l.down_proj = s.get(m + "down_proj.weight", {C, F});
    if (c.mlp_bias) {
      l.gate_proj_bias = s.get(m + "gate_proj.bias", {F});
      l.up_proj_bias = s.get(m + "up_proj.bias", {F});
      l.down_proj_bias = s.get(m + "down_proj.bias", {C});
    }
    w.layers.push_back(std::move(l));
  }
  return w;
}

std::vector<Tensor*> ModelWeights::projections() {
  std::vector<Tensor*> out;
  for (auto& l : layers)
    for (Tensor* t : {&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.gate, &l.gate_proj, &l.up_proj,
                      &l.down_proj})
      if (!t->empty()) out.push_back(t);
  out.push_back(&lm_head);
  return out;
}

std::vector<const Tensor*> ModelWeights::projections() const {
  std::vector<const Tensor*> out;
  for (Tensor* t : const_cast<ModelWeights*>(this)->projections()) out.push_back(t);
  return out;
}

int64_t ModelWeights::bytes_per_token() const {
  int64_t n = 0;
  auto vec = [&](const std::vector<float>& v) { n += static_cast<int64_t>(v.size() * 4); };
  auto ten = [&](const Tensor& t) {
    if (!t.empty()) n += tensor_bytes(t);
  };
  for (const auto& l : layers) {
    vec(l.input_layernorm);
    vec(l.post_attention_layernorm);
    vec(l.time_maa_x);
    for (const auto& m : l.time_maa) vec(m);
    vec(l.time_decay);
    for (const Tensor* t :
         {&l.q_proj, &l.q_bias, &l.k_proj, &l.k_bias, &l.v_proj, &l.v_bias, &l.o_proj, &l.o_bias,
          &l.time_maa_w1, &l.time_maa_w2, &l.time_decay_w1, &l.time_decay_w2, &l.gate, &l.gate_proj,
          &l.gate_proj_bias, &l.up_proj, &l.up_proj_bias, &l.down_proj, &l.down_proj_bias})
      ten(*t);
  }
  vec(norm);
  ten(lm_head);
  if (!embed_tokens.empty()) n += tensor_bytes(embed_tokens.dtype, embed_tokens.cols());
  return n;
}

WeightFormat parse_weight_format(const std::string& name) {
  for (WeightFormat f : {WeightFormat::F32, WeightFormat::BF16, WeightFormat::F16,
                         WeightFormat::Q8_0, WeightFormat::Q4_0, WeightFormat::Q4_0_PURE})
    if (name == weight_format_name(f)) return f;
  if (name.empty()) return WeightFormat::Stored;
  fail("--dtype", "unknown weight format '" + name + "' (f32, bf16, f16, q8_0, q4_0, q4_0_pure)");
}

const char* weight_format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::Stored:
      return "";
    case WeightFormat::F32:
      return "f32";
    case WeightFormat::BF16:
      return "bf16";
    case WeightFormat::F16:
      return "f16";
    case WeightFormat::Q8_0:
      return "q8_0";
    case WeightFormat::Q4_0:
      return "q4_0";
    case WeightFormat::Q4_0_PURE:
      return "q4_0_pure";
  }
  return "?";
}

void convert_weights(ModelWeights& w, WeightFormat format, ThreadPool* pool) {
  if (format == WeightFormat::Stored) return;
  std::vector<Tensor*> ts = w.projections();
  for (Tensor* t : ts) {
    DType target = DType::F32;
    switch (format) {
      case WeightFormat::BF16:
        target = DType::BF16;
        break;
      case WeightFormat::F16:
        target = DType::F16;
        break;
      case WeightFormat::Q8_0:
        target = DType::Q8_0;
        break;
      case WeightFormat::Q4_0: {
        // Only the MLP matrices go to 4 bits; see WeightFormat.
        target = DType::Q8_0;
        for (const auto& l : w.layers)
          if (t == &l.gate_proj || t == &l.up_proj || t == &l.down_proj) target = DType::Q4_0;
        break;
      }
      case WeightFormat::Q4_0_PURE:
        target = DType::Q4_0;
        break;
      default:
        break;
    }
    const bool block = target == DType::Q8_0 || target == DType::Q4_0;
    if (t->dtype == target || (block && !quantizable(*t))) continue;
    auto bytes = std::make_shared<std::vector<uint8_t>>();
    *t = convert_tensor(*t, target, *bytes, pool);
    w.owned.push_back(std::move(bytes));
  }
}

}  // namespace qrwkv
