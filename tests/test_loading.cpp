// Loading: the safetensors parser, config.json, weight binding, dtypes and sharded checkpoints,
// and the one-line errors for every kind of bad input.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "io/error.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model/rope.h"
#include "ops/tensor.h"
#include "tests/cli.h"
#include "tests/expect.h"
#include "tests/model_util.h"

namespace qrwkv {
namespace {

using test::expect_error;

using test::altered_model;
using test::OwnedTensor;
using ::testing::HasSubstr;

std::string with_header(const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + std::string(data_bytes, '\0');
}

SafetensorsHeader parse(const std::string& bytes) {
  return parse_safetensors(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(),
                           "x.safetensors");
}

TEST(Safetensors, ParsesValidHeaderAndMetadata) {
  const auto h = parse(with_header(
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]},)"
      R"("b":{"dtype":"I32","shape":[],"data_offsets":[12,16]}})",
      16));
  ASSERT_EQ(h.tensors.size(), 2u);
  EXPECT_EQ(h.metadata.at("format"), "pt");
  EXPECT_EQ(h.tensors.at("a").dtype, DType::BF16);
  EXPECT_EQ(h.tensors.at("a").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(h.tensors.at("b").numel(), 1);
}

TEST(Safetensors, RejectsMalformedFiles) {
  expect_error([] { parse("abc"); }, {"x.safetensors", "truncated", "header length"});
  expect_error([] { parse(with_header("{}", 0).substr(0, 9)); },
               {"x.safetensors", "truncated", "header needs 2 bytes"});
  expect_error([] { parse(with_header("{not json", 0)); }, {"x.safetensors", "not valid JSON"});
  expect_error([] { parse(with_header("[1,2]", 0)); }, {"not a JSON object"});
  expect_error(
      [] { parse(with_header(R"({"t":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}})", 1)); },
      {"tensor 't'", "unsupported dtype Q4"});
  expect_error(
      [] { parse(with_header(R"({"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8)); },
      {"tensor 't'", "outside", "truncated"});
  expect_error(
      [] { parse(with_header(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8)); },
      {"tensor 't'", "holds 8 bytes", "need 12"});
  expect_error(
      [] { parse(with_header(R"({"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 8)); },
      {"tensor 't'", "shape"});
  expect_error(
      [] { parse(with_header(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 8)); },
      {"tensor 't'", "data_offsets"});
  expect_error([] { parse(with_header(R"({"t":{"shape":[1],"data_offsets":[0,4]}})", 8)); },
               {"tensor 't'", "missing dtype"});
  std::string huge(16, '\0');
  huge[7] = 0x7f;
  expect_error([&] { parse(huge); }, {"implausibly large"});
}

TEST(Safetensors, TruncatedCheckpointIsReported) {
  const std::string src = test::data_path("models/qrwkv6_tiny/model.safetensors");
  const std::string bytes = read_text_file(src);
  const std::string dir = test::temp_dir();
  std::filesystem::copy_file(test::data_path("models/qrwkv6_tiny/config.json"),
                             dir + "/config.json");
  const std::string cut = bytes.substr(0, bytes.size() - 1000);
  write_file_atomic(dir + "/model.safetensors", cut.data(), cut.size());
  expect_error([&] { Model::load(dir); }, {dir + "/model.safetensors", "truncated"});
}

TEST(Safetensors, WriterRoundTripsAndAlignsData) {
  const float f[3] = {1.5f, -2.0f, 3.25f};
  const int32_t i[2] = {7, -9};
  const std::string bytes = serialize_safetensors(
      {{"f", DType::F32, {3}, f}, {"i", DType::I32, {1, 2}, i}}, {{"k", "v"}});
  const auto h = parse(bytes);
  EXPECT_EQ(h.data_offset % 8, 0u);
  EXPECT_EQ(h.metadata.at("k"), "v");
  float f2[3];
  std::memcpy(f2, bytes.data() + h.data_offset + h.tensors.at("f").begin, sizeof f2);
  EXPECT_EQ(std::vector<float>(f2, f2 + 3), std::vector<float>(f, f + 3));
  int32_t i2[2];
  std::memcpy(i2, bytes.data() + h.data_offset + h.tensors.at("i").begin, sizeof i2);
  EXPECT_EQ(i2[1], -9);
}

// RssFile of this process, in kB, from /proc/self/status.
int64_t rss_file_kb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("RssFile:", 0) == 0) return std::stoll(line.substr(8));
  return -1;
}

