#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <limits>
#include <new>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "allocation_counter.h"
#include "core/error.h"

namespace ernie {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

SamplingParams params_with(float temperature = 1.0f) {
  SamplingParams p;
  p.temperature = temperature;
  return p;
}

int32_t sample_copy(Sampler& sampler, const std::vector<float>& logits) {
  std::vector<float> scratch = logits;
  return sampler.sample(scratch);
}

// Counts of each token over `draws` samples (each from a fresh copy of the logits).
std::vector<int> histogram(Sampler& sampler, const std::vector<float>& logits, int draws) {
  std::vector<int> counts(logits.size(), 0);
  std::vector<float> scratch(logits.size());
  for (int i = 0; i < draws; ++i) {
    std::copy(logits.begin(), logits.end(), scratch.begin());
    const int32_t token = sampler.sample(scratch);
    EXPECT_GE(token, 0);
    EXPECT_LT(token, static_cast<int32_t>(logits.size()));
    ++counts[static_cast<size_t>(token)];
  }
  return counts;
}

// Softmax of the given logits / temperature, computed directly from the definition in double.
std::vector<double> softmax(const std::vector<double>& logits, double temperature = 1.0) {
  double max = -std::numeric_limits<double>::infinity();
  for (double l : logits) max = std::max(max, l);
  std::vector<double> p(logits.size());
  double sum = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) sum += p[i] = std::exp((logits[i] - max) / temperature);
  for (double& v : p) v /= sum;
  return p;
}

// Each empirical frequency lies within 5 standard errors of its expected probability; zero-probability
// tokens must never appear.
void expect_frequencies(const std::vector<int>& counts, const std::vector<double>& expected) {
  ASSERT_EQ(counts.size(), expected.size());
  const double n = std::accumulate(counts.begin(), counts.end(), 0.0);
  for (size_t i = 0; i < counts.size(); ++i) {
    if (expected[i] == 0.0) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " should be excluded";
      continue;
    }
    const double sigma = std::sqrt(expected[i] * (1.0 - expected[i]) / n);
    EXPECT_NEAR(counts[i] / n, expected[i], 5.0 * sigma + 1e-12) << "token " << i;
  }
}

std::vector<float> log_probs(const std::vector<double>& probs) {
  std::vector<float> out;
  for (double p : probs) out.push_back(static_cast<float>(std::log(p)));
  return out;
}

// Which tokens appear at least once over many draws.
std::set<int32_t> support(Sampler& sampler, const std::vector<float>& logits, int draws = 4000) {
  const auto counts = histogram(sampler, logits, draws);
  std::set<int32_t> seen;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (counts[i] > 0) seen.insert(static_cast<int32_t>(i));
  }
  return seen;
}

// ---------------------------------------------------------------------------------------------- validate

TEST(SamplingParams, DefaultsAndEdgeValuesAreValid) {
  EXPECT_NO_THROW(SamplingParams{}.validate());
  SamplingParams p;
  p.temperature = 0.0f;
  p.top_k = 1;
  p.top_p = 1.0f;
  p.min_p = 1.0f;
  p.repetition_penalty = 0.01f;
  p.presence_penalty = -2.0f;
  p.frequency_penalty = 2.0f;
  EXPECT_NO_THROW(p.validate());
  p.min_p = 0.0f;
  p.top_p = 1e-6f;
  EXPECT_NO_THROW(p.validate());
}

