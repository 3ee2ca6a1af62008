// Limits against hostile clients: each one answered with its status and an OpenAI-style error body, and the
// server still serving everybody else afterwards.
#include <gtest/gtest.h>

#include <thread>

#include "raw_socket.h"
#include "test_server.h"

namespace ernie {
namespace {

using ernie::testing::json;
using ernie::testing::RawSocket;
using ernie::testing::Reply;
using ernie::testing::TestServer;
using namespace std::chrono_literals;

std::string error_code(const Reply& r) {
  const json body = r.body_json();
  return body.contains("error") ? body["error"].value("code", "") : "no error object: " + r.body;
}

// The server still answers a plain greedy completion.
void expect_still_serving(const TestServer& s) {
  const Reply r = s.post("/v1/completions", json{{"prompt", "hello"}, {"max_tokens", 2}, {"temperature", 0}});
  EXPECT_EQ(r.status, 200) << r.body << r.error;
  EXPECT_EQ(s.get("/health").status, 200);
}

TEST(Hardening, NestingBombIsRefusedWhileParsing) {
  auto options = ernie::testing::test_options();
  options.max_body_bytes = 256 * 1024;
  TestServer s(options);
  for (const int depth : {65, 20'000, 100'000}) {
    const std::string bomb = "{\"prompt\": " + std::string(depth, '[') + std::string(depth, ']') + "}";
    const Reply r = s.post("/v1/completions", bomb);
    EXPECT_EQ(r.status, 400) << depth << ": " << r.error;
    EXPECT_EQ(error_code(r), "json_too_deep") << depth;
  }
  // Objects count as much as arrays; the limit itself is allowed (64 levels: the body's object and 63 more).
  std::string objects;
  for (int i = 0; i < 100; ++i) objects += "{\"a\":";
  objects += "1" + std::string(100, '}');
  EXPECT_EQ(error_code(s.post("/v1/completions", objects)), "json_too_deep");
  const std::string deepest = "{\"prompt\": \"hi\", \"x\": " + std::string(62, '[') + std::string(62, ']') + "}";
  EXPECT_NE(error_code(s.post("/v1/completions", deepest)), "json_too_deep");
  expect_still_serving(s);
}

TEST(Hardening, NumbersNoFieldCanTakeAre400s) {
  TestServer s;
  for (const std::string body : {
           R"({"prompt": "hi", "max_tokens": 1e999})",
           R"({"prompt": "hi", "temperature": -1e999})",
           R"({"prompt": "hi", "max_tokens": 2.5})",
           R"({"prompt": "hi", "max_tokens": 1e30})",
           R"({"prompt": "hi", "seed": 1.5})",
           R"({"prompt": "hi", "top_k": 18446744073709551616})",
           R"({"prompt": "hi", "temperature": 1e308})",
           R"({"prompt": [1, 2, 99999999999]})",
           R"({"prompt": [1, 2, 2147483647]})",
           R"({"prompt": [1, -5]})",
       }) {
    const Reply r = s.post("/v1/completions", body);
    EXPECT_EQ(r.status, 400) << body << " -> " << r.body;
    const json e = r.body_json();
    ASSERT_TRUE(e.contains("error")) << body;
    EXPECT_EQ(e["error"]["type"], "invalid_request_error");
    EXPECT_EQ(std::string(e["error"]["message"]).find("json.exception"), std::string::npos)
        << "library internals in the message: " << r.body;
  }
  // Query parameters of /predict go through the same parser.
  EXPECT_EQ(s.post("/predict?text=hi&max_tokens=1e999", std::string()).status, 400);
  EXPECT_EQ(s.post("/predict?text=hi&max_tokens=" + std::string(5000, '['), std::string()).status, 400);
  expect_still_serving(s);
}

TEST(Hardening, StopStringsAndMessagesAreBounded) {
  auto options = ernie::testing::test_options();
  options.limits.max_stop_strings = 4;
  options.limits.max_stop_bytes = 8;
  options.limits.max_messages = 3;
  TestServer s(options);
  EXPECT_EQ(s.post("/v1/completions", json{{"prompt", "hi"}, {"stop", {"a", "b", "c", "d"}}, {"max_tokens", 1}}).status,
            200);
  EXPECT_EQ(s.post("/v1/completions", json{{"prompt", "hi"}, {"stop", {"a", "b", "c", "d", "e"}}}).status, 400);
  EXPECT_EQ(s.post("/v1/completions", json{{"prompt", "hi"}, {"stop", "123456789"}}).status, 400);
  EXPECT_EQ(s.post("/v1/completions", json{{"prompt", "hi"}, {"stop", {"12345678"}}, {"max_tokens", 1}}).status, 200);
  const json message = {{"role", "user"}, {"content", "hi"}};
  EXPECT_EQ(s.post("/v1/chat/completions", json{{"messages", {message, message, message}}, {"max_tokens", 1}}).status,
            200);
  const Reply r = s.post("/v1/chat/completions", json{{"messages", {message, message, message, message}}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.body_json()["error"]["param"], "messages");
}

TEST(Hardening, OversizedHeadsGet431) {
  auto options = ernie::testing::test_options();
  options.connection.max_header_bytes = 4096;
  options.connection.max_headers = 16;
  TestServer s(options);
  {
    RawSocket c(s.port);
    // One endless header line: refused as soon as the head passes its limit, not when the line ends.
    c.send("GET /health HTTP/1.1\r\nX-Long: " + std::string(64 * 1024, 'a'));
    c.read_until_closed(5s);
    EXPECT_EQ(c.status(), 431) << c.read_until_closed(0ms);
    EXPECT_NE(c.read_until_closed(0ms).find("headers_too_large"), std::string::npos);
  }
  {
    RawSocket c(s.port);
    std::string head = "GET /health HTTP/1.1\r\n";
    for (int i = 0; i < 17; ++i) head += "X-" + std::to_string(i) + ": 1\r\n";
    c.send(head + "\r\n");
    c.read_until_closed(5s);
    EXPECT_EQ(c.status(), 431);
  }
  {
    RawSocket c(s.port);
    std::string head = "GET /health HTTP/1.1\r\n";
    for (int i = 0; i < 16; ++i) head += "X-" + std::to_string(i) + ": 1\r\n";
    c.send(head + "Connection: close\r\n\r\n");
    c.read_until_closed(5s);
    EXPECT_EQ(c.status(), 431) << "the 17th field";
  }
  EXPECT_EQ(s.get("/health", {{"X-Ok", "1"}}).status, 200);
  EXPECT_GE(s.metric("ernie_http_requests_total{endpoint=\"other\",status=\"431\"}"), 3);
}

TEST(Hardening, AChunkSizeLineWithoutEndIsCutAtTheBodyLimit) {
  TestServer s;  // 64 KiB bodies
  RawSocket c(s.port);
  c.send("POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
  const std::string digits(16 * 1024, '0');
  for (int i = 0; i < 64 && c.send(digits); ++i) {
  }
  c.read_until_closed(5s);
  EXPECT_EQ(c.status(), 413) << c.read_until_closed(0ms).substr(0, 200);
  expect_still_serving(s);
}

TEST(Hardening, SlowClientsGet408AndNeverHoldOthersUp) {
  auto options = ernie::testing::test_options();
  options.connection.header_timeout = 800ms;
  options.connection.read_timeout = 1500ms;
  TestServer s(options);
  // A head trickled a byte at a time, a body trickled after a full head, and a connection that sends nothing.
  RawSocket head(s.port), body(s.port), silent(s.port);
  body.send("POST /v1/completions HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{");
  const auto start = std::chrono::steady_clock::now();
  const std::string request = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
  bool head_cut = false;
  for (size_t i = 0; i < request.size() && !head_cut; ++i) {
    head_cut = !head.send(request.substr(i, 1));
    body.send(" ");
    // Others are served meanwhile.
    if (i == 2) expect_still_serving(s);
    std::this_thread::sleep_for(100ms);
  }
  head.read_until_closed(3s);
  body.read_until_closed(3s);
  silent.read_until_closed(3s);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(head.status(), 408) << head.read_until_closed(0ms);
  EXPECT_EQ(body.status(), 408) << body.read_until_closed(0ms);
  EXPECT_EQ(silent.status(), 408);
  EXPECT_TRUE(head.closed_by_peer() && body.closed_by_peer() && silent.closed_by_peer());
  EXPECT_LT(seconds, 3.0) << "the deadlines are 0.8 s and 1.5 s";
  expect_still_serving(s);
}

TEST(Hardening, ConnectionsPastTheCapGet503AtOnce) {
  auto options = ernie::testing::test_options();
  options.connection.max_connections = 8;
  options.connection.header_timeout = 20s;
  options.connection.read_timeout = 20s;
  TestServer s(options);
  std::vector<std::unique_ptr<RawSocket>> idle;
  for (int i = 0; i < 8; ++i) {
    idle.push_back(std::make_unique<RawSocket>(s.port));
    idle.back()->send("G");  // started, never finished
  }
  std::this_thread::sleep_for(200ms);  // all eight taken up by the server
  RawSocket extra(s.port);
  const auto start = std::chrono::steady_clock::now();
  extra.send("GET /health HTTP/1.1\r\n\r\n");
  extra.read_until_closed(5s);
  EXPECT_EQ(extra.status(), 503) << extra.read_until_closed(0ms);
  EXPECT_NE(extra.read_until_closed(0ms).find("Retry-After: 1"), std::string::npos);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 2.0);
  idle.clear();  // their connections end; the server has room again
  std::this_thread::sleep_for(300ms);
  expect_still_serving(s);
}

TEST(Hardening, IdleKeepAliveConnectionsAreClosed) {
  auto options = ernie::testing::test_options();
  options.connection.keepalive_timeout = 400ms;
  TestServer s(options);
  RawSocket c(s.port);
  const std::string request = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
  c.send(request);
  std::this_thread::sleep_for(150ms);
  ASSERT_TRUE(c.send(request));  // within the keep-alive time: the same connection carries it
  const auto start = std::chrono::steady_clock::now();
  const std::string received = c.read_until_closed(5s);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  size_t answers = 0;
  for (size_t at = received.find("HTTP/1.1 200"); at != std::string::npos; at = received.find("HTTP/1.1 200", at + 1)) {
    ++answers;
  }
  EXPECT_EQ(answers, 2u) << received;
  EXPECT_TRUE(c.closed_by_peer());
  EXPECT_LT(seconds, 2.0) << "closed after the 0.4 s keep-alive timeout, not the client's 5 s";
}

TEST(Hardening, PromptsOutsideTheModelAreOneLayersErrors) {
  TestServer s;
  // The fixture's vocabulary has fewer ids than this; the same check the scheduler makes names it.
  const Reply r = s.post("/v1/completions", json{{"prompt", {1, 2, 200000}}});
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("outside the vocabulary"), std::string::npos) << r.body;
  const Reply long_prompt = s.post("/v1/completions", json{{"prompt", std::vector<int>(300, 5)}});
  EXPECT_EQ(long_prompt.status, 400);
  EXPECT_EQ(error_code(long_prompt), "context_length_exceeded");
}

}  // namespace
}  // namespace ernie
