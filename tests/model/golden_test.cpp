// The forward pass against Hugging Face transformers' float32 references in shared/fixtures: logits at every
// position, hidden states layer by layer, and 32-token greedy decoding through the KV cache.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "model/session.h"
#include "test_support.h"

namespace ernie {
namespace {

using ernie::testing::fixture;
using ernie::testing::read_f32;
using ernie::testing::read_json;
using ernie::testing::relative_error;

double max_abs_diff(std::span<const float> a, std::span<const float> b) {
  double m = 0;
  for (size_t i = 0; i < b.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - b[i]));
  return m;
}

int argmax(std::span<const float> v) {
  return static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin());
}

std::vector<int> top_k(std::span<const float> v, int k) {
  std::vector<int> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int a, int b) { return v[a] > v[b]; });
  idx.resize(k);
  return idx;
}

constexpr double kMaxRelativeError = 1e-4;  // the bound on ‖ours − ref‖ / ‖ref‖
constexpr double kMaxAbsError = 1e-3;       // fixtures README: observed gaps ≤ 5e-5
constexpr double kHiddenAbsError = 1e-4;    // residual stream values are O(1)

struct Case {
  const char* model_dir;  // relative to fixtures
  const char* ref_dir;
};

class Golden : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    model_ = Model::load(fixture(GetParam().model_dir));
    golden_ = read_json(fixture(std::string(GetParam().ref_dir) + "/golden.json"));
    ASSERT_TRUE(golden_.contains("prompts"));
  }
  std::filesystem::path ref_file(const std::string& relative) const {
    return fixture(std::string(GetParam().ref_dir) + "/../" + relative);
  }
  std::unique_ptr<Model> model_;
  nlohmann::json golden_;
};

TEST_P(Golden, LastPositionLogitsMatchTransformers) {
  for (const auto& prompt : golden_["prompts"]) {
    SCOPED_TRACE(prompt["name"].get<std::string>());
    const auto ids = prompt["ids"].get<std::vector<int32_t>>();
    const auto ref = read_f32(ref_file(prompt["last_logits_file"].get<std::string>()));
    Session session(*model_, {});
    const auto logits = session.forward(ids);
    ASSERT_EQ(logits.size(), ref.size());
    EXPECT_LE(relative_error(logits, ref), kMaxRelativeError);
    EXPECT_LE(max_abs_diff(logits, ref), kMaxAbsError);
    EXPECT_EQ(argmax(logits), argmax(ref));
  }
}

TEST_P(Golden, LogitsAtEveryPositionAndTop5) {
  const int vocab = model_->config().vocab_size;
  int checked = 0;
  for (const auto& prompt : golden_["prompts"]) {
    if (!prompt.contains("all_logits_file")) continue;
    SCOPED_TRACE(prompt["name"].get<std::string>());
    const auto ids = prompt["ids"].get<std::vector<int32_t>>();
    const auto ref = read_f32(ref_file(prompt["all_logits_file"].get<std::string>()));
    ASSERT_EQ(ref.size(), ids.size() * vocab);
    // Small chunks make the prompt cross several prefill passes, exercising the cache between them.
    Session session(*model_, {.context_length = 512, .max_batch_tokens = 7});
    std::vector<float> logits(ids.size() * vocab);
    session.forward(ids, logits);
    for (size_t t = 0; t < ids.size(); ++t) {
      const std::span<const float> ours(logits.data() + t * vocab, vocab), theirs(ref.data() + t * vocab, vocab);
      EXPECT_LE(relative_error(ours, theirs), kMaxRelativeError) << "position " << t;
      const auto ref_top5 = prompt["top5_ids"][t].get<std::vector<int>>();
      const auto our_top5 = top_k(ours, 5);
      for (int k = 0; k < 5; ++k) {
        // A different id at rank k is acceptable only where the reference itself has a near-tie.
        if (our_top5[k] != ref_top5[k]) {
          EXPECT_LT(std::fabs(theirs[our_top5[k]] - theirs[ref_top5[k]]), kMaxAbsError)
              << "position " << t << " rank " << k;
        }
      }
    }
    ++checked;
  }
  EXPECT_GE(checked, 5);
}

TEST_P(Golden, HiddenStatesLayerByLayer) {
  const int hidden = model_->config().hidden_size;
  const int layers = model_->config().num_hidden_layers;
  for (const auto& prompt : golden_["prompts"]) {
    if (!prompt.contains("hidden_states_file")) continue;
    SCOPED_TRACE(prompt["name"].get<std::string>());
    const auto ids = prompt["ids"].get<std::vector<int32_t>>();
    const auto ref = read_f32(ref_file(prompt["hidden_states_file"].get<std::string>()));
    const size_t per_index = ids.size() * hidden;
    ASSERT_EQ(ref.size(), per_index * (layers + 2));
    std::vector<int> seen;
    Session session(*model_, {});
    session.set_observer([&](int index, std::span<const float> rows) {
      ASSERT_EQ(rows.size(), per_index);
      seen.push_back(index);
      EXPECT_LE(max_abs_diff(rows, std::span<const float>(ref.data() + index * per_index, per_index)), kHiddenAbsError)
          << (index == 0            ? "embeddings"
              : index == layers + 1 ? "final norm"
                                    : "decoder layer " + std::to_string(index - 1));
    });
    session.forward(ids);
    std::vector<int> expected(layers + 2);
    std::iota(expected.begin(), expected.end(), 0);
    EXPECT_EQ(seen, expected);
  }
}

TEST_P(Golden, GreedyDecodingThroughKvCache) {
  for (const auto& prompt : golden_["prompts"]) {
    SCOPED_TRACE(prompt["name"].get<std::string>());
    const auto& greedy = prompt["greedy"];
    const auto ids = prompt["ids"].get<std::vector<int32_t>>();
    const auto expected = greedy["new_ids"].get<std::vector<int32_t>>();
    const auto margins = greedy["step_top1_top2_margin"].get<std::vector<double>>();
    std::vector<float> step_ref;
    if (greedy.contains("step_logits_file"))
      step_ref = read_f32(ref_file(greedy["step_logits_file"].get<std::string>()));
    const int vocab = model_->config().vocab_size;

    Session session(*model_, {});
    auto logits = session.forward(ids);
    std::vector<int32_t> produced;
    for (size_t step = 0; step < expected.size(); ++step) {
      if (!step_ref.empty()) {
        EXPECT_LE(relative_error(logits, std::span<const float>(step_ref.data() + step * vocab, vocab)),
                  kMaxRelativeError)
            << "step " << step;
      }
      int32_t next = argmax(logits);
      // Transformers' token is kept only where our choice differs within a margin our float error could flip.
      if (next != expected[step] && margins[step] < kMaxAbsError) next = expected[step];
      produced.push_back(next);
      const int32_t token = next;
      logits = session.forward(std::span<const int32_t>(&token, 1));
    }
    EXPECT_EQ(produced, expected);
    EXPECT_EQ(session.position(), static_cast<int>(ids.size() + expected.size()));
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Golden,
                         ::testing::Values(Case{"tiny-ernie/model", "tiny-ernie/ref"},
                                           Case{"tiny-ernie/model-fp32", "tiny-ernie/ref"},
                                           Case{"tiny-ernie-bias/model", "tiny-ernie-bias/ref"}),
                         [](const auto& info) {
                           std::string name = info.param.model_dir;
                           std::replace_if(
                               name.begin(), name.end(), [](char c) { return !std::isalnum(c); }, '_');
                           return name;
                         });

}  // namespace
}  // namespace ernie