TEST(SamplingParams, RejectsOutOfRangeValues) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  auto rejects = [](auto mutate, const char* field) {
    SamplingParams p;
    mutate(p);
    try {
      p.validate();
      ADD_FAILURE() << field << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
    }
  };
  rejects([](SamplingParams& p) { p.temperature = -0.1f; }, "temperature");
  rejects([&](SamplingParams& p) { p.temperature = nan; }, "temperature");
  rejects([](SamplingParams& p) { p.temperature = kInf; }, "temperature");
  rejects([](SamplingParams& p) { p.top_k = -1; }, "top_k");
  rejects([](SamplingParams& p) { p.top_p = 0.0f; }, "top_p");
  rejects([](SamplingParams& p) { p.top_p = -0.5f; }, "top_p");
  rejects([](SamplingParams& p) { p.top_p = 1.01f; }, "top_p");
  rejects([&](SamplingParams& p) { p.top_p = nan; }, "top_p");
  rejects([](SamplingParams& p) { p.min_p = -0.01f; }, "min_p");
  rejects([](SamplingParams& p) { p.min_p = 1.5f; }, "min_p");
  rejects([&](SamplingParams& p) { p.min_p = nan; }, "min_p");
  rejects([](SamplingParams& p) { p.repetition_penalty = 0.0f; }, "repetition_penalty");
  rejects([](SamplingParams& p) { p.repetition_penalty = -1.0f; }, "repetition_penalty");
  rejects([&](SamplingParams& p) { p.repetition_penalty = nan; }, "repetition_penalty");
  rejects([](SamplingParams& p) { p.presence_penalty = 2.5f; }, "presence_penalty");
  rejects([&](SamplingParams& p) { p.presence_penalty = nan; }, "presence_penalty");
  rejects([](SamplingParams& p) { p.frequency_penalty = -3.0f; }, "frequency_penalty");
}

TEST(Sampler, ConstructorRejectsBadArguments) {
  EXPECT_THROW(Sampler(SamplingParams{}, 0), Error);
  EXPECT_THROW(Sampler(SamplingParams{}, -5), Error);
  SamplingParams bad;
  bad.top_p = 0.0f;
  EXPECT_THROW(Sampler(bad, 10), Error);
}

TEST(Sampler, SetPromptRejectsIdsOutsideVocabulary) {
  Sampler sampler(params_with(0.0f), 4);
  const std::vector<int32_t> too_big{1, 4};
  const std::vector<int32_t> negative{-1};
  EXPECT_THROW(sampler.set_prompt(too_big), Error);
  EXPECT_THROW(sampler.set_prompt(negative), Error);
}

// ------------------------------------------------------------------------------------------------ greedy

TEST(Sampler, GreedyIsArgmaxWithTiesToLowestId) {
  Sampler sampler(params_with(0.0f), 5);
  EXPECT_EQ(sample_copy(sampler, {1.0f, 5.0f, 3.0f, 5.0f, -2.0f}), 1);
  EXPECT_EQ(sample_copy(sampler, {-3.0f, -1.0f, -2.0f, -1.5f, -9.0f}), 1);
  EXPECT_EQ(sample_copy(sampler, {7.0f, 7.0f, 7.0f, 7.0f, 7.0f}), 0);
  EXPECT_EQ(sample_copy(sampler, {0.0f, 0.0f, 0.0f, 0.0f, 0.5f}), 4);
}

TEST(Sampler, GreedyIgnoresFiltersButAppliesPenalties) {
  SamplingParams p = params_with(0.0f);
  p.top_k = 1;
  p.top_p = 0.1f;
  p.min_p = 0.9f;
  p.repetition_penalty = 2.0f;
  Sampler sampler(p, 3);
  const std::vector<float> logits{3.0f, 2.0f, 1.0f};
  EXPECT_EQ(sample_copy(sampler, logits), 0);
  const std::vector<int32_t> prompt{0};
  sampler.set_prompt(prompt);  // 3 / 2 = 1.5 < 2
  EXPECT_EQ(sample_copy(sampler, logits), 1);
}

// ------------------------------------------------------------------------------------------- temperature

TEST(Sampler, VanishingTemperatureApproachesArgmax) {
  // p(second) / p(first) = exp(-0.1 / 1e-3) = exp(-100): never drawn in practice.
  const std::vector<float> logits{1.0f, 2.0f, 1.9f, -3.0f};
  for (uint64_t seed = 0; seed < 20; ++seed) {
    SamplingParams p = params_with(1e-3f);
    p.seed = seed;
    Sampler sampler(p, 4);
    for (int i = 0; i < 100; ++i) ASSERT_EQ(sample_copy(sampler, logits), 1);
  }
  // Large logits over a minute temperature would overflow l / T; the result is still the argmax.
  SamplingParams p = params_with(1e-30f);
  Sampler sampler(p, 3);
  for (int i = 0; i < 100; ++i) ASSERT_EQ(sample_copy(sampler, {80.0f, 90.0f, 85.0f}), 1);
}

