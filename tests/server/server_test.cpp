// The server's routes over real HTTP on a free loopback port: every endpoint's happy path (streaming and not) against
// the generation loop's own output, the errors a client can cause, the API key, and /health while loading.
#include <gtest/gtest.h>

#include "engine/chat.h"
#include "server/api.h"
#include "test_server.h"

namespace ernie {
namespace {

using ernie::testing::fixture;
using ernie::testing::json;
using ernie::testing::Reply;
using ernie::testing::TestServer;

// What generate() produces for `prompt` greedily: the server must answer the same.
GenerationResult reference(const std::vector<int32_t>& prompt, int max_tokens, bool chat) {
  const auto dir = fixture("tiny-ernie/model");
  const auto model = Model::load(dir);
  const auto tokenizer = Tokenizer::load(dir);
  GenerationOptions o = default_generation_options(model->config(), GenerationDefaults::load(dir));
  if (chat) add_chat_end_ids(tokenizer, o.eos_ids);
  o.max_new_tokens = max_tokens;
  o.sampling.temperature = 0;
  Session session(*model, {.context_length = 256});
  return generate(session, tokenizer, prompt, o);
}

std::vector<int32_t> encode(const std::string& text) {
  return Tokenizer::load(fixture("tiny-ernie/model")).encode(text);
}

std::vector<int32_t> encode_chat(const std::string& user_text) {
  const auto tokenizer = Tokenizer::load(fixture("tiny-ernie/model"));
  return tokenizer.encode(render_chat(tokenizer, json::array({{{"role", "user"}, {"content", user_text}}}), true));
}

// The text of a stream's events, checking the envelope of every one and that it ends with [DONE].
std::string streamed_text(const Reply& r, const std::string& object, std::string* finish = nullptr) {
  const auto events = r.events();
  EXPECT_GE(events.size(), 2u);
  if (events.empty()) return "";
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const json chunk = json::parse(events[i]);
    EXPECT_EQ(chunk["object"], object);
    if (chunk["choices"].empty()) continue;  // the usage chunk
    const json& choice = chunk["choices"][0];
    text += object == "text_completion" ? choice["text"].get<std::string>() : choice["delta"].value("content", "");
    if (finish && !choice["finish_reason"].is_null()) *finish = choice["finish_reason"];
  }
  return text;
}

TEST(Server, HealthSaysLoadingUntilTheModelIsServed) {
  TestServer s(ernie::testing::test_options(), /*serve=*/false);
  Reply r = s.get("/health");
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body_json(), json({{"status", "loading"}}));
  r = s.post("/v1/completions", json{{"prompt", "hi"}});
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body_json()["error"]["code"], "model_loading");
  EXPECT_EQ(s.get("/metrics").status, 200);

  s.serve_model();
  r = s.get("/health");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body_json(), json({{"status", "ok"}}));
}

TEST(Server, ModelsListsTheServedModel) {
  TestServer s;
  const Reply r = s.get("/v1/models");
  ASSERT_EQ(r.status, 200);
  const json body = r.body_json();
  EXPECT_EQ(body["object"], "list");
  ASSERT_EQ(body["data"].size(), 1u);
  EXPECT_EQ(body["data"][0]["id"], "tiny-ernie");
  EXPECT_EQ(body["data"][0]["object"], "model");
  EXPECT_EQ(body["data"][0]["max_model_len"], 256);
}

