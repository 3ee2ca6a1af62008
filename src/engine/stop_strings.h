// Watches streamed text for user stop strings.
//
// Text that might be the beginning of a stop string is held back until it is decided, so a stop string is
// never partly printed. Matching is on bytes. The boundary between released and held-back text always falls
// on a UTF-8 character start: held-back text is whole characters, and a character whose bytes have not all
// arrived yet (a token that ended mid-character) is held too, so every release ends on a character boundary
// when the input is valid UTF-8 (core/utf8.h decides). Bytes that are not part of a well-formed character are passed
// through as is.
//
// When stop strings overlap in the text, the one that starts first wins; text from its first byte on is
// dropped. Empty stop strings are ignored. One matcher per stream; not thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace ernie {

class StopStringMatcher {
 public:
  explicit StopStringMatcher(std::vector<std::string> stop_strings);

  struct Result {
    std::string text;  // safe to emit now
    bool stopped;      // a stop string was found: `text` excludes it and anything after it
  };

  // Feeds the next piece of decoded text. Once a stop string has been found, further pushes return
  // {"", true} until flush().
  Result push(std::string_view new_text);

  // End of generation: returns whatever is held back (nothing if a stop string was found) and readies the
  // matcher for a new stream with the same stop strings.
  std::string flush();

  // Bytes currently held back.
  size_t held_bytes() const { return held_.size(); }

 private:
  // Where the first complete stop string in held_ starts (npos if none), and where the earliest tail of held_
  // that is a proper prefix of a stop string starts (held_.size() if none).
  size_t first_match() const;
  size_t first_partial() const;

  std::vector<std::string> stop_strings_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace ernie
