// The training loop shared by pretraining and the conversion stages: data, AdamW, schedule,
// progress, JSONL log, held-out evaluation, checkpoints and resume. See train.h.
#include "convert/train.h"

#include <ATen/Parallel.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <numbers>
#include <optional>
#include <thread>

#include "convert/data.h"
#include "convert/dist.h"
#include "convert/nets.h"
#include "io/error.h"
#include "io/json.h"
#include "io/mapped_file.h"
#include "text/tokenizer.h"

namespace qrwkv::convert {

namespace fs = std::filesystem;

namespace {
StageOptions stage_defaults(int64_t tokens, double lr, double lr_final) {
  StageOptions s;
  s.tokens = tokens;
  s.lr = lr;
  s.lr_final = lr_final;
  return s;
}
}  // namespace

// The token budgets and learning rates of the published recipe (docs/model.md, "Conversion").
StageOptions default_stage1() { return stage_defaults(100'000'000, 1e-3, 1e-5); }
StageOptions default_stage2() { return stage_defaults(250'000'000, 1e-5, 1e-5); }
StageOptions default_stage3() { return stage_defaults(100'000'000, 1e-5, 1e-5); }
StageOptions default_pretrain() { return stage_defaults(10'000'000, 1e-3, 1e-4); }

namespace {

constexpr double kBeta1 = 0.9, kBeta2 = 0.95, kAdamEps = 1e-8;

// The device of one rank: ranks on one machine share its GPUs round-robin.
at::Device parse_device(const std::string& name, int rank) {
  if (name == "cpu") return at::kCPU;
  if (name == "cuda") {
    if (!at::hasCUDA())
      fail("--device cuda", "this libtorch has no CUDA support or no GPU is visible");
    const int gpus = at::detail::getCUDAHooks().getNumGPUs();
    return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(gpus > 0 ? rank % gpus : 0));
  }
  fail("--device", "unknown device '" + name + "' (cpu or cuda)");
}

DType parse_dtype(const std::string& name, DType fallback) {
  if (name.empty()) return fallback;
  if (name == "f32" || name == "float32") return DType::F32;
  if (name == "bf16" || name == "bfloat16") return DType::BF16;
  if (name == "f16" || name == "float16") return DType::F16;
  fail("--dtype", "unknown dtype '" + name + "' (f32, bf16 or f16)");
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string human_count(double n) {
  if (n >= 1e9) return fmt("%.2fG", n / 1e9);
  if (n >= 1e6) return fmt("%.2fM", n / 1e6);
  if (n >= 1e3) return fmt("%.1fk", n / 1e3);
  return fmt("%.0f", n);
}

std::string human_time(double s) {
  const auto t = static_cast<int64_t>(s + 0.5);
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(t / 3600),
                  static_cast<long long>(t / 60 % 60), static_cast<long long>(t % 60));
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", static_cast<long long>(t / 60),
                  static_cast<long long>(t % 60));
  return buf;
}

// Learning rate at `step` of `steps`: linear warmup to lr, then a cosine down to lr_final.
double learning_rate(const StageOptions& s, int64_t step, int64_t steps, int64_t warmup) {
  if (step < warmup) return s.lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const int64_t span = steps - warmup - 1;
  const double progress =
      span > 0 ? static_cast<double>(step - warmup) / static_cast<double>(span) : 1.0;
  return s.lr_final + 0.5 * (s.lr - s.lr_final) * (1.0 + std::cos(std::numbers::pi * progress));
}

// Copies the tokenizer files a model directory carries (those present) from `src` to `dst`.
void copy_tokenizer_files(const std::string& src, const std::string& dst) {
  for (const char* name :
       {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
        "merges.txt", "added_tokens.json", "chat_template.jinja", "generation_config.json"}) {
    const fs::path from = fs::path(src) / name;
    if (!fs::is_regular_file(from)) continue;
    const std::string bytes = read_text_file(from.string());
    write_file_atomic((fs::path(dst) / name).string(), bytes.data(), bytes.size());
  }
}

