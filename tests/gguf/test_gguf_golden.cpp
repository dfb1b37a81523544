// GGUF files made and run by llama.cpp (tests/data/gguf, see its README): dequantization bit
// for bit against llama.cpp's Python package, logits against llama.cpp's within the tolerance its
// own activation rounding needs, greedy tokens against the dequantized-float32 twin's, and the
// vocabulary and chat template against the tokenizer.json of the same model.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/kernels.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/gguf_model.h"
#include "model/model.h"
#include "ops/quant.h"
#include "tests/cli.h"
#include "tests/expect.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace qrwkv {
namespace {

using test::Expected;
using test::max_rel_error;

std::string gguf_path(const std::string& name) { return test::data_path("gguf/" + name); }

TEST(GgufDequant, EqualsLlamaCppBitForBit) {
  const Expected deq(gguf_path("DEQ.safetensors"));
  int checked = 0;
  for (const char* type : {"F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K",
                           "Q4_K", "Q5_K", "Q6_K"}) {
    const GgufFile f(gguf_path(std::string("DEQ/DEQ-") + type + ".gguf"));
    ASSERT_EQ(f.header().tensors.size(), 4u) << type;
    for (const GgufTensorInfo& g : f.header().tensors) {
      EXPECT_STREQ(ggml_type_traits(static_cast<uint32_t>(g.type))->name, type) << g.name;
      Tensor t;
      t.name = g.name;
      t.dtype = *dtype_of_ggml(g.type);
      t.shape = g.shape();
      t.data = f.data(g);
      const std::vector<float> got = to_f32(t);
      const std::vector<float> want = deq.get<float>(g.name + "@" + type);
      ASSERT_EQ(got.size(), want.size()) << g.name << "@" << type;
      size_t differ = 0;
      for (size_t i = 0; i < got.size(); ++i)
        if (std::memcmp(&got[i], &want[i], 4) != 0) ++differ;
      EXPECT_EQ(differ, 0u) << g.name << "@" << type << ": " << differ << " of " << got.size()
                            << " values differ";
      // A part of a row (offsets inside a block) reads the same values.
      std::vector<float> part(7);
      load_f32(t, 37, 7, part.data());
      EXPECT_EQ(std::memcmp(part.data(), &want[37], 28), 0) << g.name << "@" << type;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 48);
}

// The CPU backend's row decoders (vectorized for the k-quants) give the same values at every
// level this machine runs.
TEST(GgufDequant, CpuRowDecodersEqualLlamaCppAtEveryLevel) {
  const Expected deq(gguf_path("DEQ.safetensors"));
  for (cpu::Isa level : cpu::kAllIsas) {
    if (level > cpu::max_isa()) break;
    const cpu::Kernels& k = cpu::kernels_for(level);
    for (const char* type : {"Q4_K", "Q5_K", "Q6_K", "Q2_K", "Q3_K", "Q4_1", "Q5_1"}) {
      const GgufFile f(gguf_path(std::string("DEQ/DEQ-") + type + ".gguf"));
      for (const GgufTensorInfo& g : f.header().tensors) {
        const DType dt = *dtype_of_ggml(g.type);
        std::vector<float> got(static_cast<size_t>(g.ne[0] * g.ne[1]));
        k.dequant_row(dt, f.data(g), g.ne[0] * g.ne[1] / block_elems(dt), got.data());
        const std::vector<float> want = deq.get<float>(g.name + "@" + type);
        ASSERT_EQ(got.size(), want.size());
        EXPECT_EQ(std::memcmp(got.data(), want.data(), 4 * got.size()), 0)
            << g.name << "@" << type << " at " << cpu::isa_name(level);
      }
    }
  }
}

// Y = X Wᵀ with W in each GGUF block format on every CPU level, for token counts of both the
// in-register path (few tokens) and the decoded-rows path, against the reference backend.
TEST(GgufDequant, CpuLinearEqualsTheReferenceForEveryFormat) {
  auto ref = make_reference_backend();
  for (const char* type : {"Q4_K", "Q5_K", "Q6_K", "Q2_K", "Q3_K", "Q4_1", "Q5_1"}) {
    const GgufFile f(gguf_path(std::string("DEQ/DEQ-") + type + ".gguf"));
    for (const GgufTensorInfo& g : f.header().tensors) {
      Tensor w;
      w.name = g.name;
      w.dtype = *dtype_of_ggml(g.type);
      w.shape = g.shape();
      w.data = f.data(g);
      const int64_t out = w.shape[0], in = w.shape[1];
      for (int64_t T : {1, 3, 4, 5, 9, 20}) {
        std::vector<float> x(static_cast<size_t>(T * in));
        for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * static_cast<float>(i));
        std::vector<float> want(static_cast<size_t>(T * out));
        ref->linear(x.data(), T, w, Tensor(), want.data());
        for (cpu::Isa level : cpu::kAllIsas) {
          if (level > cpu::max_isa()) break;
          CpuBackend be(CpuOptions{2, level});
          std::vector<float> got(want.size(), -1.0f);
          be.linear(x.data(), T, w, Tensor(), got.data());
          for (size_t i = 0; i < got.size(); ++i) {
            // Float32 sums in another order: a few ulp of the sum of |products|.
            double mag = 0;
            const int64_t t = static_cast<int64_t>(i) / out, o = static_cast<int64_t>(i) % out;
            std::vector<float> row(static_cast<size_t>(in));
            load_f32(w, o * in, in, row.data());
            for (int64_t k = 0; k < in; ++k) mag += std::fabs(row[k] * x[t * in + k]);
            ASSERT_NEAR(got[i], want[i], 1e-6 * mag + 1e-30)
                << type << " " << g.name << " T=" << T << " at " << cpu::isa_name(level);
          }
        }
      }
    }
  }
}

// IQ4_NL (no DEQ reference: llama-quantize makes it only as a fallback) against its definition,
// w = d · level[n], and held as the Q8_0 of the same values.
TEST(GgufDequant, Iq4NlLevelsAndItsQ8_0) {
  const int levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
  std::vector<uint8_t> blocks(2 * 18);
  for (size_t i = 0; i < blocks.size(); ++i) blocks[i] = static_cast<uint8_t>(37 * i + 11);
  const uint16_t d0 = 0x2e66, d1 = 0xb1ab;  // 0.1, -0.177 in f16
  std::memcpy(&blocks[0], &d0, 2);
  std::memcpy(&blocks[18], &d1, 2);
  Tensor t;
  t.name = "iq4";
  t.dtype = DType::IQ4_NL;
  t.shape = {1, 64};
  t.data = blocks.data();
  const std::vector<float> got = to_f32(t);
  for (int b = 0; b < 2; ++b) {
    uint16_t dh;
    std::memcpy(&dh, &blocks[18 * b], 2);
    const float d = f16_to_f32(dh);
    for (int j = 0; j < 16; ++j) {
      const uint8_t q = blocks[18 * b + 2 + j];
      EXPECT_EQ(got[32 * b + j], d * static_cast<float>(levels[q & 0xF]));
      EXPECT_EQ(got[32 * b + j + 16], d * static_cast<float>(levels[q >> 4]));
    }
  }
  std::vector<uint8_t> bytes;
  EXPECT_EQ(to_f32(convert_tensor(t, DType::Q8_0, bytes, nullptr)), got);
}

// Q5_0 is held as the Q8_0 of the same values: converting loses nothing.
TEST(GgufDequant, Q5_0HeldAsQ8_0KeepsEveryValue) {
  const Expected deq(gguf_path("DEQ.safetensors"));
  const GgufFile f(gguf_path("DEQ/DEQ-Q5_0.gguf"));
  for (const GgufTensorInfo& g : f.header().tensors) {
    Tensor t;
    t.name = g.name;
    t.dtype = DType::Q5_0;
    t.shape = g.shape();
    t.data = f.data(g);
    std::vector<uint8_t> bytes;
    const Tensor q8 = convert_tensor(t, DType::Q8_0, bytes, nullptr);
    EXPECT_EQ(q8.dtype, DType::Q8_0);
    const std::vector<float> got = to_f32(q8), want = deq.get<float>(g.name + "@Q5_0");
    ASSERT_EQ(got.size(), want.size());
    EXPECT_EQ(std::memcmp(got.data(), want.data(), 4 * got.size()), 0) << g.name;
  }
}

// llama-quantize made each DEQ-<type>.gguf from DEQ-src-F32.gguf: the same quantizers here give
// the same bytes.
TEST(GgufQuantize, SameBytesAsLlamaQuantize) {
  const GgufFile src(gguf_path("DEQ/DEQ-src-F32.gguf"));
  for (const char* type : {"Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"}) {
    const GgufFile f(gguf_path(std::string("DEQ/DEQ-") + type + ".gguf"));
    for (const GgufTensorInfo& g : f.header().tensors) {
      const GgufTensorInfo* s = src.find_tensor(g.name);
      ASSERT_NE(s, nullptr) << g.name;
      ASSERT_EQ(s->type, GgmlType::F32);
      std::vector<float> x(static_cast<size_t>(s->bytes / 4));
      std::memcpy(x.data(), src.data(*s), s->bytes);
      std::vector<uint8_t> out(static_cast<size_t>(g.bytes));
      const DType dt = *dtype_of_ggml(g.type);
      for (int64_t r = 0; r < g.ne[1]; ++r)
        quantize_ggml(dt, x.data() + r * g.ne[0], g.ne[0],
                      out.data() + r * tensor_bytes(dt, g.ne[0]));
      EXPECT_EQ(std::memcmp(out.data(), f.data(g), g.bytes), 0) << g.name << "@" << type;
    }
  }
}

class GgufGolden : public ::testing::TestWithParam<std::string> {
 protected:
  std::string file() const { return gguf_path(GetParam() + ".gguf"); }
  Expected expected() const { return Expected(gguf_path(GetParam() + ".expected.safetensors")); }
  // llama.cpp's logits are reproducible only to ~2 % for quantized files (its activations are
  // rounded to 8 bits); float16 files it computes in float32 (tests/data/gguf/README.md).
  double tolerance() const { return GetParam().find("F16") == std::string::npos ? 0.1 : 2e-3; }
};

// The logits of both sequences on one backend.
std::vector<float> logits(const Model& m, const std::vector<int32_t>& ids, int64_t B, int64_t T) {
  std::vector<float> out;
  for (int64_t b = 0; b < B; ++b) {
    State st = m.new_state();
    const std::vector<float> l = forward(m, st, std::span<const int32_t>(&ids[b * T], T));
    out.insert(out.end(), l.begin(), l.end());
  }
  return out;
}

TEST_P(GgufGolden, LogitsAndGreedyTokensOnEveryBackend) {
  const Expected e = expected();
  const auto ids = e.get<int32_t>("input_ids");
  const auto want = e.get<float>("logits");
  const auto shape = e.shape("logits");
  const int64_t B = shape[0], T = shape[1], V = shape[2];
  const auto prompt = e.get<int32_t>("greedy_prompt");
  const auto ref_greedy = e.get<int32_t>("ref_greedy_output");
  const std::vector<int32_t> want_tokens(ref_greedy.begin() + static_cast<int64_t>(prompt.size()),
                                         ref_greedy.end());

  // The reference backend computes the dequantized weights exactly: the dequantized twin's
  // greedy tokens.
  const Model ref = Model::load(file(), {WeightFormat::Stored, make_reference_backend()});
  ASSERT_EQ(ref.config.vocab_size, V);
  const std::vector<float> exact = logits(ref, ids, B, T);
  const double err = max_rel_error(exact.data(), want.data(), B * T, V);
  std::printf("[gguf] %s: max relative logit error vs llama.cpp %.3g\n", GetParam().c_str(), err);
  EXPECT_LE(err, tolerance()) << "reference backend vs llama.cpp";
  {
    State st = ref.new_state();
    EXPECT_EQ(generate_greedy(ref, st, prompt, static_cast<int64_t>(want_tokens.size())),
              want_tokens)
        << "reference backend";
  }
  for (const auto& nb : test::every_backend()) {
    if (!nb.level) continue;
    const Model m = Model::load(file(), {WeightFormat::Stored, nb.backend});
    const std::vector<float> got = logits(m, ids, B, T);
    EXPECT_LE(max_rel_error(got.data(), want.data(), B * T, V), tolerance()) << nb.name;
    const ActivationRounding r = cpu::activation_rounding(*nb.level);
    if (r == ActivationRounding::Exact) {
      // Same function as the reference, summed in another order.
      EXPECT_LE(max_rel_error(got.data(), exact.data(), B * T, V), 1e-4) << nb.name;
      State st = m.new_state();
      EXPECT_EQ(generate_greedy(m, st, prompt, static_cast<int64_t>(want_tokens.size())),
                want_tokens)
          << nb.name;
    } else {
      const Model same = Model::load(file(), {WeightFormat::Stored, make_reference_backend(r)});
      const std::vector<float> rounded = logits(same, ids, B, T);
      // Two evaluations of a rounded function may round a few activations to neighbouring
      // values (sums in another order), and on these random models such a flip grows through
      // the layers: within half of what the rounding itself moves (as tests/test_golden.cpp).
      const double rounding = max_rel_error(rounded.data(), exact.data(), B * T, V);
      EXPECT_LE(max_rel_error(got.data(), rounded.data(), B * T, V), std::max(1e-3, 0.5 * rounding))
          << nb.name << " against the reference with the same rounding";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Files, GgufGolden,
                         ::testing::Values("rwkv6qwen2-tiny-F16", "rwkv6qwen2-tiny-Q8_0",
                                           "rwkv6qwen2-tiny-Q4_0", "rwkv6qwen2-tiny-Q4_K_M",
                                           "rwkv6qwen2-tiny-Q6_K", "qwen2-tiny-Q4_K_M",
                                           "qrwkv6-demo-F16"),
                         [](const auto& test_info) {
                           std::string n = test_info.param;
                           for (char& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

std::string demo_dir() { return test::data_path("../../models/qrwkv6-demo"); }

TEST(GgufVocabulary, SameIdsAsTheTokenizerJsonOfTheSameModel) {
  const Tokenizer from_gguf = Tokenizer::from_dir(gguf_path("qrwkv6-demo-F16.gguf"));
  const Tokenizer from_json = Tokenizer::from_dir(demo_dir());
  EXPECT_EQ(from_gguf.vocab_size(), from_json.vocab_size());
  const std::string text =
      "The jury said that it's 1961's best: <|im_start|>user\nHello, world!  \n\n"
      "Numbers 12345 and caf\xc3\xa9 na\xc3\xafve \xe6\x97\xa5\xe6\x9c\xac <|im_end|> done.\t";
  EXPECT_EQ(from_gguf.encode(text), from_json.encode(text));
  EXPECT_EQ(from_gguf.encode(text, {false}), from_json.encode(text, {false}));
  const std::vector<int32_t> ids = from_json.encode(text);
  EXPECT_EQ(from_gguf.decode(ids), from_json.decode(ids));
  EXPECT_TRUE(from_gguf.is_special(2));
  EXPECT_EQ(from_gguf.eos_id(), std::optional<int32_t>(0));
}

TEST(GgufChatTemplate, RendersAsTheModelDirectory) {
  const ChatTemplate a = ChatTemplate::load(gguf_path("qrwkv6-demo-F16.gguf"));
  const ChatTemplate b = ChatTemplate::load(demo_dir());
  const nlohmann::ordered_json req = {
      {"messages",
       {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hi"}}}},
      {"add_generation_prompt", true}};
  EXPECT_EQ(a.render(req), b.render(req));
  EXPECT_NE(a.render(req).find("<|im_start|>assistant"), std::string::npos);
}

TEST(GgufModel, ConfigAndTypeMixFromTheFile) {
  const GgufModel g = open_gguf_model(gguf_path("rwkv6qwen2-tiny-Q4_K_M.gguf"));
  EXPECT_EQ(g.config.arch, Arch::QRWKV6);
  EXPECT_EQ(g.config.hidden_size, 256);
  EXPECT_EQ(g.config.num_layers, 2);
  EXPECT_EQ(g.config.num_heads, 4);
  EXPECT_EQ(g.config.num_kv_heads, 2);
  EXPECT_EQ(g.config.intermediate_size, 768);
  EXPECT_EQ(g.config.lora_rank_tokenshift, 16);
  EXPECT_EQ(g.config.lora_rank_decay, 32);
  EXPECT_EQ(gguf_type_mix(*g.file), "Q4_K_M: 25×F32, 16×Q4_K, 2×Q6_K");
  const GgufModel q = open_gguf_model(gguf_path("qwen2-tiny-Q4_K_M.gguf"));
  EXPECT_EQ(q.config.arch, Arch::Qwen2);
  EXPECT_TRUE(q.config.tie_word_embeddings);
  EXPECT_TRUE(q.config.qkv_bias);
  EXPECT_EQ(q.config.head_dim, 64);
}

}  // namespace
}  // namespace qrwkv
