// Fuzzes the streaming stop-string matcher. Input: a count byte, that many NUL-terminated stop strings, a seed byte
// for how the text is cut into pieces, then the text. The released text plus flush() must equal the text cut at
// the first occurrence of the stop string that starts earliest (computed here directly on the whole text), no
// released piece may contain a stop string, and the matcher must give the same again after flush() readies it
// for a second stream.
#include <algorithm>
#include <string>
#include <vector>

#include "engine/stop_strings.h"
#include "fuzz_support.h"

namespace {

std::string expected_output(std::string_view text, const std::vector<std::string>& stops) {
  size_t cut = std::string_view::npos;
  for (const auto& stop : stops) {
    if (!stop.empty()) cut = std::min(cut, text.find(stop));
  }
  return std::string(text.substr(0, cut));
}

// Streams `text` through the matcher in pieces of 0..7 bytes chosen by a small generator seeded with `seed`.
std::string stream(ernie::StopStringMatcher& matcher, std::string_view text, const std::vector<std::string>& stops,
                   uint32_t seed) {
  std::string out;
  bool stopped = false;
  size_t at = 0;
  while (at < text.size()) {
    seed = seed * 1103515245u + 12345u;
    const size_t n = std::min<size_t>((seed >> 16) % 8, text.size() - at);
    const auto result = matcher.push(text.substr(at, n));
    at += n;
    if (stopped && (result.text.size() || !result.stopped)) ernie::fuzz::violation("push after a stop gave text");
    for (const auto& stop : stops) {
      if (!stop.empty() && result.text.find(stop) != std::string::npos) {
        ernie::fuzz::violation("a released piece contains a stop string", stop);
      }
    }
    out += result.text;
    stopped = stopped || result.stopped;
  }
  const std::string rest = matcher.flush();
  if (stopped && !rest.empty()) ernie::fuzz::violation("flush after a stop gave text");
  return out + rest;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ernie;
  fuzz::Input in(data, size);
  const int count = in.byte() % 5;
  std::vector<std::string> stops;
  for (int i = 0; i < count; ++i) stops.emplace_back(in.until_nul());
  const uint32_t seed = in.byte();
  const std::string_view text = in.rest();

  const std::string expected = expected_output(text, stops);
  StopStringMatcher matcher(stops);
  const std::string first = stream(matcher, text, stops, seed);
  if (first != expected) fuzz::violation("released text differs from the text cut at the first stop string", first);
  const std::string second = stream(matcher, text, stops, seed + 1);
  if (second != expected) fuzz::violation("second stream after flush() differs", second);
  return 0;
}
