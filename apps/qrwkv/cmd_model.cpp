// Model commands: info, logits, generate-ids.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <numeric>

#include "apps/qrwkv/args.h"
#include "apps/qrwkv/command.h"
#include "io/safetensors.h"
#include "model/gguf_model.h"
#include "model/model.h"

namespace qrwkv::app {

namespace {

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", b, units[u]);
  return buf;
}

int run_info(int argc, char** argv) {
  Args args(
      "info", "-m PATH",
      {{{"-m", "--model"}, "PATH", "model directory (config.json + safetensors) or GGUF file"},
       dtype_flag(),
       ubatch_flag(),
       {{"-t", "--threads"}, "N", "threads of the CPU backend (default: one per physical core)"}});
  args.parse(argc, argv);
  const Model m = Model::load(model_dir(args), load_options(args));
  const Config& c = m.config;
  std::printf("model:            %s\n", m.dir.c_str());
  std::printf("architecture:     %s\n", arch_name(c.arch));
  std::printf("parameters:       %lld\n", static_cast<long long>(m.n_params()));
  std::printf("storage dtype:    %s\n", m.storage_dtype().c_str());
  if (is_gguf_file(m.dir))
    std::printf("gguf types:       %s\n", gguf_type_mix(GgufFile(m.dir)).c_str());
  std::printf("backend:          %s\n", m.backend().name().c_str());
  std::printf("layers:           %lld\n", static_cast<long long>(c.num_layers));
  std::printf("hidden size:      %lld\n", static_cast<long long>(c.hidden_size));
  std::printf("heads:            %lld (kv heads %lld, head size %lld)\n",
              static_cast<long long>(c.num_heads), static_cast<long long>(c.num_kv_heads),
              static_cast<long long>(c.head_dim));
  std::printf("mlp width:        %lld\n", static_cast<long long>(c.intermediate_size));
  std::printf("vocabulary:       %lld\n", static_cast<long long>(c.vocab_size));
  std::printf("tied embeddings:  %s\n", c.tie_word_embeddings ? "yes" : "no");
  if (c.arch == Arch::QRWKV7) {
    std::printf(
        "variant:          %s (%s), %s, %s gate\n", c.balance_state ? "balance state" : "classic",
        c.groupnorm_att ? "GroupNorm output" : "output x N^-1/2",
        c.use_rope ? "RoPE on r and k" : "no RoPE", c.gate_rank_type == 2 ? "LoRA" : "full");
    if (c.use_rope) std::printf("rope:             theta %g\n", c.rope.theta);
    std::printf("lora ranks:       decay %lld, iclr %lld, value residual %lld, gate %lld\n",
                static_cast<long long>(c.lora_rank_decay), static_cast<long long>(c.lora_rank_iclr),
                static_cast<long long>(c.lora_rank_value_residual_mix),
                static_cast<long long>(c.lora_rank_gate));
  } else if (m.arch().recurrent()) {
    std::printf("lora ranks:       token shift %lld, decay %lld\n",
                static_cast<long long>(c.lora_rank_tokenshift),
                static_cast<long long>(c.lora_rank_decay));
  }
  if (m.arch().recurrent()) {
    const size_t sb = m.state_bytes();
    std::printf("state per seq:    %zu bytes (%s), fixed, independent of context length\n", sb,
                human_bytes(static_cast<double>(sb)).c_str());
  } else {
    const size_t kv = m.kv_bytes_per_token();
    std::printf("rope:             theta %g%s\n", c.rope.theta,
                c.rope.type == RopeConfig::Type::Llama3   ? " (llama3 scaling)"
                : c.rope.type == RopeConfig::Type::Linear ? " (linear scaling)"
                                                          : "");
    std::printf("kv cache:         %zu bytes (%s) per token (float32), grows with context\n", kv,
                human_bytes(static_cast<double>(kv)).c_str());
  }
  return 0;
}

Model load_with_state(const Args& args, State& state) {
  Model m = Model::load(model_dir(args), load_options(args));
  if (args.has("--state-in")) {
    const std::string path = args.get("--state-in");
    state = load_state(path);
    check_state_matches(state, m.config, path);
  } else {
    state = m.new_state();
  }
  return m;
}

int run_logits(int argc, char** argv) {
  Args args("logits", "-m PATH --tokens \"1 2 3\" [--state-in F] [--state-out F] [--out FILE]",
            {{{"-m", "--model"}, "PATH", "model directory or GGUF file"},
             dtype_flag(),
             ubatch_flag(),
             {{"-t", "--threads"}, "N", "threads (default: one per physical core)"},
             {{"--reference"}, "", "use the plain float32 reference kernels"},
             {{"--tokens"}, "IDS", "token ids separated by spaces or commas"},
             {{"--state-in"}, "FILE", "start from this saved state instead of an empty one"},
             {{"--state-out"}, "FILE", "save the state after the tokens to this file"},
             {{"--out"},
              "FILE",
              "write logits of every position as safetensors (F32 tensor 'logits' [T, V]); "
              "without it, print the top-5 tokens per position"}});
  args.parse(argc, argv);
  const std::vector<int32_t> tokens = parse_token_list(args.require("--tokens"));
  if (tokens.empty()) throw UsageError("--tokens is empty");
  State state;
  const Model m = load_with_state(args, state);
  const std::vector<float> logits = forward(m, state, tokens, true);
  const int64_t T = static_cast<int64_t>(tokens.size()), V = m.config.vocab_size;
  if (args.has("--out")) {
    write_safetensors(args.get("--out"), {{"logits", DType::F32, {T, V}, logits.data()}});
  } else {
    std::vector<int> idx(static_cast<size_t>(V));
    for (int64_t t = 0; t < T; ++t) {
      const float* row = &logits[t * V];
      std::iota(idx.begin(), idx.end(), 0);
      const int k = static_cast<int>(std::min<int64_t>(5, V));
      std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                        [&](int x, int y) { return row[x] > row[y]; });
      std::printf("%lld [%d]:", static_cast<long long>(t), tokens[t]);
      for (int i = 0; i < k; ++i) std::printf(" %d=%.4f", idx[i], row[idx[i]]);
      std::printf("\n");
    }
  }
  if (args.has("--state-out")) save_state(state, args.get("--state-out"));
  return 0;
}