// release_pages takes a mapped file's pages out of resident memory (what loading does with a
// checkpoint's converted weights) and loses nothing there or in ordinary heap memory.
TEST(MappedFile, ReleasedPagesLeaveMemoryAndKeepTheirBytes) {
  const std::string path = test::temp_dir() + "/pages.bin";
  std::vector<uint8_t> bytes(32 << 20);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 2654435761u >> 13);
  write_file_atomic(path, bytes.data(), bytes.size(), false);
  MappedFile m(path);
  ASSERT_EQ(m.size(), bytes.size());
  uint64_t sum = 0;
  for (size_t i = 0; i < m.size(); i += 4096) sum += m.data()[i];  // every page resident
  const int64_t before = rss_file_kb();
  release_pages(m.data(), m.size());
  const int64_t after = rss_file_kb();
  EXPECT_LT(after, before - 16 * 1024) << "RssFile " << before << " kB → " << after << " kB";
  EXPECT_EQ(std::memcmp(m.data(), bytes.data(), bytes.size()), 0);
  const std::vector<uint8_t> copy = bytes;
  release_pages(bytes.data() + 3, bytes.size() - 5);
  EXPECT_EQ(bytes, copy);
  EXPECT_GT(sum, 0u);
}

TEST(DType, HalfAndBFloatConversions) {
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0xc000), -2.0f);
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));     // smallest subnormal
  EXPECT_EQ(f16_to_f32(0x03ff), std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(f16_to_f32(0x3555), 0.333251953125f);
  EXPECT_TRUE(std::isinf(f16_to_f32(0x7c00)));
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7e00)));
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  EXPECT_EQ(bf16_to_f32(0xc2f7), -123.5f);
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);  // halfway: rounds to even
  EXPECT_EQ(f32_to_bf16(1.01171875f), 0x3f82);  // halfway: rounds to even (up)
}

TEST(Config, ErrorsNameTheFileAndKey) {
  const json base = load_json_file(test::data_path("models/qwen2_tiny/config.json"));
  auto edit = [&](auto f) {
    json j = base;
    f(j);
    return j;
  };
  expect_error([&] { parse_config(edit([](json& j) { j.erase("hidden_size"); }), "c.json"); },
               {"c.json", "missing config key 'hidden_size'"});
  expect_error([&] { parse_config(edit([](json& j) { j["model_type"] = "mamba"; }), "c.json"); },
               {"c.json", "unknown model_type 'mamba'"});
  expect_error([&] { parse_config(edit([](json& j) { j.erase("model_type"); }), "c.json"); },
               {"missing config key 'model_type'"});
  expect_error([&] { parse_config(edit([](json& j) { j["num_key_value_heads"] = 3; }), "c.json"); },
               {"not a multiple of num_key_value_heads"});
  expect_error([&] { parse_config(edit([](json& j) { j["hidden_act"] = "gelu"; }), "c.json"); },
               {"unsupported hidden_act"});
  expect_error([&] { parse_config(edit([](json& j) { j["vocab_size"] = "many"; }), "c.json"); },
               {"'vocab_size' must be a positive integer"});
  expect_error(
      [&] {
        parse_config(edit([](json& j) { j["rope_parameters"]["rope_type"] = "yarn"; }), "c.json");
      },
      {"unsupported rope type 'yarn'"});
  expect_error([] { load_config("/nonexistent/config.json"); },
               {"/nonexistent/config.json", "cannot open"});
  expect_error([] { parse_config(parse_json("{", "bad.json"), "bad.json"); },
               {"bad.json", "not valid JSON"});
}

