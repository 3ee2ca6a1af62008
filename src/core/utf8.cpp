#include "core/utf8.h"

namespace ernie::utf8 {
namespace {

// What a lead byte promises: the character's length and the range its second byte must lie in (Table 3-7; the
// narrowed ranges after E0, ED, F0 and F4 are what exclude overlongs, surrogates and code points past U+10FFFF).
struct Lead {
  size_t length;  // 0: not a lead byte
  unsigned char second_low, second_high;
  char32_t bits;  // the code point's bits carried by the lead byte
};

Lead lead_of(unsigned char byte) {
  if (byte < 0x80) return {1, 0, 0, byte};
  if (byte >= 0xC2 && byte <= 0xDF) return {2, 0x80, 0xBF, static_cast<char32_t>(byte & 0x1F)};
  if (byte == 0xE0) return {3, 0xA0, 0xBF, 0};
  if (byte == 0xED) return {3, 0x80, 0x9F, 0xD};
  if (byte >= 0xE1 && byte <= 0xEF) return {3, 0x80, 0xBF, static_cast<char32_t>(byte & 0x0F)};
  if (byte == 0xF0) return {4, 0x90, 0xBF, 0};
  if (byte >= 0xF1 && byte <= 0xF3) return {4, 0x80, 0xBF, static_cast<char32_t>(byte & 0x07)};
  if (byte == 0xF4) return {4, 0x80, 0x8F, 4};
  return {0, 0, 0, 0};
}

// How many bytes from `at` on conform to the character their lead byte starts (at most its length), and that
// length (0 when text[at] leads nothing).
struct Scan {
  size_t conforming;
  Lead lead;
};

Scan scan(std::string_view text, size_t at) {
  const Lead lead = lead_of(static_cast<unsigned char>(text[at]));
  if (lead.length == 0) return {0, lead};
  size_t k = 1;
  for (; k < lead.length && at + k < text.size(); ++k) {
    const auto byte = static_cast<unsigned char>(text[at + k]);
    const unsigned char low = k == 1 ? lead.second_low : 0x80;
    const unsigned char high = k == 1 ? lead.second_high : 0xBF;
    if (byte < low || byte > high) break;
  }
  return {k, lead};
}

}  // namespace

Decoded decode(std::string_view text, size_t at) {
  const Scan s = scan(text, at);
  if (s.lead.length == 0 || s.conforming < s.lead.length) return {0xFFFD, 1, false};
  char32_t code_point = s.lead.bits;
  for (size_t k = 1; k < s.lead.length; ++k) {
    code_point = (code_point << 6) | (static_cast<unsigned char>(text[at + k]) & 0x3F);
  }
  return {code_point, s.lead.length, true};
}

std::optional<size_t> first_invalid(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    if (static_cast<unsigned char>(text[i]) < 0x80) {  // the common case, without the table
      ++i;
      continue;
    }
    const Decoded d = decode(text, i);
    if (!d.valid) return i;
    i += d.length;
  }
  return std::nullopt;
}

void append(std::string& out, char32_t cp) {
  if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    out += kReplacementCharacter;
  } else if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

size_t incomplete_tail(std::string_view text) {
  // A character is at most 4 bytes, so an incomplete one starts among the last 3.
  for (size_t back = 1; back <= 3 && back <= text.size(); ++back) {
    const size_t at = text.size() - back;
    const Scan s = scan(text, at);
    if (s.lead.length > back && s.conforming == back) return at;
  }
  return text.size();
}

size_t character_start(std::string_view text, size_t pos) {
  if (pos >= text.size()) return pos;
  for (size_t back = 1; back <= 3 && back <= pos; ++back) {
    const size_t at = pos - back;
    const Scan s = scan(text, at);
    // text[at] leads a character reaching past pos, and the bytes up to pos conform to it.
    if (s.lead.length > back && s.conforming > back) return at;
  }
  return pos;
}

}  // namespace ernie::utf8