// Everything one run shares across its stages.
class Run {
 public:
  Run(const RunOptions& ro, const DataOptions& dopt, const std::string& tokenizer_dir,
      json fingerprint)
      : ro_(ro), dopt_(dopt), fingerprint_(std::move(fingerprint)) {
    if (ro.out_dir.empty()) fail("-o", "an output directory is required");
    if (dopt.files.empty()) fail("--data", "at least one training text file is required");
    if (dopt.batch < 1) fail("--batch", "must be at least 1");
    if (ro.world_size < 1) fail("--world-size", "must be at least 1");
    if (dopt.batch % ro.world_size != 0)
      fail("--batch", std::to_string(dopt.batch) + " is not a multiple of the " +
                          std::to_string(ro.world_size) +
                          " processes; each takes an equal share of every batch");
    device_ = parse_device(ro.device, ro.rank);
    // The ranks on one machine share its cores; by default each takes its part of them.
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    at::set_num_threads(ro.threads > 0 ? ro.threads : std::max(1, cores / ro.world_size));
    comm_ = std::make_unique<Comm>(
        DistOptions{ro.world_size, ro.rank, ro.master_addr, ro.master_port}, device_);
    root_ = comm_->is_root();
    progress_ = ro.progress && root_;
    fs::create_directories(ro.out_dir);
    checkpoint_path_ = (fs::path(ro.out_dir) / "checkpoint.safetensors").string();
    const std::string log_path =
        ro.log_path.empty() ? (fs::path(ro.out_dir) / "train_log.jsonl").string() : ro.log_path;
    // A resumed run appends to the log of the run it continues; a kill may have cut that log's
    // last line short, so the new records start on a line of their own.
    // Only rank 0 writes the log.
    if (root_) {
      bool cut_line = false;
      if (ro.resume && fs::exists(log_path) && fs::file_size(log_path) > 0) {
        std::ifstream old(log_path, std::ios::binary);
        old.seekg(-1, std::ios::end);
        cut_line = old.get() != '\n';
      }
      log_.open(log_path, ro.resume ? std::ios::app : std::ios::trunc);
      if (!log_) fail(log_path, "cannot open the log for writing");
      if (cut_line) log_ << '\n';
    }
    tty_ = isatty(2) != 0;

    tokenizer_dir_ = tokenizer_dir;
    const Tokenizer tok = Tokenizer::from_dir(tokenizer_dir);
    for (const std::string& f : dopt.files) {
      std::vector<std::string> d = read_documents(f);
      docs_.insert(docs_.end(), std::make_move_iterator(d.begin()),
                   std::make_move_iterator(d.end()));
    }
    separator_ = document_separator(tok);
    vocab_size_ = tok.vocab_size();
    eos_ = tok.eos_id().value_or(separator_);
    data_ = pack_documents(docs_, tok, separator_, dopt.seq_len, dopt.heldout);
    log_data();
  }

  // Packs the text again into sequences of `seq_len` (stage 3's longer context). The held-out
  // part covers the same tail of the text: --heldout N sequences of the first length become
  // ceil(N · seq_len / new length) of the new one.
  void use_seq_len(int64_t seq_len) {
    if (seq_len == data_.seq_len) return;
    const int64_t heldout =
        dopt_.heldout < 0
            ? -1
            : std::max<int64_t>(1, (dopt_.heldout * dopt_.seq_len + seq_len - 1) / seq_len);
    data_ =
        pack_documents(docs_, Tokenizer::from_dir(tokenizer_dir_), separator_, seq_len, heldout);
    order_.reset();
    log_data();
  }

  void log_data() {
    log({{"event", "data"},
         {"documents", data_.n_documents},
         {"tokens", data_.n_tokens},
         {"train_sequences", data_.n_train()},
         {"heldout_sequences", data_.n_heldout()},
         {"seq_len", data_.seq_len}});
    if (progress_)
      std::fprintf(
          stderr,
          "data: %lld documents, %lld tokens, %lld training + %lld held-out sequences of %lld\n",
          static_cast<long long>(data_.n_documents), static_cast<long long>(data_.n_tokens),
          static_cast<long long>(data_.n_train()), static_cast<long long>(data_.n_heldout()),
          static_cast<long long>(data_.seq_len));
  }

  at::Device device() const { return device_; }
  bool root() const { return root_; }
  int32_t vocab_size() const { return vocab_size_; }
  int32_t eos() const { return eos_; }
  const PackedData& data() const { return data_; }

  void log(const json& j) {
    if (!root_) return;
    log_ << j.dump() << '\n';
    log_.flush();
  }