TEST(Config, RopeSettingsInEitherPlace) {
  json j = load_json_file(test::data_path("models/llama_tiny/config.json"));
  const Config a = parse_config(j, "a");
  // The same settings in the older layout: top-level rope_theta + rope_scaling.
  json params = j["rope_parameters"];
  j.erase("rope_parameters");
  j["rope_theta"] = params["rope_theta"];
  params.erase("rope_theta");
  params["rope_type"] = "llama3";
  j["rope_scaling"] = params;
  const Config b = parse_config(j, "b");
  EXPECT_EQ(a.rope.type, RopeConfig::Type::Llama3);
  EXPECT_EQ(b.rope.type, RopeConfig::Type::Llama3);
  EXPECT_EQ(a.rope.theta, 500000.0);
  EXPECT_EQ(b.rope.theta, 500000.0);
  EXPECT_EQ(a.rope.factor, 8.0);
  EXPECT_EQ(b.rope.original_max_position_embeddings, 512);
  EXPECT_EQ(a.head_dim, 8);

  // llama3 scaling with head_dim 8, theta 5e5, original context 512, factors 1 and 4:
  // wavelengths 2π/θ^(-2i/8) are about 6.3, 167, 4443 and 118000; below 128 they stay, above
  // 512 they are divided by 8, in between they are blended.
  const auto f = rope_inv_freq(a.rope, a.head_dim);
  ASSERT_EQ(f.size(), 4u);
  EXPECT_DOUBLE_EQ(f[0], 1.0);
  const double raw1 = std::pow(500000.0, -0.25);
  EXPECT_LT(f[1], raw1);
  EXPECT_GT(f[1], raw1 / 8);
  EXPECT_DOUBLE_EQ(f[2], std::pow(500000.0, -0.5) / 8);
  EXPECT_DOUBLE_EQ(f[3], std::pow(500000.0, -0.75) / 8);

  // Qwen2.5 style: top-level rope_theta, rope_scaling null.
  json q = load_json_file(test::data_path("models/qwen2_tiny/config.json"));
  q.erase("rope_parameters");
  q["rope_theta"] = 1000000.0;
  q["rope_scaling"] = nullptr;
  const Config c = parse_config(q, "q");
  EXPECT_EQ(c.rope.type, RopeConfig::Type::Default);
  EXPECT_EQ(c.rope.theta, 1e6);
}

TEST(Config, QrwkvLeftoversAndDefaults) {
  const Config c = load_config(test::data_path("models/qrwkv6_tiny/config.json"));
  EXPECT_EQ(c.arch, Arch::QRWKV6);
  EXPECT_EQ(c.head_dim, 16);  // C / H
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_EQ(c.lora_rank_tokenshift, 0);  // not in this config: from tensor shapes
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{1});
}

TEST(Weights, LoraRanksFromShapesOrConfig) {
  const Model m = Model::load(test::data_path("models/qrwkv6_tiny"));
  EXPECT_EQ(m.config.lora_rank_tokenshift, 32);
  EXPECT_EQ(m.config.lora_rank_decay, 64);
  const std::string ok = altered_model(
      "qrwkv6_tiny",
      [](json& j) {
        j["lora_rank_tokenshift"] = 32;
        j["lora_rank_decay"] = 64;
      },
      nullptr);
  EXPECT_EQ(Model::load(ok).config.lora_rank_decay, 64);
  const std::string bad = altered_model(
      "qrwkv6_tiny", [](json& j) { j["lora_rank_decay"] = 16; }, nullptr);
  expect_error(
      [&] { Model::load(bad); },
      {"tensor 'model.layers.0.self_attn.time_decay_w1' has shape [64, 64], expected [64, 16]"});
}

TEST(Weights, MissingTensorIsNamed) {
  const std::string dir = altered_model("qrwkv6_tiny", nullptr, [](std::vector<OwnedTensor>& t) {
    std::erase_if(
        t, [](const OwnedTensor& x) { return x.name == "model.layers.1.self_attn.time_decay_w2"; });
  });
  expect_error(
      [&] { Model::load(dir); },
      {dir + "/model.safetensors", "missing tensor 'model.layers.1.self_attn.time_decay_w2'"});
  // An untied model needs lm_head.weight.
  const std::string untied = altered_model(
      "qwen2_tiny", [](json& j) { j["tie_word_embeddings"] = false; }, nullptr);
  expect_error([&] { Model::load(untied); }, {"missing tensor 'lm_head.weight'"});
}

TEST(Weights, WrongShapeShowsExpectedAndFound) {
  const std::string dir = altered_model("qrwkv6_tiny", nullptr, [](std::vector<OwnedTensor>& t) {
    for (auto& x : t)
      if (x.name == "model.layers.2.self_attn.gate.weight") x.shape = {32, 128};
  });
  expect_error(
      [&] { Model::load(dir); },
      {"tensor 'model.layers.2.self_attn.gate.weight' has shape [32, 128], expected [64, 64]"});
}

TEST(Weights, UnsupportedDtypeIsNamed) {
  const std::string dir = altered_model("qwen2_tiny", nullptr, [](std::vector<OwnedTensor>& t) {
    for (auto& x : t) {
      if (x.name != "model.norm.weight") continue;
      std::string b(x.bytes.size() * 2, '\0');
      for (size_t i = 0; i < x.bytes.size() / 4; ++i) {
        float f;
        std::memcpy(&f, &x.bytes[i * 4], 4);
        const double d = f;
        std::memcpy(&b[i * 8], &d, 8);
      }
      x.bytes = b;
      x.dtype = DType::F64;
    }
  });
  expect_error([&] { Model::load(dir); }, {"tensor 'model.norm.weight' has unsupported dtype F64"});
}

