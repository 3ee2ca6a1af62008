// Activation-aware scaling (model/activation_scaling.h) is exact in float math: a checkpoint exported in F32 with its
// scales folded in (norm weights, v_proj and up_proj divided, the reading matrices' columns multiplied) gives the
// logits of the original, on both fixtures (one with biases, whose v and up biases are divided too).
#include "model/activation_scaling.h"

#include <gtest/gtest.h>

#include <cmath>

#include "kernels/quant.h"
#include "model/gguf_export.h"
#include "model/session.h"
#include "test_support.h"

namespace ernie {
namespace {

using ernie::testing::fixture;
using ernie::testing::read_json;
using ernie::testing::relative_error;
using ernie::testing::TempDir;

std::vector<float> all_logits(const Model& model, const std::vector<int32_t>& ids, ActivationStats* stats = nullptr) {
  Session session(model, {.context_length = static_cast<int>(ids.size())});
  if (stats) session.set_activation_observer(stats->observer());
  std::vector<float> logits(ids.size() * model.config().vocab_size);
  session.forward(ids, logits);
  return logits;
}

class ActivationScalingFolding : public ::testing::TestWithParam<const char*> {};

// float32 throughout, so the only differences are the rounding of s and 1/s and of the reordered sums: the bound
// is the 1e-5 the issue states for an exact transformation.
TEST_P(ActivationScalingFolding, LeavesFloat32LogitsUnchanged) {
  const std::string dir = GetParam();
  const auto model = Model::load(fixture(dir + "/model"));
  const auto ids = read_json(fixture(dir + "/ref/golden.json"))["prompts"][0]["ids"].get<std::vector<int32_t>>();
  ActivationStats stats(model->config());
  const std::vector<float> reference = all_logits(*model, ids, &stats);

  const ActivationScaling scaling = ActivationScaling::from(model->config(), stats, 1.0f);  // the strongest
  TempDir tmp;
  const auto path = tmp.path() / "scaled.gguf";
  export_gguf(*model, DType::F32, path, {}, {.scaling = &scaling});
  const auto scaled = Model::load(path);

  // The scaling is not the identity: the first layer's q_proj and input norm moved by factors well away from 1.
  const auto first = [](const Model& m, const std::string& name) {
    const TensorView& t = m.tensors().by_name.at(name);
    std::vector<float> v(t.element_count());
    dequantize_row(t.dtype, t.data, v.data(), t.element_count());
    return v;
  };
  const auto norm_before = first(*model, "model.layers.0.input_layernorm.weight");
  const auto norm_after = first(*scaled, "model.layers.0.input_layernorm.weight");
  double largest_change = 0;
  for (size_t i = 0; i < norm_before.size(); ++i) {
    largest_change = std::max(largest_change, std::fabs(std::log(std::fabs(double(norm_after[i]) / norm_before[i]))));
  }
  EXPECT_GT(largest_change, std::log(1.1)) << "the scales are all near 1: the test would prove nothing";

  const std::vector<float> logits = all_logits(*scaled, ids);
  EXPECT_LE(relative_error(logits, reference), 1e-5);
}

// tiny-ernie: tied embeddings, no biases; tiny-ernie-bias: biases on every projection.
INSTANTIATE_TEST_SUITE_P(Fixtures, ActivationScalingFolding, ::testing::Values("tiny-ernie", "tiny-ernie-bias"));

// Alpha 0 is no scaling at all: the export is the plain calibrated one, byte for byte.
TEST(ActivationScaling, AlphaZeroIsTheIdentity) {
  const auto model = Model::load(fixture("tiny-ernie-bias/model"));
  const auto ids =
      read_json(fixture("tiny-ernie-bias/ref/golden.json"))["prompts"][0]["ids"].get<std::vector<int32_t>>();
  ActivationStats stats(model->config());
  all_logits(*model, ids, &stats);
  const ActivationScaling none = ActivationScaling::from(model->config(), stats, 0.0f);
  TempDir tmp;
  export_gguf(*model, DType::Q4_0, tmp.path() / "plain.gguf", {}, {.calibration = &stats});
  export_gguf(*model, DType::Q4_0, tmp.path() / "alpha0.gguf", {}, {.calibration = &stats, .scaling = &none});
  EXPECT_EQ(testing::read_bytes(tmp.path() / "plain.gguf"), testing::read_bytes(tmp.path() / "alpha0.gguf"));
  // Rows converted on three threads: the same bytes again.
  ThreadPool pool(3);
  export_gguf(*model, DType::Q4_0, tmp.path() / "threads.gguf", {}, {.calibration = &stats, .pool = &pool});
  EXPECT_EQ(testing::read_bytes(tmp.path() / "plain.gguf"), testing::read_bytes(tmp.path() / "threads.gguf"));
}

}  // namespace
}  // namespace ernie
