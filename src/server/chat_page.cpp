#include "server/chat_page.h"

#include <httplib.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ernie::server {

// Compiled from src/server/page/chat.html by src/server/page/embed.cmake (the build's chat_page_data.cpp).
namespace page {
extern const unsigned char kChatHtml[];
extern const size_t kChatHtmlSize;
extern const char kChatScriptSha256[];  // hex SHA-256 of the text inside the page's one <script>
extern const char kChatStyleSha256[];   // same for its one <style>
}  // namespace page

namespace {

// A hex digest as CSP's hash source, 'sha256-<base64 of the digest's bytes>'.
std::string csp_hash(std::string_view hex) {
  static constexpr char kBase64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  std::string bytes;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    bytes.push_back(static_cast<char>(nibble(hex[i]) << 4 | nibble(hex[i + 1])));
  std::string out = "'sha256-";
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const size_t n = bytes.size() - i < 3 ? bytes.size() - i : 3;
    uint32_t group = 0;
    for (size_t k = 0; k < 3; ++k) group = group << 8 | (k < n ? static_cast<unsigned char>(bytes[i + k]) : 0);
    for (size_t k = 0; k < 4; ++k) out += k <= n ? kBase64[(group >> (18 - 6 * k)) & 63] : '=';
  }
  return out + "'";
}

// The page may run its own script and style and talk to this origin; nothing else: no other scripts (injected
// markup could not run even if the page's renderer let some through), no plugins, frames, forms or remote
// images, and it may not be framed by another site.
std::string content_security_policy() {
  return "default-src 'none'; script-src " + csp_hash(page::kChatScriptSha256) + "; style-src " +
         csp_hash(page::kChatStyleSha256) +
         "; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
}

}  // namespace

void serve_chat_page(httplib::Response& res) {
  static const std::string policy = content_security_policy();
  res.status = 200;
  res.set_header("Content-Security-Policy", policy);
  res.set_header("X-Content-Type-Options", "nosniff");
  res.set_header("Referrer-Policy", "no-referrer");
  res.set_header("X-Frame-Options", "DENY");
  // Revalidated on each load, so that a browser never keeps a page older than the binary serving it.
  res.set_header("Cache-Control", "no-cache");
  res.set_content(reinterpret_cast<const char*>(page::kChatHtml), page::kChatHtmlSize, "text/html; charset=utf-8");
}

}  // namespace ernie::server