TEST(Sampler, FrequenciesMatchSoftmaxOverTemperature) {
  const std::vector<double> logits{1.0, 0.5, -0.3, 2.0, 0.0};
  const std::vector<float> logits_f(logits.begin(), logits.end());
  for (const double temperature : {1.0, 0.7, 2.5}) {
    SamplingParams p = params_with(static_cast<float>(temperature));
    p.seed = 1234;
    Sampler sampler(p, 5);
    expect_frequencies(histogram(sampler, logits_f, 20000), softmax(logits, temperature));
  }
}

// ------------------------------------------------------------------------------------------------- top-k

TEST(Sampler, TopK1IsGreedyForAnySeed) {
  std::mt19937 gen(7);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> logits(1000);
  for (auto& l : logits) l = normal(gen);
  const auto argmax = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  for (uint64_t seed = 0; seed < 50; ++seed) {
    SamplingParams p;
    p.top_k = 1;
    p.seed = seed;
    p.temperature = 1.7f;
    Sampler sampler(p, 1000);
    for (int i = 0; i < 20; ++i) ASSERT_EQ(sample_copy(sampler, logits), argmax);
  }
}

TEST(Sampler, TopKExcludesTheRestAndRenormalises) {
  const std::vector<double> logits{0.3, 1.2, -0.5, 0.9, 0.0, 1.0, -2.0, 0.2};
  SamplingParams p;
  p.top_k = 3;
  p.seed = 99;
  Sampler sampler(p, 8);
  // The three largest are tokens 1 (1.2), 5 (1.0) and 3 (0.9).
  std::vector<double> expected(8, 0.0);
  const double z = std::exp(1.2) + std::exp(1.0) + std::exp(0.9);
  expected[1] = std::exp(1.2) / z;
  expected[5] = std::exp(1.0) / z;
  expected[3] = std::exp(0.9) / z;
  expect_frequencies(histogram(sampler, std::vector<float>(logits.begin(), logits.end()), 20000), expected);
}

TEST(Sampler, TopKKeepsTiesWithTheKthValue) {
  // HF removes only logits strictly below the k-th largest, so both 2.0s survive top_k = 2.
  SamplingParams p;
  p.top_k = 2;
  Sampler sampler(p, 4);
  const std::vector<float> logits{3.0f, 2.0f, 2.0f, 1.0f};
  const double z = std::exp(3.0) + 2 * std::exp(2.0);
  expect_frequencies(histogram(sampler, logits, 20000), {std::exp(3.0) / z, std::exp(2.0) / z, std::exp(2.0) / z, 0.0});
}

TEST(Sampler, TopKOverLargeVocabularyMatchesTheDefinition) {
  // Integer logits, so thousands of tokens tie; HF keeps every token whose logit is >= the 50th largest.
  constexpr int kVocab = 103424;
  std::mt19937 gen(5);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> logits(kVocab);
  for (auto& l : logits) l = std::round(normal(gen));
  std::vector<float> sorted = logits;
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  const float kth = sorted[49];
  ASSERT_GT(std::count(logits.begin(), logits.end(), kth) +
                std::count_if(logits.begin(), logits.end(), [&](float l) { return l > kth; }),
            50);

  const double temperature = 3.0;
  SamplingParams p = params_with(static_cast<float>(temperature));
  p.top_k = 50;
  p.seed = 12;
  Sampler sampler(p, kVocab);
  const auto counts = histogram(sampler, logits, 4000);
  // Compare per logit value: each kept value class has probability count * e^(v/T) / Z over kept tokens.
  std::vector<double> class_logit;
  std::vector<int> class_size, class_draws;
  for (int v = static_cast<int>(kth); v <= static_cast<int>(sorted[0]); ++v) {
    class_logit.push_back(v);
    class_size.push_back(0);
    class_draws.push_back(0);
  }
  int excluded_draws = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (logits[i] < kth) {
      excluded_draws += counts[i];
      continue;
    }
    const auto c = static_cast<size_t>(logits[i] - kth);
    ++class_size[c];
    class_draws[c] += counts[i];
  }
  EXPECT_EQ(excluded_draws, 0);
  std::vector<double> expected;
  double z = 0.0;
  for (size_t c = 0; c < class_logit.size(); ++c) z += class_size[c] * std::exp(class_logit[c] / temperature);
  for (size_t c = 0; c < class_logit.size(); ++c)
    expected.push_back(class_size[c] * std::exp(class_logit[c] / temperature) / z);
  expect_frequencies(class_draws, expected);
}

