// The LoRA kernels on every compiled SIMD target against their double-precision definitions, and the contract that a
// result never depends on how the work is split: by rows (any subset, in any group), by ranks for the shrink, by
// outputs for the expand.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/kernel_test_support.h"
#include "kernels/lora.h"

namespace ernie {
namespace {

using testing::first_difference;
using testing::for_each_simd_target;
using testing::Random;

constexpr int kRows = 7;  // every row-group size the kernels use (4, 3, 2, 1) shows up in a split of 7

std::vector<int32_t> all_rows() {
  std::vector<int32_t> rows(kRows);
  std::iota(rows.begin(), rows.end(), 0);
  return rows;
}

TEST(LoraKernels, ShrinkMatchesReferenceAndSplitsExactly) {
  Random rng(11);
  for (const int in : {1, 7, 64, 100, 1024}) {
    for (const int rank : {1, 3, 8, 13}) {
      SCOPED_TRACE(std::to_string(in) + "x" + std::to_string(rank));
      const size_t t_stride = rank + 3, x_stride = in + 5;  // strides wider than the rows
      const auto x = rng.vector(kRows * x_stride), a = rng.vector(static_cast<size_t>(rank) * in);
      const auto rows = all_rows();
      std::vector<float> expected(kRows * t_stride);
      reference::lora_shrink(expected.data(), t_stride, x.data(), x_stride, {rows.data(), kRows}, a.data(), in, 0,
                             rank);
      for_each_simd_target([&] {
        std::vector<float> whole(kRows * t_stride), split(kRows * t_stride);
        lora_shrink(whole.data(), t_stride, x.data(), x_stride, {rows.data(), kRows}, a.data(), in, 0, rank);
        // Rows one at a time in reverse, ranks two at a time: the same bits.
        for (int r = kRows - 1; r >= 0; --r) {
          for (int k = 0; k < rank; k += 2)
            lora_shrink(split.data(), t_stride, x.data(), x_stride, {&rows[r], 1}, a.data(), in, k,
                        std::min(rank, k + 2));
        }
        EXPECT_EQ(first_difference(whole, split), -1);
        for (size_t i = 0; i < whole.size(); ++i) EXPECT_NEAR(whole[i], expected[i], 1e-5 * std::sqrt(in)) << i;
      });
    }
  }
}

TEST(LoraKernels, ExpandMatchesReferenceAndSplitsExactly) {
  Random rng(12);
  for (const int out : {1, 5, 16, 70, 3072}) {
    for (const int rank : {1, 4, 16}) {
      SCOPED_TRACE(std::to_string(out) + "x" + std::to_string(rank));
      const size_t y_stride = out + 2, t_stride = rank + 1;
      const auto t = rng.vector(kRows * t_stride), b_t = rng.vector(static_cast<size_t>(rank) * out);
      const auto y0 = rng.vector(kRows * y_stride);
      const auto rows = all_rows();
      std::vector<float> expected = y0;
      reference::lora_expand(expected.data(), y_stride, t.data(), t_stride, {rows.data(), kRows}, b_t.data(), rank, out,
                             -0.75f, 0, out);
      for_each_simd_target([&] {
        std::vector<float> whole = y0, split = y0;
        lora_expand(whole.data(), y_stride, t.data(), t_stride, {rows.data(), kRows}, b_t.data(), rank, out, -0.75f, 0,
                    out);
        const std::vector<int32_t> odd = {5, 3, 1}, even = {6, 0, 2, 4};
        for (const auto* subset : {&odd, &even}) {
          for (int j = 0; j < out; j += 3)
            lora_expand(split.data(), y_stride, t.data(), t_stride, {subset->data(), static_cast<int>(subset->size())},
                        b_t.data(), rank, out, -0.75f, j, std::min(out, j + 3));
        }
        EXPECT_EQ(first_difference(whole, split), -1);
        for (size_t i = 0; i < whole.size(); ++i) EXPECT_NEAR(whole[i], expected[i], 1e-5 * (1 + std::sqrt(rank))) << i;
        // Only the rows given are written: the padding between rows keeps its values.
        for (int r = 0; r < kRows; ++r) {
          for (size_t j = out; j < y_stride; ++j) EXPECT_EQ(whole[r * y_stride + j], y0[r * y_stride + j]);
        }
      });
    }
  }
}

}  // namespace
}  // namespace ernie
