// Accuracy of each weight type and of the F16 KV cache against transformers' float32 logits, at every position of
// the fixture prompts: relative logit error, mean KL divergence and top-1 agreement, held to bounds per type.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <optional>

#include "model/accuracy.h"
#include "model/session.h"
#include "test_support.h"

namespace ernie {
namespace {

using ernie::testing::fixture;
using ernie::testing::read_f32;
using ernie::testing::read_json;

LogitAgreement measure(const std::string& checkpoint, std::optional<DType> dtype, std::optional<DType> kv_dtype) {
  const auto model = Model::load(fixture(checkpoint + "/model"), LoadOptions{.dtype = dtype});
  const auto golden = read_json(fixture(checkpoint + "/ref/golden.json"));
  const int vocab = model->config().vocab_size;
  LogitAgreement agreement;
  for (const auto& prompt : golden["prompts"]) {
    if (!prompt.contains("all_logits_file")) continue;
    const auto ids = prompt["ids"].get<std::vector<int32_t>>();
    const auto ref = read_f32(fixture(checkpoint + "/" + prompt["all_logits_file"].get<std::string>()));
    Session session(*model, {.context_length = 512, .kv_dtype = kv_dtype});
    std::vector<float> logits(ids.size() * vocab);
    session.forward(ids, logits);
    for (size_t t = 0; t < ids.size(); ++t) {
      agreement.add(std::span<const float>(ref.data() + t * vocab, vocab),
                    std::span<const float>(logits.data() + t * vocab, vocab));
    }
  }
  return agreement;
}

struct Case {
  std::optional<DType> dtype;
  std::optional<DType> kv_dtype;
  double max_relative_error, max_mean_kl, min_top1;
};

std::string label(const Case& c) {
  return std::string(c.dtype ? dtype_name(*c.dtype) : "stored") + " weights, KV " +
         std::string(c.kv_dtype ? dtype_name(*c.kv_dtype) : "default");
}

class QuantizedAccuracy : public ::testing::TestWithParam<Case> {};

TEST_P(QuantizedAccuracy, WithinBoundsOnEveryFixture) {
  const Case& c = GetParam();
  for (const char* checkpoint : {"tiny-ernie", "tiny-ernie-bias"}) {
    const LogitAgreement a = measure(checkpoint, c.dtype, c.kv_dtype);
    std::printf("%-16s %-28s rel.err %.2e  mean KL %.2e  top-1 %.3f\n", checkpoint, label(c).c_str(),
                a.relative_error(), a.mean_kl(), a.top1());
    EXPECT_LE(a.relative_error(), c.max_relative_error) << checkpoint;
    EXPECT_LE(a.mean_kl(), c.max_mean_kl) << checkpoint;
    EXPECT_GE(a.top1(), c.min_top1) << checkpoint;
  }
}

// The fixtures are random-initialised models (hidden 64): nothing in them is redundant, so every rounding shows.
// Expected noise per weight, relative to its block's spread: Q8_0 step max|w|/127 gives ~0.6 %, Q4_0 step
// max|w|/8 ~9 %, and the int8 activations add ~0.6 % to both. Measured here (rel. error / mean KL / top-1):
// F16 KV 7e-4 / 2e-6 / 1.0; F16 and BF16 weights ~1e-6 (the bf16 fixture values convert exactly); Q8_0
// 4.3e-2 / 5.5e-3 / 0.90; Q4_0 (every matrix, the embedding/LM head included, as llama.cpp's Q4_0) 0.50 / 0.73 /
// 0.34. The bounds leave ~1.5x room; a packing or scale bug in a kernel moves these by orders of magnitude. (The
// trained demo model is the fairer yardstick: see DemoPerplexity.QuantizedWeightsCostLittle.)
INSTANTIATE_TEST_SUITE_P(Types, QuantizedAccuracy,
                         ::testing::Values(Case{std::nullopt, DType::F16, 2e-3, 1e-5, 0.99},
                                           Case{DType::F16, std::nullopt, 1e-5, 1e-9, 1.0},
                                           Case{DType::BF16, std::nullopt, 1e-5, 1e-9, 1.0},
                                           Case{DType::Q8_0, std::nullopt, 0.065, 0.01, 0.85},
                                           Case{DType::Q4_0, std::nullopt, 0.75, 1.1, 0.22}));

}  // namespace
}  // namespace ernie
