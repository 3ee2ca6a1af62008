// Accuracy of each weight type and of the F16 KV cache against transformers' float32 logits, at every position of
// the fixture prompts: relative logit error, mean KL divergence and top-1 agreement, held to bounds per type.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <optional>

#include "model/model.h"
#include "test_support.h"

namespace ernie {
namespace {

using ernie::testing::fixture;
using ernie::testing::read_f32;
using ernie::testing::read_json;

struct Accuracy {
  double relative_error = 0;  // ‖ours − ref‖ / ‖ref‖ over all positions
  double mean_kl = 0;         // mean over positions of KL(ref ‖ ours), nats
  double top1 = 0;            // fraction of positions whose argmax agrees
};

void log_softmax(std::span<const float> logits, std::vector<double>& out) {
  double m = -INFINITY;
  for (float v : logits) m = std::max(m, double(v));
  double sum = 0;
  for (float v : logits) sum += std::exp(v - m);
  out.resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) out[i] = logits[i] - m - std::log(sum);
}

Accuracy measure(const std::string& checkpoint, std::optional<DType> dtype, std::optional<DType> kv_dtype) {
  const auto model = Model::load(fixture(checkpoint + "/model"), LoadOptions{.dtype = dtype});
  const auto golden = read_json(fixture(checkpoint + "/ref/golden.json"));
  const int vocab = model->config().vocab_size;
  double diff = 0, norm = 0, kl = 0;
  int positions = 0, agree = 0;
  std::vector<double> p_ref, p_ours;
  for (const auto& prompt : golden["prompts"]) {
    if (!prompt.contains("all_logits_file")) continue;
    const auto ids = prompt["ids"].get<std::vector<int32_t>>();
    const auto ref = read_f32(fixture(checkpoint + "/" + prompt["all_logits_file"].get<std::string>()));
    Session session(*model, {.context_length = 512, .kv_dtype = kv_dtype});
    std::vector<float> logits(ids.size() * vocab);
    session.forward(ids, logits);
    for (size_t t = 0; t < ids.size(); ++t) {
      const std::span<const float> ours(logits.data() + t * vocab, vocab), theirs(ref.data() + t * vocab, vocab);
      log_softmax(theirs, p_ref);
      log_softmax(ours, p_ours);
      size_t best_ref = 0, best_ours = 0;
      for (int v = 0; v < vocab; ++v) {
        diff += (double(ours[v]) - theirs[v]) * (double(ours[v]) - theirs[v]);
        norm += double(theirs[v]) * theirs[v];
        kl += std::exp(p_ref[v]) * (p_ref[v] - p_ours[v]);
        if (theirs[v] > theirs[best_ref]) best_ref = v;
        if (ours[v] > ours[best_ours]) best_ours = v;
      }
      agree += best_ref == best_ours;
      ++positions;
    }
  }
  return {std::sqrt(diff / norm), kl / positions, double(agree) / positions};
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
    const Accuracy a = measure(checkpoint, c.dtype, c.kv_dtype);
    std::printf("%-16s %-28s rel.err %.2e  mean KL %.2e  top-1 %.3f\n", checkpoint, label(c).c_str(), a.relative_error,
                a.mean_kl, a.top1);
    EXPECT_LE(a.relative_error, c.max_relative_error) << checkpoint;
    EXPECT_LE(a.mean_kl, c.max_mean_kl) << checkpoint;
    EXPECT_GE(a.top1, c.min_top1) << checkpoint;
  }
}

// The fixtures are random-initialised models (hidden 64): nothing in them is redundant, so every rounding shows.
// Expected noise per weight, relative to its block's spread: Q8_0 step max|w|/127 gives ~0.6 %, Q4_0 step
// max|w|/8 ~9 %, and the int8 activations add ~0.6 % to both. Measured here (rel. error / mean KL / top-1):
// F16 KV 7e-4 / 2e-6 / 1.0; F16 and BF16 weights ~1e-6 (the bf16 fixture values convert exactly); Q8_0
// 4.3e-2 / 5.5e-3 / 0.90; Q4_0 0.40 / 0.48 / 0.40. The bounds leave ~1.5x room; a packing or scale bug in a
// kernel moves these by orders of magnitude.
INSTANTIATE_TEST_SUITE_P(Types, QuantizedAccuracy,
                         ::testing::Values(Case{std::nullopt, DType::F16, 2e-3, 1e-5, 0.99},
                                           Case{DType::F16, std::nullopt, 1e-5, 1e-9, 1.0},
                                           Case{DType::BF16, std::nullopt, 1e-5, 1e-9, 1.0},
                                           Case{DType::Q8_0, std::nullopt, 0.065, 0.01, 0.85},
                                           Case{DType::Q4_0, std::nullopt, 0.6, 0.75, 0.3}));

}  // namespace
}  // namespace ernie
