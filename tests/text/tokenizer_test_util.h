// Helpers shared by the tokenizer tests.
#pragma once

#include <utf8proc.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace qrwkv::test {

inline std::string utf8(uint32_t cp) {
  std::string s;
  utf8proc_uint8_t buf[4];
  const auto n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(cp), buf);
  s.assign(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
  return s;
}

// Random text mixing scripts, emoji, combining marks, whitespace kinds and special-token text.
// With `old_unicode_only`, random code points come only from blocks that are complete since
// long ago, so that engines built on different Unicode versions classify them alike.
inline std::string random_text(std::mt19937& rng, bool old_unicode_only = false) {
  static const std::vector<std::string> fragments = {"hello",       "World",
                                                     "THE",         "naïve",
                                                     "straße",      "İstanbul",
                                                     "ΣΊΣΥΦΟΣ",     "'s",
                                                     "'LL",         "’t",
                                                     "don't",       "12345",
                                                     "3.14",        "<|im_start|>",
                                                     "<|im_end|>",  "<|endoftext|>",
                                                     "<tool_call>", "<|im_",
                                                     "|>",          "你好",
                                                     "世界",        "한국어",
                                                     "नमस्ते",        "مرحبا",
                                                     "Привет",      "日本語",
                                                     "テキスト",    "😀",
                                                     "👍🏽",    "👨\u200d👩\u200d👧",
                                                     "🇺🇸",          "❤️",
                                                     "e\u0301",     "a\u0308\u0301",
                                                     "\u0301",      "\u1100\u1161\u11a8",
                                                     "ﬁ",           "①",
                                                     "\u200b",      "\ufeff"};
  static const std::vector<std::string> spaces = {" ",      "  ",     "\t",     "\n",     "\r\n",
                                                  "\r",     "\u00a0", "\u3000", "\u2028", "\u180e",
                                                  "\u0085", "\x0b",   "\x0c",   " \n ",   "\u2009"};
  std::uniform_int_distribution<int> kind(0, 5);
  std::string s;
  const int n = std::uniform_int_distribution<int>(0, 20)(rng);
  for (int i = 0; i < n; ++i) {
    switch (kind(rng)) {
      case 0:
      case 1:
        s += fragments[std::uniform_int_distribution<size_t>(0, fragments.size() - 1)(rng)];
        break;
      case 2:
        s += spaces[std::uniform_int_distribution<size_t>(0, spaces.size() - 1)(rng)];
        break;
      case 3:
        s += static_cast<char>(std::uniform_int_distribution<int>(0x21, 0x7E)(rng));
        break;
      default: {
        // Any assigned, non-surrogate code point: letters, marks, symbols of every script.
        static const uint32_t ranges[][2] = {
            {0xA0, 0x2FF},    {0x300, 0x36F},     {0x370, 0x1FFF},
            {0x2000, 0x2BFF}, {0x3000, 0x9FFF},   {0xAC00, 0xD7A3},
            {0xF900, 0xFFFD}, {0x10000, 0x1FAFF}, {0x20000, 0x2A6DF}};
        static const uint32_t old_ranges[][2] = {{0xA0, 0x2FF},    {0x300, 0x36F},
                                                 {0x370, 0x3FF},   {0x400, 0x4FF},
                                                 {0x4E00, 0x9FFF}, {0xAC00, 0xD7A3}};
        const auto& r = old_unicode_only ? old_ranges[std::uniform_int_distribution<int>(0, 5)(rng)]
                                         : ranges[std::uniform_int_distribution<int>(0, 8)(rng)];
        for (int tries = 0; tries < 20; ++tries) {
          const uint32_t cp = std::uniform_int_distribution<uint32_t>(r[0], r[1])(rng);
          if (utf8proc_category(static_cast<utf8proc_int32_t>(cp)) != UTF8PROC_CATEGORY_CN) {
            s += utf8(cp);
            break;
          }
        }
      }
    }
  }
  return s;
}

}  // namespace qrwkv::test
