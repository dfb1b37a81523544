// Training runs: `qrwkv pretrain` (a small Qwen2 transformer from scratch) and `qrwkv convert`
// (a Qwen2 / LLaMA teacher distilled into a QRWKV6 or QRWKV7 student, docs/model.md, "Conversion").
// This header is free of libtorch so that the command-line front end compiles quickly; the work
// happens in train.cpp.
//
// Every stage is AdamW (β 0.9/0.95, weight decay 0 by default) with linear warmup, a cosine
// learning rate from `lr` to `lr_final`, and gradient clipping by global norm. A stage of
// `tokens` tokens takes ceil(tokens / (batch · seq_len)) steps.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace qrwkv::convert {

struct DataOptions {
  std::vector<std::string> files;  // .txt / .jsonl training text
  int64_t seq_len = 512;
  int64_t batch = 8;
  int64_t heldout = -1;  // held-out sequences; −1: 5% of them, at least one
  uint64_t seed = 0;     // data order and initial weights
};

struct StageOptions {
  int64_t tokens = 0;
  double lr = 1e-3;
  double lr_final = 1e-5;
  int64_t warmup = -1;  // steps; −1: 5% of the stage's steps, at most 100
  double weight_decay = 0.0;
  double clip = 1.0;  // gradient clipping by global norm; 0: none
};

struct RunOptions {
  std::string out_dir;         // the output model directory (created)
  std::string log_path;        // JSONL log of every step; empty: OUT/train_log.jsonl
  std::string device = "cpu";  // cpu | cuda
  std::string
      dtype;        // of the saved weights: f32 | bf16 | f16; empty: the teacher's (convert) or f32
  int threads = 0;  // torch threads; 0: all cores
  int64_t checkpoint_every = 0;  // steps; 0: only at the end of each stage
  bool resume = false;           // continue from OUT/checkpoint.safetensors when present
  bool progress = true;          // the live progress line on stderr
  // Data parallelism over processes (dist.h): each of `world_size` ranks takes batch / world_size
  // sequences of every step; rank 0 writes the log, checkpoints and the output.
  int world_size = 1;
  int rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
};

struct PretrainOptions {
  RunOptions run;
  DataOptions data;
  StageOptions stage;
  std::string tokenizer_dir;  // tokenizer.json (+ tokenizer_config.json), copied to the output
  int64_t hidden_size = 128;
  int64_t num_layers = 2;
  int64_t num_heads = 4;
  int64_t num_kv_heads = 2;
  int64_t intermediate_size = 384;
  bool tie_word_embeddings = false;
};

struct ConvertOptions {
  RunOptions run;
  DataOptions data;
  std::string teacher_dir;
  std::vector<int> stages = {1, 2};  // stage 0 (weight transfer) always runs; 3 is optional
  StageOptions stage1;               // attention-output alignment
  StageOptions stage2;               // logit distillation
  StageOptions stage3;         // long-context distillation (optional, stage 2 at a longer length)
  int64_t stage3_seq_len = 0;  // 0: four times the data's seq_len
  bool freeze_mlp_embeddings = false;  // stage 2 trains only the time mix and norms
  // The student: "rwkv6qwen2" (QRWKV6) or "rwkv7qwen2" (QRWKV7, with `variant` "classic" or
  // "balance" and RoPE on r and k unless `rope` is false).
  std::string arch = "rwkv6qwen2";
  std::string variant = "classic";
  bool rope = true;
  int64_t lora_tokenshift = 0;  // QRWKV6; 0: the historical default for the hidden size
  int64_t lora_decay = 0;       // both; 0: the architecture's default for the hidden size
  int64_t lora_iclr = 0, lora_value = 0, lora_gate = 0;  // QRWKV7; 0: defaults
  // Called on rank 0 with the student as a model directory after stage 0 and after each stage
  // (the directory is rewritten each time and removed at the end), e.g. to run task
  // evaluations on it with the inference engine; `stage` as in StageReport.
  std::function<void(int stage, const std::string& model_dir)> on_stage_model;
};

// What a stage achieved on the held-out sequences.
struct StageReport {
  int stage = 0;  // −1: the teacher (convert), evaluated before stage 0
  int64_t steps = 0;
  double train_loss = 0;    // mean loss of the stage's last steps
  double heldout_loss = 0;  // cross-entropy of the next token, nats
  double heldout_ppl = 0;
  double heldout_kl = -1;  // KL(teacher ‖ student) per token (convert only), else −1
  double tokens_per_s = 0;
};

// The paper's defaults (docs/model.md, "Conversion"), scaled by nothing: the command line overrides
// them.
StageOptions default_stage1();
StageOptions default_stage2();
StageOptions default_stage3();
StageOptions default_pretrain();

std::vector<StageReport> run_pretrain(const PretrainOptions& o);
std::vector<StageReport> run_convert(const ConvertOptions& o);

}  // namespace qrwkv::convert
