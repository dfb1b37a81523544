#include "model/weights.h"

#include <algorithm>
#include <filesystem>

#include "io/error.h"
#include "io/json.h"
#include "model/architecture.h"
#include "model/gguf_model.h"

namespace qrwkv {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

void WeightStore::add(Tensor t, const std::string& file) {
  std::string name = t.name;
  index_[name] = {std::move(t), file};
}

void WeightStore::add_mapped(std::shared_ptr<const MappedFile> f) {
  mapped_.push_back(f);
  keep_.push_back(std::move(f));
}

namespace {

// The safetensors files of a directory share their mapping with the store.
void add_safetensors(WeightStore& ws, const std::shared_ptr<SafetensorsFile>& f,
                     const TensorInfo& info) {
  Tensor t;
  t.name = info.name;
  t.dtype = info.dtype;
  t.shape = info.shape;
  t.data = f->data(info);
  ws.add(std::move(t), f->path());
}

}  // namespace

WeightStore WeightStore::open(const std::string& path) {
  namespace fs = std::filesystem;
  if (is_gguf_file(path)) return open_gguf_weights(path);
  WeightStore ws(path);
  const fs::path root(path);
  const fs::path single = root / "model.safetensors";
  const fs::path index = root / "model.safetensors.index.json";
  auto adopt = [&](const fs::path& p) {
    auto f = std::make_shared<SafetensorsFile>(p.string());
    // The store keeps the file (and so its mapping) alive; mapped_ views the same mapping.
    ws.keep(f);
    ws.mapped_.push_back(std::shared_ptr<const MappedFile>(f, &f->file()));
    return f;
  };
  if (fs::exists(index)) {
    const std::string where = index.string();
    const json j = load_json_file(where);
    auto wm = j.find("weight_map");
    if (!j.is_object() || wm == j.end() || !wm->is_object())
      fail(where, "missing 'weight_map' object");
    std::map<std::string, std::shared_ptr<SafetensorsFile>> by_name;
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
        it = by_name.emplace(shard, adopt(p)).first;
      }
      const TensorInfo* info = it->second->find(tensor);
      if (info == nullptr)
        fail(it->second->path(),
             "tensor '" + tensor + "' listed in the index is not in this shard");
      add_safetensors(ws, it->second, *info);
    }
  } else if (fs::exists(single)) {
    auto f = adopt(single);
    for (const auto& [name, info] : f->header().tensors) add_safetensors(ws, f, info);
  } else {
    fail(path, "no model.safetensors or model.safetensors.index.json in the model directory");
  }
  return ws;
}

Tensor WeightStore::get_any_shape(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) {
    const std::string where = mapped_.size() == 1 ? mapped_[0]->path() : dir_;
    if (auto a = aliases_.find(name); a != aliases_.end())
      fail(where, "missing tensor '" + a->second + "' (" + name + ")");
    fail(where, "missing tensor '" + name + "'");
  }
  const Entry& e = it->second;
  const DType dt = e.tensor.dtype;
  if (dt != DType::F32 && dt != DType::BF16 && dt != DType::F16 && !is_block_dtype(dt))
    fail(e.file, "tensor '" + name + "' has unsupported dtype " + dtype_name(dt) +
                     " (supported: F32, BF16, F16 and the GGUF block formats)");
  return e.tensor;
}

Tensor WeightStore::get(const std::string& name, const std::vector<int64_t>& shape) const {
  Tensor t = get_any_shape(name);
  if (t.shape != shape) {
    // Size-1 leading dimensions are layout noise ([1,1,C] vs [C]); accept them.
    std::vector<int64_t> a = t.shape, b = shape;
    while (!a.empty() && a.front() == 1 && a.size() > 1) a.erase(a.begin());
    while (!b.empty() && b.front() == 1 && b.size() > 1) b.erase(b.begin());
    if (a != b)
      fail(index_.at(name).file, "tensor '" + name + "' has shape " + shape_str(t.shape) +
                                     ", expected " + shape_str(shape));
  }
  return t;
}

size_t WeightStore::file_bytes() const {
  size_t n = 0;
  for (const auto& f : mapped_) n += f->size();
  return n;
}

void WeightStore::prefetch(const std::function<void(double)>& progress) const {
  const size_t total = std::max<size_t>(1, file_bytes());
  size_t done = 0, next_report = 0;
  volatile uint8_t sink = 0;
  for (const auto& f : mapped_) {
    const uint8_t* p = f->data();
    const size_t n = f->size();
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

ModelWeights bind_weights(Config& c, const WeightStore& s) {
  const int64_t C = c.hidden_size, V = c.vocab_size, F = c.intermediate_size;
  ModelWeights w;
  w.embed_tokens = s.get("model.embed_tokens.weight", {V, C});
  w.norm = s.get("model.norm.weight", {C});
  w.lm_head = c.tie_word_embeddings ? w.embed_tokens : s.get("lm_head.weight", {V, C});
  std::vector<std::shared_ptr<LayerMix>> mixes = architecture(c.arch).bind(c, s);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    LayerWeights l;
    l.input_layernorm = s.get(p + "input_layernorm.weight", {C});
    l.post_attention_layernorm = s.get(p + "post_attention_layernorm.weight", {C});
    l.mix = std::move(mixes[static_cast<size_t>(i)]);
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

std::vector<WeightRef> ModelWeights::all() {
  std::vector<WeightRef> out;
  out.push_back({WeightRole::Embedding, &embed_tokens});
  for (auto& l : layers) {
    out.push_back({WeightRole::Vector, &l.input_layernorm});
    out.push_back({WeightRole::Vector, &l.post_attention_layernorm});
    l.mix->weights(out);
    for (Tensor* t : {&l.gate_proj, &l.up_proj, &l.down_proj})
      out.push_back({WeightRole::MlpProjection, t});
    for (Tensor* t : {&l.gate_proj_bias, &l.up_proj_bias, &l.down_proj_bias})
      out.push_back({WeightRole::Vector, t});
  }
  out.push_back({WeightRole::Vector, &norm});
  out.push_back({WeightRole::Projection, &lm_head});
  std::erase_if(out, [](const WeightRef& r) { return r.tensor->empty(); });
  return out;
}

std::vector<WeightRef> ModelWeights::all() const { return const_cast<ModelWeights*>(this)->all(); }

std::vector<const Tensor*> ModelWeights::projections() const {
  std::vector<const Tensor*> out;
  for (const WeightRef& r : all())
    if (r.role == WeightRole::Projection || r.role == WeightRole::MlpProjection)
      out.push_back(r.tensor);
  return out;
}

int64_t ModelWeights::bytes_per_token() const {
  int64_t n = 0;
  for (const WeightRef& r : all())
    // The weights' own bytes: the zero rows that pad a packed tensor's last panel (a few bytes
    // of the small tensors only; real models' row counts are multiples of 32) do not count.
    n += tensor_bytes(r.tensor->dtype,
                      r.role == WeightRole::Embedding ? r.tensor->cols() : r.tensor->numel());
  return n;
}

int64_t ModelWeights::macs_per_token() const {
  int64_t n = 0;
  for (const WeightRef& r : all())
    if (r.role == WeightRole::Projection || r.role == WeightRole::MlpProjection ||
        r.role == WeightRole::LoraMatrix)
      n += r.tensor->numel();
  return n;
}

}  // namespace qrwkv
