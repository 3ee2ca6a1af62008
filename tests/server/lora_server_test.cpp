// LoRA adapters through the server: /v1/models lists them, a request picks one with "model", requests for different
// adapters batch in one pass and answer as they do alone, their prompt caches never mix, adapters load and unload at
// run time (behind the API key), one unloaded mid-request finishes that request, and /metrics counts per adapter.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <thread>

#include "lora_support.h"
#include "test_server.h"

namespace ernie {
namespace {

using ernie::testing::eventually;
using ernie::testing::json;
using ernie::testing::Reply;
using ernie::testing::TempDir;
using ernie::testing::TestAdapterSpec;
using ernie::testing::TestServer;
using ernie::testing::write_test_adapter;

// A prompt of several KV blocks, so that prefix reuse has blocks to share.
const std::string kLongPrompt =
    "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog. The quick brown fox "
    "jumps over the lazy dog, again and again.";

class LoraServer : public ::testing::Test {
 protected:
  void SetUp() override {
    const ModelConfig config = ModelConfig::load(model_dir);
    write_test_adapter(dir.path() / "alpha", config, TestAdapterSpec{.rank = 4, .seed = 21, .magnitude = 0.5f});
    write_test_adapter(
        dir.path() / "beta", config,
        TestAdapterSpec{.rank = 8, .projections = {"q_proj", "v_proj", "down_proj"}, .seed = 22, .magnitude = 0.5f});
    write_test_adapter(dir.path() / "gamma", config, TestAdapterSpec{.rank = 2, .seed = 23, .magnitude = 0.5f});
    write_test_adapter(dir.path() / "too-big", config, TestAdapterSpec{.rank = 32, .seed = 24});
  }

  std::unique_ptr<TestServer> start(server::ServerOptions options = ernie::testing::test_options(),
                                    bool with_adapters = true) {
    options.scheduler.max_lora_rank = 16;
    auto s = std::make_unique<TestServer>(options, /*serve=*/false);
    const auto model = Model::load(model_dir);
    std::vector<LoraRegistry::Entry> adapters;
    if (with_adapters) {
      adapters.push_back({"alpha", LoraAdapter::load(dir.path() / "alpha", model->config()), 1.0f});
      adapters.push_back({"beta", LoraAdapter::load(dir.path() / "beta", model->config()), 0.8f});
    }
    s->server->serve_model({.pool = std::make_unique<ThreadPool>(2),
                            .model = Model::load(model_dir),
                            .tokenizer = std::make_unique<Tokenizer>(Tokenizer::load(model_dir)),
                            .defaults = GenerationDefaults::load(model_dir),
                            .id = "tiny-ernie",
                            .adapters = std::move(adapters)});
    return s;
  }

  static json completion(const std::string& model, const std::string& prompt = kLongPrompt, int tokens = 16) {
    json r = {{"prompt", prompt}, {"max_tokens", tokens}, {"temperature", 0}, {"ignore_eos", true}};
    if (!model.empty()) r["model"] = model;
    return r;
  }
  static std::string text(const Reply& r) { return r.body_json()["choices"][0]["text"]; }