TEST(Weights, MissingModelFilesAreReported) {
  expect_error([] { Model::load("/nonexistent/model"); }, {"/nonexistent/model", "does not exist"});
  const std::string empty = test::temp_dir();
  expect_error([&] { Model::load(empty); }, {empty + "/config.json", "cannot open"});
  std::filesystem::copy_file(test::data_path("models/qwen2_tiny/config.json"),
                             empty + "/config.json");
  expect_error([&] { Model::load(empty); },
               {"no model.safetensors or model.safetensors.index.json"});
}

// Splits a checkpoint into two shards with an index, like large published models.
std::string shard_model(const std::string& src, bool drop_second_shard) {
  const std::string dir = altered_model(src, nullptr, nullptr);
  auto tensors = test::read_tensors(dir + "/model.safetensors");
  std::filesystem::remove(dir + "/model.safetensors");
  std::vector<OwnedTensor> a(tensors.begin(),
                             tensors.begin() + static_cast<long>(tensors.size() / 2));
  std::vector<OwnedTensor> b(tensors.begin() + static_cast<long>(tensors.size() / 2),
                             tensors.end());
  const std::string na = "model-00001-of-00002.safetensors",
                    nb = "model-00002-of-00002.safetensors";
  test::write_tensors(dir + "/" + na, a);
  if (!drop_second_shard) test::write_tensors(dir + "/" + nb, b);
  json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", json::object()}};
  for (const auto& t : a) index["weight_map"][t.name] = na;
  for (const auto& t : b) index["weight_map"][t.name] = nb;
  std::ofstream(dir + "/model.safetensors.index.json") << index.dump(2);
  return dir;
}

TEST(Weights, ShardedCheckpointGivesIdenticalLogits) {
  const Model single = Model::load(test::data_path("models/qrwkv6_tiny"));
  const Model sharded = Model::load(shard_model("qrwkv6_tiny", false));
  const std::vector<int32_t> tokens = {5, 17, 900, 3, 42};
  State s1 = single.new_state(), s2 = sharded.new_state();
  EXPECT_EQ(forward(single, s1, tokens), forward(sharded, s2, tokens));
}

TEST(Weights, IndexPointingToMissingShard) {
  const std::string dir = shard_model("qwen2_tiny", true);
  expect_error([&] { Model::load(dir); },
               {"model.safetensors.index.json",
                "index points to missing shard model-00002-of-00002.safetensors"});
}

// F16 storage: the same model with its weights rounded to half precision computes logits close
// to the float32 model (the golden bf16 models cover BF16 exactly).
TEST(Weights, F16StorageMatchesF32WithinHalfPrecision) {
  const std::string dir = altered_model("qwen2_tiny", nullptr, [](std::vector<OwnedTensor>& t) {
    for (auto& x : t) {
      std::string b(x.bytes.size() / 2, '\0');
      for (size_t i = 0; i < x.bytes.size() / 4; ++i) {
        float f;
        std::memcpy(&f, &x.bytes[i * 4], 4);
        const _Float16 h = static_cast<_Float16>(f);
        std::memcpy(&b[i * 2], &h, 2);
      }
      x.bytes = b;
      x.dtype = DType::F16;
    }
  });
  const Model f16 = Model::load(dir);
  EXPECT_EQ(f16.storage_dtype(), "F16");
  const Model f32 = Model::load(test::data_path("models/qwen2_tiny"));
  const std::vector<int32_t> tokens = {1, 2, 3, 500, 999, 0};
  State a = f16.new_state(), b = f32.new_state();
  const auto la = forward(f16, a, tokens), lb = forward(f32, b, tokens);
  double max_abs = 0, max_diff = 0;
  for (size_t i = 0; i < la.size(); ++i) {
    max_abs = std::max(max_abs, std::fabs(double{lb[i]}));
    max_diff = std::max(max_diff, std::fabs(double{la[i]} - lb[i]));
  }
  EXPECT_GT(max_diff, 0.0);  // the weights really were rounded
  EXPECT_LT(max_diff / max_abs, 1e-2);
}

}  // namespace
}  // namespace qrwkv
