// Fuzzes the demo model's tokenizer. The first byte picks:
//   even: encode the rest as text (with and without bos); every id must be in the vocabulary;
//   odd:  decode the rest as an id sequence (mostly in range, some arbitrary 32-bit ids, negative and huge).
// In both cases the ids then go through StreamDecoder one at a time: its pushes plus flush() must equal decode()
// of all of them, with and without skip_special_tokens, and every chunk must be whole UTF-8.
#include <cstring>
#include <exception>
#include <vector>

#include "core/error.h"
#include "fuzz_support.h"
#include "tokenizer/tokenizer.h"

namespace {

const ernie::Tokenizer& tokenizer() {
  static const ernie::Tokenizer t = ernie::Tokenizer::load(ERNIE_DEMO_MODEL_DIR);
  return t;
}

// Well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF): what every decoded chunk must be.
bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
    for (size_t k = 1; k < n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n;
  }
  return true;
}

void check_streaming(const ernie::Tokenizer& tok, const std::vector<int32_t>& ids, bool skip) {
  using ernie::fuzz::violation;
  const std::string whole = tok.decode(ids, skip);
  ernie::StreamDecoder stream(tok, skip);
  std::string joined;
  for (int32_t id : ids) {
    const std::string chunk = stream.push(id);
    if (!valid_utf8(chunk)) violation("StreamDecoder returned a chunk that is not whole UTF-8", chunk);
    joined += chunk;
  }
  const std::string tail = stream.flush();
  if (!valid_utf8(tail)) violation("StreamDecoder::flush returned invalid UTF-8", tail);
  joined += tail;
  if (joined != whole) violation("StreamDecoder output differs from decode()", joined + " | " + whole);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ernie;
  const Tokenizer& tok = tokenizer();
  fuzz::Input in(data, size);
  const uint8_t mode = in.byte();
  std::vector<int32_t> ids;
  try {
    if (mode % 2 == 0) {
      const std::string_view text = in.rest();
      ids = tok.encode(text, (mode & 2) != 0);
      for (int32_t id : ids) {
        if (id < 0 || id >= tok.vocab_size()) fuzz::violation("encode gave an id outside the vocabulary");
      }
    } else {
      // Two bytes per id: below 0xFF00 an id modulo vocab_size + 16 (so a few past the end); otherwise the next four
      // bytes are a raw int32.
      while (!in.empty()) {
        const std::string_view two = in.take(2);
        const uint32_t v = static_cast<uint8_t>(two[0]) | (two.size() > 1 ? static_cast<uint8_t>(two[1]) << 8 : 0);
        if (v < 0xFF00) {
          ids.push_back(static_cast<int32_t>(v % (tok.vocab_size() + 16)));
        } else {
          const std::string_view four = in.take(4);
          int32_t raw = 0;
          std::memcpy(&raw, four.data(), four.size());
          ids.push_back(raw);
        }
      }
    }
    const std::string a = tok.decode(ids, false);
    const std::string b = tok.decode(ids, true);
    if (!valid_utf8(a) || !valid_utf8(b)) fuzz::violation("decode() returned invalid UTF-8");
    check_streaming(tok, ids, true);
    check_streaming(tok, ids, false);
  } catch (const Error&) {
  } catch (const std::exception& e) {
    fuzz::violation("exception other than ernie::Error", e.what());
  }
  return 0;
}