  // Sequences [first, first + n) of the stage's shuffled order, as int64 ids [n, seq_len].
  at::Tensor train_batch(int stage, int64_t first, int64_t n) {
    if (!order_ || order_stage_ != stage) {
      order_.emplace(data_.n_train(), dopt_.seed * 1000003ull + static_cast<uint64_t>(stage));
      order_stage_ = stage;
    }
    const int64_t S = data_.seq_len;
    at::Tensor t = at::empty({n, S}, at::TensorOptions().dtype(at::kLong));
    int64_t* dst = t.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i) {
      const int64_t seq = (*order_)(first + i);
      for (int64_t j = 0; j < S; ++j)
        dst[i * S + j] = data_.train[static_cast<size_t>(seq * S + j)];
    }
    return t.to(device_);
  }

  at::Tensor heldout_batch(int64_t first, int64_t n) {
    const int64_t S = data_.seq_len;
    at::Tensor t = at::empty({n, S}, at::TensorOptions().dtype(at::kLong));
    int64_t* dst = t.data_ptr<int64_t>();
    for (int64_t j = 0; j < n * S; ++j) dst[j] = data_.heldout[static_cast<size_t>(first * S + j)];
    return t.to(device_);
  }

  // What a checkpoint restores.
  struct Resume {
    int stage = -1;
    int64_t step = 0;
    Params params, adam_m, adam_v;
  };

  // Reads OUT/checkpoint.safetensors when resuming and it exists. Every rank reads it (the
  // output directory must be one that all of them see) and they check that they agree.
  std::optional<Resume> load_checkpoint() {
    std::optional<Resume> r = read_checkpoint();
    const std::vector<double> here = {r ? 1.0 : 0.0, r ? static_cast<double>(r->stage) : -1.0,
                                      r ? static_cast<double>(r->step) : -1.0};
    if (comm_->min(here) != comm_->max(here))
      fail(checkpoint_path_,
           "the processes do not see the same checkpoint; the output directory must be "
           "shared by all of them");
    return r;
  }

  std::optional<Resume> read_checkpoint() {
    if (!ro_.resume || !fs::exists(checkpoint_path_)) return std::nullopt;
    SafetensorsFile f(checkpoint_path_);
    const auto& meta = f.header().metadata;
    auto get = [&](const char* key) {
      auto it = meta.find(key);
      if (it == meta.end()) fail(checkpoint_path_, std::string("checkpoint lacks '") + key + "'");
      return it->second;
    };
    if (get("options") != fingerprint_.dump())
      fail(checkpoint_path_,
           "the checkpoint was made with other options (" + get("options") +
               "); resume with the same options or start afresh without --resume");
    Resume r;
    r.stage = std::stoi(get("stage"));
    r.step = std::stoll(get("step"));
    for (const auto& [name, info] : f.header().tensors) {
      if (info.dtype != DType::F32) fail(checkpoint_path_, name + " is not F32");
      at::Tensor x = at::empty(info.shape, at::TensorOptions().dtype(at::kFloat));
      std::memcpy(x.data_ptr<float>(), f.data(info), static_cast<size_t>(info.end - info.begin));
      x = x.to(device_);
      const auto slash = name.find('/');
      const std::string kind = name.substr(0, slash), pname = name.substr(slash + 1);
      (kind == "param" ? r.params : kind == "adam_m" ? r.adam_m : r.adam_v)[pname] = x;
    }
    log({{"event", "resume"}, {"stage", r.stage}, {"step", r.step}});
    if (progress_)
      std::fprintf(stderr, "resuming stage %d at step %lld from %s\n", r.stage,
                   static_cast<long long>(r.step), checkpoint_path_.c_str());
    return r;
  }

  // Writes the whole training state atomically: every parameter, the AdamW moments, and where
  // the run stands (stage, step; the data position is step · batch of that stage's order, and
  // no random numbers are drawn after initialisation, so nothing else is needed to continue).
  void save_checkpoint(int stage, int64_t step, const Net& net, const Params& m, const Params& v) {
    if (!root_) return;
    std::vector<at::Tensor> keep;
    std::vector<TensorToWrite> out;
    auto add = [&](const std::string& prefix, const Params& ps) {
      for (const auto& [name, t] : ps) {
        keep.push_back(t.detach().to(at::kCPU).contiguous());
        out.push_back({prefix + name, DType::F32, t.sizes().vec(), keep.back().data_ptr()});
      }
    };
    add("param/", net.params);
    add("adam_m/", m);
    add("adam_v/", v);
    write_safetensors(checkpoint_path_, out,
                      {{"stage", std::to_string(stage)},
                       {"step", std::to_string(step)},
                       {"data_position", std::to_string(step * dopt_.batch)},
                       {"seed", std::to_string(dopt_.seed)},
                       {"options", fingerprint_.dump()}});
  }

  void remove_checkpoint() {
    if (!root_) return;
    std::error_code ec;
    fs::remove(checkpoint_path_, ec);
  }

  // One stage of training: `loss_fn` maps a batch of token ids to the loss (and may add fields
  // to the step's log record); only `trainable`
  // parameters of `net` change. Starts at `start_step` with the given AdamW moments (empty:
  // zeros). Returns the mean loss of the last steps and the throughput.
  std::pair<double, double> train_stage(
      int stage, const char* label, const StageOptions& so, Net& net,
      const std::vector<std::string>& trainable,
      const std::function<at::Tensor(const at::Tensor&, json&)>& loss_fn, int64_t start_step,
      Params m, Params v, int64_t* steps_out) {
    const int64_t B = dopt_.batch, S = data_.seq_len, per_step = B * S;
    // This rank's share of every global batch: sequences [rank · local, (rank + 1) · local).
    const int64_t local = B / comm_->world_size(), offset = comm_->rank() * local;
    const int64_t steps = (so.tokens + per_step - 1) / per_step;
    const int64_t warmup = so.warmup >= 0 ? so.warmup : std::min<int64_t>(100, steps / 20);
    *steps_out = steps;
    for (auto& [name, t] : net.params) t.requires_grad_(false);
    for (const std::string& name : trainable) {
      at::Tensor& p = net.params.at(name);
      p.requires_grad_(true);
      if (!m.count(name)) m[name] = at::zeros_like(p);
      if (!v.count(name)) v[name] = at::zeros_like(p);
    }

    const auto t0 = std::chrono::steady_clock::now();
    auto last_print = t0 - std::chrono::hours(1);
    std::vector<double> recent;
    double tok_s = 0;
    for (int64_t step = start_step; step < steps; ++step) {
      const at::Tensor tokens = train_batch(stage, step * B + offset, local);
      for (const std::string& name : trainable) net.params.at(name).mutable_grad().reset();
      json extra = json::object();
      at::Tensor loss = loss_fn(tokens, extra);
      loss.backward();
      double loss_v = loss.item<double>();
      at::NoGradGuard no_grad;
      if (comm_->distributed()) average_over_ranks(net, trainable, loss_v, extra);
      if (!std::isfinite(loss_v))
        fail(label, "the loss is not finite at step " + std::to_string(step) + " (lower --lr?)");

      double sq = 0;
      for (const std::string& name : trainable) {
        const at::Tensor& g = net.params.at(name).grad();
        if (g.defined()) sq += g.pow(2).sum().item<double>();
      }
      const double gnorm = std::sqrt(sq);
      const double scale = so.clip > 0 && gnorm > so.clip ? so.clip / (gnorm + 1e-6) : 1.0;
      const double lr = learning_rate(so, step, steps, warmup);
      const double t = static_cast<double>(step + 1);
      const double bc1 = 1 - std::pow(kBeta1, t), bc2 = 1 - std::pow(kBeta2, t);
      for (const std::string& name : trainable) {
        at::Tensor& p = net.params.at(name);
        if (!p.grad().defined()) continue;
        const at::Tensor g = p.grad() * scale;
        at::Tensor& mm = m.at(name);
        at::Tensor& vv = v.at(name);
        mm.mul_(kBeta1).add_(g, 1 - kBeta1);
        vv.mul_(kBeta2).addcmul_(g, g, 1 - kBeta2);
        if (so.weight_decay > 0) p.mul_(1 - lr * so.weight_decay);
        p.addcdiv_(mm, (vv / bc2).sqrt_().add_(kAdamEps), -lr / bc1);
      }

      const auto now = std::chrono::steady_clock::now();
      const double elapsed = std::chrono::duration<double>(now - t0).count();
      const int64_t done = step + 1 - start_step;
      tok_s = static_cast<double>(done * per_step) / std::max(elapsed, 1e-9);
      const double eta = static_cast<double>((steps - step - 1) * per_step) / std::max(tok_s, 1e-9);
      recent.push_back(loss_v);
      if (recent.size() > 10) recent.erase(recent.begin());
      json record = {{"stage", stage},      {"step", step + 1},
                     {"steps", steps},      {"tokens", (step + 1) * per_step},
                     {"loss", loss_v},      {"lr", lr},
                     {"grad_norm", gnorm},  {"tokens_per_s", tok_s},
                     {"elapsed_s", elapsed}};
      record.update(extra);
      log(record);
      if (progress_ && (tty_ || now - last_print > std::chrono::seconds(10) || step + 1 == steps)) {
        std::fprintf(stderr, "%s[%s] step %lld/%lld  tokens %s  loss %.4f  %s tok/s  ETA %s%s",
                     tty_ ? "\r" : "", label, static_cast<long long>(step + 1),
                     static_cast<long long>(steps),
                     human_count(static_cast<double>((step + 1) * per_step)).c_str(), loss_v,
                     human_count(tok_s).c_str(), human_time(eta).c_str(), tty_ ? "\033[K" : "\n");
        std::fflush(stderr);
        last_print = now;
      }
      if (ro_.checkpoint_every > 0 && (step + 1) % ro_.checkpoint_every == 0 && step + 1 < steps)
        save_checkpoint(stage, step + 1, net, m, v);
    }
    if (progress_ && tty_ && steps > start_step) std::fprintf(stderr, "\n");
    for (auto& [name, p] : net.params) {
      p.mutable_grad().reset();
      p.requires_grad_(false);
    }
    check_same_weights(net, label);
    // The stage is complete: a run killed after this point resumes at the next stage.
    save_checkpoint(stage, steps, net, {}, {});
    double mean = 0;
    for (double x : recent) mean += x;
    return {recent.empty() ? 0.0 : mean / static_cast<double>(recent.size()), tok_s};
  }

  // Makes every rank's gradients, loss and logged per-step numbers those of the whole batch.
  // Every loss is a mean over this rank's equal share of sequences of one length, so the mean
  // over the whole batch is the mean of the ranks' losses, and its gradient the mean of theirs.
  // Ranks run the same graph, so the same gradients are defined everywhere.
  void average_over_ranks(Net& net, const std::vector<std::string>& trainable, double& loss,
                          json& extra) {
    const double n = static_cast<double>(comm_->world_size());
    std::vector<at::Tensor> grads;
    for (const std::string& name : trainable) {
      const at::Tensor& g = net.params.at(name).grad();
      if (g.defined()) grads.push_back(g);
    }
    comm_->all_reduce_sum(grads);
    for (at::Tensor& g : grads) g.div_(n);
    // The loss and the numeric fields of the log record (stage 1's per-layer losses) in one call.
    std::vector<double> numbers = {loss};
    for (auto& [key, value] : extra.items()) {
      if (value.is_number()) numbers.push_back(value.get<double>());
      if (value.is_array())
        for (const json& x : value)
          if (x.is_number()) numbers.push_back(x.get<double>());
    }
    numbers = comm_->sum(numbers);
    size_t i = 0;
    loss = numbers[i++] / n;
    for (auto& [key, value] : extra.items()) {
      if (value.is_number()) value = numbers[i++] / n;
      if (value.is_array())
        for (json& x : value)
          if (x.is_number()) x = numbers[i++] / n;
    }
  }

  // The ranks apply the same update to the same weights, so their weights stay identical, bit
  // for bit (Gloo's all-reduce hands every rank the same sums). A cheap fingerprint checks it
  // at the end of each stage, so that a divergence is reported rather than silently averaged.
  void check_same_weights(const Net& net, const char* label) {
    if (!comm_->distributed()) return;
    at::NoGradGuard no_grad;
    std::vector<double> print;
    for (const auto& [name, p] : net.params) {
      const at::Tensor d = p.to(at::kDouble);
      print.push_back(d.sum().item<double>());
      print.push_back(d.abs().sum().item<double>());
    }
    if (comm_->min(print) != comm_->max(print))
      fail(label,
           "the processes' weights differ after the stage; the data-parallel update is broken");
  }

  // Held-out next-token loss of `net` and, with a teacher, KL(teacher ‖ net).
  StageReport evaluate(int stage, const char* label, const Net& net, const Net* teacher) {
    at::NoGradGuard no_grad;
    StageReport r;
    r.stage = stage;
    double ce = 0, kl = 0;
    // The ranks split the held-out sequences into consecutive blocks, each in batches of its
    // share of --batch, and add up their sums.
    const int64_t ranks = comm_->world_size(), total = data_.n_heldout();
    const int64_t begin = total * comm_->rank() / ranks, end = total * (comm_->rank() + 1) / ranks;
    const int64_t chunk = std::max<int64_t>(1, dopt_.batch / ranks);
    for (int64_t first = begin; first < end; first += chunk) {
      const int64_t b = std::min(chunk, end - first);
      const at::Tensor tokens = heldout_batch(first, b);
      const at::Tensor logits = forward(net, tokens);
      ce += next_token_loss(logits, tokens).item<double>() * static_cast<double>(b);
      if (teacher != nullptr)
        kl += kl_loss(forward(*teacher, tokens), logits).item<double>() * static_cast<double>(b);
    }
    const std::vector<double> sums = comm_->sum({ce, kl});
    ce = sums[0];
    kl = sums[1];
    const int64_t n = total;
    r.heldout_loss = ce / static_cast<double>(n);
    r.heldout_ppl = std::exp(r.heldout_loss);
    if (teacher != nullptr) r.heldout_kl = kl / static_cast<double>(n);
    json j = {{"event", "eval"},
              {"stage", stage},
              {"heldout_loss", r.heldout_loss},
              {"heldout_ppl", r.heldout_ppl},
              {"heldout_sequences", n}};
    if (teacher != nullptr) j["heldout_kl"] = r.heldout_kl;
    log(j);
    if (progress_) {
      std::fprintf(stderr, "[%s] held-out: loss %.4f  perplexity %.3f", label, r.heldout_loss,
                   r.heldout_ppl);
      if (teacher != nullptr) std::fprintf(stderr, "  KL(teacher||student) %.4f", r.heldout_kl);
      std::fprintf(stderr, "\n");
    }
    return r;
  }

 private:
  RunOptions ro_;
  DataOptions dopt_;
  json fingerprint_;
  at::Device device_ = at::kCPU;
  std::unique_ptr<Comm> comm_;
  bool root_ = true, progress_ = true;
  std::vector<std::string> docs_;
  std::string tokenizer_dir_;
  std::string checkpoint_path_;
  std::ofstream log_;
  bool tty_ = false;
  PackedData data_;
  int32_t separator_ = 0, vocab_size_ = 0, eos_ = 0;
  std::optional<SampleOrder> order_;
  int order_stage_ = -1;
};

