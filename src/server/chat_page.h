// The built-in chat page served at GET /: one self-contained HTML document (script and style inline, no network
// access), compiled into the binary.
#pragma once

namespace httplib {
struct Response;
}

namespace ernie::server {

// Writes the page and its security headers into `res`.
void serve_chat_page(httplib::Response& res);

}  // namespace ernie::server
