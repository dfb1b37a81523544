// Fuzzes the tokenizer. The first input byte picks the mode:
//  - even: the rest is a tokenizer.json; loading may fail with qrwkv::Error, and a tokenizer that
//    loads must encode and decode without crashing.
//  - odd: the rest is text (any bytes) for a small built-in tokenizer with added tokens of every
//    kind; decode(encode(text)) must equal the NFC of the text's lossy UTF-8 repair, and the
//    streaming decoder must agree with the whole decode.
#include <utf8proc.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "io/error.h"
#include "io/json.h"
#include "text/tokenizer.h"

namespace {

std::string byte_char(int b) {
  auto printable = [](int x) {
    return (x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE;
  };
  uint32_t cp = static_cast<uint32_t>(b);
  if (!printable(b)) {
    int n = 0;
    for (int x = 0; x < b; ++x) n += printable(x) ? 0 : 1;
    cp = 256 + static_cast<uint32_t>(n);
  }
  utf8proc_uint8_t buf[4];
  const auto len = utf8proc_encode_char(static_cast<utf8proc_int32_t>(cp), buf);
  return std::string(reinterpret_cast<const char*>(buf), static_cast<size_t>(len));
}

const qrwkv::Tokenizer& builtin() {
  static const qrwkv::Tokenizer t = [] {
    using qrwkv::json;
    json vocab = json::object();
    for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
    json merges = json::array();
    int next = 256;
    // Merges that build a few words byte by byte, so that BPE has real work to do.
    for (std::string word : {"the", " the", "ing", " and", "aaaa", "<|", "é", "你好", "  "}) {
      std::string acc = byte_char(static_cast<unsigned char>(word[0]));
      for (size_t i = 1; i < word.size(); ++i) {
        const std::string c = byte_char(static_cast<unsigned char>(word[i]));
        if (!vocab.contains(acc + c)) {
          vocab[acc + c] = next++;
          merges.push_back(json::array({acc, c}));
        }
        acc += c;
      }
    }
    auto added = [&](const char* content, bool special, bool lstrip, bool rstrip, bool single,
                     bool normalized) {
      return json{{"id", next++},
                  {"content", content},
                  {"special", special},
                  {"lstrip", lstrip},
                  {"rstrip", rstrip},
                  {"single_word", single},
                  {"normalized", normalized}};
    };
    json tokens = json::array({added("<|end|>", true, false, false, false, false),
                               added("<mask>", true, true, true, false, false),
                               added("cat", false, false, false, true, true),
                               added("你!", false, false, false, false, true)});
    const char* regex =
        R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
    json j = {
        {"added_tokens", tokens},
        {"normalizer", {{"type", "NFC"}}},
        {"pre_tokenizer",
         {{"type", "Sequence"},
          {"pretokenizers",
           json::array(
               {{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}},
                {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}}},
        {"decoder", {{"type", "ByteLevel"}}},
        {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
    return qrwkv::Tokenizer::from_json(j.dump(), "builtin");
  }();
  return t;
}

std::string nfc(const std::string& s) {
  utf8proc_uint8_t* out = nullptr;
  const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                              static_cast<utf8proc_ssize_t>(s.size()), &out,
                              static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  std::string r = n >= 0 ? std::string(reinterpret_cast<const char*>(out), static_cast<size_t>(n))
                         : std::string();
  std::free(out);
  return r;
}

void check_stream(const qrwkv::Tokenizer& t, const std::vector<int32_t>& ids) {
  qrwkv::TokenStreamDecoder stream(t);
  std::string streamed;
  for (int32_t id : ids) streamed += stream.push(id);
  streamed += stream.flush();
  if (streamed != t.decode(ids)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if ((data[0] & 1) == 0) {
    try {
      const qrwkv::Tokenizer t = qrwkv::Tokenizer::from_json(rest, "fuzz.json");
      for (std::string_view text :
           {std::string_view("Hello, world! 123 <s> é\xCC\x81 \xFF"), rest.substr(0, 256)}) {
        for (bool special : {true, false}) {
          qrwkv::EncodeOptions options;
          options.parse_special = special;
          const auto ids = t.encode(text, options);
          check_stream(t, ids);
        }
      }
    } catch (const qrwkv::Error&) {
      // Refusing a malformed or unsupported file is the expected outcome.
    }
    return 0;
  }
  const qrwkv::Tokenizer& t = builtin();
  const std::string repaired = qrwkv::utf8_lossy(rest);
  for (bool special : {true, false}) {
    qrwkv::EncodeOptions options;
    options.parse_special = special;
    const auto ids = t.encode(rest, options);
    // Added tokens with lstrip/rstrip swallow whitespace, so only check the round trip when
    // none of them was produced.
    bool stripped = false;
    for (int32_t id : ids)
      stripped = stripped || t.id_to_token(id) == std::optional<std::string>("<mask>");
    if (!stripped && t.decode(ids) != nfc(repaired)) std::abort();
    check_stream(t, ids);
  }
  return 0;
}