// ------------------------------------------------------------------------------------------------- top-p

TEST(Sampler, TinyTopPKeepsOnlyTheTopToken) {
  const std::vector<float> logits{0.5f, 0.4f, 0.45f, 0.1f, 0.49f};
  for (uint64_t seed = 0; seed < 20; ++seed) {
    SamplingParams p;
    p.top_p = 1e-6f;
    p.seed = seed;
    Sampler sampler(p, 5);
    for (int i = 0; i < 50; ++i) ASSERT_EQ(sample_copy(sampler, logits), 0);
  }
}

TEST(Sampler, TopPKeepsSmallestSetReachingP) {
  // Probabilities 0.1, 0.2, 0.3, 0.4: the best-first cumulative sums are 0.4, 0.7, 0.9, 1.0.
  const auto logits = log_probs({0.1, 0.2, 0.3, 0.4});
  auto run = [&](float top_p) {
    SamplingParams p;
    p.top_p = top_p;
    p.seed = 5;
    Sampler sampler(p, 4);
    return histogram(sampler, logits, 20000);
  };
  expect_frequencies(run(0.35f), {0.0, 0.0, 0.0, 1.0});
  expect_frequencies(run(0.5f), {0.0, 0.0, 3.0 / 7.0, 4.0 / 7.0});
  expect_frequencies(run(0.75f), {0.0, 0.2 / 0.9, 0.3 / 0.9, 0.4 / 0.9});
  expect_frequencies(run(0.95f), {0.1, 0.2, 0.3, 0.4});
}

TEST(Sampler, TopPOverLargeVocabularyStaysInsideNucleus) {
  // A nucleus of hundreds of tokens exercises the chunked ranking; the reference set comes from a full sort.
  constexpr int kVocab = 103424;
  std::mt19937 gen(11);
  std::normal_distribution<float> normal(0.0f, 2.5f);
  std::vector<float> logits(kVocab);
  for (auto& l : logits) l = normal(gen);
  std::vector<double> probs = softmax(std::vector<double>(logits.begin(), logits.end()));
  std::vector<int32_t> order(kVocab);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return probs[a] > probs[b]; });
  const double top_p = 0.5;
  std::set<int32_t> nucleus;
  double cumulative = 0.0;
  for (const int32_t id : order) {
    nucleus.insert(id);
    cumulative += probs[static_cast<size_t>(id)];
    if (cumulative >= top_p) break;
  }
  ASSERT_GT(nucleus.size(), 200u);
  const size_t boundary_token = static_cast<size_t>(order[nucleus.size() - 1]);

  SamplingParams p;
  p.top_p = static_cast<float>(top_p);
  p.seed = 3;
  Sampler sampler(p, kVocab);
  std::vector<float> scratch(kVocab);
  for (int i = 0; i < 1000; ++i) {
    std::copy(logits.begin(), logits.end(), scratch.begin());
    const int32_t token = sampler.sample(scratch);
    // Allow the one token at the cut whose membership float rounding could flip.
    if (static_cast<size_t>(token) == boundary_token) continue;
    ASSERT_TRUE(nucleus.count(token) || probs[static_cast<size_t>(token)] >= probs[boundary_token]) << token;
  }
}

// ------------------------------------------------------------------------------------------------- min-p

