// decode_batch: several sessions at different positions decoded in one pass give each session exactly (bit for
// bit) the logits its own forward() would, and a bad input in any of them leaves all of them untouched. Also: the
// thread count never changes a result.
#include <gtest/gtest.h>

#include <optional>
#include <vector>

#include "core/error.h"
#include "model/model.h"
#include "test_support.h"

namespace ernie {
namespace {

using ernie::testing::fixture;

class DecodeBatch : public ::testing::TestWithParam<std::optional<DType>> {};

TEST_P(DecodeBatch, MatchesOneSessionAtATimeExactly) {
  const auto model = Model::load(fixture("tiny-ernie-bias/model"), LoadOptions{.dtype = GetParam()});
  const std::vector<std::vector<int32_t>> prompts = {{5, 17, 300}, {42}, {7, 7, 7, 7, 7, 900, 12}};
  const std::vector<int32_t> next = {11, 2000, 3};
  const int vocab = model->config().vocab_size;

  std::vector<std::unique_ptr<Session>> alone, batched;
  std::vector<Session*> batch;
  std::vector<std::vector<float>> expected;
  for (size_t i = 0; i < prompts.size(); ++i) {
    alone.push_back(std::make_unique<Session>(*model, SessionOptions{.context_length = 64}));
    alone.back()->forward(prompts[i]);
    const auto logits = alone.back()->forward(std::span(&next[i], 1));
    expected.emplace_back(logits.begin(), logits.end());

    batched.push_back(std::make_unique<Session>(*model, SessionOptions{.context_length = 64}));
    batched.back()->forward(prompts[i]);
    batch.push_back(batched.back().get());
  }
  std::vector<float> logits(prompts.size() * vocab);
  decode_batch(batch, next, logits);
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(batch[i]->position(), static_cast<int>(prompts[i].size()) + 1);
    for (int v = 0; v < vocab; ++v) ASSERT_EQ(logits[i * vocab + v], expected[i][v]) << "session " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, DecodeBatch, ::testing::Values(std::nullopt, DType::F16, DType::Q8_0, DType::Q4_0),
                         [](const auto& info) {
                           return info.param ? std::string(dtype_name(*info.param)) : std::string("AsStored");
                         });

TEST(DecodeBatchErrors, BadInputLeavesEverySessionUnchanged) {
  const auto model = Model::load(fixture("tiny-ernie/model"));
  Session a(*model, SessionOptions{.context_length = 8});
  Session b(*model, SessionOptions{.context_length = 8});
  a.forward(std::vector<int32_t>{1, 2, 3});
  b.forward(std::vector<int32_t>{1, 2, 3, 4, 5, 6, 7, 8});  // full
  std::vector<Session*> batch = {&a, &b};
  std::vector<float> logits(2 * model->config().vocab_size);
  EXPECT_THROW(decode_batch(batch, std::vector<int32_t>{4, 5}, logits), Error);
  EXPECT_EQ(a.position(), 3);
  EXPECT_EQ(b.position(), 8);
  EXPECT_THROW(decode_batch(batch, std::vector<int32_t>{4}, logits), Error);
}

// Prefill (a 20-token prompt in chunks of 8) and decode with 1, 2 and 3 threads give identical logits.
TEST(Threads, CountNeverChangesLogits) {
  for (auto dtype : {std::optional<DType>{}, std::optional<DType>{DType::Q4_0}}) {
    const auto model = Model::load(fixture("tiny-ernie-bias/model"), LoadOptions{.dtype = dtype});
    std::vector<int32_t> prompt(20);
    for (int i = 0; i < 20; ++i) prompt[i] = 100 + 37 * i;
    std::vector<std::vector<float>> results;
    for (int threads : {1, 2, 3}) {
      ThreadPool pool(threads);
      Session session(*model, SessionOptions{.context_length = 64, .max_batch_tokens = 8, .pool = &pool});
      session.forward(prompt);
      const int32_t next = 7;
      const auto logits = session.forward(std::span(&next, 1));
      results.emplace_back(logits.begin(), logits.end());
    }
    EXPECT_EQ(results[0], results[1]);
    EXPECT_EQ(results[0], results[2]);
  }
}

// A profile counts every pass (a 20-token prompt in chunks of 8 is three) and charges time to the ops that ran, and
// profiling changes no logit.
TEST(Profile, TimesEveryPassWithoutChangingIt) {
  const auto model = Model::load(fixture("tiny-ernie-bias/model"));
  std::vector<int32_t> prompt(20);
  for (int i = 0; i < 20; ++i) prompt[i] = 100 + 37 * i;
  Session plain(*model, SessionOptions{.context_length = 64, .max_batch_tokens = 8});
  const auto expected = plain.forward(prompt);
  const std::vector<float> expected_logits(expected.begin(), expected.end());

  Session profiled(*model, SessionOptions{.context_length = 64, .max_batch_tokens = 8});
  ForwardProfile profile;
  profiled.set_profile(&profile);
  const auto got = profiled.forward(prompt);
  EXPECT_EQ(std::vector<float>(got.begin(), got.end()), expected_logits);
  EXPECT_EQ(profile.passes, 3);
  // Every op runs in every pass, the embedding and the LM head once, the others once per layer; each took time.
  const int layers = model->config().num_hidden_layers;
  for (int op = 0; op < ForwardProfile::kOpCount; ++op) {
    const bool once = op == ForwardProfile::kEmbedding || op == ForwardProfile::kLmHead;
    EXPECT_EQ(profile.calls[op], once ? 3 : 3 * layers) << ForwardProfile::kNames[op];
    EXPECT_GT(profile.seconds[op], 0) << ForwardProfile::kNames[op];
  }

  const ForwardProfile before = profile;
  profiled.set_profile(nullptr);
  const int32_t next = 7;
  profiled.forward(std::span(&next, 1));
  EXPECT_EQ(profile.passes, before.passes);
  EXPECT_EQ(profile.seconds, before.seconds);
  EXPECT_EQ(profile.calls, before.calls);
}

}  // namespace
}  // namespace ernie