int run_generate_ids(int argc, char** argv) {
  Args args("generate-ids", "-m PATH --tokens \"1 2 3\" -n N",
            {{{"-m", "--model"}, "PATH", "model directory or GGUF file"},
             dtype_flag(),
             ubatch_flag(),
             {{"-t", "--threads"}, "N", "threads (default: one per physical core)"},
             {{"--reference"}, "", "use the plain float32 reference kernels"},
             {{"--tokens"}, "IDS", "prompt token ids separated by spaces or commas"},
             {{"-n", "--n-predict"}, "N", "number of tokens to generate (greedy, no stop tokens)"},
             {{"--state-in"}, "FILE", "start from this saved state"},
             {{"--state-out"},
              "FILE",
              "save the state to this file: it holds the prompt and every generated token but "
              "the last, so continue with --state-in FILE --tokens LAST"}});
  args.parse(argc, argv);
  const std::vector<int32_t> prompt = parse_token_list(args.require("--tokens"));
  if (prompt.empty()) throw UsageError("--tokens is empty");
  const int64_t n = args.get_int("--n-predict", 16);
  if (n < 0) throw UsageError("-n must be non-negative");
  State state;
  const Model m = load_with_state(args, state);
  const std::vector<int32_t> out = generate_greedy(m, state, prompt, n);
  for (size_t i = 0; i < out.size(); ++i) std::printf(i ? " %d" : "%d", out[i]);
  std::printf("\n");
  if (args.has("--state-out")) save_state(state, args.get("--state-out"));
  return 0;
}

CommandRegistrar info_cmd({"info", "show a model's architecture, size and per-sequence memory",
                           &run_info});
CommandRegistrar logits_cmd({"logits", "evaluate token ids and write or show their logits",
                             &run_logits});
CommandRegistrar generate_cmd({"generate-ids", "greedy continuation of token ids",
                               &run_generate_ids});

}  // namespace

}  // namespace qrwkv::app