TEST(Sampler, MinPKeepsTokensAtLeastMinPTimesTheMax) {
  // Probabilities 0.1, 0.2, 0.3, 0.4 have ratios to the max of 0.25, 0.5, 0.75, 1.
  const auto logits = log_probs({0.1, 0.2, 0.3, 0.4});
  auto run = [&](float min_p) {
    SamplingParams p;
    p.min_p = min_p;
    p.seed = 8;
    Sampler sampler(p, 4);
    return histogram(sampler, logits, 20000);
  };
  expect_frequencies(run(0.6f), {0.0, 0.0, 3.0 / 7.0, 4.0 / 7.0});
  expect_frequencies(run(0.45f), {0.0, 0.2 / 0.9, 0.3 / 0.9, 0.4 / 0.9});
  expect_frequencies(run(0.2f), {0.1, 0.2, 0.3, 0.4});
  expect_frequencies(run(1.0f), {0.0, 0.0, 0.0, 1.0});
}

TEST(Sampler, MinPBoundary) {
  // A probability exactly min_p * max is kept (HF removes only probs strictly below): with min_p = 1 the
  // tied maxima stay.
  {
    SamplingParams p;
    p.min_p = 1.0f;
    Sampler sampler(p, 3);
    expect_frequencies(histogram(sampler, {2.0f, 2.0f, 1.0f}, 20000), {0.5, 0.5, 0.0});
  }
  // Just above and just below a ratio of 0.5.
  const float half = std::log(0.5f);
  SamplingParams p;
  p.min_p = 0.5f;
  Sampler sampler(p, 3);
  const std::vector<float> logits{0.0f, half + 1e-3f, half - 1e-3f};
  const auto counts = histogram(sampler, logits, 20000);
  EXPECT_GT(counts[1], 0);
  EXPECT_EQ(counts[2], 0);
}

// ------------------------------------------------------------------------------------------ order of ops

TEST(Sampler, TopKRunsBeforeTopP) {
  // After top_k = 2 the survivors renormalise to 4/7 and 3/7, and 4/7 >= 0.55 already. Applied to the raw
  // distribution instead, top_p = 0.55 would keep two tokens (0.4 < 0.55).
  SamplingParams p;
  p.top_k = 2;
  p.top_p = 0.55f;
  Sampler sampler(p, 4);
  expect_frequencies(histogram(sampler, log_probs({0.4, 0.3, 0.2, 0.1}), 5000), {1.0, 0.0, 0.0, 0.0});
}

TEST(Sampler, TemperatureRunsBeforeTopPAndMinP) {
  const std::vector<float> logits{0.0f, -1.0f};
  auto support_with = [&](float temperature, float top_p, float min_p) {
    SamplingParams p = params_with(temperature);
    p.top_p = top_p;
    p.min_p = min_p;
    Sampler sampler(p, 2);
    return support(sampler, logits);
  };
  // T = 1: probabilities 0.73 / 0.27. T = 10: 0.525 / 0.475.
  EXPECT_EQ(support_with(1.0f, 0.6f, 0.0f), (std::set<int32_t>{0}));
  EXPECT_EQ(support_with(10.0f, 0.6f, 0.0f), (std::set<int32_t>{0, 1}));
  // Ratio to max: exp(-1) = 0.37 at T = 1; exp(-0.1) = 0.90 at T = 10.
  EXPECT_EQ(support_with(1.0f, 1.0f, 0.5f), (std::set<int32_t>{0}));
  EXPECT_EQ(support_with(10.0f, 1.0f, 0.5f), (std::set<int32_t>{0, 1}));
}

TEST(Sampler, PenaltiesRunBeforeTopK) {
  SamplingParams p;
  p.top_k = 1;
  p.repetition_penalty = 2.0f;
  Sampler sampler(p, 3);
  const std::vector<int32_t> prompt{0};
  sampler.set_prompt(prompt);  // 3 -> 1.5, so token 1 (2.5) is now the single top-k survivor
  for (int i = 0; i < 200; ++i) ASSERT_EQ(sample_copy(sampler, {3.0f, 2.5f, 1.0f}), 1);
}

