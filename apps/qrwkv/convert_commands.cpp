// `qrwkv pretrain` and `qrwkv convert`: the training commands, compiled into qrwkv only when it
// is built with the conversion component (CMake option QRWKV_CONVERT, which needs libtorch).
// The work is done by src/convert; this file only reads flags.
#include <dlfcn.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "apps/qrwkv/args.h"
#include "apps/qrwkv/command.h"
#include "convert/train.h"

namespace qrwkv::app {

namespace {

using convert::StageOptions;

// libtorch does its matrix products through the system BLAS. OpenBLAS 0.3.21 (Debian 12) does
// not recognise newer CPUs such as Zen 5 and falls back to its generic SSE3 ("Prescott") kernels,
// three times slower than its AVX-512 ones on the same machine. It picks its kernels when it is
// loaded, before main(), so the only cure is to run the process again with OPENBLAS_CORETYPE
// naming kernels that the CPU supports. A value set by the user is left alone.
void use_fast_blas_kernels(int argc, char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;
  using CoreName = char* (*)();
  auto corename = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  if (corename == nullptr || std::strcmp(corename(), "Prescott") != 0) return;
  const char* core = nullptr;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    core = "SkylakeX";
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    core = "Haswell";
  if (core == nullptr) return;
  ::setenv("OPENBLAS_CORETYPE", core, 1);
  std::vector<char*> args;
  char self[] = "qrwkv";
  args.push_back(self);
  for (int i = 0; i < argc; ++i) args.push_back(argv[i]);
  args.push_back(nullptr);
  ::execv("/proc/self/exe", args.data());
  // When the process cannot be replaced, it goes on with the slower kernels.
}

// Flags shared by both commands: data, run control, output.
std::vector<Flag> common_flags() {
  return {
      {{"--data"}, "FILE", "training text: .txt (documents separated by blank lines) or .jsonl "
                           "(a \"text\" field per line); repeatable"},
      {{"-o", "--out"}, "DIR", "output model directory (also holds train_log.jsonl and, while "
                               "running, checkpoint.safetensors)"},
      {{"--seq-len"}, "N", "tokens per training sequence (default 512)"},
      {{"--batch"}, "N", "sequences per step (default 8)"},
      {{"--heldout"}, "N", "held-out sequences for evaluation (default 5%, at least 1)"},
      {{"--seed"}, "N", "seed of the data order and the initial weights (default 0)"},
      {{"--clip"}, "X", "gradient clipping by global norm, 0 for none (default 1)"},
      {{"--weight-decay"}, "X", "AdamW weight decay (default 0)"},
      {{"--device"}, "NAME", "cpu or cuda (default cpu)"},
      {{"--dtype"}, "TYPE", "f32, bf16 or f16 for the saved weights"},
      {{"-t", "--threads"}, "N", "CPU threads (default: all cores)"},
      {{"--checkpoint-every"}, "N", "write a checkpoint every N steps (always at the end of a stage)"},
      {{"--resume"}, "", "continue from OUT/checkpoint.safetensors when present"},
      {{"--log"}, "FILE", "JSONL log of every step (default OUT/train_log.jsonl)"},
      {{"--quiet"}, "", "no progress output on stderr"},
  };
}

void read_common(const Args& args, convert::RunOptions& run, convert::DataOptions& data) {
  data.files = args.get_all("--data");
  if (data.files.empty()) throw UsageError("--data is required");
  run.out_dir = args.require("--out");
  data.seq_len = args.get_int("--seq-len", data.seq_len);
  data.batch = args.get_int("--batch", data.batch);
  data.heldout = args.get_int("--heldout", data.heldout);
  const int64_t seed = args.get_int("--seed", 0);
  if (seed < 0) throw UsageError("--seed must not be negative");
  data.seed = static_cast<uint64_t>(seed);
  if (data.seq_len < 2) throw UsageError("--seq-len must be at least 2");
  if (data.batch < 1) throw UsageError("--batch must be at least 1");
  run.device = args.get("--device", "cpu");
  run.dtype = args.get("--dtype");
  run.threads = static_cast<int>(args.get_int("--threads", 0));
  run.checkpoint_every = args.get_int("--checkpoint-every", 0);
  if (run.checkpoint_every < 0) throw UsageError("--checkpoint-every must not be negative");
  run.resume = args.has("--resume");
  run.log_path = args.get("--log");
  run.progress = !args.has("--quiet");
}

// Per-stage flags spelled PREFIXtokens, PREFIXlr, ...: "--stage1-tokens" for a stage of
// convert, plain "--tokens" for pretrain, which has a single stage. `what` names the stage in
// the help text (empty for pretrain).
void add_stage_flags(std::vector<Flag>& flags, const std::string& prefix, const std::string& what,
                     const StageOptions& d) {
  auto num = [](double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v);
    return std::string(buf);
  };
  const std::string lead = what.empty() ? "" : what + ": ";
  flags.push_back({{prefix + "tokens"}, "N", lead + "training tokens (default " + num(static_cast<double>(d.tokens)) + ")"});
  flags.push_back({{prefix + "lr"}, "X", lead + "peak learning rate (default " + num(d.lr) + ")"});
  flags.push_back({{prefix + "lr-final"}, "X", lead + "final learning rate of the cosine (default " + num(d.lr_final) + ")"});
  flags.push_back({{prefix + "warmup"}, "N", lead + "warmup steps (default 5% of the steps, at most 100)"});
}

StageOptions read_stage(const Args& args, const std::string& prefix, StageOptions s) {
  s.tokens = args.get_int(prefix + "tokens", s.tokens);
  s.lr = args.get_double(prefix + "lr", s.lr);
  s.lr_final = args.get_double(prefix + "lr-final", s.lr_final);
  s.warmup = args.get_int(prefix + "warmup", s.warmup);
  s.clip = args.get_double("--clip", s.clip);
  s.weight_decay = args.get_double("--weight-decay", s.weight_decay);
  if (s.tokens <= 0) throw UsageError(prefix + "tokens must be positive");
  if (!(s.lr > 0) || !(s.lr_final >= 0)) throw UsageError("learning rates must be positive");
  return s;
}

void print_reports(const std::vector<convert::StageReport>& reports, const char* what) {
  for (const auto& r : reports) {
    if (r.stage < 0)
      std::printf("teacher");
    else
      std::printf("%s %d: steps %lld", what, r.stage, static_cast<long long>(r.steps));
    if (r.steps > 0) std::printf("  train loss %.4f", r.train_loss);
    std::printf("  held-out loss %.4f  perplexity %.3f", r.heldout_loss, r.heldout_ppl);
    if (r.heldout_kl >= 0) std::printf("  KL %.4f", r.heldout_kl);
    if (r.tokens_per_s > 0) std::printf("  %.0f tok/s", r.tokens_per_s);
    std::printf("\n");
  }
}

int run_pretrain(int argc, char** argv) {
  std::vector<Flag> flags = common_flags();
  flags.push_back({{"--tokenizer"}, "DIR", "directory with tokenizer.json (copied to the output)"});
  add_stage_flags(flags, "--", "", convert::default_pretrain());
  flags.push_back({{"--hidden"}, "N", "hidden size (default 128)"});
  flags.push_back({{"--layers"}, "N", "layers (default 2)"});
  flags.push_back({{"--heads"}, "N", "attention heads (default 4)"});
  flags.push_back({{"--kv-heads"}, "N", "key/value heads (default 2)"});
  flags.push_back({{"--intermediate"}, "N", "MLP width (default 384)"});
  flags.push_back({{"--tie"}, "", "tie the output head to the embedding"});
  Args args("pretrain",
            "--tokenizer DIR --data FILE -o DIR [--tokens N] [--seq-len N] [--batch N] [--lr X] "
            "[shape flags] [--resume]",
            flags);
  args.parse(argc, argv);
  use_fast_blas_kernels(argc, argv);
  convert::PretrainOptions o;
  read_common(args, o.run, o.data);
  o.tokenizer_dir = args.require("--tokenizer");
  o.stage = read_stage(args, "--", convert::default_pretrain());
  o.hidden_size = args.get_int("--hidden", o.hidden_size);
  o.num_layers = args.get_int("--layers", o.num_layers);
  o.num_heads = args.get_int("--heads", o.num_heads);
  o.num_kv_heads = args.get_int("--kv-heads", o.num_kv_heads);
  o.intermediate_size = args.get_int("--intermediate", o.intermediate_size);
  o.tie_word_embeddings = args.has("--tie");
  print_reports(convert::run_pretrain(o), "pretrain");
  return 0;
}

int run_convert(int argc, char** argv) {
  std::vector<Flag> flags = common_flags();
  flags.push_back({{"-m", "--teacher"}, "DIR", "teacher model directory (qwen2 or llama, with tokenizer.json)"});
  flags.push_back({{"--stages"}, "LIST", "training stages after the weight transfer (default 1,2)"});
  add_stage_flags(flags, "--stage1-", "stage 1 (attention alignment)", convert::default_stage1());
  add_stage_flags(flags, "--stage2-", "stage 2 (distillation)", convert::default_stage2());
  flags.push_back({{"--freeze-mlp-emb"}, "", "stage 2 leaves MLPs, embeddings and lm_head frozen"});
  flags.push_back({{"--lora-tokenshift"}, "N", "token-shift LoRA rank (default 32, 64 from hidden 4096)"});
  flags.push_back({{"--lora-decay"}, "N", "decay LoRA rank (default 64, 128 from hidden 4096)"});
  Args args("convert",
            "-m TEACHER --data FILE -o DIR [--stages 1,2] [--stage1-tokens N] [--stage2-tokens N] "
            "[--seq-len N] [--batch N] [--resume]",
            flags);
  args.parse(argc, argv);
  use_fast_blas_kernels(argc, argv);
  convert::ConvertOptions o;
  read_common(args, o.run, o.data);
  o.teacher_dir = args.require("--teacher");
  if (args.has("--stages")) {
    o.stages.clear();
    for (int32_t s : parse_token_list(args.get("--stages"))) {
      if (s != 1 && s != 2) throw UsageError("--stages takes 1 and/or 2");
      o.stages.push_back(s);
    }
  }
  o.stage1 = read_stage(args, "--stage1-", convert::default_stage1());
  o.stage2 = read_stage(args, "--stage2-", convert::default_stage2());
  o.freeze_mlp_embeddings = args.has("--freeze-mlp-emb");
  o.lora_tokenshift = args.get_int("--lora-tokenshift", 0);
  o.lora_decay = args.get_int("--lora-decay", 0);
  if (o.lora_tokenshift < 0 || o.lora_decay < 0) throw UsageError("LoRA ranks must be positive");
  print_reports(convert::run_convert(o), "stage");
  return 0;
}

const CommandRegistrar pretrain_registrar(
    {"pretrain", "train a small Qwen2 transformer from scratch on text", run_pretrain});
const CommandRegistrar convert_registrar(
    {"convert", "distill a Qwen2/LLaMA teacher into a QRWKV6 model", run_convert});

}  // namespace

}  // namespace qrwkv::app
