// The official `openai` npm client (installed by scripts/setup.sh into tests/server/node/) makes a streaming chat
// completion against the server; the text it assembles must equal the server's non-streamed answer. Skipped, with
// the reason, where Node.js or the package is missing (setup.sh warns when the npm registry is unreachable); under
// CI=true that is a failure instead.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "test_server.h"

namespace ernie {
namespace {

using ernie::testing::json;
using ernie::testing::TestServer;

TEST(OpenAIClient, StreamingChatAssemblesTheSameText) {
  const std::filesystem::path dir = ERNIE_NODE_CLIENT_DIR;
  // scripts/setup.sh installs Node.js and the package; in CI (CI set) their absence is a failure, not a skip.
  const bool ci = std::getenv("CI") != nullptr;
  if (std::system("command -v node >/dev/null 2>&1") != 0) {
    if (ci) FAIL() << "Node.js is not installed (scripts/setup.sh installs Debian's nodejs)";
    GTEST_SKIP() << "Node.js is not installed";
  }
  if (!std::filesystem::exists(dir / "node_modules/openai/package.json")) {
    if (ci) FAIL() << "the openai npm package is not installed in " << dir << " (scripts/setup.sh installs it)";
    GTEST_SKIP() << "the openai npm package is not installed in " << dir
                 << " (run scripts/setup.sh; it needs the npm registry)";
  }
  auto options = ernie::testing::test_options();
  options.api_key = "test-key";
  TestServer s(options);
  const std::string question = "What is the capital of France?";
  const auto expected =
      s.post("/v1/chat/completions",
             json{{"messages", {{{"role", "user"}, {"content", question}}}}, {"max_tokens", 24}, {"temperature", 0}},
             {{"Authorization", "Bearer test-key"}})
          .body_json();
  ASSERT_TRUE(expected.contains("choices")) << expected;

  const std::string command = "node " + (dir / "chat_stream.mjs").string() +
                              " http://127.0.0.1:" + std::to_string(s.port) + " test-key tiny-ernie '" + question +
                              "' 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buffer[4096];
  for (size_t n; (n = fread(buffer, 1, sizeof buffer, pipe)) > 0;) out.append(buffer, n);
  const int status = pclose(pipe);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;

  const json got = json::parse(out, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(got.is_object()) << out;
  EXPECT_EQ(got["text"], expected["choices"][0]["message"]["content"]);
  EXPECT_EQ(got["finish_reason"], expected["choices"][0]["finish_reason"]);
  EXPECT_GT(got["chunks"].get<int>(), 2);  // it really streamed
}

}  // namespace
}  // namespace ernie
