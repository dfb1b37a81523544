// Heap allocations of a decode step, counted. This binary replaces the global operator new (every
// allocation of the engine goes through it: containers, and the backends' alloc()), so it lives
// apart from the other tests. After one step of a shape has run, the next steps of that shape
// must not allocate at all: the workspace, the kernels' scratch and the index vectors of
// forward_batch keep their memory.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "model/model.h"
#include "runtime/sampler.h"
#include "tests/cli.h"

namespace {

std::atomic<bool> g_counting{false};
std::atomic<int64_t> g_allocations{0};

void* counted(size_t n, size_t align) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1);
  if (n == 0) n = 1;
  void* p = align > alignof(std::max_align_t)
                ? std::aligned_alloc(align, (n + align - 1) / align * align)
                : std::malloc(n);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

}  // namespace

void* operator new(size_t n) { return counted(n, 0); }
void* operator new[](size_t n) { return counted(n, 0); }
void* operator new(size_t n, std::align_val_t a) { return counted(n, static_cast<size_t>(a)); }
void* operator new[](size_t n, std::align_val_t a) { return counted(n, static_cast<size_t>(a)); }
void* operator new(size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted(n, 0);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](size_t n, const std::nothrow_t& t) noexcept { return operator new(n, t); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t, std::align_val_t) noexcept { std::free(p); }

namespace qrwkv {
namespace {

// Counts the allocations made (on any thread) while it lives.
class Counting {
 public:
  Counting() {
    g_allocations.store(0);
    g_counting.store(true);
  }
  ~Counting() { g_counting.store(false); }
  int64_t allocations() const { return g_allocations.load(); }
};

std::vector<int32_t> tokens(int64_t n, int64_t vocab) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) t[i] = static_cast<int32_t>((i * 37 + 11) % vocab);
  return t;
}

// The counter sees what it is meant to see, so that the tests below can fail.
TEST(Allocations, CounterSeesAnAllocation) {
  Counting c;
  auto* v = new std::vector<int>(100);
  EXPECT_GE(c.allocations(), 2);
  delete v;
}

// One sequence decoding token by token: after the first step, none allocates. QRWKV6 runs on
// every backend. A transformer's KV cache grows by a token per step, so its room is reserved
// first (reserve_state); the reference backend's attention keeps a score buffer as long as the
// context (grown by doubling), so transformers are checked on the CPU backend, whose attention
// works in fixed blocks.
TEST(Allocations, DecodeStepAllocatesNothing) {
  for (const auto& b : test::every_backend()) {
    for (const char* name : {"qrwkv6_tiny", "qwen2_tiny", "llama_tiny"}) {
      const Model m = Model::load(test::data_path(std::string("models/") + name),
                                  {WeightFormat::Stored, b.backend});
      if (!m.arch().recurrent() && !b.level) continue;
      SCOPED_TRACE(b.name + " " + name);
      State st = m.new_state();
      reserve_state(st, m.config, 100);
      std::vector<float> logits(static_cast<size_t>(m.config.vocab_size));
      const auto prompt = tokens(20, m.config.vocab_size);
      SequenceInput in{&st, prompt, logits.data(), false};
      forward_batch(m, std::span<SequenceInput>(&in, 1));
      int32_t next = 5;
      in.tokens = std::span<const int32_t>(&next, 1);
      forward_batch(m, std::span<SequenceInput>(&in, 1));  // the first step of this shape
      Counting c;
      for (int i = 0; i < 32; ++i) {
        next = static_cast<int32_t>((next * 7 + 3) % m.config.vocab_size);
        forward_batch(m, std::span<SequenceInput>(&in, 1));
      }
      EXPECT_EQ(c.allocations(), 0);
    }
  }
}

// Batched decoding as the server runs it: four sequences, one token each per step.
TEST(Allocations, BatchedDecodeStepAllocatesNothing) {
  for (const auto& b : test::every_backend()) {
    if (!b.level) continue;
    SCOPED_TRACE(b.name);
    const Model m =
        Model::load(test::data_path("models/qrwkv6_tiny"), {WeightFormat::Stored, b.backend});
    std::vector<State> states(4, m.new_state());
    std::vector<std::vector<float>> logits(4, std::vector<float>(m.config.vocab_size));
    std::vector<int32_t> next = {1, 2, 3, 4};
    std::vector<SequenceInput> batch;
    for (size_t i = 0; i < 4; ++i)
      batch.push_back({&states[i], std::span<const int32_t>(&next[i], 1), logits[i].data(), false});
    forward_batch(m, batch);
    Counting c;
    for (int step = 0; step < 16; ++step) {
      for (auto& t : next) t = static_cast<int32_t>((t * 5 + 1) % m.config.vocab_size);
      forward_batch(m, batch);
    }
    EXPECT_EQ(c.allocations(), 0);
  }
}

// Drawing a token (default sampling chain; the penalties are off by default) reuses the
// sampler's candidate list.
TEST(Allocations, SamplingAllocatesNothing) {
  std::vector<float> logits(5000);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = static_cast<float>((i * 31) % 97) / 10;
  for (float temperature : {0.0f, 0.8f}) {
    SamplerParams p;
    p.temperature = temperature;
    Sampler s(p);
    s.accept(s.sample(logits));
    Counting c;
    for (int i = 0; i < 64; ++i) s.accept(s.sample(logits));
    EXPECT_EQ(c.allocations(), 0) << "temperature " << temperature;
  }
}

}  // namespace
}  // namespace qrwkv
