// `qrwkv pretrain` and `qrwkv convert`: the training commands, compiled into qrwkv only when it
// is built with the conversion component (CMake option QRWKV_CONVERT, which needs libtorch).
// The work is done by src/convert; this file reads flags and, for --nproc, starts the processes
// of a data-parallel run and watches them.
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "apps/qrwkv/args.h"
#include "apps/qrwkv/command.h"
#include "convert/train.h"
#include "runtime/eval.h"
#include "runtime/loader.h"

namespace qrwkv::app {

namespace {

using convert::StageOptions;

// libtorch does its matrix products through the system BLAS and its threading through OpenMP,
// and both read their settings from the environment when they are loaded, before main(). Two
// settings matter, so the process runs itself again with them when they are missing (a value
// set by the user is left alone):
// - OpenBLAS 0.3.21 (Debian 12) does not recognise newer CPUs such as Zen 5 and falls back to
//   its generic SSE3 ("Prescott") kernels, three times slower than its AVX-512 ones on the same
//   machine; OPENBLAS_CORETYPE names kernels that the CPU supports.
// - OpenMP's worker threads spin while they wait for work. When other processes compete for
//   the cores, the spinning threads take the time the working ones need: a pretraining run on
//   two busy cores went from 376 to 2000 tokens/s with OMP_WAIT_POLICY=passive, which lets
//   waiting threads sleep.
void configure_math_libraries(int argc, char** argv) {
  bool again = false;
  if (std::getenv("OMP_WAIT_POLICY") == nullptr) {
    ::setenv("OMP_WAIT_POLICY", "passive", 1);
    again = true;
  }
  using CoreName = char* (*)();
  auto corename = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  if (std::getenv("OPENBLAS_CORETYPE") == nullptr && corename != nullptr &&
      std::strcmp(corename(), "Prescott") == 0) {
    const char* core = nullptr;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
      core = "SkylakeX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      core = "Haswell";
    if (core != nullptr) {
      ::setenv("OPENBLAS_CORETYPE", core, 1);
      again = true;
    }
  }
  if (!again) return;
  std::vector<char*> args;
  char self[] = "qrwkv";
  args.push_back(self);
  for (int i = 0; i < argc; ++i) args.push_back(argv[i]);
  args.push_back(nullptr);
  ::execv("/proc/self/exe", args.data());
  // When the process cannot be replaced, it goes on with the slower settings.
}

// Flags shared by both commands: data, run control, output.
std::vector<Flag> common_flags() {
  return {
      {{"--data"},
       "FILE",
       "training text: .txt (documents separated by blank lines) or .jsonl "
       "(a \"text\" field per line); repeatable"},
      {{"-o", "--out"},
       "DIR",
       "output model directory (also holds train_log.jsonl and, while "
       "running, checkpoint.safetensors)"},
      {{"--seq-len"}, "N", "tokens per training sequence (default 512)"},
      {{"--batch"}, "N", "sequences per step (default 8)"},
      {{"--heldout"}, "N", "held-out sequences for evaluation (default 5%, at least 1)"},
      {{"--seed"}, "N", "seed of the data order and the initial weights (default 0)"},
      {{"--clip"}, "X", "gradient clipping by global norm, 0 for none (default 1)"},
      {{"--weight-decay"}, "X", "AdamW weight decay (default 0)"},
      {{"--device"}, "NAME", "cpu or cuda (default cpu)"},
      {{"--dtype"}, "TYPE", "f32, bf16 or f16 for the saved weights"},
      {{"-t", "--threads"},
       "N",
       "CPU threads per process (default: the cores divided by the processes)"},
      {{"--checkpoint-every"},
       "N",
       "write a checkpoint every N steps (always at the end of a stage)"},
      {{"--resume"}, "", "continue from OUT/checkpoint.safetensors when present"},
      {{"--log"}, "FILE", "JSONL log of every step (default OUT/train_log.jsonl)"},
      {{"--quiet"}, "", "no progress output on stderr"},
      {{"--nproc"},
       "N",
       "data parallel: start N processes on this machine, each taking batch/N "
       "sequences of every step"},
      {{"--world-size"},
       "N",
       "data parallel, one process of N started by hand (with --rank, "
       "--master-addr, --master-port)"},
      {{"--rank"}, "R", "this process's rank, 0..N-1; rank 0 writes the output (default 0)"},
      {{"--master-addr"}, "HOST", "where rank 0 listens (default 127.0.0.1)"},
      {{"--master-port"}, "PORT", "rank 0's port (default 29500)"},
  };
}

// Each process takes an equal share of every batch, so that the steps are those of one process
// with the whole batch.
void check_batch_split(int64_t batch, int64_t processes, const char* flag) {
  if (batch % processes != 0)
    throw Error("--batch: " + std::to_string(batch) + " is not a multiple of the " +
                std::to_string(processes) + " processes (" + flag +
                "); each process takes an equal share of every batch");
}

// The launcher of --nproc: starts the ranks, forwards signals to them, and stops them all when
// one fails. The children are this program again with --world-size, --rank and the rendezvous
// address in place of --nproc.
std::vector<pid_t> g_children;
volatile std::sig_atomic_t g_signal = 0;

void signal_children(int sig) {
  for (pid_t pid : g_children)
    if (pid > 0) ::kill(pid, sig);
}

void forward_signal(int sig) {
  g_signal = sig;
  signal_children(sig);
}

// A TCP port that is free now on the loopback interface. Another program could take it before
// rank 0 binds it; the run then fails at once with a clear error and can simply be started again.
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw Error(std::string("--nproc: cannot open a socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    throw Error(std::string("--nproc: cannot find a free port: ") + std::strerror(errno));
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return std::string("killed by signal ") + std::to_string(WTERMSIG(status)) + " (" +
           strsignal(WTERMSIG(status)) + ")";
  return "status " + std::to_string(status);
}

int launch(int argc, char** argv, int64_t nproc) {
  std::vector<std::string> base = {"qrwkv-train", argv[0]};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--nproc") {
      ++i;
      continue;
    }
    if (a.rfind("--nproc=", 0) == 0) continue;
    base.push_back(a);
  }
  const int port = free_port();
  struct sigaction sa {};
  sa.sa_handler = forward_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) ::sigaction(sig, &sa, nullptr);
  // The children are started with these signals blocked, so that none arrives between fork()
  // and the list of children knowing the new process.
  sigset_t block, old;
  sigemptyset(&block);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) sigaddset(&block, sig);
  g_children.assign(static_cast<size_t>(nproc), -1);
  int result = 0;
  auto stop_deadline = std::chrono::steady_clock::time_point::max();
  for (int64_t r = 0; r < nproc; ++r) {
    std::vector<std::string> a = base;
    a.insert(a.end(), {"--world-size", std::to_string(nproc), "--rank", std::to_string(r),
                       "--master-addr", "127.0.0.1", "--master-port", std::to_string(port)});
    std::vector<char*> cargs;
    for (std::string& s : a) cargs.push_back(s.data());
    cargs.push_back(nullptr);
    ::sigprocmask(SIG_BLOCK, &block, &old);
    const pid_t pid = ::fork();
    if (pid == 0) {
      // A rank must not outlive its launcher, whatever ends the launcher.
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) ::signal(sig, SIG_DFL);
      ::sigprocmask(SIG_SETMASK, &old, nullptr);
      ::execv("/proc/self/exe", cargs.data());
      // Only async-signal-safe calls between fork() and exec: the launcher may have threads.
      const char msg[] = "error: --nproc: cannot run this program again for a rank\n";
      [[maybe_unused]] const ssize_t n = ::write(2, msg, sizeof msg - 1);
      ::_exit(127);
    }
    if (pid > 0) g_children[static_cast<size_t>(r)] = pid;
    ::sigprocmask(SIG_SETMASK, &old, nullptr);
    if (pid < 0) {
      std::fprintf(stderr, "error: --nproc: cannot start rank %lld: %s\n",
                   static_cast<long long>(r), std::strerror(errno));
      signal_children(SIGTERM);
      result = 1;
      stop_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      break;
    }
  }

  // Waits for every rank. The first failure is reported and the others are stopped: the ranks
  // wait for each other at every step, so the rest could not finish anyway.
  size_t running = 0;
  for (pid_t pid : g_children) running += pid > 0;
  bool killed = false;
  while (running > 0) {
    int status = 0;
    const pid_t pid = ::waitpid(
        -1, &status, stop_deadline == std::chrono::steady_clock::time_point::max() ? 0 : WNOHANG);
    if (pid < 0 && errno == EINTR) continue;
    if (pid < 0) break;
    if (pid == 0) {
      // Ranks asked to stop get a few seconds to do so, then are killed.
      if (!killed && std::chrono::steady_clock::now() > stop_deadline) {
        signal_children(SIGKILL);
        killed = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    size_t rank = 0;
    while (rank < g_children.size() && g_children[rank] != pid) ++rank;
    if (rank == g_children.size()) continue;
    g_children[rank] = -1;
    --running;
    const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok && stop_deadline == std::chrono::steady_clock::time_point::max()) {
      if (result == 0) result = g_signal != 0 ? 128 + g_signal : 1;
      if (g_signal == 0)
        std::fprintf(stderr,
                     "error: --nproc: rank %zu of %lld failed (%s); stopping the other ranks\n",
                     rank, static_cast<long long>(nproc), describe_status(status).c_str());
      signal_children(SIGTERM);
      stop_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    }
  }
  return result;
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
  if (args.has("--nproc") && (args.has("--world-size") || args.has("--rank")))
    throw UsageError("--nproc starts the processes itself; it takes no --world-size or --rank");
  const int64_t world = args.get_int("--world-size", 1), rank = args.get_int("--rank", 0),
                port = args.get_int("--master-port", 29500);
  if (world < 1 || world > 4096) throw UsageError("--world-size must be between 1 and 4096");
  if (rank < 0 || rank >= world) throw UsageError("--rank must be between 0 and --world-size − 1");
  if (port < 1 || port > 65535) throw UsageError("--master-port must be between 1 and 65535");
  run.world_size = static_cast<int>(world);
  run.rank = static_cast<int>(rank);
  run.master_addr = args.get("--master-addr", "127.0.0.1");
  run.master_port = static_cast<int>(port);
  check_batch_split(data.batch, world, "--world-size");
}

