// Importance-weighted block quantization (quantize_row_weighted) against plain rounding (quantize_row), on random
// matrices whose inputs are skewed as a transformer's are: a few channels carry most of the energy.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/error.h"
#include "kernels/quant.h"
#include "test_support.h"

namespace ernie {
namespace {

constexpr int kRows = 64, kCols = 512;

struct Problem {
  std::vector<float> weights;     // [kRows, kCols]
  std::vector<float> importance;  // [kCols], the inputs' mean squares
  std::vector<float> inputs;      // [kInputs, kCols], drawn with those mean squares
  static constexpr int kInputs = 64;
};

// Gaussian weights; per-channel input scales log-normal (sigma 1.5: the largest channels ~100x the median's
// energy), the inputs Gaussian with those scales.
Problem skewed(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Problem p;
  p.weights.resize(kRows * kCols);
  for (float& w : p.weights) w = 0.02f * normal(rng);
  std::vector<float> scale(kCols);
  for (int i = 0; i < kCols; ++i) {
    scale[i] = std::exp(1.5f * normal(rng));
    p.importance.push_back(scale[i] * scale[i]);
  }
  p.inputs.resize(Problem::kInputs * kCols);
  for (int r = 0; r < Problem::kInputs; ++r) {
    for (int i = 0; i < kCols; ++i) p.inputs[r * kCols + i] = scale[i] * normal(rng);
  }
  return p;
}

std::vector<float> roundtrip(DType dtype, const Problem& p, bool weighted) {
  std::vector<uint8_t> bytes(dtype_row_bytes(dtype, kCols));
  std::vector<float> out(p.weights.size());
  for (int r = 0; r < kRows; ++r) {
    const float* row = p.weights.data() + r * kCols;
    if (weighted) {
      quantize_row_weighted(dtype, row, p.importance.data(), bytes.data(), kCols);
    } else {
      quantize_row(dtype, row, bytes.data(), kCols);
    }
    reference::dequantize_row(dtype, bytes.data(), out.data() + r * kCols, kCols);  // standard blocks
  }
  return out;
}

// sum over rows and columns of importance * (w - w')^2: the objective.
double weighted_error(const Problem& p, const std::vector<float>& q, int row) {
  double e = 0;
  for (int i = 0; i < kCols; ++i) {
    const double d = static_cast<double>(p.weights[row * kCols + i]) - q[row * kCols + i];
    e += p.importance[i] * d * d;
  }
  return e;
}

// The matmul's output error on the sampled inputs: sum over inputs and rows of ((W - W') x)^2.
double output_error(const Problem& p, const std::vector<float>& q) {
  double e = 0;
  for (int n = 0; n < Problem::kInputs; ++n) {
    for (int r = 0; r < kRows; ++r) {
      double y = 0;
      for (int i = 0; i < kCols; ++i) {
        y += (static_cast<double>(p.weights[r * kCols + i]) - q[r * kCols + i]) * p.inputs[n * kCols + i];
      }
      e += y * y;
    }
  }
  return e;
}

class QuantizeWeighted : public ::testing::TestWithParam<DType> {};

// Plain rounding is one of the candidates, so no row can get worse by the objective; with skewed inputs the
// choice must pay off over the matrix, in the objective and in the output error on actual inputs.
TEST_P(QuantizeWeighted, LowersTheWeightedErrorOnSkewedActivations) {
  for (uint64_t seed : {1, 2, 3}) {
    const Problem p = skewed(seed);
    const auto plain = roundtrip(GetParam(), p, false);
    const auto weighted = roundtrip(GetParam(), p, true);
    double plain_total = 0, weighted_total = 0;
    for (int r = 0; r < kRows; ++r) {
      const double a = weighted_error(p, weighted, r), b = weighted_error(p, plain, r);
      EXPECT_LE(a, b) << "row " << r << " seed " << seed;
      weighted_total += a;
      plain_total += b;
    }
    std::cout << dtype_name(GetParam()) << " seed " << seed << ": weighted error " << weighted_total / plain_total
              << " of plain rounding's, output error " << output_error(p, weighted) / output_error(p, plain) << "\n";
    EXPECT_LT(weighted_total, plain_total);
    EXPECT_LT(output_error(p, weighted), output_error(p, plain));
  }
}

// Equal importance everywhere: the same choice of scale by the plain squared error, never worse than rounding.
TEST_P(QuantizeWeighted, UniformImportanceNeverLosesToRounding) {
  Problem p = skewed(7);
  std::fill(p.importance.begin(), p.importance.end(), 1.0f);
  const auto plain = roundtrip(GetParam(), p, false);
  const auto weighted = roundtrip(GetParam(), p, true);
  for (int r = 0; r < kRows; ++r) EXPECT_LE(weighted_error(p, weighted, r), weighted_error(p, plain, r)) << r;
}

// Zero importance on a whole block (channels no calibration token reached) weighs its weights equally rather than
// leaving them to chance; a zero block stays zero.
TEST_P(QuantizeWeighted, DeadChannelsAndZeroBlocks) {
  Problem p = skewed(9);
  std::fill(p.importance.begin(), p.importance.begin() + 32, 0.0f);
  std::fill(p.weights.begin() + 32, p.weights.begin() + 64, 0.0f);  // row 0's second block
  const auto plain = roundtrip(GetParam(), p, false);
  const auto weighted = roundtrip(GetParam(), p, true);
  double plain_dead = 0, weighted_dead = 0;
  for (int r = 0; r < kRows; ++r) {
    for (int i = 0; i < 32; ++i) {
      const double w = p.weights[r * kCols + i];
      plain_dead += (w - plain[r * kCols + i]) * (w - plain[r * kCols + i]);
      weighted_dead += (w - weighted[r * kCols + i]) * (w - weighted[r * kCols + i]);
    }
  }
  EXPECT_LE(weighted_dead, plain_dead);
  for (int i = 32; i < 64; ++i) EXPECT_EQ(weighted[i], 0.0f);
}

INSTANTIATE_TEST_SUITE_P(BlockTypes, QuantizeWeighted, ::testing::Values(DType::Q4_0, DType::Q8_0),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(QuantizeWeightedErrors, OtherTypesAndPartialBlocksAreRefused) {
  std::vector<float> x(64, 1.0f), w(64, 1.0f);
  std::vector<uint8_t> out(256);
  EXPECT_MENTIONS(testing::error_of([&] { quantize_row_weighted(DType::BF16, x.data(), w.data(), out.data(), 64); }),
                  "BF16");
  EXPECT_MENTIONS(testing::error_of([&] { quantize_row_weighted(DType::Q4_0, x.data(), w.data(), out.data(), 48); }),
                  "48");
}

}  // namespace
}  // namespace ernie