// --------------------------------------------------------------------------------------------- penalties

TEST(Sampler, RepetitionPenaltyDividesPositiveAndMultipliesNegative) {
  SamplingParams p = params_with(0.0f);
  p.repetition_penalty = 2.0f;
  Sampler sampler(p, 4);
  const std::vector<int32_t> prompt{0};
  sampler.set_prompt(prompt);
  // Positive: 3 / 2 = 1.5 falls below 2.
  EXPECT_EQ(sample_copy(sampler, {3.0f, 2.0f, -1.0f, -1.5f}), 1);
  // Negative: -1 * 2 = -2 falls below -1.5 (dividing would have raised it to -0.5 and kept it on top).
  EXPECT_EQ(sample_copy(sampler, {-1.0f, -1.5f, -3.0f, -4.0f}), 1);
  // Tokens outside the context are untouched.
  EXPECT_EQ(sample_copy(sampler, {-5.0f, 1.0f, 4.0f, 3.9f}), 2);
}

TEST(Sampler, RepetitionPenaltyBelowOneEncourages) {
  SamplingParams p = params_with(0.0f);
  p.repetition_penalty = 0.5f;
  Sampler sampler(p, 2);
  const std::vector<int32_t> prompt{0};
  sampler.set_prompt(prompt);
  EXPECT_EQ(sample_copy(sampler, {1.0f, 1.5f}), 0);  // 1 / 0.5 = 2 > 1.5
}

TEST(Sampler, RepetitionPenaltyAppliesOncePerTokenOverPromptAndGenerated) {
  SamplingParams p = params_with(0.0f);
  p.repetition_penalty = 1.4f;
  Sampler sampler(p, 3);
  const std::vector<int32_t> prompt{0, 0, 0};
  sampler.set_prompt(prompt);
  // Once: 3 / 1.4 = 2.14 > 2. Per occurrence would be 3 / 1.4^3 = 1.09.
  EXPECT_EQ(sample_copy(sampler, {3.0f, 2.0f, 0.0f}), 0);
  // Generated tokens join the context.
  EXPECT_EQ(sample_copy(sampler, {0.0f, 2.0f, 1.9f}), 1);
  sampler.accept(1);
  EXPECT_EQ(sample_copy(sampler, {0.0f, 2.0f, 1.9f}), 2);  // 2 / 1.4 = 1.43 < 1.9
}

TEST(Sampler, RepetitionPenaltyShiftsProbabilitiesByTheExactAmount) {
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  p.seed = 17;
  Sampler sampler(p, 3);
  const std::vector<int32_t> prompt{0, 1};
  sampler.set_prompt(prompt);
  // {2, -1, 0} becomes {1, -2, 0}.
  expect_frequencies(histogram(sampler, {2.0f, -1.0f, 0.0f}, 20000), softmax({1.0, -2.0, 0.0}));
}

TEST(Sampler, SetPromptReplacesContextAndResetClearsIt) {
  SamplingParams p = params_with(0.0f);
  p.repetition_penalty = 2.0f;
  p.presence_penalty = 2.0f;
  Sampler sampler(p, 3);
  const std::vector<float> logits{3.0f, 2.0f, 1.0f};
  const std::vector<int32_t> first{0};
  const std::vector<int32_t> second{2};
  sampler.set_prompt(first);
  EXPECT_EQ(sample_copy(sampler, logits), 1);
  sampler.set_prompt(second);
  EXPECT_EQ(sample_copy(sampler, logits), 0);
  sampler.accept(0);
  EXPECT_EQ(sample_copy(sampler, logits), 1);  // 3 / 2 - 2 = -0.5
  sampler.reset(0);
  EXPECT_EQ(sample_copy(sampler, logits), 0);
}

