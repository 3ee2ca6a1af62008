// The continuous-batching scheduler on a fixture model: a request's output equals generate()'s and does not change
// with what runs beside it (batched decode, chunked prefill, sampling with a seed), the queue bound holds, and
// cancellation frees a slot at the next step. StepGate holds the scheduler where a test needs it; nothing sleeps.
#include "engine/scheduler.h"

#include <gtest/gtest.h>

#include "core/error.h"
#include "step_gate.h"
#include "test_support.h"

namespace ernie {
namespace {

using ernie::testing::eventually;
using ernie::testing::fixture;
using ernie::testing::read_json;
using ernie::testing::StepGate;

struct Outcome {
  std::string text;
  RequestSummary summary;
  bool finished = false;
};

// Reads a request to its end (at most 30 s).
Outcome collect(RequestHandle& handle) {
  Outcome out;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!out.finished && std::chrono::steady_clock::now() < deadline) {
    auto update = handle.wait(std::chrono::milliseconds(100));
    out.text += update.text;
    out.finished = update.finished;
  }
  EXPECT_TRUE(out.finished) << "request did not finish";
  out.summary = handle.summary();
  return out;
}

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = Model::load(fixture("tiny-ernie/model"));
    tokenizer_.emplace(Tokenizer::load(fixture("tiny-ernie/model")));
    const auto golden = read_json(fixture("tiny-ernie/ref/golden.json"));
    for (const auto& p : golden["prompts"]) {
      prompts_.push_back(p["ids"].get<std::vector<int32_t>>());
    }
    ASSERT_GE(prompts_.size(), 3u);
  }
  GenerationOptions options(int max_new_tokens, float temperature = 0, uint64_t seed = 0) const {
    GenerationOptions o;
    o.max_new_tokens = max_new_tokens;
    o.ignore_eos = true;
    o.sampling.temperature = temperature;
    o.sampling.seed = seed;
    return o;
  }
  std::unique_ptr<Scheduler> make(int max_running, int max_waiting, int prefill_chunk = 8, ThreadPool* pool = nullptr,
                                  bool prefix_cache = true, int64_t kv_tokens = 0) {
    SchedulerOptions o;
    o.prefix_cache = prefix_cache;
    o.kv_tokens = kv_tokens;
    o.pool = pool;
    o.max_running = max_running;
    o.max_waiting = max_waiting;
    o.context_length = 512;
    o.prefill_chunk = prefill_chunk;
    o.on_step = gate_.hook();
    return std::make_unique<Scheduler>(*model_, *tokenizer_, o);
  }
  GenerationResult reference(std::span<const int32_t> prompt, const GenerationOptions& o) const {
    Session session(*model_, {.context_length = 512});
    return generate(session, *tokenizer_, prompt, o);
  }

  StepGate gate_;       // declared first: outlives every scheduler a test makes
  ThreadPool pool_{2};  // as `ernie serve --threads 2` runs the steps
  std::unique_ptr<Model> model_;
  std::optional<Tokenizer> tokenizer_;
  std::vector<std::vector<int32_t>> prompts_;
};

TEST_F(SchedulerTest, OneRequestMatchesGenerate) {
  auto scheduler = make(4, 4, /*prefill_chunk=*/128);  // generate() runs prompts in 128-token passes too
  for (const auto& o : {options(24), options(24, 0.8f, 7)}) {
    const auto expected = reference(prompts_[0], o);
    auto handle = scheduler->try_submit(prompts_[0], o);
    ASSERT_TRUE(handle);
    const auto got = collect(*handle);
    EXPECT_EQ(got.text, expected.text);
    EXPECT_EQ(got.summary.completion_tokens, static_cast<int>(expected.tokens.size()));
    EXPECT_EQ(got.summary.prompt_tokens, static_cast<int>(prompts_[0].size()));
    EXPECT_EQ(got.summary.finish_reason, FinishReason::Length);
    EXPECT_FALSE(got.summary.cancelled);
    EXPECT_GT(got.summary.first_token_seconds, 0);
    EXPECT_GE(got.summary.total_seconds, got.summary.first_token_seconds);
  }
}