TEST(Server, CompletionsAnswerWhatGenerateProduces) {
  TestServer s;
  const auto expected = reference(encode("Hello world"), 12, false);
  const json request = {{"model", "tiny-ernie"}, {"prompt", "Hello world"}, {"max_tokens", 12}, {"temperature", 0}};

  Reply r = s.post("/v1/completions", request);
  ASSERT_EQ(r.status, 200) << r.body;
  const json body = r.body_json();
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["model"], "tiny-ernie");
  EXPECT_EQ(body["id"].get<std::string>().rfind("cmpl-", 0), 0u);
  EXPECT_EQ(body["choices"][0]["text"], expected.text);
  EXPECT_EQ(body["choices"][0]["finish_reason"], finish_reason_name(expected.finish_reason));
  EXPECT_EQ(body["usage"]["prompt_tokens"], expected.prompt_tokens);
  EXPECT_EQ(body["usage"]["completion_tokens"], expected.tokens.size());
  EXPECT_EQ(body["usage"]["total_tokens"], expected.prompt_tokens + expected.tokens.size());

  json streaming = request;
  streaming["stream"] = true;
  streaming["stream_options"] = {{"include_usage", true}};
  r = s.post("/v1/completions", streaming);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.header("Content-Type"), "text/event-stream");
  std::string finish;
  EXPECT_EQ(streamed_text(r, "text_completion", &finish), expected.text);
  EXPECT_EQ(finish, finish_reason_name(expected.finish_reason));
  const auto events = r.events();
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(json::parse(events[events.size() - 2])["usage"]["completion_tokens"], expected.tokens.size());

  // Token ids as the prompt give the same answer.
  json ids = request;
  ids["prompt"] = encode("Hello world");
  EXPECT_EQ(s.post("/v1/completions", ids).body_json()["choices"][0]["text"], expected.text);
}

