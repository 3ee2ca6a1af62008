// Error raising and the size bound shared by the interpreter; see common.h.
#include "tokenizer/jinja/common.h"

#include "core/error.h"

namespace ernie::jinja {

bool append_control_escape(std::string& out, char c) {
  const auto u = static_cast<unsigned char>(c);
  if (c == '\n') {
    out += "\\n";
  } else if (c == '\r') {
    out += "\\r";
  } else if (c == '\t') {
    out += "\\t";
  } else if (u < 0x20 || u == 0x7F) {
    static const char* hex = "0123456789abcdef";
    out += "\\x";
    out += hex[u >> 4];
    out += hex[u & 15];
  } else {
    return false;
  }
  return true;
}

[[noreturn]] void fail_line(const std::string& message) {
  std::string out;
  for (const char c : message) {
    if (!append_control_escape(out, c)) out += c;
  }
  constexpr size_t kMaxMessage = 1000;
  if (out.size() > kMaxMessage) {
    size_t cut = kMaxMessage;
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;  // keep UTF-8 whole
    out = out.substr(0, cut) + "...";
  }
  throw Error(out);
}

void check_size(size_t n, int line) {
  if (n > kMaxBuiltSize) fail_at(line, "result of ", n, " elements or bytes is too large");
}

}  // namespace ernie::jinja