TEST(Sampler, PresenceAndFrequencyPenaltiesUseGeneratedCounts) {
  const std::vector<float> logits{5.0f, 4.0f, 0.0f};
  auto greedy_after_two_zeros = [&](float presence, float frequency) {
    SamplingParams p = params_with(0.0f);
    p.presence_penalty = presence;
    p.frequency_penalty = frequency;
    Sampler sampler(p, 3);
    sampler.accept(0);
    sampler.accept(0);
    return sample_copy(sampler, logits);
  };
  EXPECT_EQ(greedy_after_two_zeros(0.0f, 0.6f), 1);   // 5 - 2 * 0.6 = 3.8 < 4
  EXPECT_EQ(greedy_after_two_zeros(0.0f, 0.4f), 0);   // 5 - 0.8 = 4.2
  EXPECT_EQ(greedy_after_two_zeros(1.5f, 0.0f), 1);   // 5 - 1.5 = 3.5
  EXPECT_EQ(greedy_after_two_zeros(0.9f, 0.0f), 0);   // presence ignores the count: 4.1
  EXPECT_EQ(greedy_after_two_zeros(0.5f, 0.3f), 1);   // 5 - 0.6 - 0.5 = 3.9
  EXPECT_EQ(greedy_after_two_zeros(-1.0f, 0.0f), 0);  // negative presence encourages

  // Prompt tokens do not count.
  SamplingParams p = params_with(0.0f);
  p.presence_penalty = 2.0f;
  p.frequency_penalty = 2.0f;
  Sampler sampler(p, 3);
  const std::vector<int32_t> prompt{0, 0, 0};
  sampler.set_prompt(prompt);
  EXPECT_EQ(sample_copy(sampler, logits), 0);
}

TEST(Sampler, FrequencyPenaltyShiftsProbabilitiesByTheExactAmount) {
  SamplingParams p;
  p.frequency_penalty = 0.5f;
  p.presence_penalty = 0.25f;
  p.seed = 23;
  Sampler sampler(p, 2);
  sampler.accept(0);
  sampler.accept(0);
  // Token 0: 0 - 2 * 0.5 - 0.25 = -1.25.
  expect_frequencies(histogram(sampler, {0.0f, 0.0f}, 20000), softmax({-1.25, 0.0}));
}

// ------------------------------------------------------------------------------------------- randomness

TEST(Sampler, SameSeedSameSequenceDifferentSeedDiffers) {
  std::vector<float> logits(16);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = 0.1f * static_cast<float>(i % 5);
  auto sequence = [&](Sampler& sampler) {
    std::vector<int32_t> out;
    for (int i = 0; i < 200; ++i) {
      out.push_back(sample_copy(sampler, logits));
      sampler.accept(out.back());
    }
    return out;
  };
  SamplingParams p;
  p.seed = 42;
  p.top_k = 12;
  p.top_p = 0.95f;
  p.repetition_penalty = 1.1f;
  p.frequency_penalty = 0.1f;
  Sampler a(p, 16), b(p, 16);
  const auto first = sequence(a);
  EXPECT_EQ(first, sequence(b));
  a.reset(42);
  EXPECT_EQ(first, sequence(a));
  a.reset(43);
  EXPECT_NE(first, sequence(a));
}

TEST(Sampler, DrawIsTheDocumentedFunctionOfMt19937_64) {
  // Two equally likely tokens: the draw u in [0, 1) is the top 53 bits of one mt19937_64 output over 2^53,
  // and token 0 is chosen iff u * 2 < 1, i.e. iff the output's top bit is clear. One draw per token.
  SamplingParams p;
  p.seed = 2024;
  Sampler sampler(p, 2);
  std::mt19937_64 reference(2024);
  for (int i = 0; i < 500; ++i) {
    const int32_t expected = static_cast<int32_t>(reference() >> 63);
    ASSERT_EQ(sample_copy(sampler, {0.0f, 0.0f}), expected) << "draw " << i;
  }
}

TEST(Sampler, EverySampledTokenConsumesExactlyOneDraw) {
  // Even a step with a single possible token advances the stream, so later steps do not depend on how
  // many tokens earlier filters left.
  SamplingParams p;
  p.seed = 77;
  Sampler sampler(p, 2);
  std::mt19937_64 reference(77);
  for (int i = 0; i < 200; ++i) {
    reference();
    ASSERT_EQ(sample_copy(sampler, {0.0f, -kInf}), 0);
    const int32_t expected = static_cast<int32_t>(reference() >> 63);
    ASSERT_EQ(sample_copy(sampler, {0.0f, 0.0f}), expected) << "step " << i;
  }
}

