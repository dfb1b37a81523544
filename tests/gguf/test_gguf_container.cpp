// The GGUF container: files written by GgufWriter parse back whole; every kind of malformed
// file gets a one-line error naming the problem; every truncation of a valid file is reported.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "io/bytes.h"
#include "io/error.h"
#include "io/gguf.h"
#include "tests/expect.h"

namespace qrwkv {
namespace {

using test::expect_error;

using ::testing::HasSubstr;

GgufHeader parse(const std::string& bytes) {
  return parse_gguf(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "x.gguf");
}

// A small file with one value of every kind and two tensors.
std::string sample(std::vector<float>& f32, std::vector<uint8_t>& q8) {
  GgufWriter w;
  w.set_string("general.architecture", "qwen2");
  w.set_u32("qwen2.block_count", 2);
  w.set_i32("some.int", -5);
  w.set_u64("some.u64", uint64_t{1} << 40);
  w.set_f32("qwen2.attention.layer_norm_rms_epsilon", 1e-6f);
  w.set_bool("tokenizer.ggml.add_bos_token", true);
  w.set_strings("tokenizer.ggml.tokens", {"a", "", "Ġb"});
  w.set_i32s("tokenizer.ggml.token_type", {1, 3, 1});
  w.set_f32s("tokenizer.ggml.scores", {0.5f, -1.0f, 2.0f});
  f32 = {1, 2, 3, 4, 5, 6};
  q8.assign(2 * 34, 0);
  for (size_t i = 0; i < q8.size(); ++i) q8[i] = static_cast<uint8_t>(i);
  w.add_tensor("a.weight", GgmlType::F32, {3, 2}, f32.data());
  w.add_tensor("b.weight", GgmlType::Q8_0, {64, 1}, q8.data());
  return w.serialize();
}

TEST(GgufContainer, WrittenFilesParseBack) {
  std::vector<float> f32;
  std::vector<uint8_t> q8;
  const std::string bytes = sample(f32, q8);
  const GgufHeader h = parse(bytes);
  EXPECT_EQ(h.version, 3u);
  EXPECT_EQ(h.alignment, 32u);
  EXPECT_EQ(h.data_offset % 32, 0u);
  ASSERT_EQ(h.tensors.size(), 2u);
  EXPECT_EQ(h.tensors[0].name, "a.weight");
  EXPECT_EQ(h.tensors[0].shape(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(h.tensors[1].type, GgmlType::Q8_0);
  EXPECT_EQ(h.tensors[1].bytes, 68u);
  EXPECT_EQ(h.tensors[1].offset, 32u);  // 24 bytes of a.weight, padded to the alignment
  EXPECT_EQ(std::memcmp(bytes.data() + h.data_offset, f32.data(), 24), 0);
  EXPECT_EQ(std::memcmp(bytes.data() + h.data_offset + 32, q8.data(), 68), 0);
  EXPECT_EQ(h.metadata.at("some.int").i, -5);
  EXPECT_EQ(h.metadata.at("some.u64").u, uint64_t{1} << 40);
  EXPECT_EQ(h.metadata.at("tokenizer.ggml.tokens").arr.size(), 3u);
  EXPECT_EQ(h.metadata.at("tokenizer.ggml.tokens").arr[2].s, "Ġb");
}

TEST(GgufContainer, TypedGettersNameTheKey) {
  std::vector<float> f32;
  std::vector<uint8_t> q8;
  const std::string path = ::testing::TempDir() + "/typed.gguf";
  {
    GgufWriter w;
    w.set_string("general.architecture", "qwen2");
    w.set_u32("qwen2.block_count", 2);
    w.set_i32("some.int", -5);
    w.set_f32("eps", 0.25f);
    w.set_bool("flag", true);
    w.set_strings("toks", {"a", "b"});
    w.set_i32s("types", {1, 3});
    w.write(path);
  }
  const GgufFile f(path);
  EXPECT_EQ(f.get_string("general.architecture"), "qwen2");
  EXPECT_EQ(f.get_uint("qwen2.block_count"), 2u);
  EXPECT_EQ(f.get_int("some.int"), -5);
  EXPECT_EQ(f.get_float("eps"), 0.25);
  EXPECT_EQ(f.get_float("qwen2.block_count"), 2.0);
  EXPECT_TRUE(f.get_bool("flag"));
  EXPECT_EQ(f.get_strings("toks"), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(f.get_ints("types"), (std::vector<int64_t>{1, 3}));
  expect_error([&] { f.get_uint("missing.key"); },
               {"typed.gguf", "missing metadata key 'missing.key'"});
  expect_error([&] { f.get_uint("some.int"); }, {"'some.int'", "negative"});
  expect_error([&] { f.get_string("eps"); }, {"'eps' is float32, expected a string"});
  expect_error([&] { f.get_strings("types"); },
               {"'types' is array of int32, expected an array of strings"});
  expect_error([&] { f.get_ints("toks"); }, {"'toks'", "expected an array of integers"});
}

TEST(GgufContainer, EveryTruncationIsAnError) {
  std::vector<float> f32;
  std::vector<uint8_t> q8;
  const std::string bytes = sample(f32, q8);
  // The file is whole once the last tensor's bytes are in (the padding after it is optional).
  const size_t whole = parse(bytes).data_offset + 32 + 68;
  for (size_t n = 0; n < bytes.size(); ++n) {
    if (n >= whole) {
      EXPECT_NO_THROW(parse(bytes.substr(0, n))) << n;
      continue;
    }
    try {
      parse(bytes.substr(0, n));
      ADD_FAILURE() << "a file cut to " << n << " of " << bytes.size() << " bytes parsed";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_TRUE(m.find("truncated") != std::string::npos ||
                  m.find("bad magic") != std::string::npos)
          << n << ": " << m;
    }
  }
}

// The fixed part of a header: magic, version, counts.
std::string head(uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
  std::string s = "GGUF";
  put_le(s, version);
  put_le(s, n_tensors);
  put_le(s, n_kv);
  return s;
}
void put_str(std::string& s, const std::string& v) {
  put_le<uint64_t>(s, v.size());
  s += v;
}
// One tensor info.
std::string info(const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t off) {
  std::string s;
  put_str(s, name);
  put_le<uint32_t>(s, static_cast<uint32_t>(ne.size()));
  for (uint64_t n : ne) put_le(s, n);
  put_le(s, type);
  put_le(s, off);
  return s;
}
std::string pad(std::string s, size_t align = 32) {
  s.resize((s.size() + align - 1) / align * align, '\0');
  return s;
}

TEST(GgufContainer, RejectsMalformedFiles) {
  expect_error([] { parse("GGU"); }, {"x.gguf", "bad magic"});
  expect_error([] { parse("GGML" + std::string(20, '\0')); }, {"x.gguf", "bad magic"});
  expect_error([] { parse(head(1, 0, 0)); }, {"version 1 is not supported"});
  expect_error([] { parse(head(7, 0, 0)); }, {"unsupported GGUF version 7"});
  expect_error([] { parse(head(0x03000000u, 0, 0)); }, {"big-endian"});
  expect_error([] { parse(head(3, 0, uint64_t{1} << 60)); }, {"corrupt count", "metadata entries"});
  expect_error([] { parse(head(3, uint64_t{1} << 60, 0)); }, {"corrupt count", "tensor infos"});
  {
    std::string s = head(3, 0, 1);
    put_str(s, "k");
    put_le<uint32_t>(s, 13);  // no such value type
    s += std::string(16, '\0');
    expect_error([&] { parse(s); }, {"metadata 'k'", "unknown value type 13"});
  }
  {
    std::string s = head(3, 0, 1);
    put_str(s, "arr");
    put_le<uint32_t>(s, 9);
    put_le<uint32_t>(s, 4);
    put_le<uint64_t>(s, 1000);  // 1000 u32 in 8 bytes
    s += std::string(8, '\0');
    expect_error([&] { parse(s); }, {"truncated", "'arr'"});
  }
  {
    // Arrays of arrays of ... deeper than any real file.
    std::string s = head(3, 0, 1);
    put_str(s, "deep");
    put_le<uint32_t>(s, 9);
    for (int i = 0; i < 20; ++i) {
      put_le<uint32_t>(s, 9);
      put_le<uint64_t>(s, 1);
    }
    s += std::string(64, '\0');
    expect_error([&] { parse(s); }, {"'deep'", "nests arrays too deeply"});
  }
  {
    std::string s = head(3, 0, 2);
    for (int i = 0; i < 2; ++i) {
      put_str(s, "dup");
      put_le<uint32_t>(s, 4);
      put_le<uint32_t>(s, 1);
    }
    expect_error([&] { parse(s); }, {"duplicate metadata key 'dup'"});
  }
  {
    std::string s = head(3, 0, 1);
    put_str(s, "b");
    put_le<uint32_t>(s, 7);
    put_le<uint8_t>(s, 2);
    expect_error([&] { parse(s); }, {"'b'", "bool of value 2"});
  }
  {
    std::string s = head(3, 0, 1);
    put_str(s, "general.alignment");
    put_le<uint32_t>(s, 4);
    put_le<uint32_t>(s, 48);
    expect_error([&] { parse(s); }, {"general.alignment", "power of two"});
  }
  auto one_tensor = [](std::vector<uint64_t> ne, uint32_t type, uint64_t off, size_t data) {
    return pad(head(3, 1, 0) + info("t", ne, type, off)) + std::string(data, '\0');
  };
  EXPECT_NO_THROW(parse(one_tensor({4, 2}, 0, 0, 32)));
  expect_error([&] { parse(one_tensor({4, 2}, 99, 0, 32)); }, {"tensor 't'", "unknown type 99"});
  expect_error([&] { parse(one_tensor({}, 0, 0, 32)); }, {"tensor 't'", "0 dimensions"});
  expect_error(
      [&] {
        parse(one_tensor({1, 1, 1, 1, 1}, 0, 0, 32));
      },
      {"tensor 't'", "5 dimensions"});
  expect_error(
      [&] {
        parse(one_tensor({48, 1}, 8, 0, 64));
      },
      {"tensor 't'", "Q8_0", "rows of 48 elements", "blocks of 32"});
  expect_error(
      [&] {
        parse(one_tensor({4, 2}, 0, 16, 64));
      },
      {"tensor 't'", "offset 16", "not a multiple of the alignment 32"});
  expect_error([&] { parse(one_tensor({4, 2}, 0, 0, 31)); }, {"truncated", "tensor 't'"});
  expect_error([&] { parse(one_tensor({4, 2}, 0, 64, 64)); }, {"truncated", "tensor 't'"});
  expect_error(
      [&] {
        parse(one_tensor({uint64_t{1} << 62, 1 << 20}, 0, 0, 32));
      },
      {"tensor 't'", "overflow"});
  expect_error(
      [&] {
        parse(one_tensor({uint64_t{1} << 63, 1}, 0, 0, 32));
      },
      {"negative dimension"});
  {
    const std::string s =
        pad(head(3, 2, 0) + info("t", {8}, 0, 0) + info("t", {8}, 0, 32)) + std::string(64, '\0');
    expect_error([&] { parse(s); }, {"duplicate tensor name 't'"});
  }
  {
    const std::string s =
        pad(head(3, 2, 0) + info("a", {16}, 0, 0) + info("b", {8}, 0, 32)) + std::string(96, '\0');
    expect_error([&] { parse(s); }, {"tensors 'a' and 'b' overlap"});
  }
  expect_error([&] { parse(head(3, 1, 0) + info("t", {4}, 0, 0)); }, {"truncated"});
}

TEST(GgufContainer, AlignmentFromMetadata) {
  std::string s = head(3, 1, 1);
  put_str(s, "general.alignment");
  put_le<uint32_t>(s, 4);
  put_le<uint32_t>(s, 64);
  s += info("t", {4}, 0, 0);
  s = pad(s, 64) + std::string(16, '\0');
  const GgufHeader h = parse(s);
  EXPECT_EQ(h.alignment, 64u);
  EXPECT_EQ(h.data_offset % 64, 0u);
  // Version 2 files have the same layout.
  s[4] = 2;
  EXPECT_EQ(parse(s).version, 2u);
}

TEST(GgufContainer, WriterIsAtomicAndChecksTensorSizes) {
  const std::string path = ::testing::TempDir() + "/atomic.gguf";
  {
    GgufWriter w;
    std::vector<float> x(8, 1.0f);
    w.add_tensor("x", GgmlType::F32, {8}, x.data());
    w.write(path);
  }
  GgufWriter bad;
  bad.add_tensor("y", GgmlType::F32, {8}, [](std::string& out) { out += "short"; });
  expect_error([&] { bad.write(path); }, {"y", "wrote 5 bytes, expected 32"});
  // The old file is intact and no temporary file is left.
  EXPECT_EQ(GgufFile(path).header().tensors.at(0).name, "x");
  for (const auto& e : std::filesystem::directory_iterator(::testing::TempDir()))
    EXPECT_EQ(e.path().filename().string().find("atomic.gguf.tmp"), std::string::npos);
  expect_error([] { GgufWriter().add_tensor("z", GgmlType::Q4_K, {100}, nullptr); },
               {"z", "cannot be written"});
}

}  // namespace
}  // namespace qrwkv
