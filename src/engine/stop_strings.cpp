#include "engine/stop_strings.h"

#include <algorithm>
#include <utility>

namespace ernie {

namespace {

bool is_continuation(unsigned char byte) {
  return (byte & 0xC0u) == 0x80u;
}

// Bytes a character starting with `lead` occupies; 1 for bytes that cannot start a multibyte character
// (ASCII, stray continuation bytes, 0xF8..0xFF), so malformed input is never held back for long.
size_t sequence_length(unsigned char lead) {
  if ((lead & 0xE0u) == 0xC0u) return 2;
  if ((lead & 0xF0u) == 0xE0u) return 3;
  if ((lead & 0xF8u) == 0xF0u) return 4;
  return 1;
}

// Start of a trailing character whose remaining bytes have not arrived, or text.size() if there is none.
size_t incomplete_tail(std::string_view text) {
  const size_t size = text.size();
  // A character is at most 4 bytes, so its lead byte is among the last 3 if it is still incomplete.
  for (size_t back = 1; back <= std::min<size_t>(3, size); ++back) {
    const auto byte = static_cast<unsigned char>(text[size - back]);
    if (is_continuation(byte)) continue;
    return sequence_length(byte) > back ? size - back : size;
  }
  return size;
}

// Moves `pos` back to the first byte of the character it falls in (at most 3 bytes back).
size_t character_start(std::string_view text, size_t pos) {
  for (size_t back = 0; back < 4 && back <= pos && pos - back < text.size(); ++back) {
    const size_t at = pos - back;
    if (!is_continuation(static_cast<unsigned char>(text[at]))) {
      // Only a real lead byte owns the continuation bytes after it; otherwise leave pos where it was.
      return sequence_length(static_cast<unsigned char>(text[at])) > back ? at : pos;
    }
  }
  return pos;
}

}  // namespace

StopStringMatcher::StopStringMatcher(std::vector<std::string> stop_strings) {
  for (auto& stop : stop_strings) {
    if (!stop.empty()) stop_strings_.push_back(std::move(stop));
  }
}

StopStringMatcher::Result StopStringMatcher::push(std::string_view new_text) {
  if (stopped_) return {"", true};
  held_.append(new_text);

  // Everything released earlier was decided, so a match can only start inside held_.
  size_t stop_at = std::string::npos;
  for (const auto& stop : stop_strings_) stop_at = std::min(stop_at, held_.find(stop));
  if (stop_at != std::string::npos) {
    std::string text = held_.substr(0, stop_at);
    held_.clear();
    stopped_ = true;
    return {std::move(text), true};
  }

  // Hold back the longest tail that is a proper prefix of some stop string: only it can still grow into a
  // match (a full match was ruled out above).
  const std::string_view held = held_;
  size_t keep_from = held.size();
  for (const auto& stop : stop_strings_) {
    const size_t longest = std::min(stop.size() - 1, held.size());
    for (size_t length = longest; length > 0 && held.size() - length < keep_from; --length) {
      if (held.ends_with(std::string_view(stop).substr(0, length))) {
        keep_from = held.size() - length;
        break;
      }
    }
  }
  keep_from = std::min(character_start(held, keep_from), incomplete_tail(held));

  std::string text = held_.substr(0, keep_from);
  held_.erase(0, keep_from);
  return {std::move(text), false};
}

std::string StopStringMatcher::flush() {
  std::string rest = stopped_ ? std::string() : std::move(held_);
  held_.clear();
  stopped_ = false;
  return rest;
}

}  // namespace ernie