  const std::filesystem::path model_dir = ernie::testing::fixture("tiny-ernie/model");
  TempDir dir;
};

TEST_F(LoraServer, ModelsListsTheAdaptersAndARequestPicksOne) {
  auto s = start();
  const json models = s->get("/v1/models").body_json();
  ASSERT_EQ(models["data"].size(), 3u) << models.dump();
  EXPECT_EQ(models["data"][0]["id"], "tiny-ernie");
  EXPECT_EQ(models["data"][1]["id"], "alpha");
  EXPECT_EQ(models["data"][1]["parent"], "tiny-ernie");
  EXPECT_EQ(models["data"][2]["id"], "beta");

  const Reply base = s->post("/v1/completions", completion("tiny-ernie"));
  const Reply none = s->post("/v1/completions", completion(""));
  const Reply alpha = s->post("/v1/completions", completion("alpha"));
  ASSERT_EQ(alpha.status, 200) << alpha.body;
  EXPECT_EQ(alpha.body_json()["model"], "alpha");
  EXPECT_EQ(text(base), text(none));
  EXPECT_NE(text(alpha), text(base)) << "the adapter changed nothing";

  const Reply unknown = s->post("/v1/completions", completion("delta"));
  EXPECT_EQ(unknown.status, 404);
  EXPECT_MENTIONS(unknown.body, "'alpha'");
  const Reply chat =
      s->post("/v1/chat/completions",
              json{{"model", "beta"}, {"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"max_tokens", 4}});
  EXPECT_EQ(chat.status, 200) << chat.body;
  EXPECT_EQ(chat.body_json()["model"], "beta");
}

// Requests for the base model and two adapters, held until they all run together, answer exactly as each does
// alone; and an adapter's cached prompt is never reused by a request for another one (or the base).
TEST_F(LoraServer, MixedAdaptersBatchAndAnswerAsAlone) {
  const std::vector<std::string> models = {"tiny-ernie", "alpha", "beta", "alpha"};
  std::vector<std::string> alone;
  for (const std::string& m : models) {
    auto s = start();  // a fresh server each: cold caches
    const Reply r = s->post("/v1/completions", completion(m));
    ASSERT_EQ(r.status, 200) << r.body;
    alone.push_back(text(r));
  }
  auto s = start();
  s->gate.close();
  std::vector<std::future<Reply>> replies;
  replies.push_back(std::async(std::launch::async, [&] { return s->post("/v1/completions", completion(models[0])); }));
  ASSERT_TRUE(s->gate.wait_for_steps(1));
  for (size_t i = 1; i < models.size(); ++i) {
    replies.push_back(
        std::async(std::launch::async, [&, i] { return s->post("/v1/completions", completion(models[i])); }));
  }
  ASSERT_TRUE(eventually([&] { return s->server->scheduler_stats()->waiting == 3; }));
  s->gate.open();
  for (size_t i = 0; i < models.size(); ++i) {
    const Reply r = replies[i].get();
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(text(r), alone[i]) << models[i];
  }
  EXPECT_GE(s->gate.max_decoded(), 3);
  // Warm now: the base's and each adapter's prompt blocks are cached. Each answers as it did cold.
  for (size_t i = 0; i < models.size(); ++i)
    EXPECT_EQ(text(s->post("/v1/completions", completion(models[i]))), alone[i]);
  EXPECT_GT(s->server->scheduler_stats()->kv.prefix_hit_tokens, 0);
}

TEST_F(LoraServer, LoadAndUnloadAtRunTime) {
  auto options = ernie::testing::test_options();
  options.api_key = "secret";
  auto s = start(options, /*with_adapters=*/false);
  const httplib::Headers auth = {{"Authorization", "Bearer secret"}};
  const json load = {{"lora_name", "gamma"}, {"lora_path", (dir.path() / "gamma").string()}};
  EXPECT_EQ(s->post("/v1/load_lora_adapter", load).status, 401);
  EXPECT_EQ(s->post("/v1/completions", completion("gamma"), auth).status, 404);
  const Reply loaded = s->post("/v1/load_lora_adapter", load, auth);
  ASSERT_EQ(loaded.status, 200) << loaded.body;
  EXPECT_EQ(s->get("/v1/models", auth).body_json()["data"].size(), 2u);
  const Reply gamma = s->post("/v1/completions", completion("gamma"), auth);
  ASSERT_EQ(gamma.status, 200) << gamma.body;
  EXPECT_NE(text(gamma), text(s->post("/v1/completions", completion(""), auth)));

  const Reply again = s->post("/v1/load_lora_adapter", load, auth);
  EXPECT_EQ(again.status, 400);
  EXPECT_MENTIONS(again.body, "already loaded");
  const Reply big = s->post("/v1/load_lora_adapter",
                            json{{"lora_name", "big"}, {"lora_path", (dir.path() / "too-big").string()}}, auth);
  EXPECT_EQ(big.status, 400);
  EXPECT_MENTIONS(big.body, "max-lora-rank");
  const Reply missing = s->post("/v1/load_lora_adapter",
                                json{{"lora_name", "x"}, {"lora_path", (dir.path() / "nowhere").string()}}, auth);
  EXPECT_EQ(missing.status, 400);
  EXPECT_MENTIONS(missing.body, "nowhere");
  EXPECT_EQ(s->post("/v1/load_lora_adapter", json{{"lora_name", "tiny-ernie"}, {"lora_path", load["lora_path"]}}, auth)
                .status,
            400);
  EXPECT_EQ(s->post("/v1/load_lora_adapter", std::string("{\"lora_name\": 5}"), auth).status, 400);
  EXPECT_EQ(s->post("/v1/load_lora_adapter", std::string("not json"), auth).status, 400);

  EXPECT_EQ(s->post("/v1/unload_lora_adapter", json{{"lora_name", "gamma"}}).status, 401);
  EXPECT_EQ(s->post("/v1/unload_lora_adapter", json{{"lora_name", "gamma"}}, auth).status, 200);
  EXPECT_EQ(s->post("/v1/unload_lora_adapter", json{{"lora_name", "gamma"}}, auth).status, 404);
  EXPECT_EQ(s->post("/v1/completions", completion("gamma"), auth).status, 404);
  // Loaded again under the same name, it answers as before (its old cached blocks are never taken for its own).
  ASSERT_EQ(s->post("/v1/load_lora_adapter", load, auth).status, 200);
  EXPECT_EQ(text(s->post("/v1/completions", completion("gamma"), auth)), text(gamma));
}

// An adapter unloaded while a request runs with it stays alive for that request, which finishes as it would have.
TEST_F(LoraServer, UnloadingAnAdapterInUseLetsItsRequestFinish) {
  auto s = start();
  const std::string expected = text(s->post("/v1/completions", completion("beta", kLongPrompt, 24)));
  s->gate.close();
  auto running =
      std::async(std::launch::async, [&] { return s->post("/v1/completions", completion("beta", kLongPrompt, 24)); });
  // Once submitted (waiting or running) it holds the adapter; the closed gate keeps it from finishing. (Counting
  // steps instead raced: the first request's last step can end after its reply, and count as this one's.)
  ASSERT_TRUE(eventually([&] {
    const auto stats = s->server->scheduler_stats();
    return stats->running + stats->waiting == 1;
  }));
  EXPECT_EQ(s->post("/v1/unload_lora_adapter", json{{"lora_name", "beta"}}).status, 200);
  EXPECT_EQ(s->post("/v1/completions", completion("beta")).status, 404);
  s->gate.open();
  const Reply r = running.get();
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(text(r), expected);
}

// Loading and unloading race with requests naming the adapter: each request either finds it (and runs to the end
// with it) or gets 404; nothing crashes, hangs or mixes up (TSan and ASan run this too).
TEST_F(LoraServer, LoadAndUnloadRaceWithRequests) {
  auto s = start();
  const json load = {{"lora_name", "gamma"}, {"lora_path", (dir.path() / "gamma").string()}};
  ASSERT_EQ(s->post("/v1/load_lora_adapter", load).status, 200);
  const std::string expected = text(s->post("/v1/completions", completion("gamma", "Hello", 6)));
  std::atomic<bool> done{false};
  std::thread churn([&] {
    for (int i = 0; i < 20; ++i) {
      EXPECT_EQ(s->post("/v1/unload_lora_adapter", json{{"lora_name", "gamma"}}).status, 200);
      EXPECT_EQ(s->post("/v1/load_lora_adapter", load).status, 200);
    }
    done = true;
  });
  std::vector<std::future<std::vector<Reply>>> clients;
  for (int c = 0; c < 3; ++c) {
    clients.push_back(std::async(std::launch::async, [&] {
      std::vector<Reply> replies;
      while (!done) replies.push_back(s->post("/v1/completions", completion("gamma", "Hello", 6)));
      return replies;
    }));
  }
  churn.join();
  int answered = 0;
  for (auto& c : clients) {
    for (const Reply& r : c.get()) {
      ASSERT_TRUE(r.status == 200 || r.status == 404) << r.status << " " << r.body;
      if (r.status == 200) {
        EXPECT_EQ(text(r), expected);
        ++answered;
      }
    }
  }
  EXPECT_EQ(text(s->post("/v1/completions", completion("gamma", "Hello", 6))), expected);
  std::printf("%d requests answered while the adapter was reloaded 20 times\n", answered);
}

TEST_F(LoraServer, MetricsCountPerAdapter) {
  auto s = start();
  ASSERT_EQ(s->post("/v1/completions", completion("alpha", "Hello", 5)).status, 200);
  ASSERT_EQ(s->post("/v1/completions", completion("alpha", "Hello", 7)).status, 200);
  ASSERT_EQ(s->post("/v1/completions", completion("", "Hello", 3)).status, 200);
  EXPECT_EQ(s->metric(R"(ernie_lora_requests_total{adapter="alpha"})"), 2);
  EXPECT_EQ(s->metric(R"(ernie_lora_generation_tokens_total{adapter="alpha"})"), 12);
  EXPECT_GT(s->metric(R"(ernie_lora_prompt_tokens_total{adapter="alpha"})"), 0);
  EXPECT_EQ(s->metric(R"(ernie_lora_requests_total{adapter="beta"})"), -1);
  EXPECT_EQ(s->metric("ernie_generation_tokens_total"), 15);
}

}  // namespace
}  // namespace ernie
