// The generation loop on a fixture model: greedy output equals transformers' (through generate(), not just the
// session), and each way generation ends (eos, max tokens, full context, cancellation) behaves as documented.
#include "engine/generator.h"

#include <gtest/gtest.h>

#include "allocation_counter.h"
#include "core/error.h"
#include "test_support.h"

namespace ernie {
namespace {

using ernie::testing::fixture;
using ernie::testing::read_json;

class Generate : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = Model::load(fixture("tiny-ernie/model"));
    tokenizer_.emplace(Tokenizer::load(fixture("tiny-ernie/model")));
    const auto golden = read_json(fixture("tiny-ernie/ref/golden.json"));
    for (const auto& p : golden["prompts"]) {
      if (p["name"] == "english") {
        prompt_ = p["ids"].get<std::vector<int32_t>>();
        greedy_ = p["greedy"]["new_ids"].get<std::vector<int32_t>>();
      }
    }
    ASSERT_EQ(greedy_.size(), 32u);
  }
  GenerationOptions greedy_options(int max_new_tokens) const {
    GenerationOptions o;
    o.max_new_tokens = max_new_tokens;
    o.sampling.temperature = 0;
    return o;
  }
  std::unique_ptr<Model> model_;
  std::optional<Tokenizer> tokenizer_;
  std::vector<int32_t> prompt_, greedy_;
};

TEST_F(Generate, GreedyMatchesTransformersAndStreamsTheSameText) {
  Session session(*model_, {});
  std::string streamed;
  const auto r = generate(session, *tokenizer_, prompt_, greedy_options(32), [&](int32_t, std::string_view text) {
    streamed += text;
    return true;
  });
  EXPECT_EQ(r.tokens, greedy_);
  EXPECT_EQ(r.finish_reason, FinishReason::Length);
  EXPECT_EQ(r.prompt_tokens, static_cast<int>(prompt_.size()));
  EXPECT_EQ(r.text, tokenizer_->decode(greedy_, /*skip_special_tokens=*/true));
  EXPECT_EQ(streamed, r.text);
  // The last sampled token is returned, not fed: the cache holds the prompt and the first 31 new tokens.
  EXPECT_EQ(session.position(), static_cast<int>(prompt_.size() + 31));
}

TEST_F(Generate, StopsAtAnEndOfSequenceIdUnlessIgnored) {
  auto options = greedy_options(32);
  options.eos_ids = {greedy_[4]};  // pretend the 5th greedy token ends the sequence
  Session session(*model_, {});
  auto r = generate(session, *tokenizer_, prompt_, options);
  EXPECT_EQ(r.tokens, std::vector<int32_t>(greedy_.begin(), greedy_.begin() + 5));
  EXPECT_EQ(r.finish_reason, FinishReason::Stop);

  options.ignore_eos = true;
  session.reset();
  r = generate(session, *tokenizer_, prompt_, options);
  EXPECT_EQ(r.tokens, greedy_);
  EXPECT_EQ(r.finish_reason, FinishReason::Length);
}

// After the prompt, each decoded token (forward pass, sampling, penalties, text streaming, stop-string check) makes
// no heap allocation, with float and quantized weights and with a thread pool.
TEST_F(Generate, DecodingATokenAllocatesNothing) {
  for (const auto dtype : {std::optional<DType>{}, std::optional<DType>{DType::Q4_0}}) {
    const auto model = Model::load(fixture("tiny-ernie/model"), LoadOptions{.dtype = dtype});
    ThreadPool pool(2);
    Session session(*model, SessionOptions{.context_length = 256, .pool = &pool});
    GenerationOptions options;
    options.max_new_tokens = 48;
    options.ignore_eos = true;
    options.stop_strings = {"a stop string that never appears"};
    options.sampling = SamplingParams{.temperature = 0.8f,
                                      .top_k = 40,
                                      .top_p = 0.9f,
                                      .repetition_penalty = 1.1f,
                                      .presence_penalty = 0.2f,
                                      .seed = 3};
    std::vector<long> counts;
    counts.reserve(64);
    const auto r = generate(session, *tokenizer_, prompt_, options, [&](int32_t, std::string_view) {
      counts.push_back(ernie::testing::allocation_count());
      return true;
    });
    ASSERT_EQ(r.tokens.size(), 48u);
    ASSERT_GE(counts.size(), 40u);
    for (size_t i = 1; i < counts.size(); ++i) EXPECT_EQ(counts[i], counts[0]) << "token " << i;
  }
}

TEST_F(Generate, CallbackReturningFalseCancels) {
  Session session(*model_, {});
  int calls = 0;
  const auto r = generate(session, *tokenizer_, prompt_, greedy_options(32),
                          [&](int32_t, std::string_view) { return ++calls < 3; });
  EXPECT_EQ(r.tokens.size(), 3u);
  EXPECT_EQ(r.finish_reason, FinishReason::Stop);
}

TEST_F(Generate, AFullContextEndsAsLength) {
  const int context = static_cast<int>(prompt_.size()) + 4;
  Session session(*model_, {.context_length = context});
  const auto r = generate(session, *tokenizer_, prompt_, greedy_options(32));
  // Positions prompt..context-1 hold 4 fed tokens; the 5th sampled token needs no cache slot.
  EXPECT_EQ(r.tokens, std::vector<int32_t>(greedy_.begin(), greedy_.begin() + 5));
  EXPECT_EQ(r.finish_reason, FinishReason::Length);
  EXPECT_EQ(session.position(), context);
}

TEST_F(Generate, PromptThatDoesNotFitIsAnErrorBeforeAnyWork) {
  Session session(*model_, {.context_length = static_cast<int>(prompt_.size())});
  EXPECT_THROW(generate(session, *tokenizer_, prompt_, greedy_options(4)), Error);
  EXPECT_EQ(session.position(), 0);
  EXPECT_THROW(generate(session, *tokenizer_, {}, greedy_options(4)), Error);
}

TEST_F(Generate, ContinuingFromACachedPrefixEqualsOnePass) {
  // What `ernie chat` relies on: truncating to a shared prefix and feeding the rest gives the same tokens.
  Session session(*model_, {});
  generate(session, *tokenizer_, std::span<const int32_t>(prompt_).first(10), greedy_options(3));
  session.truncate(10);
  const auto r = generate(session, *tokenizer_, std::span<const int32_t>(prompt_).subspan(10), greedy_options(32));
  EXPECT_EQ(r.tokens, greedy_);
}

TEST_F(Generate, DefaultsFollowGenerationConfig) {
  const auto defaults = GenerationDefaults::load(fixture("tiny-ernie/model"));
  const auto o = default_generation_options(model_->config(), defaults);
  // tiny-ernie's generation_config.json: do_sample true, top_p 0.8, temperature 0.8, eos 2.
  EXPECT_FLOAT_EQ(o.sampling.temperature, 0.8f);
  EXPECT_FLOAT_EQ(o.sampling.top_p, 0.8f);
  EXPECT_EQ(o.eos_ids, std::vector<int32_t>{2});
  GenerationDefaults greedy;
  greedy.do_sample = false;
  greedy.temperature = 0.7f;
  EXPECT_TRUE(default_generation_options(model_->config(), greedy).sampling.greedy());
}

}  // namespace
}  // namespace ernie