// --nproc N: the number of local processes to start, or 0 when this process does the work.
int64_t launcher_processes(const Args& args, const convert::DataOptions& data) {
  if (!args.has("--nproc")) return 0;
  const int64_t n = args.get_int("--nproc", 1);
  if (n < 1 || n > 1024) throw UsageError("--nproc must be between 1 and 1024");
  check_batch_split(data.batch, n, "--nproc");
  return n > 1 ? n : 0;
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
  flags.push_back({{prefix + "tokens"},
                   "N",
                   lead + "training tokens (default " + num(static_cast<double>(d.tokens)) + ")"});
  flags.push_back({{prefix + "lr"}, "X", lead + "peak learning rate (default " + num(d.lr) + ")"});
  flags.push_back({{prefix + "lr-final"},
                   "X",
                   lead + "final learning rate of the cosine (default " + num(d.lr_final) + ")"});
  flags.push_back(
      {{prefix + "warmup"}, "N", lead + "warmup steps (default 5% of the steps, at most 100)"});
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
            "[shape flags] [--nproc N] [--resume]",
            flags);
  args.parse(argc, argv);
  configure_math_libraries(argc, argv);
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
  if (const int64_t n = launcher_processes(args, o.data)) return launch(argc, argv, n);
  const auto reports = convert::run_pretrain(o);
  if (o.run.rank == 0) print_reports(reports, "pretrain");
  return 0;
}

