// The project's one UTF-8 decoder. Well-formed means Unicode's Table 3-7 (the rule Rust's String::from_utf8,
// Python's str.decode and transformers apply): no overlong forms, no UTF-16 surrogates, nothing past U+10FFFF.
// Every layer that checks, walks or streams UTF-8 (request bodies, the tokenizer, the template engine, stop
// strings) uses these functions, so they all agree on which bytes are text. Pure functions, safe on any thread.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace ernie::utf8 {

inline constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";  // U+FFFD

struct Decoded {
  char32_t code_point;  // U+FFFD where not valid
  size_t length;        // bytes taken: the character's length, or 1 for a byte that starts no valid character
  bool valid;
};

// The character starting at byte `at` (< text.size()). A byte that does not start a well-formed character
// (including one whose remaining bytes are missing) decodes as {U+FFFD, 1, false}, so a walk never skips bytes.
Decoded decode(std::string_view text, size_t at);

// Offset of the first byte that is not part of a well-formed character, or nullopt when all of `text` is valid.
std::optional<size_t> first_invalid(std::string_view text);
inline bool is_valid(std::string_view text) {
  return !first_invalid(text).has_value();
}

// Appends the encoding of `code_point` (<= U+10FFFF, not a surrogate; anything else appends U+FFFD).
void append(std::string& out, char32_t code_point);

// For streams cut at arbitrary bytes: where a trailing character whose bytes have not all arrived begins, or
// text.size() when the text does not end inside a character. Only a well-formed prefix of a character counts as
// incomplete; ill-formed trailing bytes are not waited for.
size_t incomplete_tail(std::string_view text);

// The first byte of the well-formed character that byte `pos` falls inside, or `pos` itself when it starts one,
// is not inside one, or is text.size().
size_t character_start(std::string_view text, size_t pos);

}  // namespace ernie::utf8