json stage_json(const StageOptions& s) {
  return {{"tokens", s.tokens},
          {"lr", s.lr},
          {"lr_final", s.lr_final},
          {"warmup", s.warmup},
          {"weight_decay", s.weight_decay},
          {"clip", s.clip}};
}

json data_json(const DataOptions& d) {
  return {{"files", d.files},
          {"seq_len", d.seq_len},
          {"batch", d.batch},
          {"heldout", d.heldout},
          {"seed", d.seed}};
}

void check_stage(const StageOptions& s, const std::string& name) {
  if (s.tokens <= 0) fail(name, "--tokens must be positive");
  if (!(s.lr > 0) || !(s.lr_final >= 0)) fail(name, "learning rates must be positive");
  if (s.clip < 0) fail(name, "--clip must not be negative");
}

}  // namespace

std::vector<StageReport> run_pretrain(const PretrainOptions& o) {
  check_stage(o.stage, "pretrain");
  if (o.tokenizer_dir.empty()) fail("--tokenizer", "a tokenizer directory is required");
  json fp = {{"command", "pretrain"},
             {"data", data_json(o.data)},
             {"stage", stage_json(o.stage)},
             {"shape",
              {o.hidden_size, o.num_layers, o.num_heads, o.num_kv_heads, o.intermediate_size,
               o.tie_word_embeddings}}};
  Run run(o.run, o.data, o.tokenizer_dir, fp);

  Config c;
  c.arch = Arch::Qwen2;
  c.hidden_size = o.hidden_size;
  c.num_layers = o.num_layers;
  c.num_heads = o.num_heads;
  c.num_kv_heads = o.num_kv_heads;
  c.intermediate_size = o.intermediate_size;
  c.vocab_size = run.vocab_size();
  c.rms_norm_eps = 1e-6f;
  c.tie_word_embeddings = o.tie_word_embeddings;
  c.qkv_bias = true;
  c.rope.theta = 1e6;
  c.max_position_embeddings = 32768;
  c.eos_token_ids = {run.eos()};
  if (c.hidden_size <= 0 || c.num_layers <= 0 || c.num_heads <= 0 || c.num_kv_heads <= 0 ||
      c.intermediate_size <= 0)
    fail("pretrain", "model dimensions must be positive");
  if (c.hidden_size % c.num_heads != 0 || c.num_heads % c.num_kv_heads != 0 ||
      (c.hidden_size / c.num_heads) % 2 != 0)
    fail("pretrain",
         "--hidden must be a multiple of --heads with an even head size, and --heads a "
         "multiple of --kv-heads");
  c.head_dim = c.hidden_size / c.num_heads;

  Net net = make_transformer(c, o.data.seed, run.device());
  std::optional<Run::Resume> resume = run.load_checkpoint();
  int64_t start = 0;
  Params m, v;
  if (resume) {
    net.params = std::move(resume->params);
    start = resume->step;
    m = std::move(resume->adam_m);
    v = std::move(resume->adam_v);
  }
  run.check_same_weights(net, "pretrain");
  std::vector<std::string> all;
  for (const auto& [name, t] : net.params) all.push_back(name);
  StageReport r;
  int64_t steps = 0;
  auto [loss, tok_s] = run.train_stage(
      0, "pretrain", o.stage, net, all,
      [&](const at::Tensor& tokens, json&) {
        return next_token_loss(forward(net, tokens), tokens);
      },
      start, m, v, &steps);
  r = run.evaluate(0, "pretrain", net, nullptr);
  r.steps = steps;
  r.train_loss = loss;
  r.tokens_per_s = tok_s;
  if (run.root()) {
    save_net(net, o.run.out_dir, parse_dtype(o.run.dtype, DType::F32));
    copy_tokenizer_files(o.tokenizer_dir, o.run.out_dir);
  }
  run.remove_checkpoint();
  return {r};
}