TEST(Server, ChatCompletionsGoThroughTheChatTemplate) {
  TestServer s;
  const auto expected = reference(encode_chat("What is 2+2?"), 16, true);
  const json request = {
      {"messages", {{{"role", "user"}, {"content", "What is 2+2?"}}}}, {"max_tokens", 16}, {"temperature", 0}};
  Reply r = s.post("/v1/chat/completions", request);
  ASSERT_EQ(r.status, 200) << r.body;
  const json body = r.body_json();
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_EQ(body["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(body["choices"][0]["message"]["content"], expected.text);
  EXPECT_EQ(body["usage"]["prompt_tokens"], expected.prompt_tokens);
  EXPECT_EQ(body["usage"]["completion_tokens"], expected.tokens.size());

  json streaming = request;
  streaming["stream"] = true;
  r = s.post("/v1/chat/completions", streaming);
  ASSERT_EQ(r.status, 200);
  const auto events = r.events();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(json::parse(events[0])["choices"][0]["delta"]["role"], "assistant");
  std::string finish;
  EXPECT_EQ(streamed_text(r, "chat.completion.chunk", &finish), expected.text);
  EXPECT_EQ(finish, finish_reason_name(expected.finish_reason));

  // Text parts are joined into one content string.
  json parts = request;
  parts["messages"][0]["content"] = {{{"type", "text"}, {"text", "What is "}}, {{"type", "text"}, {"text", "2+2?"}}};
  EXPECT_EQ(s.post("/v1/chat/completions", parts).body_json()["choices"][0]["message"]["content"], expected.text);
}

TEST(Server, StopStringsAndLengthEndAsOpenAISays) {
  TestServer s;
  const auto expected = reference(encode("Hello world"), 24, false);
  ASSERT_GT(expected.text.size(), 8u);
  const std::string stop = expected.text.substr(4, 3);
  const json body = s.post("/v1/completions",
                           json{{"prompt", "Hello world"}, {"max_tokens", 24}, {"temperature", 0}, {"stop", {stop}}})
                        .body_json();
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(body["choices"][0]["text"], expected.text.substr(0, expected.text.find(stop)));

  const json length =
      s.post("/v1/completions",
             json{{"prompt", "Hello world"}, {"max_tokens", 3}, {"temperature", 0}, {"ignore_eos", true}})
          .body_json();
  EXPECT_EQ(length["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(length["usage"]["completion_tokens"], 3);
}

TEST(Server, PredictTakesTextFromTheQueryOrTheBody) {
  TestServer s;
  const auto expected = reference(encode_chat("Tell me a story"), 10, true);
  Reply r = s.post("/predict?text=Tell%20me%20a%20story&max_tokens=10&temperature=0", std::string());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body_json(), json({{"text", expected.text}}));

  r = s.post("/predict", json{{"text", "Tell me a story"}, {"max_tokens", 10}, {"temperature", 0}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body_json(), json({{"text", expected.text}}));

  // Sampling with a seed repeats; generation_config.json's defaults (sampling) apply when nothing is given.
  const json seeded = {{"text", "Tell me a story"}, {"max_tokens", 10}, {"seed", 42}, {"top_p", 0.9}};
  EXPECT_EQ(s.post("/predict", seeded).body, s.post("/predict", seeded).body);
  EXPECT_EQ(s.post("/predict?text=hi", std::string()).status, 200);
}

struct BadRequest {
  const char* name;
  std::string path;
  std::string body;
  int status;
  std::string code;
  std::string mentions;
};

TEST(Server, BadRequestsGetClearOpenAIStyleErrors) {
  TestServer s;
  const std::string long_prompt(3000, 'x');  // far more than the 256-token context
  const std::vector<BadRequest> cases = {
      {"malformed JSON", "/v1/completions", "{\"prompt\": ", 400, "invalid_json", "not valid JSON"},
      {"not an object", "/v1/completions", "[1, 2]", 400, "invalid_value", "JSON object"},
      {"missing prompt", "/v1/completions", R"({"max_tokens": 4})", 400, "missing_field", "prompt"},
      {"missing messages", "/v1/chat/completions", R"({"model": "tiny-ernie"})", 400, "missing_field", "messages"},
      {"missing text", "/predict", R"({"max_tokens": 4})", 400, "missing_field", "text"},
      {"prompt of wrong type", "/v1/completions", R"({"prompt": {"a": 1}})", 400, "invalid_type", "prompt"},
      {"max_tokens of wrong type", "/v1/completions", R"({"prompt": "hi", "max_tokens": "8"})", 400, "invalid_type",
       "max_tokens"},
      {"temperature of wrong type", "/v1/chat/completions",
       R"({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"})", 400, "invalid_type",
       "temperature"},
      {"stream of wrong type", "/v1/completions", R"({"prompt": "hi", "stream": 1})", 400, "invalid_type", "stream"},
      {"message without role", "/v1/chat/completions", R"({"messages": [{"content": "hi"}]})", 400, "invalid_type",
       "role"},
      {"unknown role", "/v1/chat/completions", R"({"messages": [{"role": "robot", "content": "hi"}]})", 400,
       "invalid_value", "robot"},
      {"empty messages", "/v1/chat/completions", R"({"messages": []})", 400, "invalid_type", "messages"},
      {"max_tokens zero", "/v1/completions", R"({"prompt": "hi", "max_tokens": 0})", 400, "invalid_value",
       "at least 1"},
      {"max_tokens negative", "/predict", R"({"text": "hi", "max_tokens": -5})", 400, "invalid_value", "at least 1"},
      {"max_tokens beyond the context", "/v1/completions", R"({"prompt": "hi", "max_tokens": 100000})", 400,
       "context_length_exceeded", "256"},
      {"prompt longer than the context", "/v1/completions", json{{"prompt", long_prompt}}.dump(), 400,
       "context_length_exceeded", "256"},
      {"chat longer than the context", "/v1/chat/completions",
       json{{"messages", {{{"role", "user"}, {"content", long_prompt}}}}}.dump(), 400, "context_length_exceeded",
       "256"},
      {"temperature out of range", "/v1/completions", R"({"prompt": "hi", "temperature": 5})", 400, "invalid_value",
       "temperature"},
      {"top_p zero", "/v1/completions", R"({"prompt": "hi", "top_p": 0})", 400, "invalid_value", "top_p"},
      {"n above the limit", "/v1/completions", R"({"prompt": "hi", "n": 17})", 400, "invalid_value", "[1, 16]"},
      {"n zero", "/v1/completions", R"({"prompt": "hi", "n": 0})", 400, "invalid_value", "'n'"},
      {"best_of", "/v1/completions", R"({"prompt": "hi", "best_of": 2})", 400, "invalid_value", "best_of"},
      {"logprobs above 20", "/v1/completions", R"({"prompt": "hi", "logprobs": 25})", 400, "invalid_value",
       "logprobs"},
      {"unsupported response format", "/v1/chat/completions",
       R"({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "xml"}})", 400,
       "invalid_value", "xml"},
      {"several prompts", "/v1/completions", R"({"prompt": ["a", "b"]})", 400, "invalid_value", "one prompt"},
      {"token id outside the vocabulary", "/v1/completions", R"({"prompt": [5, 999999]})", 400, "invalid_value",
       "vocabulary"},
      {"invalid UTF-8 in the body", "/v1/completions", "{\"prompt\": \"caf\xC3\x28\"}", 400, "invalid_utf8", "UTF-8"},
      {"invalid UTF-8 in the query", "/predict?text=caf%C3%28", "", 400, "invalid_utf8", "UTF-8"},
      {"unknown model", "/v1/completions", R"({"model": "gpt-4", "prompt": "hi"})", 404, "model_not_found", "gpt-4"},
      {"unknown route", "/v1/embeddings", R"({"input": "hi"})", 404, "unknown_route", "/v1/embeddings"},
      {"body over the size limit", "/v1/completions", json{{"prompt", std::string(100 * 1024, 'a')}}.dump(), 413,
       "payload_too_large", "larger"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const Reply r = s.post(c.path, c.body);
    EXPECT_EQ(r.status, c.status) << r.body;
    const json error = r.body_json()["error"];
    ASSERT_TRUE(error.is_object()) << r.body;
    EXPECT_EQ(error["code"], c.code);
    EXPECT_EQ(error["type"], "invalid_request_error");
    EXPECT_MENTIONS(error["message"].get<std::string>(), c.mentions);
    EXPECT_EQ(r.header("Content-Type"), "application/json");
  }
  // Wrong method on a known route.
  const Reply r = s.get("/v1/completions");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.body_json()["error"]["code"], "method_not_allowed");
  // Still serving after all that.
  EXPECT_EQ(s.post("/v1/completions", json{{"prompt", "hi"}, {"max_tokens", 2}}).status, 200);
}

TEST(Server, ApiKeyGuardsEveryRouteButHealth) {
  auto options = ernie::testing::test_options();
  options.api_key = "sesame";
  TestServer s(options);
  EXPECT_EQ(s.get("/health").status, 200);
  for (const std::string path : {"/v1/models", "/metrics"}) {
    SCOPED_TRACE(path);
    Reply r = s.get(path);
    EXPECT_EQ(r.status, 401);
    EXPECT_EQ(r.body_json()["error"]["code"], "invalid_api_key");
    EXPECT_MENTIONS(r.body_json()["error"]["message"].get<std::string>(), "Authorization: Bearer");
    EXPECT_EQ(s.get(path, {{"Authorization", "Bearer sesam"}}).status, 401);
    EXPECT_EQ(s.get(path, {{"Authorization", "sesame"}}).status, 401);
    EXPECT_EQ(s.get(path, {{"Authorization", "Bearer sesame"}}).status, 200);
  }
  const json request = {{"prompt", "hi"}, {"max_tokens", 2}};
  EXPECT_EQ(s.post("/v1/completions", request).status, 401);
  EXPECT_EQ(s.post("/predict?text=hi", std::string()).status, 401);
  EXPECT_EQ(s.post("/v1/completions", request, {{"Authorization", "Bearer sesame"}}).status, 200);
  EXPECT_EQ(s.get("/nowhere").status, 401);  // no key, no hint of which routes exist
}

}  // namespace
}  // namespace ernie