// ------------------------------------------------------------------------------------------- edge cases

TEST(Sampler, VocabularyOfOne) {
  for (const float temperature : {0.0f, 1.0f, 0.3f}) {
    SamplingParams p = params_with(temperature);
    p.top_k = 5;
    p.top_p = 0.5f;
    p.min_p = 0.5f;
    p.repetition_penalty = 1.3f;
    p.presence_penalty = 1.0f;
    Sampler sampler(p, 1);
    const std::vector<int32_t> prompt{0};
    sampler.set_prompt(prompt);
    for (int i = 0; i < 10; ++i) {
      ASSERT_EQ(sample_copy(sampler, {-3.0f}), 0);
      sampler.accept(0);
    }
  }
}

TEST(Sampler, AllNegativeInfinityButOne) {
  std::vector<float> logits(6, -kInf);
  logits[4] = -100.0f;
  for (const float temperature : {0.0f, 1.0f, 0.01f, 5.0f}) {
    for (uint64_t seed = 0; seed < 10; ++seed) {
      SamplingParams p = params_with(temperature);
      p.seed = seed;
      p.top_k = seed % 3 == 0 ? 0 : 3;
      p.top_p = seed % 2 == 0 ? 1.0f : 0.3f;
      p.min_p = seed % 4 == 0 ? 0.0f : 0.2f;
      Sampler sampler(p, 6);
      for (int i = 0; i < 20; ++i) ASSERT_EQ(sample_copy(sampler, logits), 4);
    }
  }
}

TEST(Sampler, NaNCountsAsNegativeInfinityAndAllInfinitePicksZero) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (const float temperature : {0.0f, 1.0f}) {
    Sampler sampler(params_with(temperature), 3);
    for (int i = 0; i < 20; ++i) ASSERT_EQ(sample_copy(sampler, {nan, -1.0f, nan}), 1);
    ASSERT_EQ(sample_copy(sampler, {-kInf, -kInf, -kInf}), 0);
  }
}

TEST(Sampler, SampleAcceptAndResetDoNotAllocate) {
  constexpr int kVocab = 103424;
  std::vector<float> logits(kVocab);
  std::vector<float> scratch(kVocab);
  std::mt19937 gen(1);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (auto& l : logits) l = normal(gen);
  std::vector<int32_t> prompt(500);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>(i * 37 % kVocab);

  std::vector<SamplingParams> cases(5);
  cases[0].temperature = 0.0f;  // greedy
  cases[1].top_k = 50;          // ranked path, with every other filter
  cases[1].top_p = 0.9f;
  cases[1].min_p = 0.01f;
  cases[1].temperature = 0.8f;
  cases[2].top_p = 0.7f;  // binned top-p over the whole vocabulary
  cases[2].min_p = 0.001f;
  cases[3].min_p = 0.05f;  // no ranking at all
  cases[4].repetition_penalty = 1.2f;
  cases[4].presence_penalty = 0.5f;
  cases[4].frequency_penalty = 0.5f;
  for (size_t c = 0; c < cases.size(); ++c) {
    Sampler sampler(cases[c], kVocab);
    sampler.set_prompt(prompt);
    const long before = ernie::testing::allocation_count();
    for (int i = 0; i < 30; ++i) {
      std::copy(logits.begin(), logits.end(), scratch.begin());
      sampler.accept(sampler.sample(scratch));
    }
    sampler.reset(9);
    sampler.set_prompt(prompt);
    for (int i = 0; i < 30; ++i) {
      std::copy(logits.begin(), logits.end(), scratch.begin());
      sampler.accept(sampler.sample(scratch));
    }
    const long after = ernie::testing::allocation_count();
    EXPECT_EQ(after, before) << "case " << c;
  }
}

}  // namespace
}  // namespace ernie
