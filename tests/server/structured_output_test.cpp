// Structured output, logit_bias and logprobs over real HTTP on the fixture model. Its weights are random, so only the
// constraint can make an answer valid: every answer that ends by "stop" is checked against its schema by Ajv
// (tests/server/schema_node, an independent validator), across schemas, seeds, samplers, both endpoints and
// streaming. Logprobs are compared with log-softmax of the model's own logits, computed here in-process.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "core/utf8.h"
#include "model/session.h"
#include "test_server.h"

namespace ernie {
namespace {

using ernie::testing::fixture;
using ernie::testing::json;
using ernie::testing::Reply;
using ernie::testing::TestServer;

const std::filesystem::path kValidatorDir = std::filesystem::path(ERNIE_NODE_CLIENT_DIR) / "../schema_node";

// The content of a reply, streamed or not, and its finish reason.
std::pair<std::string, std::string> answer(const Reply& r, bool chat, bool stream) {
  if (!stream) {
    const json body = r.body_json();
    const json& choice = body["choices"][0];
    return {chat ? choice["message"]["content"].get<std::string>() : choice["text"].get<std::string>(),
            choice["finish_reason"].get<std::string>()};
  }
  std::string text, finish;
  for (const std::string& e : r.events()) {
    if (e == "[DONE]") break;
    const json chunk = json::parse(e);
    if (chunk["choices"].empty()) continue;
    const json& choice = chunk["choices"][0];
    if (chat && choice["delta"].contains("content")) text += choice["delta"]["content"].get<std::string>();
    if (!chat) text += choice["text"].get<std::string>();
    if (!choice["finish_reason"].is_null()) finish = choice["finish_reason"];
  }
  return {text, finish};
}

json schema_request(bool chat, const json& schema, uint64_t seed, bool stream) {
  json request = {{"max_tokens", 120},
                  {"seed", seed},
                  {"stream", stream},
                  {"temperature", seed % 3 == 0 ? 0.0 : 1.0},
                  {"top_p", seed % 2 ? 0.9 : 1.0},
                  {"response_format", {{"type", "json_schema"}, {"json_schema", {{"name", "t"}, {"schema", schema}}}}}};
  if (chat) {
    request["messages"] = json::array({{{"role", "user"}, {"content", "Reply with JSON."}}});
  } else {
    request["prompt"] = "JSON:";
  }
  return request;
}

TEST(StructuredOutput, EveryFinishedAnswerValidates) {
  const bool ci = std::getenv("CI") != nullptr;
  if (std::system("command -v node >/dev/null 2>&1") != 0 ||
      !std::filesystem::exists(kValidatorDir / "node_modules/ajv")) {
    if (ci) FAIL() << "Node.js or Ajv is missing in " << kValidatorDir << " (scripts/setup.sh installs both)";
    GTEST_SKIP() << "Node.js or Ajv is missing in " << kValidatorDir << " (run scripts/setup.sh)";
  }
  const std::vector<json> schemas = {
      json::parse(R"({"type":"object","properties":{"name":{"type":"string","maxLength":12},
          "age":{"type":"integer","minimum":0,"maximum":150},"email":{"type":"string","format":"email"}},
          "required":["name","age"],"additionalProperties":false})"),
      json::parse(R"({"type":"array","items":{"type":"integer","minimum":-5,"maximum":5},"minItems":1,"maxItems":4})"),
      json::parse(R"({"enum":["positive","negative","neutral"]})"),
      json::parse(R"({"type":"object","properties":{"when":{"type":"string","format":"date"},
          "at":{"type":"string","format":"time"},"id":{"type":"string","format":"uuid"}},
          "required":["when","at","id"]})"),
      json::parse(R"({"type":"object","properties":{"code":{"type":"string","pattern":"^[A-Z]{3}-[0-9]{2,4}$"},
          "ok":{"type":["boolean","null"]}},"required":["code","ok"]})"),
      json::parse(R"({"$defs":{"leaf":{"type":"object","properties":{"v":{"type":"integer","minimum":1,"maximum":9}},
          "required":["v"],"additionalProperties":false}},"type":"object",
          "properties":{"items":{"type":"array","items":{"$ref":"#/$defs/leaf"},"maxItems":3}},"required":["items"]})"),
      json::parse(R"({"anyOf":[{"type":"object","properties":{"kind":{"const":"a"},"n":{"type":"number"}},
          "required":["kind","n"]},{"type":"string","minLength":1,"maxLength":5}]})"),
      json::parse(R"({"type":"object","properties":{"label":{"enum":["spam","ham"]},
          "score":{"type":"integer","exclusiveMinimum":0,"exclusiveMaximum":100}},"required":["label","score"],
          "additionalProperties":false})"),
  };
  TestServer s;
  json cases = json::array();
  int stopped = 0, total = 0;
  for (size_t i = 0; i < schemas.size(); ++i) {
    for (uint64_t seed = 0; seed < 4; ++seed) {
      const bool chat = (i + seed) % 2 == 0, stream = seed >= 2;
      const Reply r =
          s.post(chat ? "/v1/chat/completions" : "/v1/completions", schema_request(chat, schemas[i], seed, stream));
      ASSERT_EQ(r.status, 200) << r.body;
      const auto [text, finish] = answer(r, chat, stream);
      ++total;
      if (finish != "stop") continue;  // "length": cut off mid-value, as OpenAI's
      ++stopped;
      cases.push_back({{"schema", schemas[i]}, {"text", text}});
    }
  }
  EXPECT_GE(stopped, total / 2) << "most answers should complete within 120 tokens";
  const auto file =
      std::filesystem::temp_directory_path() / ("ernie-schema-cases-" + std::to_string(::getpid()) + ".json");
  std::ofstream(file) << cases.dump();
  const std::string command = "node " + (kValidatorDir / "validate.mjs").string() + " " + file.string() + " 2>&1";
  std::string output;
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  char buffer[4096];
  while (size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) output.append(buffer, n);
  const int status = ::pclose(pipe);
  std::filesystem::remove(file);
  EXPECT_EQ(status, 0) << output;
  EXPECT_NE(output.find("valid " + std::to_string(stopped)), std::string::npos) << output;
}

