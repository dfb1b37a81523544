// export-gguf: files that read back as the same model, tensors byte-identical to llama.cpp's own
// converter's on the demo model, and one-line errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "io/error.h"
#include "io/gguf.h"
#include "model/gguf_model.h"
#include "model/model.h"
#include "runtime/gguf_export.h"
#include "tests/cli.h"

namespace qrwkv {
namespace {

using ::testing::HasSubstr;

std::vector<float> logits_of(const std::string& path, const std::vector<int32_t>& ids) {
  const Model m = Model::load(path, {WeightFormat::Stored, make_reference_backend()});
  State st = m.new_state();
  return forward(m, st, ids);
}

double max_rel(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, mag = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(a[i]) - b[i]));
    mag = std::max(mag, std::fabs(static_cast<double>(b[i])));
  }
  return diff / mag;
}

std::string exported(const std::string& src, const std::string& type) {
  static int n = 0;
  const std::string out = test::temp_dir() + "/export" + std::to_string(n++) + ".gguf";
  GgufExportOptions o;
  o.type = type;
  export_gguf(src, out, o);
  return out;
}

class ExportRoundTrip : public ::testing::TestWithParam<std::string> {};

// float32 export of each architecture reads back as the same function; for LLaMA this covers
// the rope row permutation and the llama3 scaling as rope_freqs.
TEST_P(ExportRoundTrip, Float32FileComputesTheSameLogits) {
  const std::string dir = test::data_path("models/" + GetParam());
  const std::string gguf = exported(dir, "f32");
  const std::vector<int32_t> ids = {1, 17, 230, 5, 99, 42, 7, 300};
  const std::vector<float> a = logits_of(dir, ids), b = logits_of(gguf, ids);
  ASSERT_EQ(a.size(), b.size());
  // LLaMA's llama3 rope travels as float32 divisors of the frequencies: a few ulp.
  EXPECT_LE(max_rel(b, a), GetParam() == "llama_tiny" ? 1e-5 : 0.0) << GetParam();
  const GgufFile f(gguf);
  EXPECT_EQ(f.get_uint("general.file_type"), 0u);
  for (const GgufTensorInfo& t : f.header().tensors) EXPECT_EQ(t.type, GgmlType::F32) << t.name;
}

INSTANTIATE_TEST_SUITE_P(Models, ExportRoundTrip,
                         ::testing::Values("qrwkv6_tiny", "qwen2_tiny", "llama_tiny"));

TEST(GgufExport, DemoTensorsEqualLlamaCppsConverterByteForByte) {
  const std::string ours = exported(test::data_path("../../models/qrwkv6-demo"), "f16");
  const GgufFile a(ours), b(test::data_path("gguf/qrwkv6-demo-F16.gguf"));
  ASSERT_EQ(a.header().tensors.size(), b.header().tensors.size());
  for (const GgufTensorInfo& want : b.header().tensors) {
    const GgufTensorInfo* got = a.find_tensor(want.name);
    ASSERT_NE(got, nullptr) << want.name;
    EXPECT_EQ(got->type, want.type) << want.name;
    EXPECT_EQ(got->ne, want.ne) << want.name;
    ASSERT_EQ(got->bytes, want.bytes) << want.name;
    EXPECT_EQ(std::memcmp(a.data(*got), b.data(want), want.bytes), 0) << want.name;
  }
  for (const char* k : {"rwkv6qwen2.embedding_length", "rwkv6qwen2.block_count",
                        "rwkv6qwen2.wkv.head_size", "rwkv6qwen2.time_mix_extra_dim",
                        "rwkv6qwen2.time_decay_extra_dim", "rwkv6qwen2.feed_forward_length",
                        "rwkv6qwen2.token_shift_count", "rwkv6qwen2.attention.head_count_kv",
                        "rwkv6qwen2.attention.head_count", "general.file_type"})
    EXPECT_EQ(a.get_uint(k), b.get_uint(k)) << k;
  EXPECT_EQ(a.get_string("general.architecture"), "rwkv6qwen2");
  EXPECT_EQ(a.get_float("rwkv6qwen2.attention.layer_norm_rms_epsilon"),
            b.get_float("rwkv6qwen2.attention.layer_norm_rms_epsilon"));
  for (const char* k : {"tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.chat_template"})
    EXPECT_EQ(a.get_string(k), b.get_string(k)) << k;
  EXPECT_EQ(a.get_strings("tokenizer.ggml.tokens"), b.get_strings("tokenizer.ggml.tokens"));
  EXPECT_EQ(a.get_ints("tokenizer.ggml.token_type"), b.get_ints("tokenizer.ggml.token_type"));
  EXPECT_EQ(a.get_strings("tokenizer.ggml.merges"), b.get_strings("tokenizer.ggml.merges"));
  EXPECT_EQ(a.get_uint("tokenizer.ggml.eos_token_id"), b.get_uint("tokenizer.ggml.eos_token_id"));
}

TEST(GgufExport, QuantizedAndReexportedFiles) {
  const std::string demo = test::data_path("../../models/qrwkv6-demo");
  const std::vector<int32_t> ids = {785, 3166, 566, 429, 7, 99};
  // Q8_0: matrices in Q8_0, the rest float32; close to the bf16 model.
  const std::string q8 = exported(demo, "q8_0");
  const GgufFile f(q8);
  EXPECT_EQ(f.find_tensor("blk.0.ffn_up.weight")->type, GgmlType::Q8_0);
  EXPECT_EQ(f.find_tensor("blk.0.time_mix_w1.weight")->type, GgmlType::F32);
  EXPECT_EQ(f.find_tensor("blk.0.attn_norm.weight")->type, GgmlType::F32);
  EXPECT_LE(max_rel(logits_of(q8, ids), logits_of(demo, ids)), 0.05);
  // A k-quant file exported as float32 is its dequantized weights: the same logits.
  const std::string k = test::data_path("gguf/rwkv6qwen2-tiny-Q4_K_M.gguf");
  EXPECT_EQ(logits_of(exported(k, "f32"), ids), logits_of(k, ids));
  // Exporting a file as its own types copies every tensor's bytes.
  const std::string again = exported(q8, "q8_0");
  const GgufFile g(again);
  for (const GgufTensorInfo& t : f.header().tensors)
    EXPECT_EQ(std::memcmp(g.data(*g.find_tensor(t.name)), f.data(t), t.bytes), 0) << t.name;
}