std::vector<StageReport> run_convert(const ConvertOptions& options) {
  ConvertOptions o = options;
  std::sort(o.stages.begin(), o.stages.end());
  o.stages.erase(std::unique(o.stages.begin(), o.stages.end()), o.stages.end());
  for (int s : o.stages)
    if (s < 1 || s > 3)
      fail("--stages", "stages are 1 (alignment), 2 (distillation) and 3 (long context)");
  const bool stage3 = std::count(o.stages.begin(), o.stages.end(), 3) > 0;
  if (std::count(o.stages.begin(), o.stages.end(), 1)) check_stage(o.stage1, "stage 1");
  if (std::count(o.stages.begin(), o.stages.end(), 2)) check_stage(o.stage2, "stage 2");
  if (stage3) check_stage(o.stage3, "stage 3");
  const int64_t seq_len3 = o.stage3_seq_len > 0 ? o.stage3_seq_len : 4 * o.data.seq_len;
  if (seq_len3 < 2) fail("--stage3-seq-len", "must be at least 2");
  if (fs::exists(o.run.out_dir) && fs::exists(o.teacher_dir) &&
      fs::equivalent(o.run.out_dir, o.teacher_dir))
    fail(o.run.out_dir, "the output directory is the teacher's; the student would overwrite it");
  json fp = {{"command", "convert"},
             {"teacher", o.teacher_dir},
             {"data", data_json(o.data)},
             {"stages", o.stages},
             {"stage1", stage_json(o.stage1)},
             {"stage2", stage_json(o.stage2)},
             {"freeze", o.freeze_mlp_embeddings},
             {"lora", {o.lora_tokenshift, o.lora_decay}}};
  const bool v7 = o.arch == "rwkv7qwen2";
  if (!v7 && o.arch != "rwkv6qwen2") fail("--arch", "the students are rwkv6qwen2 and rwkv7qwen2");
  if (v7) {
    if (o.variant != "classic" && o.variant != "balance")
      fail("--variant", "the QRWKV7 variants are classic and balance");
    // Only keys that differ from QRWKV6's, so that checkpoints of QRWKV6 runs still resume.
    fp["arch"] = o.arch;
    fp["variant"] = o.variant;
    fp["rope"] = o.rope;
    fp["lora"] = {o.lora_decay, o.lora_iclr, o.lora_value, o.lora_gate};
  }
  if (stage3) {
    fp["stage3"] = stage_json(o.stage3);
    fp["stage3_seq_len"] = seq_len3;
  }
  Run run(o.run, o.data, o.teacher_dir, fp);
  Net teacher = load_net(o.teacher_dir, run.device());
  if (teacher.config.arch == Arch::QRWKV6 || teacher.config.arch == Arch::QRWKV7)
    fail(o.teacher_dir, "the teacher must be a Qwen2 or LLaMA transformer");
  if (run.vocab_size() > teacher.config.vocab_size)
    fail(o.teacher_dir, "the tokenizer has more ids than the model's vocabulary");
  const int64_t C = teacher.config.hidden_size;
  const int64_t dm = o.lora_tokenshift > 0 ? o.lora_tokenshift : default_lora_tokenshift(C);
  const int64_t dd = o.lora_decay > 0 ? o.lora_decay : default_lora_decay(C);

  // The teacher's own held-out loss is the mark the student's stages approach.
  std::vector<StageReport> reports = {run.evaluate(-1, "teacher", teacher, nullptr)};

  // The student as a model directory for on_stage_model (F32: the stage's exact weights).
  const std::string stage_dir = (fs::path(o.run.out_dir) / "stage-model").string();
  auto stage_model = [&](int stage, const Net& net) {
    if (!o.on_stage_model || !run.root()) return;
    save_net(net, stage_dir, DType::F32);
    copy_tokenizer_files(o.teacher_dir, stage_dir);
    o.on_stage_model(stage, stage_dir);
  };

  // Stage 0: weight transfer and the initial values of docs/model.md, "Conversion".
  Net student;
  if (v7) {
    Qrwkv7Options q;
    q.balance_state = o.variant == "balance";
    q.use_rope = o.rope;
    q.lora_decay = o.lora_decay;
    q.lora_iclr = o.lora_iclr;
    q.lora_value = o.lora_value;
    q.lora_gate = o.lora_gate;
    student = make_student7(teacher, q, o.data.seed);
  } else {
    student = make_student(teacher, dm, dd, o.data.seed);
  }
  std::optional<Run::Resume> resume = run.load_checkpoint();
  if (!resume) {
    reports.push_back(run.evaluate(0, "stage 0", student, &teacher));
    stage_model(0, student);
  } else {
    student.params = std::move(resume->params);
  }
  run.check_same_weights(student, "stage 0");

  for (int stage : o.stages) {
    if (resume && stage < resume->stage) continue;
    int64_t start = 0;
    Params m, v;
    if (resume && stage == resume->stage) {
      start = resume->step;
      m = std::move(resume->adam_m);
      v = std::move(resume->adam_v);
    }
    std::pair<double, double> result;
    int64_t steps = 0;
    const char* label = stage == 1 ? "stage 1" : stage == 2 ? "stage 2" : "stage 3";
    if (stage == 1) {
      // Every layer learns from the teacher's own inputs and outputs, so the layers are
      // independent problems; one teacher pass feeds all of them at once, which costs the same
      // as training them layer by layer but runs the teacher once instead of L times.
      result = run.train_stage(
          1, label, o.stage1, student, time_mix_param_names(student),
          [&](const at::Tensor& tokens, json& extra) {
            std::vector<LayerIO> io;
            {
              at::NoGradGuard no_grad;
              forward(teacher, tokens, &io);
            }
            std::vector<double> per_layer;
            at::Tensor loss = alignment_loss(student, io, &per_layer);
            extra["layer_loss"] = per_layer;
            return loss;
          },
          start, m, v, &steps);
    } else {
      // Stage 3 is stage 2 again on longer sequences, which extends the context the student
      // has learnt to use (the recipe's optional last stage).
      if (stage == 3) run.use_seq_len(seq_len3);
      std::vector<std::string> trainable;
      for (const auto& [name, t] : student.params) {
        const bool frozen_kind = name.find(".mlp.") != std::string::npos ||
                                 name == "model.embed_tokens.weight" || name == "lm_head.weight";
        if (!(o.freeze_mlp_embeddings && frozen_kind)) trainable.push_back(name);
      }
      result = run.train_stage(
          stage, label, stage == 3 ? o.stage3 : o.stage2, student, trainable,
          [&](const at::Tensor& tokens, json&) {
            at::Tensor t_logits;
            {
              at::NoGradGuard no_grad;
              t_logits = forward(teacher, tokens);
            }
            return kl_loss(t_logits, forward(student, tokens));
          },
          start, m, v, &steps);
    }
    StageReport r = run.evaluate(stage, label, student, &teacher);
    r.steps = steps;
    r.train_loss = result.first;
    r.tokens_per_s = result.second;
    reports.push_back(r);
    stage_model(stage, student);
  }
  if (run.root()) {
    save_net(student, o.run.out_dir, parse_dtype(o.run.dtype, teacher.source_dtype));
    copy_tokenizer_files(o.teacher_dir, o.run.out_dir);
    std::error_code ec;
    fs::remove_all(stage_dir, ec);
  }
  run.remove_checkpoint();
  return reports;
}

}  // namespace qrwkv::convert
