// UTF-8 helpers for the tokenizer. Ill-formed input is handled with the Unicode "maximal
// subpart" rule, the one Rust's String::from_utf8_lossy uses, so that repaired text matches
// what the reference library would see.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace qrwkv::tok {

bool is_valid(std::string_view s);

// Characters of UTF-8 text, as Python's len() counts a str: every byte that does not continue a
// character (ill-formed bytes count one each).
size_t char_count(std::string_view s);

// Appends `s` to `out` with each maximal ill-formed subsequence replaced by U+FFFD. When `final`
// is false, a trailing sequence that is only incomplete (it could still become a character) is
// left unconsumed. Returns the number of bytes consumed.
size_t append_lossy(std::string& out, std::string_view s, bool final);

// Decodes the character at s[i] of valid UTF-8; returns its length.
size_t decode_char(std::string_view s, size_t i, uint32_t& cp);
// Length of the (valid) character at s[i], clamped to the end of `s`.
size_t char_len(std::string_view s, size_t i);
void append_utf8(std::string& out, uint32_t cp);
bool is_white_space(uint32_t cp);

}  // namespace qrwkv::tok