TEST(GgufExport, ErrorsAndTheCommand) {
  const std::string demo = test::data_path("../../models/qrwkv6-demo");
  try {
    exported(demo, "q3_xs");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("unknown type 'q3_xs'"));
  }
  const auto bad = test::run_cli({"export-gguf", "-m", demo, "-o", "/nonexistent/dir/x.gguf"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.err, HasSubstr("/nonexistent/dir/x.gguf"));
  const auto usage = test::run_cli({"export-gguf", "-m", demo});
  EXPECT_NE(usage.exit_code, 0);
  EXPECT_THAT(usage.err, HasSubstr("-o FILE is required"));
  const std::string out = test::temp_dir() + "/cli.gguf";
  const auto ok = test::run_cli({"export-gguf", "-m", demo, "-o", out, "--type", "bf16"});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(GgufFile(out).find_tensor("output.weight")->type, GgmlType::BF16);
  const auto run = test::run_cli({"generate-ids", "-m", out, "--tokens", "785 3166", "-n", "8"});
  const auto ref = test::run_cli({"generate-ids", "-m", demo, "--tokens", "785 3166", "-n", "8"});
  EXPECT_EQ(run.out, ref.out);
}

}  // namespace
}  // namespace qrwkv

namespace qrwkv {
namespace {

// The quantized export types choose each matrix's type as llama-quantize does: the same type
// mix as the files llama-quantize made from the same model.
TEST(GgufExport, QuantizedTypesFollowLlamaQuantizesMix) {
  const std::string rwkv = test::data_path("gguf/rwkv6qwen2-tiny-F16.gguf");
  EXPECT_EQ(gguf_type_mix(GgufFile(exported(rwkv, "q4_k_m"))),
            gguf_type_mix(GgufFile(test::data_path("gguf/rwkv6qwen2-tiny-Q4_K_M.gguf"))));
  EXPECT_EQ(gguf_type_mix(GgufFile(exported(rwkv, "q4_0"))),
            gguf_type_mix(GgufFile(test::data_path("gguf/rwkv6qwen2-tiny-Q4_0.gguf"))));
  EXPECT_EQ(gguf_type_mix(GgufFile(exported(rwkv, "q6_k"))),
            gguf_type_mix(GgufFile(test::data_path("gguf/rwkv6qwen2-tiny-Q6_K.gguf"))));
  EXPECT_EQ(gguf_type_mix(GgufFile(exported(rwkv, "q8_0"))),
            gguf_type_mix(GgufFile(test::data_path("gguf/rwkv6qwen2-tiny-Q8_0.gguf"))));
  const std::string qwen = test::data_path("gguf/qwen2-tiny-Q4_K_M.gguf");
  const GgufFile q(exported(qwen, "q4_k_m"));
  EXPECT_EQ(gguf_type_mix(q), gguf_type_mix(GgufFile(qwen)));
  EXPECT_EQ(q.find_tensor("blk.1.attn_v.weight")->type, GgmlType::Q6_K);
  EXPECT_EQ(q.find_tensor("blk.0.attn_v.weight")->type, GgmlType::Q4_K);
  // Rows that are not whole 256-blocks fall back as llama-quantize does (demo: 192 wide).
  const GgufFile d(exported(test::data_path("../../models/qrwkv6-demo"), "q4_k_m"));
  EXPECT_EQ(d.find_tensor("blk.0.ffn_up.weight")->type, GgmlType::Q5_0);
  EXPECT_EQ(d.find_tensor("blk.0.ffn_down.weight")->type, GgmlType::Q5_0);
  EXPECT_EQ(d.find_tensor("output.weight")->type, GgmlType::Q8_0);
}

// --dtype q4_k_m in memory quantizes exactly as the exported file (the untied embedding
// included): the same logits.
TEST(GgufExport, InMemoryKQuantsEqualTheExportedFile) {
  const std::string rwkv = test::data_path("gguf/rwkv6qwen2-tiny-F16.gguf");
  const std::vector<int32_t> ids = {785, 3166, 566, 429, 7, 99};
  for (const auto& [format, type] :
       {std::pair{WeightFormat::Q4_K_M, "q4_k_m"}, std::pair{WeightFormat::Q6_K, "q6_k"}}) {
    const Model mem = Model::load(rwkv, {format, make_reference_backend()});
    State s1 = mem.new_state();
    const std::vector<float> a = forward(mem, s1, ids);
    EXPECT_EQ(a, logits_of(exported(rwkv, type), ids)) << type;
  }
  // The demo's rows (192) are not whole 256-blocks: its matrices fall back to Q5_0 (held as
  // Q8_0 of the same values) and Q8_0, in memory as in the file.
  const std::string demo = test::data_path("../../models/qrwkv6-demo");
  const Model mem = Model::load(demo, {WeightFormat::Q4_K_M, make_reference_backend()});
  State st = mem.new_state();
  EXPECT_EQ(forward(mem, st, ids), logits_of(exported(demo, "q4_k_m"), ids));
}

}  // namespace
}  // namespace qrwkv
