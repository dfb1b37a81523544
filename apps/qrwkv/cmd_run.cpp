// Text generation commands: run (one completion, raw or chat-formatted) and chat (interactive,
// multi-turn, state carried between turns).
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <random>

#include "apps/qrwkv/args.h"
#include "apps/qrwkv/command.h"
#include "io/mapped_file.h"
#include "runtime/chat.h"
#include "runtime/generator.h"
#include "runtime/limits.h"
#include "runtime/loader.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace qrwkv::app {

namespace {

std::atomic<bool> g_interrupt{false};

void on_sigint(int) { g_interrupt.store(true); }

// Ctrl-C stops the current reply instead of killing the process.
void install_sigint_handler() {
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: a blocked read returns so the prompt can be redrawn
  sigaction(SIGINT, &sa, nullptr);
}

std::vector<Flag> model_flags() {
  return {{{"-m", "--model"},
           "PATH",
           "model directory (weights, config, tokenizer) or GGUF file; default $QRWKV_MODEL, else "
           "the built-in "
           "demo model"},
          dtype_flag(),
          ubatch_flag(),
          {{"-t", "--threads"}, "N", "threads (default: one per physical core)"},
          {{"--max-prompt-tokens"},
           "N",
           "longest prompt accepted (default: 131072 for QRWKV; for transformers what its KV "
           "cache fits in half the free memory)"},
          {{"-v", "--verbose"}, "", "log details (model, stop ids, timings)"}};
}

std::vector<Flag> sampling_flags() {
  return {
      {{"-n", "--n-predict"}, "N", "tokens to generate at most; -1 = until a stop (default 256)"},
      {{"-s", "--seed"}, "N", "random seed (default: random)"},
      {{"--temp"}, "T", "temperature; 0 = greedy (default 0.8)"},
      {{"--top-k"}, "K", "top-k; 0 = off (default 40)"},
      {{"--top-p"}, "P", "top-p; 1 = off (default 0.95)"},
      {{"--min-p"}, "P", "min-p; 0 = off (default 0.05)"},
      {{"--repeat-penalty"}, "X", "repetition penalty; 1 = off (default 1.0)"},
      {{"--repeat-last-n"}, "N", "tokens the penalties look at; -1 = all (default 64)"},
      {{"--presence-penalty"}, "X", "presence penalty (default 0)"},
      {{"--frequency-penalty"}, "X", "frequency penalty (default 0)"},
      {{"-l", "--logit-bias"}, "ID(+|-)X", "add a bias to a token's logit (repeatable)"},
      {{"-r", "--reverse-prompt"}, "TEXT", "stop when TEXT is generated (repeatable)"},
      {{"--ignore-eos"}, "", "do not stop at end-of-generation tokens"},
      {{"-sys", "--system-prompt"}, "TEXT", "system message for chat formatting"},
      {{"--chat-template-file"}, "FILE", "use this Jinja chat template instead of the model's"},
  };
}

SamplerParams sampler_params(const Args& a) {
  SamplerParams p;
  p.temperature = static_cast<float>(a.get_double("--temp", p.temperature));
  p.top_k = static_cast<int32_t>(a.get_int("--top-k", p.top_k));
  p.top_p = static_cast<float>(a.get_double("--top-p", p.top_p));
  p.min_p = static_cast<float>(a.get_double("--min-p", p.min_p));
  p.repeat_penalty = static_cast<float>(a.get_double("--repeat-penalty", p.repeat_penalty));
  p.repeat_last_n = static_cast<int32_t>(a.get_int("--repeat-last-n", p.repeat_last_n));
  p.presence_penalty = static_cast<float>(a.get_double("--presence-penalty", 0));
  p.frequency_penalty = static_cast<float>(a.get_double("--frequency-penalty", 0));
  if (p.repeat_penalty <= 0) throw UsageError("--repeat-penalty must be positive");
  if (p.top_p <= 0 || p.top_p > 1) throw UsageError("--top-p must be in (0, 1]");
  if (p.min_p < 0 || p.min_p > 1) throw UsageError("--min-p must be in [0, 1]");
  for (const std::string& b : a.get_all("--logit-bias")) {
    const size_t sign = b.find_first_of("+-", 1);
    if (sign == std::string::npos)
      throw UsageError("--logit-bias expects ID+X or ID-X, got '" + b + "'");
    try {
      size_t used = 0;
      const int id = std::stoi(b.substr(0, sign), &used);
      if (used != sign) throw std::invalid_argument(b);
      const float bias = std::stof(b.substr(sign), &used);
      if (used != b.size() - sign) throw std::invalid_argument(b);
      p.logit_bias[id] = bias;
    } catch (const std::logic_error&) {
      throw UsageError("--logit-bias expects ID+X or ID-X, got '" + b + "'");
    }
  }
  if (a.has("--seed")) {
    p.seed = static_cast<uint64_t>(a.get_int("--seed", 0));
  } else {
    p.seed = std::random_device{}();
  }
  return p;
}

// The model, tokenizer and (for `chat_template`) chat template, with a progress line while a
// large checkpoint is read in.
LoadedModel load_all(const Args& a, bool chat_template) {
  const std::string dir = model_dir(a);
  LoadModelOptions o;
  o.model = load_options(a);
  o.chat_template = chat_template;
  o.chat_template_file = a.get("--chat-template-file");
  const bool show = ::isatty(2) != 0 || a.has("--verbose");
  bool shown = false;
  o.progress = [&](double f) {
    if (!show) return;
    std::fprintf(stderr, "\rloading %s: %3.0f%%", dir.c_str(), 100 * f);
    shown = true;
  };
  LoadedModel L = load_model(dir, o);
  if (shown) std::fprintf(stderr, "\n");
  if (a.has("--verbose")) {
    std::fprintf(stderr, "loaded %s (%s, %lld parameters, %s) in %.2f s; end-of-generation ids:",
                 dir.c_str(), arch_name(L.model.config.arch),
                 static_cast<long long>(L.model.n_params()), L.model.backend().name().c_str(),
                 L.seconds);
    for (int32_t id : L.eos_ids) std::fprintf(stderr, " %d", id);
    std::fprintf(stderr, "\n");
  }
  return L;
}

GenerateOptions generate_options(const Args& a, const std::set<int32_t>& eos) {
  GenerateOptions o;
  o.n_predict = a.get_int("--n-predict", 256);
  if (o.n_predict < -1) throw UsageError("-n must be -1 or more");
  o.stop_strings = a.get_all("--reverse-prompt");
  o.ignore_eos = a.has("--ignore-eos");
  o.eos_ids = eos;
  o.interrupt = &g_interrupt;
  return o;
}

void print_stream(std::string_view s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

void timing_line(int64_t prompt_tokens, double prompt_s, int64_t gen_tokens, double gen_s) {
  std::fprintf(stderr,
               "\nprompt: %lld tokens in %.3f s (%.1f t/s) | generated: %lld tokens in %.3f s "
               "(%.1f t/s)\n",
               static_cast<long long>(prompt_tokens), prompt_s,
               prompt_s > 0 ? static_cast<double>(prompt_tokens) / prompt_s : 0.0,
               static_cast<long long>(gen_tokens), gen_s,
               gen_s > 0 ? static_cast<double>(gen_tokens) / gen_s : 0.0);
}

int run_run(int argc, char** argv) {
  std::vector<Flag> flags = model_flags();
  for (auto& f : sampling_flags()) flags.push_back(f);
  flags.push_back({{"-p", "--prompt"}, "TEXT", "the prompt"});
  flags.push_back({{"-f", "--file"}, "FILE", "read the prompt from FILE"});
  flags.push_back({{"--chat"}, "", "format the prompt as one user message with the chat template"});
  flags.push_back({{"--state-in"}, "FILE", "start from this saved state"});
  flags.push_back({{"--state-out"}, "FILE", "save the state after the prompt and the reply"});
  flags.push_back(
      {{"--n-completions"}, "K", "sample K continuations from one prefill (default 1)"});
  Args a("run", "-m PATH (-p TEXT | -f FILE) [options]", flags);
  a.parse(argc, argv);
  std::string prompt;
  if (a.has("--prompt") == a.has("--file")) throw UsageError("give exactly one of -p and -f");
  prompt = a.has("--file") ? read_text_file(a.get("--file")) : a.get("--prompt");
  const int64_t n_completions = a.get_int("--n-completions", 1);
  if (n_completions < 1) throw UsageError("--n-completions must be at least 1");
  const SamplerParams sp = sampler_params(a);
  LoadedModel L = load_all(a, a.has("--chat"));
  const GenerateOptions opt = generate_options(a, L.eos_ids);

  State state = L.model.new_state();
  if (a.has("--state-in")) {
    state = load_state(a.get("--state-in"));
    check_state_matches(state, L.model.config, a.get("--state-in"));
  }
  std::vector<int32_t> ids;
  if (a.has("--chat")) {
    const ChatTemplate& t = *L.chat_template;
    nlohmann::ordered_json req = {{"messages", nlohmann::ordered_json::array()},
                                  {"add_generation_prompt", true}};
    if (a.has("--system-prompt"))
      req["messages"].push_back({{"role", "system"}, {"content", a.get("--system-prompt")}});
    req["messages"].push_back({{"role", "user"}, {"content", prompt}});
    ids = L.tokenizer.encode(t.render(req));
  } else {
    // Raw completion: the text is the user's, special-token spellings included.
    ids = L.tokenizer.encode(prompt);
  }
  if (ids.empty()) throw UsageError("the prompt is empty");
  const int64_t limit = a.has("--max-prompt-tokens") ? a.get_int("--max-prompt-tokens", 0)
                                                     : default_max_prompt_tokens(L.model, 1);
  if (limit < 1) throw UsageError("--max-prompt-tokens must be at least 1");
  const std::string over = prompt_limit_message(static_cast<int64_t>(ids.size()), limit);
  if (!over.empty()) throw Error(over);
  install_sigint_handler();

  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<float> logits = prefill(L.model, state, ids);
  const double prompt_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  int64_t generated = 0;
  double gen_s = 0;
  State final_state;
  for (int64_t k = 0; k < n_completions; ++k) {
    if (n_completions > 1)
      std::printf("%s--- completion %lld ---\n", k ? "\n" : "", static_cast<long long>(k + 1));
    State fork = state;  // each completion continues its own copy of the prompt's state
    SamplerParams p = sp;
    p.seed = sp.seed + static_cast<uint64_t>(k);
    Sampler sampler(p);
    for (int32_t id : ids) sampler.accept(id);
    const GenerateResult r =
        generate(L.model, L.tokenizer, fork, logits, sampler, opt, print_stream);
    generated += static_cast<int64_t>(r.tokens.size());
    gen_s += r.seconds;
    if (k == 0) final_state = std::move(fork);
    if (r.finish_reason == "interrupted") break;
  }
  std::printf("\n");
  std::fflush(stdout);
  timing_line(static_cast<int64_t>(ids.size()), prompt_s, generated, gen_s);
  if (a.has("--state-out")) save_state(final_state, a.get("--state-out"));
  return 0;
}

int run_chat(int argc, char** argv) {
  std::vector<Flag> flags = model_flags();
  for (auto& f : sampling_flags()) flags.push_back(f);
  flags.push_back(
      {{"--session"}, "FILE", "keep the conversation and its state in FILE across runs"});
  flags.push_back(
      {{"--enable-thinking"}, "BOOL", "pass enable_thinking=true|false to the template"});
  Args a("chat", "-m PATH [options]   (then type; /save F, /load F, /reset, /exit)", flags);
  a.parse(argc, argv);
  const SamplerParams sp = sampler_params(a);
  LoadedModel L = load_all(a, true);
  GenerateOptions opt = generate_options(a, L.eos_ids);
  if (!a.has("--n-predict")) opt.n_predict = -1;  // a chat reply ends at the end-of-turn token
  const ChatTemplate& tmpl = *L.chat_template;
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
  if (a.has("--enable-thinking")) {
    const std::string v = a.get("--enable-thinking");
    if (v != "true" && v != "false") throw UsageError("--enable-thinking expects true or false");
    extra["enable_thinking"] = v == "true";
  }
  ChatSession chat(L.model, L.tokenizer, tmpl, extra);
  const std::string session = a.get("--session");
  auto reset = [&] {
    chat.reset();
    if (a.has("--system-prompt")) chat.add_message("system", a.get("--system-prompt"));
  };
  reset();
  if (!session.empty() && std::filesystem::exists(session)) {
    chat.load(session);
    std::fprintf(stderr, "resumed session %s (%zu messages, %zu tokens of state)\n",
                 session.c_str(), chat.messages().size(), chat.processed().size());
  }
  install_sigint_handler();
  Sampler sampler(sp);
  const bool tty = ::isatty(0) != 0;
  std::string line;
  for (;;) {
    if (tty) print_stream("> ");
    g_interrupt.store(false);
    if (!std::getline(std::cin, line)) {
      if (g_interrupt.load() && !std::cin.eof()) {  // Ctrl-C at the prompt: keep going
        std::cin.clear();
        print_stream("\n(Ctrl-C stops a reply; use /exit or Ctrl-D to quit)\n");
        continue;
      }
      break;  // end of input
    }
    if (line.empty()) continue;
    if (line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      reset();
      print_stream("(conversation reset)\n");
      continue;
    }
    if (line.rfind("/save ", 0) == 0 || line.rfind("/load ", 0) == 0) {
      const std::string path = line.substr(6);
      try {
        if (line[1] == 's') {
          chat.save(path);
          print_stream("(saved to " + path + ")\n");
        } else {
          chat.load(path);
          print_stream("(loaded " + path + ": " + std::to_string(chat.messages().size()) +
                       " messages)\n");
        }
      } catch (const Error& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
      }
      continue;
    }
    if (line[0] == '/') {
      print_stream("(commands: /save FILE, /load FILE, /reset, /exit)\n");
      continue;
    }
    chat.add_message("user", line);
    const auto t0 = std::chrono::steady_clock::now();
    const SyncStats sync = chat.prepare_reply();
    const double prompt_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    sampler.reset_history();
    const GenerateResult r =
        generate(L.model, L.tokenizer, chat.state(), chat.logits(), sampler, opt, print_stream);
    chat.add_reply(r.text, r.tokens);
    if (r.finish_reason == "interrupted") print_stream(" [interrupted]");
    print_stream("\n");
    std::fprintf(stderr, "(reused %lld tokens of state) ", static_cast<long long>(sync.reused));
    timing_line(sync.fed, prompt_s, static_cast<int64_t>(r.tokens.size()), r.seconds);
    if (!session.empty()) chat.save(session);
  }
  if (!session.empty()) chat.save(session);
  return 0;
}

CommandRegistrar run_cmd({"run", "generate text from a prompt (raw or --chat), streamed",
                          &run_run});
CommandRegistrar chat_cmd({"chat", "interactive multi-turn chat; the state carries the history",
                           &run_chat});

}  // namespace

}  // namespace qrwkv::app