int run_convert(int argc, char** argv) {
  std::vector<Flag> flags = common_flags();
  flags.push_back({{"-m", "--teacher"},
                   "DIR",
                   "teacher model directory (qwen2 or llama, with tokenizer.json)"});
  flags.push_back(
      {{"--stages"}, "LIST", "training stages after the weight transfer: 1, 2, 3 (default 1,2)"});
  add_stage_flags(flags, "--stage1-", "stage 1 (attention alignment)", convert::default_stage1());
  add_stage_flags(flags, "--stage2-", "stage 2 (distillation)", convert::default_stage2());
  add_stage_flags(flags, "--stage3-", "stage 3 (long-context distillation)",
                  convert::default_stage3());
  flags.push_back(
      {{"--stage3-seq-len"}, "N", "stage 3: tokens per sequence (default 4x --seq-len)"});
  flags.push_back({{"--freeze-mlp-emb"}, "", "stage 2 leaves MLPs, embeddings and lm_head frozen"});
  flags.push_back(
      {{"--arch"}, "NAME", "the student: rwkv6qwen2 (QRWKV6, default) or rwkv7qwen2 (QRWKV7)"});
  flags.push_back({{"--variant"},
                   "NAME",
                   "rwkv7qwen2: classic (k_k/k_a, GroupNorm; default) or balance (balance state)"});
  flags.push_back({{"--rope"}, "on|off", "rwkv7qwen2: RoPE on r and k (default on)"});
  flags.push_back({{"--lora-tokenshift"},
                   "N",
                   "rwkv6qwen2: token-shift LoRA rank (default 32, 64 from hidden 4096)"});
  flags.push_back({{"--lora-decay"},
                   "N",
                   "decay LoRA rank (rwkv6qwen2: default 64, 128 from hidden 4096; rwkv7qwen2: "
                   "round(1.8·√C/32)·32)"});
  flags.push_back({{"--lora-iclr"}, "N", "rwkv7qwen2: learning-rate LoRA rank"});
  flags.push_back({{"--lora-value"}, "N", "rwkv7qwen2: value-residual LoRA rank"});
  flags.push_back({{"--lora-gate"}, "N", "rwkv7qwen2: gate LoRA rank"});
  flags.push_back({{"--eval-task"},
                   "FILE",
                   "a task file of `qrwkv eval` (repeatable): the teacher and the student after "
                   "each stage are scored on it, and a table compares them at the end"});
  Args args(
      "convert",
      "-m TEACHER --data FILE -o DIR [--arch rwkv6qwen2|rwkv7qwen2] [--variant classic|balance] "
      "[--rope on|off] [--stages 1,2,3] [--stage1-tokens N] [--stage2-tokens N] [--seq-len N] "
      "[--batch N] [--nproc N] [--resume]",
      flags);
  args.parse(argc, argv);
  configure_math_libraries(argc, argv);
  convert::ConvertOptions o;
  read_common(args, o.run, o.data);
  o.teacher_dir = args.require("--teacher");
  if (args.has("--stages")) {
    o.stages.clear();
    for (int32_t s : parse_token_list(args.get("--stages"))) {
      if (s < 1 || s > 3) throw UsageError("--stages takes 1, 2 and/or 3");
      o.stages.push_back(s);
    }
  }
  o.stage1 = read_stage(args, "--stage1-", convert::default_stage1());
  o.stage2 = read_stage(args, "--stage2-", convert::default_stage2());
  o.stage3 = read_stage(args, "--stage3-", convert::default_stage3());
  o.stage3_seq_len = args.get_int("--stage3-seq-len", 0);
  if (o.stage3_seq_len != 0 && o.stage3_seq_len < 2)
    throw UsageError("--stage3-seq-len must be at least 2");
  o.freeze_mlp_embeddings = args.has("--freeze-mlp-emb");
  o.arch = args.get("--arch", "rwkv6qwen2");
  if (o.arch != "rwkv6qwen2" && o.arch != "rwkv7qwen2")
    throw UsageError("--arch takes rwkv6qwen2 or rwkv7qwen2");
  const bool v7 = o.arch == "rwkv7qwen2";
  for (const char* f : {"--variant", "--rope", "--lora-iclr", "--lora-value", "--lora-gate"})
    if (!v7 && args.has(f)) throw UsageError(std::string(f) + " is for --arch rwkv7qwen2");
  if (v7 && args.has("--lora-tokenshift"))
    throw UsageError("--lora-tokenshift is for --arch rwkv6qwen2 (QRWKV7 has no token shift)");
  o.variant = args.get("--variant", "classic");
  if (o.variant != "classic" && o.variant != "balance")
    throw UsageError("--variant takes classic or balance");
  const std::string rope = args.get("--rope", "on");
  if (rope != "on" && rope != "off") throw UsageError("--rope takes on or off");
  o.rope = rope == "on";
  o.lora_tokenshift = args.get_int("--lora-tokenshift", 0);
  o.lora_decay = args.get_int("--lora-decay", 0);
  o.lora_iclr = args.get_int("--lora-iclr", 0);
  o.lora_value = args.get_int("--lora-value", 0);
  o.lora_gate = args.get_int("--lora-gate", 0);
  for (int64_t r : {o.lora_tokenshift, o.lora_decay, o.lora_iclr, o.lora_value, o.lora_gate})
    if (r < 0) throw UsageError("LoRA ranks must be positive");
  if (const int64_t n = launcher_processes(args, o.data)) return launch(argc, argv, n);
  // Task evaluations (qrwkv eval's) of the teacher and of the student after each stage, run by
  // the inference engine on the stage's weights.
  std::vector<eval::Task> tasks;
  for (const std::string& f : args.get_all("--eval-task")) tasks.push_back(eval::load_task(f));
  std::vector<std::pair<std::string, std::vector<eval::TaskRun>>> columns;
  auto evaluate = [&](const std::string& label, const std::string& dir) {
    LoadModelOptions lo;
    lo.model.threads = o.run.threads;
    const LoadedModel lm = load_model(dir, lo);
    const int32_t prefix = eval::prefix_token(lm.tokenizer, lm.eos_ids);
    std::vector<eval::TaskRun> runs;
    for (const eval::Task& t : tasks) {
      runs.push_back(eval::run_task(lm.model, lm.tokenizer, prefix, t, 2048));
      std::printf("eval %s: %s", label.c_str(), t.name.c_str());
      for (const eval::Metric& m : runs.back().metrics)
        std::printf("  %s %.4f", m.name.c_str(), m.value);
      std::printf("\n");
    }
    std::fflush(stdout);
    columns.emplace_back(label, std::move(runs));
  };
  if (!tasks.empty() && o.run.rank == 0) {
    evaluate("teacher", o.teacher_dir);
    o.on_stage_model = [&](int stage, const std::string& dir) {
      evaluate("stage " + std::to_string(stage), dir);
    };
  }
  const auto reports = convert::run_convert(o);
  if (o.run.rank == 0) print_reports(reports, "stage");
  if (!columns.empty()) {
    std::printf("\n| task | metric |");
    for (const auto& c : columns) std::printf(" %s |", c.first.c_str());
    std::printf("\n| --- | --- |");
    for (size_t i = 0; i < columns.size(); ++i) std::printf(" ---: |");
    std::printf("\n");
    for (size_t t = 0; t < tasks.size(); ++t)
      for (size_t k = 0; k < columns[0].second[t].metrics.size(); ++k) {
        std::printf("| %s | %s |", tasks[t].name.c_str(),
                    columns[0].second[t].metrics[k].name.c_str());
        for (const auto& c : columns) std::printf(" %.4f |", c.second[t].metrics[k].value);
        std::printf("\n");
      }
  }
  return 0;
}

const CommandRegistrar pretrain_registrar({"pretrain",
                                           "train a small Qwen2 transformer from scratch on text",
                                           run_pretrain});
const CommandRegistrar convert_registrar({"convert",
                                          "distill a Qwen2/LLaMA teacher into a QRWKV6 model",
                                          run_convert});

}  // namespace

}  // namespace qrwkv::app