TEST_F(SchedulerTest, BatchingNeverChangesTheOutput) {
  // Eight requests: different prompts (longer ones prefilled in several chunks while others decode), greedy and
  // seeded sampling, different lengths. Each alone, then all eight in the same batch.
  std::vector<std::vector<int32_t>> prompts;
  std::vector<GenerationOptions> opts;
  for (int i = 0; i < 8; ++i) {
    std::vector<int32_t> p = prompts_[i % prompts_.size()];
    if (i >= static_cast<int>(prompts_.size())) p.insert(p.end(), prompts_[0].begin(), prompts_[0].end());
    prompts.push_back(p);
    opts.push_back(i % 3 == 2 ? options(40 + i, 0.9f, 100 + i) : options(40 + i));
  }
  auto scheduler = make(8, 8, /*prefill_chunk=*/32);
  std::vector<Outcome> alone;
  for (int i = 0; i < 8; ++i) {
    auto handle = scheduler->try_submit(prompts[i], opts[i]);
    ASSERT_TRUE(handle);
    alone.push_back(collect(*handle));
    EXPECT_EQ(alone.back().summary.completion_tokens, 40 + i);
  }

  // A fresh scheduler, idle, so that the gate closes between steps: held after the first request's first step,
  // all eight are in before any is done. It runs its steps on two threads, as the server does: neither the batch nor
  // the threads may change a token.
  scheduler = make(8, 8, /*prefill_chunk=*/32, &pool_);
  gate_.close();
  const int64_t before = gate_.steps();
  std::vector<std::unique_ptr<RequestHandle>> handles;
  handles.push_back(scheduler->try_submit(prompts[0], opts[0]));
  ASSERT_TRUE(gate_.wait_for_steps(before + 1));
  for (int i = 1; i < 8; ++i) handles.push_back(scheduler->try_submit(prompts[i], opts[i]));
  EXPECT_EQ(scheduler->stats().waiting, 7);
  gate_.open();
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(handles[i]);
    const auto batched = collect(*handles[i]);
    EXPECT_EQ(batched.text, alone[i].text) << "request " << i;
    EXPECT_EQ(batched.summary.completion_tokens, alone[i].summary.completion_tokens) << "request " << i;
  }
  EXPECT_EQ(gate_.max_decoded(), 8) << "the eight requests never decoded in one batch";
  EXPECT_GT(gate_.mixed_steps(), 0) << "no step decoded and prefilled together";
  EXPECT_EQ(gate_.max_passes(), 1) << "a step read the weights more than once";
}

// A prompt of at least n tokens made of the fixture's prompts, so that several KV blocks fill.
std::vector<int32_t> long_prompt(const std::vector<std::vector<int32_t>>& prompts, size_t n, size_t rotate = 0) {
  std::vector<int32_t> out;
  for (size_t i = 0; out.size() < n; ++i) {
    const auto& p = prompts[(i + rotate) % prompts.size()];
    out.insert(out.end(), p.begin(), p.end());
  }
  return out;
}

// k prompts prefilling in chunks while m requests decode: every such step is one pass over the weights.
TEST_F(SchedulerTest, AStepWithPrefillAndDecodeMakesOnePass) {
  auto scheduler = make(4, 4, /*prefill_chunk=*/8);
  gate_.close();
  const int64_t before = gate_.steps();
  auto a = scheduler->try_submit(prompts_[0], options(60));
  auto b = scheduler->try_submit(prompts_[1], options(60));
  ASSERT_TRUE(gate_.wait_for_steps(before + 1));
  gate_.allow(6);  // a and b are decoding by now
  ASSERT_TRUE(gate_.wait_for_steps(before + 7));
  auto c = scheduler->try_submit(long_prompt(prompts_, 40), options(8));
  auto d = scheduler->try_submit(long_prompt(prompts_, 40, 1), options(8));
  gate_.open();
  for (auto* h : {a.get(), b.get(), c.get(), d.get()}) EXPECT_FALSE(collect(*h).summary.cancelled);
  EXPECT_GT(gate_.mixed_steps(), 2);
  EXPECT_EQ(gate_.max_passes(), 1);
}

