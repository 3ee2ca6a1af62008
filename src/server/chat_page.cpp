#include "server/chat_page.h"

#include <httplib.h>

namespace ernie::server {

// A stub until the page itself lands in the next commits.
void serve_chat_page(httplib::Response& res) {
  res.set_content("<!doctype html><title>ernie</title>", "text/html; charset=utf-8");
}

}  // namespace ernie::server
