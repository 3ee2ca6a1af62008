// forward() over a step's mixed chunks: every sequence gets exactly (bit for bit) the logits it computes alone, with
// its prefix cold or attached from the cache, and a bad chunk leaves all of them untouched. Also: the thread count
// never changes a result, and profiling counts every pass.
#include <gtest/gtest.h>

#include <optional>
#include <vector>

#include "core/error.h"
#include "model/session.h"
#include "test_support.h"

namespace ernie {
namespace {

using ernie::testing::fixture;

std::vector<int32_t> ramp(int n, int first, int step) {
  std::vector<int32_t> ids(n);
  for (int i = 0; i < n; ++i) ids[i] = first + step * i;
  return ids;
}

// The last logits of each prompt run alone in a Session (one chunk each).
std::vector<float> alone(const Model& model, std::span<const int32_t> prompt, std::optional<DType> kv) {
  Session session(model, SessionOptions{.context_length = 64, .kv_dtype = kv});
  const auto logits = session.forward(prompt);
  return {logits.begin(), logits.end()};
}

class OneStep : public ::testing::TestWithParam<std::optional<DType>> {};

// One step holding three decoding sequences and two prompt chunks (one asking for every token's logits) gives every
// row what its sequence computes alone, bit for bit, in exactly one pass.
TEST_P(OneStep, MixedPrefillAndDecodeMatchEachSequenceAlone) {
  const auto model = Model::load(fixture("tiny-ernie-bias/model"), LoadOptions{.dtype = GetParam()});
  const int vocab = model->config().vocab_size;
  const DType kv = default_kv_dtype(*model);
  const std::vector<std::vector<int32_t>> history = {{5, 17, 300}, {42}, {7, 7, 7, 7, 7, 900, 12}};
  const std::vector<int32_t> next = {11, 2000, 3};
  const auto long_prompt = ramp(20, 100, 37), all_prompt = ramp(5, 9, 101);

  KvCache cache(model->config(), KvCacheOptions{.blocks = 32, .dtype = kv});
  Workspace ws(*model, 64, nullptr, 128);
  std::vector<Sequence> seqs;
  for (int i = 0; i < 5; ++i) seqs.emplace_back(64);
  for (int i = 0; i < 3; ++i) {  // the decoding sequences' histories, one step each
    ASSERT_TRUE(cache.reserve(seqs[i], static_cast<int>(history[i].size()) + 1));
    const Chunk prefill{&seqs[i], history[i], Logits::kNone};
    forward(*model, cache, ws, std::span(&prefill, 1), {});
  }
  ASSERT_TRUE(cache.reserve(seqs[3], 20));
  ASSERT_TRUE(cache.reserve(seqs[4], 5));
  const std::vector<Chunk> step = {{&seqs[0], std::span(&next[0], 1)},
                                   {&seqs[3], long_prompt},
                                   {&seqs[1], std::span(&next[1], 1)},
                                   {&seqs[4], all_prompt, Logits::kAll},
                                   {&seqs[2], std::span(&next[2], 1)}};
  ASSERT_EQ(logit_rows(step), 4 + 5);
  std::vector<float> logits(logit_rows(step) * vocab);
  const int64_t passes = ws.passes;
  forward(*model, cache, ws, step, logits);
  EXPECT_EQ(ws.passes, passes + 1);

  const auto row = [&](int r) {
    return std::vector<float>(logits.begin() + r * vocab, logits.begin() + (r + 1) * vocab);
  };
  for (int i = 0; i < 3; ++i) {
    std::vector<int32_t> whole = history[i];
    whole.push_back(next[i]);
    EXPECT_EQ(seqs[i].position(), static_cast<int>(whole.size()));
    const int r = i == 0 ? 0 : i == 1 ? 2 : 8;
    EXPECT_EQ(row(r), alone(*model, whole, kv)) << "decoding sequence " << i;
  }
  EXPECT_EQ(row(1), alone(*model, long_prompt, kv)) << "prompt chunk";
  for (int t = 0; t < 5; ++t) {
    EXPECT_EQ(row(3 + t), alone(*model, std::span(all_prompt).first(t + 1), kv)) << "all-logits chunk, token " << t;
  }
}

// A sequence that attaches a cached prefix computes what it would from scratch, and decoding on from it stays equal:
// on the fixture (head_dim 16) and on the demo model (head_dim 64, which a q8_0 cache's 32-value blocks need).
TEST_P(OneStep, AttachedPrefixGivesTheColdResult) {
  for (const std::filesystem::path& dir :
       {fixture("tiny-ernie-bias/model"), std::filesystem::path(ERNIE_DEMO_MODEL_DIR)}) {
    const auto model = Model::load(dir, LoadOptions{.dtype = GetParam()});
    const int vocab = model->config().vocab_size;
    for (DType kv : {DType::F32, DType::F16, DType::Q8_0}) {
      if (kv == DType::Q8_0 && model->config().head_dim % 32 != 0) continue;
      SCOPED_TRACE(dir.string() + ", KV " + std::string(dtype_name(kv)));
      KvCache cache(model->config(), KvCacheOptions{.blocks = 16, .dtype = kv});
      Workspace ws(*model, 64, nullptr, 128);
      const auto prompt = ramp(40, 3, 53);
      Sequence cold(64), warm(64);
      std::vector<float> cold_logits(vocab), warm_logits(vocab);
      ASSERT_TRUE(cache.reserve(cold, 41));
      const Chunk first{&cold, prompt};
      forward(*model, cache, ws, std::span(&first, 1), cold_logits);
      cache.publish(cold, prompt);

      EXPECT_EQ(cache.attach_prefix(warm, prompt), 32);
      EXPECT_EQ(warm.blocks()[0], cold.blocks()[0]);  // shared, not copied
      ASSERT_TRUE(cache.reserve(warm, 41));
      const Chunk rest{&warm, std::span(prompt).subspan(32)};
      forward(*model, cache, ws, std::span(&rest, 1), warm_logits);
      EXPECT_EQ(warm_logits, cold_logits);

      const int32_t token = 77;
      const std::vector<Chunk> both = {{&cold, std::span(&token, 1)}, {&warm, std::span(&token, 1)}};
      std::vector<float> next(2 * vocab);
      forward(*model, cache, ws, both, next);
      EXPECT_TRUE(std::equal(next.begin(), next.begin() + vocab, next.begin() + vocab));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, OneStep, ::testing::Values(std::nullopt, DType::F16, DType::Q8_0, DType::Q4_0),
                         [](const auto& info) {
                           return info.param ? std::string(dtype_name(*info.param)) : std::string("AsStored");
                         });

// Any bad chunk refuses the whole step before anything runs: no sequence moves, no key is written.
TEST(OneStepErrors, BadInputLeavesEverySequenceUnchanged) {
  const auto model = Model::load(fixture("tiny-ernie/model"));
  const int vocab = model->config().vocab_size;
  KvCache cache(model->config(), KvCacheOptions{.blocks = 8, .dtype = DType::F32});
  Workspace ws(*model, 8, nullptr, 128);
  Sequence a(16), b(16), c(16);
  ASSERT_TRUE(cache.reserve(a, 4));
  ASSERT_TRUE(cache.reserve(b, 16));
  const auto prefill = [&](Sequence& s, int n) {
    const auto ids = ramp(n, 1, 1);
    const Chunk chunk{&s, ids, Logits::kNone};
    forward(*model, cache, ws, std::span(&chunk, 1), {});
  };
  prefill(a, 3);
  prefill(b, 8);
  prefill(b, 8);  // b is full: 16 of 16
  const int32_t ok = 4, bad = vocab, next = 5;
  std::vector<float> logits(2 * vocab);
  const auto refused = [&](std::vector<Chunk> step, size_t rows) {
    std::vector<float> out(rows * vocab);
    EXPECT_THROW(forward(*model, cache, ws, step, out), Error);
    EXPECT_EQ(a.position(), 3);
    EXPECT_EQ(b.position(), 16);
  };
  refused({{&a, std::span(&ok, 1)}, {&b, std::span(&next, 1)}}, 2);  // b's context is full
  refused({{&a, std::span(&bad, 1)}}, 1);                            // outside the vocabulary
  refused({{&a, std::span(&ok, 1)}, {&a, std::span(&next, 1)}}, 2);  // a twice
  refused({{&a, {}}}, 1);                                            // nothing to run
  refused({{&c, std::span(&ok, 1)}}, 1);                             // c has no blocks reserved
  refused({{&a, std::span(&ok, 1)}}, 2);                             // logits of the wrong size
  const auto nine = ramp(9, 1, 1);
  ASSERT_TRUE(cache.reserve(c, 9));
  refused({{&c, nine}}, 1);  // more rows than the workspace holds
  forward(*model, cache, ws, std::vector<Chunk>{{&a, std::span(&ok, 1)}}, std::span(logits).first(vocab));
  EXPECT_EQ(a.position(), 4);
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

// With more threads than a decoding sequence's kv heads, its attention is split along the keys (partitions of
// kAttentionPartition) and merged: the logits are the bits one thread computes.
TEST(Threads, SplitAttentionOverALongContextChangesNoLogit) {
  const auto model = Model::load(fixture("tiny-ernie/model"));
  ASSERT_LT(model->config().num_key_value_heads, 4);
  const auto prompt = ramp(3 * kAttentionPartition + 40, 11, 3);  // ids below the fixture's 3008
  std::vector<std::vector<float>> results;
  for (int threads : {1, 4}) {
    ThreadPool pool(threads);
    Session session(*model, SessionOptions{.context_length = 1024, .pool = &pool});
    session.forward(prompt);
    std::vector<float> all;
    for (int32_t t : {5, 6, 7}) {
      const auto logits = session.forward(std::span(&t, 1));
      all.insert(all.end(), logits.begin(), logits.end());
    }
    results.push_back(all);
  }
  EXPECT_EQ(results[0], results[1]);
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