// Greedy output is the same with the prefix cache off, cold, warm, and warm beside other requests; a warm request
// prefills only what the cache lacks; cache_prompt: false opts out.
TEST_F(SchedulerTest, PrefixReuseNeverChangesTheOutput) {
  const auto shared = long_prompt(prompts_, 50);
  auto first = shared, second = shared;
  first.insert(first.end(), prompts_[1].begin(), prompts_[1].end());
  second.insert(second.end(), prompts_[2].begin(), prompts_[2].end());
  auto off = make(4, 4, /*prefill_chunk=*/16, nullptr, /*prefix_cache=*/false);
  const auto expected_first = collect(*off->try_submit(first, options(20))).text;
  const auto expected_second = collect(*off->try_submit(second, options(20))).text;
  EXPECT_EQ(off->stats().kv.prefix_hit_tokens, 0);
  off.reset();

  auto scheduler = make(4, 4, /*prefill_chunk=*/16, &pool_);
  EXPECT_EQ(collect(*scheduler->try_submit(first, options(20))).text, expected_first);  // cold
  EXPECT_EQ(scheduler->stats().kv.prefix_hit_tokens, 0);
  EXPECT_GT(scheduler->stats().kv.cached_blocks, 0);
  EXPECT_EQ(collect(*scheduler->try_submit(first, options(20))).text, expected_first);  // the same prompt, warm
  const int64_t whole = static_cast<int64_t>(first.size() - 1) / kKvBlockPositions * kKvBlockPositions;
  EXPECT_EQ(scheduler->stats().kv.prefix_hit_tokens, whole);

  // Beside two other requests, the second prompt reuses the shared prefix's blocks.
  auto other_a = scheduler->try_submit(long_prompt(prompts_, 30, 2), options(30));
  auto warm = scheduler->try_submit(second, options(20));
  auto other_b = scheduler->try_submit(prompts_[0], options(30, 0.7f, 3));
  EXPECT_EQ(collect(*warm).text, expected_second);
  collect(*other_a);
  collect(*other_b);
  const int64_t shared_blocks = static_cast<int64_t>(shared.size()) / kKvBlockPositions * kKvBlockPositions;
  EXPECT_GE(scheduler->stats().kv.prefix_hit_tokens, whole + shared_blocks);

  const int64_t hits = scheduler->stats().kv.prefix_hit_tokens;
  auto o = options(20);
  o.cache_prompt = false;
  EXPECT_EQ(collect(*scheduler->try_submit(first, o)).text, expected_first);
  EXPECT_EQ(scheduler->stats().kv.prefix_hit_tokens, hits);
}

// A KV cache smaller than the requests together: they wait for blocks, one after another, and each answers as it
// does alone; a prompt the whole cache cannot hold is refused up front.
TEST_F(SchedulerTest, RequestsWaitForKvBlocksRatherThanFail) {
  auto scheduler = make(4, 8, /*prefill_chunk=*/16, nullptr, /*prefix_cache=*/true, /*kv_tokens=*/80);
  EXPECT_EQ(scheduler->stats().kv_capacity, 80);
  std::vector<std::unique_ptr<RequestHandle>> handles;
  std::vector<std::string> expected;
  for (int i = 0; i < 6; ++i) {
    const auto& whole = prompts_[i % prompts_.size()];
    const std::vector<int32_t> p(whole.begin(), whole.begin() + std::min<size_t>(whole.size(), 6 + i));
    expected.push_back(reference(p, options(40)).text);
    handles.push_back(scheduler->try_submit(p, options(40)));  // each needs 40 + 6..11 positions: 3-4 blocks of 5
    ASSERT_TRUE(handles.back());
  }
  for (int i = 0; i < 6; ++i) {
    const auto got = collect(*handles[i]);
    EXPECT_EQ(got.text, expected[i]) << "request " << i;
    EXPECT_TRUE(got.summary.error.empty()) << got.summary.error;
  }
  EXPECT_LE(gate_.max_decoded(), 2) << "more requests ran than their blocks allow";
  EXPECT_MENTIONS(ernie::testing::error_of([&] { scheduler->try_submit(std::vector<int32_t>(80, 5), options(4)); }),
                  "KV cache");
}

TEST_F(SchedulerTest, RefusesBeyondRunningPlusWaiting) {
  auto scheduler = make(1, 1);
  gate_.close();
  const int64_t before = gate_.steps();
  auto first = scheduler->try_submit(prompts_[0], options(200));
  ASSERT_TRUE(first);
  ASSERT_TRUE(gate_.wait_for_steps(before + 1));
  auto second = scheduler->try_submit(prompts_[1], options(4));
  ASSERT_TRUE(second);
  EXPECT_EQ(scheduler->try_submit(prompts_[2], options(4)), nullptr);
  const auto stats = scheduler->stats();
  EXPECT_EQ(stats.running, 1);
  EXPECT_EQ(stats.waiting, 1);
  EXPECT_EQ(stats.kv_capacity, 512);
  EXPECT_EQ(stats.kv_tokens, 8);  // one prefill chunk of the first prompt
  gate_.open();
  EXPECT_EQ(collect(*first).summary.completion_tokens, 200);
  EXPECT_EQ(collect(*second).summary.completion_tokens, 4);
  EXPECT_TRUE(scheduler->try_submit(prompts_[2], options(4)));
}

TEST_F(SchedulerTest, CancellingFreesTheSlotAtTheNextStep) {
  auto scheduler = make(1, 1, /*prefill_chunk=*/128);  // the first step samples the first token
  gate_.close();
  const int64_t before = gate_.steps();
  auto running = scheduler->try_submit(prompts_[0], options(400));
  ASSERT_TRUE(gate_.wait_for_steps(before + 1));
  auto waiting = scheduler->try_submit(prompts_[1], options(5));
  ASSERT_TRUE(waiting);
  running->cancel();
  gate_.allow(1);  // the next step drops the cancelled request and admits the waiting one
  ASSERT_TRUE(gate_.wait_for_steps(before + 2));
  EXPECT_EQ(scheduler->stats().waiting, 0);
  EXPECT_EQ(scheduler->stats().running, 1);
  const auto cancelled = collect(*running);
  EXPECT_TRUE(cancelled.summary.cancelled);
  EXPECT_EQ(cancelled.summary.completion_tokens, 1);  // only the token sampled in the first step
  gate_.open();
  const auto next = collect(*waiting);
  EXPECT_FALSE(next.summary.cancelled);
  EXPECT_EQ(next.summary.completion_tokens, 5);
  EXPECT_EQ(next.text, reference(prompts_[1], options(5)).text);
}