TEST(StructuredOutput, JsonObjectGrammarAndCutOffs) {
  TestServer s;
  for (uint64_t seed = 0; seed < 4; ++seed) {
    const Reply r = s.post("/v1/chat/completions", json{{"messages", {{{"role", "user"}, {"content", "hi"}}}},
                                                        {"seed", seed},
                                                        {"max_tokens", 150},
                                                        {"response_format", {{"type", "json_object"}}}});
    ASSERT_EQ(r.status, 200) << r.body;
    const auto [text, finish] = answer(r, true, false);
    if (finish == "stop") {
      EXPECT_TRUE(json::parse(text, nullptr, false).is_object()) << text;
    }
  }
  // llama-server's GBNF field.
  for (uint64_t seed = 0; seed < 4; ++seed) {
    const Reply r = s.post("/v1/completions", json{{"prompt", "Yes or no?"},
                                                   {"seed", seed},
                                                   {"max_tokens", 10},
                                                   {"grammar", "root ::= (\"yes\" | \"no\") \"!\"{1,2}\n"}});
    ASSERT_EQ(r.status, 200) << r.body;
    const auto [text, finish] = answer(r, false, false);
    EXPECT_EQ(finish, "stop");
    EXPECT_TRUE(text == "yes!" || text == "no!" || text == "yes!!" || text == "no!!") << text;
  }
  // Out of tokens mid-object: "length", as OpenAI answers.
  const Reply cut =
      s.post("/v1/completions",
             json{{"prompt", "x"},
                  {"max_tokens", 2},
                  {"temperature", 0},
                  {"response_format",
                   {{"type", "json_schema"}, {"json_schema", {{"schema", json::parse(R"({"type":"object","properties":{
                                      "a_long_property_name":{"type":"string"}},"required":["a_long_property_name"]})")}}}}}});
  ASSERT_EQ(cut.status, 200) << cut.body;
  EXPECT_EQ(answer(cut, false, false).second, "length");
}

TEST(StructuredOutput, UnsupportedKeywordsAndBadGrammarsAre400s) {
  TestServer s;
  const auto refuse = [&](const json& format, const std::string& keyword) {
    const Reply r = s.post("/v1/chat/completions",
                           json{{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"response_format", format}});
    EXPECT_EQ(r.status, 400) << r.body;
    const json error = r.body_json()["error"];
    EXPECT_NE(error["message"].get<std::string>().find(keyword), std::string::npos) << r.body;
    return error;
  };
  const auto schema = [](const char* text) {
    return json{{"type", "json_schema"}, {"json_schema", {{"name", "x"}, {"schema", json::parse(text)}}}};
  };
  json e = refuse(schema(R"({"type":"array","uniqueItems":true})"), "uniqueItems");
  EXPECT_EQ(e["code"], "unsupported_schema_keyword");
  EXPECT_EQ(e["param"], "response_format.json_schema.schema");
  refuse(schema(R"({"type":"object","properties":{"a":{"type":"string","format":"hostname"}}})"), "hostname");
  refuse(schema(R"({"type":"object","minProperties":1})"), "minProperties");
  refuse(schema(R"({"type":"string","pattern":"(?<=a)b"})"), "pattern");
  refuse(json{{"type", "json_schema"}}, "json_schema");
  refuse(json{{"type", "xml"}}, "xml");
  const Reply bad = s.post("/v1/completions", json{{"prompt", "x"}, {"grammar", "root ::= root \"a\"\n"}});
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.body_json()["error"]["code"], "invalid_grammar") << bad.body;
  const Reply both =
      s.post("/v1/completions",
             json{{"prompt", "x"}, {"grammar", "root ::= \"a\"\n"}, {"response_format", {{"type", "json_object"}}}});
  EXPECT_EQ(both.status, 400) << both.body;
}

// A constrained stream next to unconstrained ones, in the same batches: each gets what it would alone.
TEST(StructuredOutput, ConstrainedBesideUnconstrainedInOneBatch) {
  TestServer s;
  const json constrained = {
      {"prompt", "x"},
      {"max_tokens", 40},
      {"temperature", 0},
      {"stream", true},
      {"response_format", {{"type", "json_schema"}, {"json_schema", {{"schema", {{"enum", {"alpha", "beta"}}}}}}}}};
  const json free = {{"prompt", "x"}, {"max_tokens", 24}, {"temperature", 0}, {"ignore_eos", true}};
  const auto alone_constrained = answer(s.post("/v1/completions", constrained), false, true);
  const auto alone_free = answer(s.post("/v1/completions", free), false, false);
  std::vector<std::pair<std::string, std::string>> results(4);
  std::vector<std::thread> clients;
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back([&, i] {
      results[i] = i % 2 ? answer(s.post("/v1/completions", free), false, false)
                         : answer(s.post("/v1/completions", constrained), false, true);
    });
  }
  for (auto& c : clients) c.join();
  for (int i = 0; i < 4; ++i) EXPECT_EQ(results[i], i % 2 ? alone_free : alone_constrained) << i;
  EXPECT_TRUE(alone_constrained.first == "\"alpha\"" || alone_constrained.first == "\"beta\"")
      << alone_constrained.first;
}

// log-softmax of the model's logits, the chosen token's and the top ones, for each generated position.
TEST(Logprobs, AreLogSoftmaxOfTheModelsLogits) {
  TestServer s;
  const std::vector<int32_t> prompt = {5, 17, 300, 42, 7};
  const Reply r = s.post("/v1/completions", json{{"prompt", prompt},
                                                 {"max_tokens", 6},
                                                 {"temperature", 0},
                                                 {"logprobs", 3},
                                                 {"ignore_eos", true},
                                                 {"logit_bias", {{"11", 5}}}});
  ASSERT_EQ(r.status, 200) << r.body;
  const json lp = r.body_json()["choices"][0]["logprobs"];
  ASSERT_EQ(lp["token_logprobs"].size(), 6u) << r.body;
  const auto dir = fixture("tiny-ernie/model");
  const auto model = Model::load(dir);
  const auto tokenizer = Tokenizer::load(dir);
  Session session(*model, {});
  std::vector<int32_t> context = prompt;
  std::span<const float> logits = session.forward(prompt);
  size_t offset = 0;
  for (size_t i = 0; i < 6; ++i) {
    double top = -INFINITY, sum = 0;
    for (const float l : logits) top = std::max<double>(top, l);
    for (const float l : logits) sum += std::exp(l - top);
    const double log_z = top + std::log(sum);
    // Greedy over the biased logits picks the token; its logprob is the unbiased model's.
    int32_t chosen = 0;
    for (int32_t t = 1; t < static_cast<int32_t>(logits.size()); ++t) {
      if (logits[t] + (t == 11 ? 5.0f : 0.0f) > logits[chosen] + (chosen == 11 ? 5.0f : 0.0f)) chosen = t;
    }
    const std::string chosen_text = tokenizer.token_bytes(chosen);
    if (utf8::is_valid(chosen_text)) {
      EXPECT_EQ(lp["tokens"][i].get<std::string>(), chosen_text) << i;
    }
    EXPECT_NEAR(lp["token_logprobs"][i].get<double>(), logits[chosen] - log_z, 1e-4) << i;
    // The top 3 are the 3 largest logits (the bias of token 11 does not count: logprobs are the model's), up to
    // float ties between threads' sums: each listed one is a token of that text and logprob, at or above the third.
    std::vector<float> sorted(logits.begin(), logits.end());
    std::nth_element(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<>());
    const double third = sorted[2] - log_z;
    const json& tops = lp["top_logprobs"][i];
    EXPECT_EQ(tops.size(), 3u) << tops.dump();
    for (const auto& [text, value] : tops.items()) {
      EXPECT_GE(value.get<double>(), third - 1e-4) << text;
      bool found = false;
      for (int32_t t = 0; t < static_cast<int32_t>(logits.size()) && !found; ++t) {
        const std::string bytes = tokenizer.token_bytes(t);
        found = (!utf8::is_valid(bytes) || bytes == text) && std::abs(logits[t] - log_z - value.get<double>()) < 1e-4;
      }
      EXPECT_TRUE(found) << text << " " << value;
    }
    EXPECT_EQ(lp["text_offset"][i].get<size_t>(), offset);
    offset += chosen_text.size();
    context.push_back(chosen);
    logits = session.forward(std::span(&context.back(), 1));
  }
}

TEST(Logprobs, ChatFormAndBadValues) {
  TestServer s;
  for (uint64_t seed = 0; seed < 8; ++seed) {
    const Reply r = s.post("/v1/chat/completions", json{{"messages", {{{"role", "user"}, {"content", "hi"}}}},
                                                        {"max_tokens", 4},
                                                        {"logprobs", true},
                                                        {"top_logprobs", 2},
                                                        {"stream", true},
                                                        {"ignore_eos", true},
                                                        {"seed", seed},
                                                        {"temperature", 1.5}});
    ASSERT_EQ(r.status, 200) << r.body;
    size_t entries = 0;
    for (const std::string& e : r.events()) {
      if (e == "[DONE]") break;
      const json chunk = json::parse(e);
      if (chunk["choices"].empty() || chunk["choices"][0]["logprobs"].is_null()) continue;
      for (const json& c : chunk["choices"][0]["logprobs"]["content"]) {
        ++entries;
        EXPECT_LE(c["logprob"].get<double>(), 0.0);
        EXPECT_EQ(c["top_logprobs"].size(), 2u);
        // "bytes" are the token's own; "token" is their text, a byte-fallback piece (one byte of a character) U+FFFD.
        const auto raw = c["bytes"].get<std::vector<uint8_t>>();
        const std::string bytes(raw.begin(), raw.end());
        EXPECT_EQ(c["token"].get<std::string>(),
                  utf8::is_valid(bytes) ? bytes : std::string(utf8::kReplacementCharacter))
            << c.dump();
        EXPECT_GE(c["top_logprobs"][0]["logprob"].get<double>(), c["logprob"].get<double>() - 1e-6);
      }
    }
    EXPECT_EQ(entries, 4u) << r.body;
  }
  const auto status = [&](const json& extra) {
    json request = {{"messages", {{{"role", "user"}, {"content", "hi"}}}}};
    request.update(extra);
    return s.post("/v1/chat/completions", request).status;
  };
  EXPECT_EQ(status({{"top_logprobs", 2}}), 400);  // without logprobs: true
  EXPECT_EQ(status({{"logprobs", true}, {"top_logprobs", 21}}), 400);
  EXPECT_EQ(status({{"logit_bias", {{"-1", 3}}}}), 400);
  EXPECT_EQ(status({{"logit_bias", {{"5", 101}}}}), 400);
  EXPECT_EQ(status({{"logit_bias", {{"abc", 1}}}}), 400);
  EXPECT_EQ(status({{"logit_bias", {{"5", -100}}}}), 200);
}

// logit_bias of -100 on every token but one makes that token the answer, greedy or sampled.
TEST(LogitBias, SteersTheSampler) {
  TestServer s;
  json bias = json::object();
  bias["300"] = 100;
  for (uint64_t seed = 0; seed < 3; ++seed) {
    const Reply r = s.post("/v1/completions", json{{"prompt", "x"},
                                                   {"max_tokens", 3},
                                                   {"seed", seed},
                                                   {"ignore_eos", true},
                                                   {"logit_bias", bias},
                                                   {"logprobs", 0}});
    ASSERT_EQ(r.status, 200) << r.body;
    const json lp = r.body_json()["choices"][0]["logprobs"];
    const std::string expected = Tokenizer::load(fixture("tiny-ernie/model")).token_bytes(300);
    for (const json& t : lp["tokens"]) EXPECT_EQ(t.get<std::string>(), expected);
  }
}

}  // namespace
}  // namespace ernie

namespace ernie {
namespace {

// n choices: each its own seed (seed + i), the same request gives the same choices, streamed or not, and the copies
// take the prompt's KV blocks from the first instead of computing them again.
TEST(Choices, NCopiesAreReproducibleAndShareThePrompt) {
  TestServer s;
  std::vector<int32_t> prompt;
  for (int i = 0; i < 40; ++i) prompt.push_back(100 + i * 7);  // 2 full blocks of 16 and a partial one
  const json request = {{"prompt", prompt},  {"n", 3}, {"seed", 42}, {"max_tokens", 12}, {"temperature", 1.0},
                        {"ignore_eos", true}};
  const double hits_before = s.metric("ernie_prefix_cache_hits_total");
  const Reply first = s.post("/v1/completions", request);
  ASSERT_EQ(first.status, 200) << first.body;
  const double hits_after = s.metric("ernie_prefix_cache_hits_total");
  EXPECT_EQ(hits_after - hits_before, 2 * 32) << "each copy should attach the two full blocks of the prompt";
  const json body = first.body_json();
  ASSERT_EQ(body["choices"].size(), 3u);
  std::vector<std::string> texts;
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(body["choices"][i]["index"], i);
    EXPECT_EQ(body["choices"][i]["finish_reason"], "length");
    texts.push_back(body["choices"][i]["text"]);
  }
  EXPECT_EQ(body["usage"]["prompt_tokens"], 40);
  EXPECT_EQ(body["usage"]["completion_tokens"], 36);
  EXPECT_TRUE(texts[0] != texts[1] || texts[1] != texts[2]) << "three seeds gave three identical answers";
  // The same request again, and streamed: the same three answers.
  EXPECT_EQ(s.post("/v1/completions", request).body_json()["choices"], body["choices"]);
  json streamed = request;
  streamed["stream"] = true;
  const Reply r = s.post("/v1/completions", streamed);
  ASSERT_EQ(r.status, 200) << r.body;
  std::vector<std::string> parts(3);
  std::vector<int> finishes(3, 0);
  for (const std::string& e : r.events()) {
    if (e == "[DONE]") break;
    const json chunk = json::parse(e);
    for (const json& c : chunk["choices"]) {
      const int index = c["index"];
      ASSERT_TRUE(index >= 0 && index < 3) << e;
      parts[index] += c["text"].get<std::string>();
      if (!c["finish_reason"].is_null()) ++finishes[index];
    }
  }
  EXPECT_EQ(parts, texts);
  EXPECT_EQ(finishes, std::vector<int>({1, 1, 1}));
  // The copy of seed 42 + 1 is what n = 1 with seed 43 gives.
  json single = request;
  single["n"] = 1;
  single["seed"] = 43;
  EXPECT_EQ(s.post("/v1/completions", single).body_json()["choices"][0]["text"], texts[1]);
}

// Chat choices stream their role first, each with its index; more copies than the server can ever hold are a 503
// (busy), not a wait.
TEST(Choices, ChatStreamsEachChoiceAndCapacityIsAllOrNothing) {
  TestServer s;
  const Reply r = s.post("/v1/chat/completions", json{{"messages", {{{"role", "user"}, {"content", "hi"}}}},
                                                      {"n", 2},
                                                      {"max_tokens", 5},
                                                      {"stream", true},
                                                      {"seed", 1},
                                                      {"stream_options", {{"include_usage", true}}}});
  ASSERT_EQ(r.status, 200) << r.body;
  std::vector<int> roles(2, 0);
  int usage_chunks = 0;
  for (const std::string& e : r.events()) {
    if (e == "[DONE]") break;
    const json chunk = json::parse(e);
    if (chunk.contains("usage")) {
      ++usage_chunks;
      EXPECT_EQ(chunk["usage"]["completion_tokens"].get<int>() > 0, true);
    }
    for (const json& c : chunk["choices"]) {
      if (c["delta"].contains("role")) ++roles[c["index"].get<int>()];
    }
  }
  EXPECT_EQ(roles, std::vector<int>({1, 1}));
  EXPECT_EQ(usage_chunks, 1);
  // test_options(): 4 running + 4 waiting; 9 copies can never fit at once.
  const Reply busy = s.post("/v1/completions", json{{"prompt", "x"}, {"n", 9}, {"max_tokens", 2}});
  EXPECT_EQ(busy.status, 503) << busy.body;
}

}  // namespace
}  // namespace ernie
