// Continuous batching seen from clients: a greedy answer is the same alone and beside seven others, a client that
// hangs up frees its slot, a full queue answers 503 with Retry-After, and shutdown lets admitted requests finish.
// The scheduler is held with a StepGate where requests must coexist; nothing sleeps.
#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "test_server.h"

namespace ernie {
namespace {

using ernie::testing::eventually;
using ernie::testing::json;
using ernie::testing::RawRequest;
using ernie::testing::Reply;
using ernie::testing::TestServer;

const char* const kPrompts[] = {"Hello world",
                                "The quick brown fox jumps over the lazy dog, again and again and again.",
                                "你好，世界",
                                "Once upon a time",
                                "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20",
                                "A",
                                "Tell me about the sea.",
                                "The capital of France is"};

json request(int i, bool stream) {
  json r = {{"max_tokens", 24 + i}, {"temperature", 0}, {"ignore_eos", true}, {"stream", stream}};
  if (i % 2) {
    r["messages"] = {{{"role", "user"}, {"content", kPrompts[i]}}};
  } else {
    r["prompt"] = kPrompts[i];
  }
  return r;
}

std::string path(int i) {
  return i % 2 ? "/v1/chat/completions" : "/v1/completions";
}

// The generated text of a reply, streamed or not.
std::string text_of(const Reply& r) {
  if (r.header("Content-Type") != "text/event-stream") {
    const json choice = r.body_json()["choices"][0];
    return choice.contains("message") ? choice["message"]["content"] : choice["text"];
  }
  std::string text;
  for (const auto& event : r.events()) {
    if (event == "[DONE]") break;
    const json chunk = json::parse(event);
    if (chunk["choices"].empty()) continue;
    const json& choice = chunk["choices"][0];
    text += choice.contains("delta") ? choice["delta"].value("content", "") : choice["text"].get<std::string>();
  }
  return text;
}

TEST(Batching, GreedyOutputIsTheSameAloneAndBesideSevenOthers) {
  auto options = ernie::testing::test_options();
  options.scheduler.max_running = 8;
  std::vector<std::string> alone;
  {
    TestServer s(options);
    for (int i = 0; i < 8; ++i) {
      const Reply r = s.post(path(i), request(i, false));
      ASSERT_EQ(r.status, 200) << r.body;
      alone.push_back(text_of(r));
    }
  }

  TestServer s(options);
  s.gate.close();  // the new server is idle: its first step will be held
  std::vector<std::future<Reply>> replies;
  replies.push_back(std::async(std::launch::async, [&] { return s.post(path(0), request(0, true)); }));
  ASSERT_TRUE(s.gate.wait_for_steps(1));
  for (int i = 1; i < 8; ++i) {
    replies.push_back(std::async(std::launch::async, [&, i] { return s.post(path(i), request(i, i % 3 == 0)); }));
  }
  ASSERT_TRUE(eventually([&] { return s.server->scheduler_stats()->waiting == 7; }));
  s.gate.open();
  for (int i = 0; i < 8; ++i) {
    const Reply r = replies[i].get();
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(text_of(r), alone[i]) << "request " << i;
  }
  EXPECT_EQ(s.gate.max_decoded(), 8) << "the eight requests never decoded in one batch";
}

TEST(Batching, AClientThatHangsUpFreesItsSlot) {
  auto options = ernie::testing::test_options();
  options.scheduler.max_running = 1;
  options.scheduler.max_waiting = 1;
  TestServer s(options);
  s.gate.close();
  json long_request = {{"prompt", "Hello world"}, {"max_tokens", 200}, {"ignore_eos", true}, {"stream", true}};
  RawRequest first(s.port, "POST", "/v1/completions", long_request.dump());
  ASSERT_TRUE(first.read_until("data: "));  // running: its first token has been sent
  auto second = std::async(std::launch::async, [&] {
    return s.post("/v1/completions", json{{"prompt", "Hi"}, {"max_tokens", 5}, {"ignore_eos", true}});
  });
  ASSERT_TRUE(eventually([&] { return s.server->scheduler_stats()->waiting == 1; }));

  first.hang_up();
  // The first request's thread notices, cancels, and its exchange ends.
  ASSERT_TRUE(eventually(
      [&] { return s.metric(R"(ernie_http_requests_total{endpoint="/v1/completions",status="200"})") == 1; }));
  s.gate.allow(1);  // one step: the cancelled request leaves, the waiting one takes the slot
  ASSERT_TRUE(s.gate.wait_for_steps(2));
  EXPECT_EQ(s.server->scheduler_stats()->waiting, 0);
  EXPECT_EQ(s.metric(R"(ernie_request_success_total{finished_reason="abort"})"), 1);
  s.gate.open();
  const Reply r = second.get();
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body_json()["usage"]["completion_tokens"], 5);
  EXPECT_LT(s.metric("ernie_generation_tokens_total"), 200 + 5);  // the first never ran to its end
}

TEST(Batching, AFullQueueAnswers503WithRetryAfter) {
  auto options = ernie::testing::test_options();
  options.scheduler.max_running = 1;
  options.scheduler.max_waiting = 1;
  TestServer s(options);
  s.gate.close();
  const json held = {{"prompt", "Hello world"}, {"max_tokens", 20}, {"ignore_eos", true}, {"stream", true}};
  auto running = std::async(std::launch::async, [&] { return s.post("/v1/completions", held); });
  ASSERT_TRUE(s.gate.wait_for_steps(1));
  auto waiting = std::async(std::launch::async, [&] { return s.post("/v1/completions", held); });
  ASSERT_TRUE(eventually([&] { return s.server->scheduler_stats()->waiting == 1; }));

  const Reply refused = s.post("/v1/chat/completions", json{{"messages", {{{"role", "user"}, {"content", "hi"}}}}});
  EXPECT_EQ(refused.status, 503);
  EXPECT_EQ(refused.header("Retry-After"), "1");
  EXPECT_EQ(refused.body_json()["error"]["code"], "server_busy");
  EXPECT_EQ(refused.body_json()["error"]["type"], "server_error");
  EXPECT_EQ(s.get("/health").status, 200);  // the server itself is fine

  s.gate.open();
  EXPECT_EQ(running.get().status, 200);
  EXPECT_EQ(waiting.get().status, 200);
  EXPECT_EQ(s.post("/v1/completions", json{{"prompt", "hi"}, {"max_tokens", 2}}).status, 200);
}

TEST(Batching, ShutdownLetsAdmittedRequestsFinish) {
  TestServer s;
  s.gate.close();
  const json held = {{"prompt", "Hello world"}, {"max_tokens", 30}, {"ignore_eos", true}, {"stream", true}};
  auto streaming = std::async(std::launch::async, [&] { return s.post("/v1/completions", held); });
  ASSERT_TRUE(s.gate.wait_for_steps(1));
  auto stopping = std::async(std::launch::async, [&] { s.server->shutdown(); });
  // While admitted requests finish, new ones are refused and /health says so.
  ASSERT_TRUE(eventually([&] { return s.get("/health").status == 503; }));
  EXPECT_EQ(s.get("/health").body_json()["status"], "stopping");
  const Reply refused = s.post("/v1/completions", json{{"prompt", "hi"}});
  EXPECT_EQ(refused.status, 503);
  EXPECT_EQ(refused.body_json()["error"]["code"], "shutting_down");
  s.gate.open();
  stopping.get();
  EXPECT_EQ(s.get("/health").status, 0);  // the port is closed
  const Reply r = streaming.get();
  ASSERT_EQ(r.status, 200);
  const auto events = r.events();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");
  EXPECT_EQ(json::parse(events[events.size() - 2])["choices"][0]["finish_reason"], "length");
}

TEST(Batching, ForcedShutdownCancelsWithAnErrorEvent) {
  TestServer s;
  s.gate.close();
  const json held = {{"prompt", "Hello world"}, {"max_tokens", 30}, {"ignore_eos", true}, {"stream", true}};
  auto streaming = std::async(std::launch::async, [&] { return s.post("/v1/completions", held); });
  ASSERT_TRUE(s.gate.wait_for_steps(1));
  s.server->cancel_all();
  s.gate.open();
  const Reply r = streaming.get();
  ASSERT_EQ(r.status, 200);
  const auto events = r.events();
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(json::parse(events[events.size() - 2])["error"]["code"], "cancelled");
}

}  // namespace
}  // namespace ernie
