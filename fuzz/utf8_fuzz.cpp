// core/utf8.h on arbitrary bytes: a walk with decode() never skips a byte, its first invalid byte is what
// first_invalid() says, valid text re-encodes to itself, and incomplete_tail() / character_start() only point at
// well-formed (partial) characters.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "core/utf8.h"

namespace {

using ernie::utf8::decode;

// Can `partial` (1-3 bytes) be completed into one well-formed character? Only the ends of the continuation range and
// of the narrowed second-byte ranges matter, so those are the bytes tried.
bool completes(std::string_view partial) {
  static constexpr unsigned char kEdges[] = {0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF};
  for (size_t total = partial.size() + 1; total <= 4; ++total) {
    const size_t missing = total - partial.size();
    size_t combos = 1;
    for (size_t k = 0; k < missing; ++k) combos *= sizeof kEdges;
    for (size_t c = 0; c < combos; ++c) {
      std::string candidate(partial);
      for (size_t k = 0, rest = c; k < missing; ++k, rest /= sizeof kEdges) {
        candidate += static_cast<char>(kEdges[rest % sizeof kEdges]);
      }
      const auto d = decode(candidate, 0);
      if (d.valid && d.length == candidate.size()) return true;
    }
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::optional<size_t> first_bad;
  std::string reencoded;
  for (size_t i = 0; i < text.size();) {
    const auto d = decode(text, i);
    if (d.length < 1 || d.length > 4 || i + d.length > text.size()) std::abort();
    if (d.valid) {
      std::string one;
      ernie::utf8::append(one, d.code_point);
      if (one != text.substr(i, d.length)) std::abort();
      reencoded += one;
    } else {
      if (d.length != 1 || d.code_point != 0xFFFD) std::abort();
      if (!first_bad) first_bad = i;
    }
    i += d.length;
  }
  if (ernie::utf8::first_invalid(text) != first_bad) std::abort();
  if (ernie::utf8::is_valid(text) != !first_bad) std::abort();
  if (!first_bad && reencoded != text) std::abort();

  const size_t tail = ernie::utf8::incomplete_tail(text);
  if (tail > text.size()) std::abort();
  if (tail < text.size() && (text.size() - tail > 3 || !completes(text.substr(tail)))) std::abort();

  for (size_t pos = 0; pos <= text.size(); ++pos) {
    const size_t start = ernie::utf8::character_start(text, pos);
    if (start > pos || pos - start > 3) std::abort();
    if (start < pos && !completes(text.substr(start, pos - start + 1)) &&
        !(decode(text, start).valid && start + decode(text, start).length > pos)) {
      std::abort();
    }
  }
  return 0;
}
