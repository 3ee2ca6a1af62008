// The chat page at GET /: its headers and self-containment over plain HTTP, then the page itself in headless
// Chromium (Debian's `chromium`, driven by tests/server/node/chat_page.mjs through puppeteer-core): streamed
// multi-turn chat with timings, settings, copy, markdown rendered as elements while model-written markup stays
// text, error answers, Stop, and the API-key prompt. Where Node.js, puppeteer-core or Chromium is missing the
// browser test is skipped on a developer's machine but fails in CI (CI=true), where scripts/setup.sh installs them.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "test_server.h"

namespace ernie {
namespace {

using ernie::testing::TestServer;
namespace fs = std::filesystem;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(ChatPage, ServedFromTheBinaryUnderAStrictPolicy) {
  TestServer s;
  const auto page = s.get("/");
  ASSERT_EQ(page.status, 200) << page.error;
  EXPECT_EQ(page.header("Content-Type"), "text/html; charset=utf-8");
  EXPECT_EQ(page.header("X-Content-Type-Options"), "nosniff");
  EXPECT_EQ(page.header("Referrer-Policy"), "no-referrer");
  EXPECT_EQ(page.header("Cache-Control"), "no-cache");
  // Only the page's own script and style (by hash), fetch() to the server, no framing, forms or base URL.
  const std::string csp = page.header("Content-Security-Policy");
  EXPECT_EQ(csp.rfind("default-src 'none'; ", 0), 0u) << csp;
  for (const char* part : {"script-src 'sha256-", "style-src 'sha256-", "connect-src 'self'", "base-uri 'none'",
                           "form-action 'none'", "frame-ancestors 'none'"}) {
    EXPECT_TRUE(contains(csp, part)) << part << " missing from " << csp;
  }
  EXPECT_FALSE(contains(csp, "unsafe")) << csp;
  // One document, nothing loaded from elsewhere: no script/style/image sources, no stylesheet links.
  EXPECT_EQ(page.body.rfind("<!doctype html>", 0), 0u);
  EXPECT_TRUE(contains(page.body, "</html>"));
  for (const char* part : {"<script src", "<link rel=\"stylesheet\"", "@import", "url(", "src=\"http", "href=\"http"}) {
    EXPECT_FALSE(contains(page.body, part)) << part;
  }
}

TEST(ChatPage, OpenWhileTheApiNeedsTheKey) {
  auto options = ernie::testing::test_options();
  options.api_key = "page-key";
  TestServer s(options);
  EXPECT_EQ(s.get("/").status, 200);
  const auto refused = s.get("/v1/models");
  EXPECT_EQ(refused.status, 401);
  EXPECT_TRUE(refused.body_json()["error"]["message"].is_string()) << refused.body;  // what the page shows
  EXPECT_EQ(s.get("/v1/models", {{"Authorization", "Bearer page-key"}}).status, 200);
}

// Why the browser test cannot run here, or "".
std::string missing_browser_prerequisite(const fs::path& node_dir, const std::string& chromium) {
  if (std::system("command -v node >/dev/null 2>&1") != 0) return "Node.js is not installed";
  if (!fs::exists(node_dir / "node_modules/puppeteer-core/package.json")) {
    return "puppeteer-core is not installed in " + node_dir.string() + " (run scripts/setup.sh; it needs npm)";
  }
  if (::access(chromium.c_str(), X_OK) != 0) {
    return chromium + " is missing (scripts/setup.sh installs Debian's chromium; ERNIE_CHROMIUM names another)";
  }
  return "";
}

TEST(ChatPage, WorksInHeadlessChromium) {
  const fs::path node_dir = ERNIE_NODE_CLIENT_DIR;
  const char* chromium_env = std::getenv("ERNIE_CHROMIUM");
  const std::string chromium = chromium_env ? chromium_env : "/usr/bin/chromium";
  if (const std::string missing = missing_browser_prerequisite(node_dir, chromium); !missing.empty()) {
    const char* ci = std::getenv("CI");
    // In CI the setup installs all three: a skip there would hide a broken setup.
    if (ci && std::string(ci) == "true") FAIL() << missing << " (CI=true: the browser test must run)";
    GTEST_SKIP() << missing;
  }
  auto options = ernie::testing::test_options();
  options.scheduler.context_length = 1024;  // room for the conversation the script builds up
  TestServer open(options);                 // the page as most use it
  options.api_key = "chat-page-key";
  TestServer keyed(options);

  const fs::path dir = fs::temp_directory_path() / ("ernie-chat-page-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path screenshot = dir / "chat.png";
  // timeout(1) as a last resort; the script gives up by itself well before.
  const std::string command = "timeout -k 5 90 node " + (node_dir / "chat_page.mjs").string() +
                              " --url http://127.0.0.1:" + std::to_string(open.port) +
                              " --key-url http://127.0.0.1:" + std::to_string(keyed.port) + " --key chat-page-key" +
                              " --control " + dir.string() + " --screenshot " + screenshot.string() + " --chromium " +
                              chromium + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  // The script asks, one line each, for the scheduler to be held (so that an answer is still streaming when it
  // clicks Stop) and let go; a file in `dir` says it is done.
  std::string out, line;
  for (int c; (c = std::fgetc(pipe)) != EOF;) {
    line += static_cast<char>(c);
    if (c != '\n') continue;
    if (line == "control: gate-close\n") open.gate.close();
    if (line == "control: gate-open\n") open.gate.open();
    if (line.rfind("control: ", 0) == 0) std::ofstream(dir / line.substr(9, line.size() - 10));
    out += line;
    line.clear();
  }
  out += line;
  const int status = pclose(pipe);
  open.gate.open();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  EXPECT_TRUE(contains(out, "chat page: ok")) << out;
  std::ifstream png(screenshot, std::ios::binary);
  std::string magic(4, '\0');
  png.read(magic.data(), 4);
  EXPECT_EQ(magic, "\x89PNG") << "no screenshot at " << screenshot;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace ernie