TEST_F(SchedulerTest, CancellingAWaitingRequestRemovesItFromTheQueue) {
  auto scheduler = make(1, 2);
  gate_.close();
  const int64_t before = gate_.steps();
  auto running = scheduler->try_submit(prompts_[0], options(50));
  ASSERT_TRUE(gate_.wait_for_steps(before + 1));
  auto waiting = scheduler->try_submit(prompts_[1], options(5));
  waiting.reset();  // dropping the handle cancels
  gate_.allow(1);
  ASSERT_TRUE(gate_.wait_for_steps(before + 2));
  EXPECT_EQ(scheduler->stats().waiting, 0);
  gate_.open();
  EXPECT_EQ(collect(*running).summary.completion_tokens, 50);
}

TEST_F(SchedulerTest, StopStringsEndOfSequenceAndAFullContextEndAsGenerateDoes) {
  auto scheduler = make(2, 2);
  const auto greedy = reference(prompts_[0], options(24));
  ASSERT_GT(greedy.text.size(), 6u);

  auto o = options(24);
  o.stop_strings = {greedy.text.substr(3, 3)};
  auto got = collect(*scheduler->try_submit(prompts_[0], o));
  EXPECT_EQ(got.text, reference(prompts_[0], o).text);
  EXPECT_EQ(got.summary.finish_reason, FinishReason::Stop);

  o = options(24);
  o.ignore_eos = false;
  o.eos_ids = {greedy.tokens[4]};
  got = collect(*scheduler->try_submit(prompts_[0], o));
  EXPECT_EQ(got.summary.completion_tokens, 5);
  EXPECT_EQ(got.summary.finish_reason, FinishReason::Stop);

  // 512-token context: a prompt of 508 leaves room for 4 fed tokens and a 5th sampled one.
  std::vector<int32_t> long_prompt(508, prompts_[0][1]);
  got = collect(*scheduler->try_submit(long_prompt, options(24)));
  EXPECT_EQ(got.summary.completion_tokens, 5);
  EXPECT_EQ(got.summary.finish_reason, FinishReason::Length);
}

TEST_F(SchedulerTest, InvalidRequestsAreRefusedUpFront) {
  auto scheduler = make(1, 1);
  EXPECT_MENTIONS(ernie::testing::error_of([&] { scheduler->try_submit({}, options(4)); }), "empty");
  EXPECT_MENTIONS(ernie::testing::error_of([&] { scheduler->try_submit({5, 999999}, options(4)); }), "vocabulary");
  EXPECT_MENTIONS(ernie::testing::error_of([&] { scheduler->try_submit(std::vector<int32_t>(512, 5), options(4)); }),
                  "context");
  EXPECT_MENTIONS(ernie::testing::error_of([&] { scheduler->try_submit({5}, options(0)); }), "max_new_tokens");
  EXPECT_MENTIONS(ernie::testing::error_of([&] { scheduler->try_submit({5}, options(4, -1.0f)); }), "temperature");
  EXPECT_EQ(scheduler->stats().waiting + scheduler->stats().running, 0);
}

TEST_F(SchedulerTest, ShuttingDownEndsEveryRequest) {
  auto scheduler = make(1, 2);
  gate_.close();
  const int64_t before = gate_.steps();
  auto running = scheduler->try_submit(prompts_[0], options(400));
  ASSERT_TRUE(gate_.wait_for_steps(before + 1));
  auto waiting = scheduler->try_submit(prompts_[1], options(400));
  scheduler->cancel_all();
  gate_.open();
  const auto a = collect(*running);
  const auto b = collect(*waiting);
  EXPECT_TRUE(a.summary.cancelled);
  EXPECT_TRUE(b.summary.cancelled);
  EXPECT_EQ(b.summary.completion_tokens, 0);

  // Destroying the scheduler ends what is still in it, so no reader waits forever.
  auto late = scheduler->try_submit(prompts_[0], options(400));
  scheduler.reset();
  const auto c = collect(*late);
  EXPECT_TRUE(c.summary.cancelled || c.summary.completion_tokens == 400);
}

}  // namespace
}  // namespace ernie
