// The float32 kernels against textbook double-precision references written here, on random inputs of awkward
// sizes. Weight bytes are built in the test; the references decode them with their own field-by-field decoders.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "kernels/attention.h"
#include "kernels/kernel_test_support.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kernels/rope.h"

namespace ernie {
namespace {

using testing::for_each_simd_target;
using testing::Random;

// Independent decoders: bf16 is the top half of a float32; binary16 from its sign/exponent/mantissa fields.
double decode_bf16(uint16_t bits) {
  return std::bit_cast<float>(uint32_t{bits} << 16);
}
double decode_f16(uint16_t bits) {
  const int e = (bits >> 10) & 0x1f, m = bits & 0x3ff;
  const double mag = e == 0 ? std::ldexp(m, -24) : std::ldexp(1.0 + m / 1024.0, e - 15);  // no inf/NaN used here
  return (bits & 0x8000) ? -mag : mag;
}

// A weight matrix stored in `dtype`, in a byte buffer whose data starts `misalign` bytes past an aligned address,
// plus the exact values it holds (as the reference sees them).
struct StoredMatrix {
  std::vector<uint8_t> buffer;
  std::vector<double> values;  // [rows, cols]
  WeightMatrix view;
};

StoredMatrix make_matrix(DType dtype, int rows, int cols, Random& rnd, size_t misalign, float scale = 1.0f) {
  StoredMatrix m;
  const size_t n = static_cast<size_t>(rows) * cols;
  m.buffer.assign(dtype_row_bytes(dtype, n) + misalign + 16, 0xAB);
  uint8_t* base = m.buffer.data() + misalign;
  m.values.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const float v = rnd.uniform(-scale, scale);
    switch (dtype) {
      case DType::F32: {
        std::memcpy(base + 4 * i, &v, 4);
        m.values[i] = v;
        break;
      }
      case DType::BF16: {
        const uint16_t b = f32_to_bf16(v);
        std::memcpy(base + 2 * i, &b, 2);
        m.values[i] = decode_bf16(b);
        break;
      }
      case DType::F16: {
        const uint16_t b = f32_to_f16(v);
        std::memcpy(base + 2 * i, &b, 2);
        m.values[i] = decode_f16(b);
        break;
      }
      case DType::Q8_0:
      case DType::Q4_0: ADD_FAILURE() << "block formats are made with quantize_row"; return m;
    }
  }
  m.view = WeightMatrix{dtype, base, rows, cols};
  return m;
}

const float kSentinel = std::bit_cast<float>(0x7fa5a5a5u);  // a NaN pattern nobody computes
bool is_sentinel(float f) {
  return std::bit_cast<uint32_t>(f) == 0x7fa5a5a5u;
}

std::string dtype_label(DType t) {
  return std::string(dtype_name(t));
}

// ---- matmul ----------------------------------------------------------------------------------------------------

struct MatmulCase {
  DType dtype;
  int rows, cols, n_tokens;
  bool bias;
  int row_begin, row_end;
  size_t misalign;
};

void check_matmul(const MatmulCase& c, Random& rnd) {
  SCOPED_TRACE(dtype_label(c.dtype) + " rows " + std::to_string(c.rows) + " cols " + std::to_string(c.cols) +
               " tokens " + std::to_string(c.n_tokens) + (c.bias ? " bias" : "") + " range [" +
               std::to_string(c.row_begin) + ", " + std::to_string(c.row_end) + ") misalign " +
               std::to_string(c.misalign));
  StoredMatrix w = make_matrix(c.dtype, c.rows, c.cols, rnd, c.misalign);
  const std::vector<uint8_t> weight_bytes_before = w.buffer;
  const std::vector<float> x = rnd.vector(static_cast<size_t>(c.n_tokens) * c.cols, -2.0f, 2.0f);
  const std::vector<float> bias = rnd.vector(c.rows, -0.5f, 0.5f);
  std::vector<float> out(static_cast<size_t>(c.n_tokens) * c.rows, kSentinel);

  matmul(out.data(), MatmulInput{x.data(), nullptr, c.n_tokens, c.cols}, w.view, c.bias ? bias.data() : nullptr,
         c.row_begin, c.row_end);

  for (int t = 0; t < c.n_tokens; ++t) {
    for (int r = 0; r < c.rows; ++r) {
      const float got = out[static_cast<size_t>(t) * c.rows + r];
      if (r < c.row_begin || r >= c.row_end) {
        ASSERT_TRUE(is_sentinel(got)) << "row " << r << " outside the range was written (token " << t << ")";
        continue;
      }
      double ref = 0, magnitude = 0;
      for (int k = 0; k < c.cols; ++k) {
        const double p =
            static_cast<double>(x[static_cast<size_t>(t) * c.cols + k]) * w.values[static_cast<size_t>(r) * c.cols + k];
        ref += p;
        magnitude += std::fabs(p);
      }
      if (c.bias) {
        ref += bias[r];
        magnitude += std::fabs(bias[r]);
      }
      ASSERT_LE(std::fabs(got - ref), 1e-5 * magnitude)
          << "token " << t << " row " << r << " got " << got << " expected " << ref;
    }
  }
  EXPECT_EQ(w.buffer, weight_bytes_before) << "matmul wrote to its weights";
}

TEST(Matmul, MatchesReferenceForEveryDtypeAndAwkwardSize) {
  for_each_simd_target([&] {
    Random rnd(7);
    for (DType dtype : {DType::F32, DType::BF16, DType::F16}) {
      for (int cols : {1, 7, 13, 67, 129, 1000}) {
        for (int rows : {1, 3, 17}) {
          for (int n_tokens : {1, 5}) {
            for (bool bias : {false, true}) {
              check_matmul({dtype, rows, cols, n_tokens, bias, 0, rows, 0}, rnd);
              if (::testing::Test::HasFatalFailure()) return;
            }
          }
        }
      }
    }
  });
}

TEST(Matmul, RowSubRangeLeavesOtherRowsUntouched) {
  for_each_simd_target([&] {
    Random rnd(8);
    for (DType dtype : {DType::F32, DType::BF16, DType::F16}) {
      for (int cols : {1, 13, 129}) {
        for (bool bias : {false, true}) {
          check_matmul({dtype, 17, cols, 5, bias, 3, 11, 0}, rnd);
          check_matmul({dtype, 17, cols, 1, bias, 16, 17, 0}, rnd);  // the last row alone
          check_matmul({dtype, 17, cols, 5, bias, 0, 1, 0}, rnd);    // the first row alone
          check_matmul({dtype, 17, cols, 5, bias, 9, 9, 0}, rnd);    // empty range: nothing written
          if (::testing::Test::HasFatalFailure()) return;
        }
      }
    }
  });
}

TEST(Matmul, UnalignedWeights) {
  for_each_simd_target([&] {
    Random rnd(9);
    for (DType dtype : {DType::F32, DType::BF16, DType::F16}) {
      for (size_t misalign : {1, 2, 3}) {
        for (int cols : {7, 67, 1000}) {
          check_matmul({dtype, 3, cols, 5, true, 0, 3, misalign}, rnd);
          check_matmul({dtype, 17, cols, 1, false, 2, 15, misalign}, rnd);
          if (::testing::Test::HasFatalFailure()) return;
        }
      }
    }
  });
}

TEST(Matmul, FullRangeWritesEveryRow) {
  for_each_simd_target([&] {
    Random rnd(10);
    StoredMatrix w = make_matrix(DType::BF16, 5, 9, rnd, 1);
    const std::vector<float> x = rnd.vector(2 * 9);
    std::vector<float> out(2 * 5, kSentinel);
    matmul(out.data(), MatmulInput{x.data(), nullptr, 2, 9}, w.view, nullptr, 0, 5);
    for (float v : out) EXPECT_FALSE(is_sentinel(v));
  });
}

// ---- read_row ----------------------------------------------------------------------------------------------------

TEST(ReadRow, WidensEveryDtypeExactly) {
  for_each_simd_target([&] {
    Random rnd(11);
    for (DType dtype : {DType::F32, DType::BF16, DType::F16}) {
      for (size_t misalign : {0, 1, 2}) {
        for (int cols : {1, 7, 129}) {
          SCOPED_TRACE(dtype_label(dtype) + " cols " + std::to_string(cols) + " misalign " + std::to_string(misalign));
          const int rows = 17;
          StoredMatrix w = make_matrix(dtype, rows, cols, rnd, misalign, 3.0f);
          for (int r : {0, 1, 8, 16}) {
            std::vector<float> out(cols + 1, kSentinel);
            read_row(out.data(), w.view, r);
            for (int c = 0; c < cols; ++c) {
              ASSERT_EQ(static_cast<double>(out[c]), w.values[static_cast<size_t>(r) * cols + c])
                  << "row " << r << " col " << c;
            }
            EXPECT_TRUE(is_sentinel(out[cols])) << "read_row wrote past the row";
          }
        }
      }
    }
  });
}

TEST(ReadRow, SpecialValues) {
  for_each_simd_target([&] {
    // F16: largest finite, smallest subnormal, -0, inf; BF16 the same idea.
    const uint16_t half_bits[] = {0x7bff, 0x0001, 0x8000, 0x7c00, 0xfc00, 0x3c00};
    const uint16_t bf16_bits[] = {0x7f7f, 0x0001, 0x8000, 0x7f80, 0xff80, 0x3f80};
    std::vector<uint8_t> h(sizeof half_bits + 1), b(sizeof bf16_bits + 1);
    std::memcpy(h.data() + 1, half_bits, sizeof half_bits);
    std::memcpy(b.data() + 1, bf16_bits, sizeof bf16_bits);
    float out[6];
    read_row(out, WeightMatrix{DType::F16, h.data() + 1, 1, 6}, 0);
    EXPECT_EQ(out[0], 65504.0f);
    EXPECT_EQ(out[1], 0x1p-24f);
    EXPECT_TRUE(out[2] == 0.0f && std::signbit(out[2]));
    EXPECT_EQ(out[3], std::numeric_limits<float>::infinity());
    EXPECT_EQ(out[4], -std::numeric_limits<float>::infinity());
    EXPECT_EQ(out[5], 1.0f);
    read_row(out, WeightMatrix{DType::BF16, b.data() + 1, 1, 6}, 0);
    EXPECT_EQ(std::bit_cast<uint32_t>(out[0]), 0x7f7f0000u);
    EXPECT_EQ(std::bit_cast<uint32_t>(out[1]), 0x00010000u);
    EXPECT_TRUE(out[2] == 0.0f && std::signbit(out[2]));
    EXPECT_EQ(out[3], std::numeric_limits<float>::infinity());
    EXPECT_EQ(out[4], -std::numeric_limits<float>::infinity());
    EXPECT_EQ(out[5], 1.0f);
  });
}

// ---- rmsnorm ----------------------------------------------------------------------------------------------------

std::vector<double> reference_rmsnorm(const std::vector<float>& x, const std::vector<float>& w, int rows, int n,
                                      double eps) {
  std::vector<double> out(x.size());
  for (int r = 0; r < rows; ++r) {
    double ss = 0;
    for (int i = 0; i < n; ++i) ss += static_cast<double>(x[r * n + i]) * x[r * n + i];
    const double inv = 1.0 / std::sqrt(ss / n + eps);
    for (int i = 0; i < n; ++i) out[r * n + i] = x[r * n + i] * inv * w[i];
  }
  return out;
}

TEST(RmsNorm, MatchesReference) {
  for_each_simd_target([&] {
    Random rnd(12);
    for (int rows : {1, 3, 17}) {
      for (int n : {1, 7, 13, 67, 1000}) {
        // Scale 1e-3 makes the mean square (~3e-7) small against eps, so eps outside the sqrt would be caught.
        for (float scale : {1.0f, 30.0f, 1e-3f}) {
          for (float eps : {1e-5f, 1e-6f}) {
            SCOPED_TRACE("rows " + std::to_string(rows) + " n " + std::to_string(n) + " scale " +
                         std::to_string(scale) + " eps " + std::to_string(eps));
            const auto x = rnd.vector(static_cast<size_t>(rows) * n, -scale, scale);
            const auto w = rnd.vector(n, 0.5f, 1.5f);
            const auto ref = reference_rmsnorm(x, w, rows, n, eps);
            std::vector<float> out(x.size() + 1, kSentinel);
            rmsnorm(out.data(), x.data(), w.data(), rows, n, eps);
            for (size_t i = 0; i < x.size(); ++i) {
              ASSERT_LE(std::fabs(out[i] - ref[i]), 2e-6 * std::fabs(ref[i]) + 1e-30) << "element " << i;
            }
            EXPECT_TRUE(is_sentinel(out[x.size()]));
            // In place: out aliasing x gives the same result.
            auto inplace = x;
            rmsnorm(inplace.data(), inplace.data(), w.data(), rows, n, eps);
            for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(inplace[i], out[i]) << "in place, element " << i;
          }
        }
      }
    }
  });
}

TEST(RmsNorm, ZeroRowGivesZerosNotNaN) {
  for_each_simd_target([&] {
    std::vector<float> x(13, 0.0f), w(13, 1.0f), out(13, kSentinel);
    rmsnorm(out.data(), x.data(), w.data(), 1, 13, 1e-6f);
    for (float v : out) EXPECT_EQ(v, 0.0f);
  });
}

// ---- softmax ----------------------------------------------------------------------------------------------------

std::vector<double> reference_softmax(const std::vector<float>& x) {
  double m = -std::numeric_limits<double>::infinity();
  for (float v : x) m = std::max(m, static_cast<double>(v));
  std::vector<double> out(x.size());
  double sum = 0;
  for (size_t i = 0; i < x.size(); ++i) sum += out[i] = std::exp(x[i] - m);
  for (auto& v : out) v /= sum;
  return out;
}

void check_softmax(const std::vector<float>& x) {
  const auto ref = reference_softmax(x);
  auto y = x;
  softmax(y.data(), static_cast<int>(y.size()));
  double sum = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    ASSERT_TRUE(std::isfinite(y[i])) << "element " << i;
    ASSERT_GE(y[i], 0.0f);
    ASSERT_LE(std::fabs(y[i] - ref[i]), 1e-5 * ref[i] + 1e-12)
        << "element " << i << " got " << y[i] << " expected " << ref[i];
    sum += y[i];
  }
  EXPECT_NEAR(sum, 1.0, 1e-5);
}

TEST(Softmax, MatchesReferenceAndSumsToOne) {
  for_each_simd_target([&] {
    Random rnd(13);
    for (int n : {1, 7, 13, 67, 129, 1000}) {
      for (float scale : {1.0f, 10.0f}) {
        SCOPED_TRACE("n " + std::to_string(n) + " scale " + std::to_string(scale));
        check_softmax(rnd.vector(n, -scale, scale));
      }
    }
  });
}

TEST(Softmax, LargeInputsDoNotOverflow) {
  for_each_simd_target([&] {
    check_softmax({1000.0f, 999.0f, 1000.0f, -1000.0f});
    check_softmax({-1000.0f, -1001.0f, -1000.5f});  // exp(x) alone would underflow to 0/0
    check_softmax({88.0f, 89.0f, 100.0f, 3e4f});
    check_softmax(std::vector<float>(67, 1e30f));
    std::vector<float> one = {12345.0f};
    softmax(one.data(), 1);
    EXPECT_EQ(one[0], 1.0f);
    std::vector<float> ties(5, 1000.0f);
    softmax(ties.data(), 5);
    for (float v : ties) EXPECT_NEAR(v, 0.2f, 1e-7f);
  });
}

TEST(Softmax, NegativeInfinityGetsZeroWeight) {
  for_each_simd_target([&] {
    const float inf = std::numeric_limits<float>::infinity();
    std::vector<float> x = {0.0f, -inf, std::log(3.0f)};
    softmax(x.data(), 3);
    EXPECT_NEAR(x[0], 0.25f, 1e-7f);
    EXPECT_EQ(x[1], 0.0f);
    EXPECT_NEAR(x[2], 0.75f, 1e-7f);
  });
}

// ---- swiglu / add ------------------------------------------------------------------------------------------------

double reference_silu(double z) {
  return z / (1.0 + std::exp(-z));
}

TEST(SwiGLU, MatchesReferenceIncludingExtremeGates) {
  for_each_simd_target([&] {
    Random rnd(14);
    for (int n : {1, 7, 13, 67, 1000}) {
      SCOPED_TRACE("n " + std::to_string(n));
      auto gate = rnd.vector(n, -8.0f, 8.0f);
      const auto up = rnd.vector(n, -3.0f, 3.0f);
      const float extremes[] = {-1000.0f, 1000.0f, -100.0f, 100.0f, -88.8f, 88.8f, -3e38f, 3e38f, 0.0f, -0.0f};
      for (int i = 0; i < n && i < 10; ++i) gate[i] = extremes[i];
      std::vector<float> out(n, kSentinel);
      swiglu(out.data(), gate.data(), up.data(), n);
      for (int i = 0; i < n; ++i) {
        ASSERT_FALSE(std::isnan(out[i])) << "gate " << gate[i] << " up " << up[i];
        const double ref = reference_silu(gate[i]) * up[i];
        if (std::isinf(static_cast<float>(ref))) {
          EXPECT_EQ(out[i], static_cast<float>(ref)) << "gate " << gate[i];  // 3e38 · up overflows: same sign inf
          continue;
        }
        ASSERT_LE(std::fabs(out[i] - ref), 2e-6 * std::fabs(ref) + 1e-30) << "gate " << gate[i] << " up " << up[i];
      }
      // Aliasing either input.
      auto g2 = gate;
      swiglu(g2.data(), g2.data(), up.data(), n);
      for (int i = 0; i < n; ++i) ASSERT_EQ(std::bit_cast<uint32_t>(g2[i]), std::bit_cast<uint32_t>(out[i]));
      auto u2 = up;
      swiglu(u2.data(), gate.data(), u2.data(), n);
      for (int i = 0; i < n; ++i) ASSERT_EQ(std::bit_cast<uint32_t>(u2[i]), std::bit_cast<uint32_t>(out[i]));
    }
  });
}

TEST(AddInplace, AddsElementwise) {
  for_each_simd_target([&] {
    Random rnd(15);
    for (int n : {1, 7, 13, 1000}) {
      auto x = rnd.vector(n);
      const auto y = rnd.vector(n);
      const auto x0 = x;
      add_inplace(x.data(), y.data(), n);
      // Inputs are multiples of 2^-24 in (-1, 1): the double sum is exact, so one rounding to float is the answer.
      for (int i = 0; i < n; ++i) ASSERT_EQ(x[i], static_cast<float>(static_cast<double>(x0[i]) + y[i])) << i;
    }
    std::vector<float> a = {1.0f, 2.0f, 3.0f, 4.0f}, b = {10.0f, 20.0f, 30.0f, 40.0f};
    add_inplace(a.data(), b.data(), 3);  // n respected: the 4th element untouched
    EXPECT_EQ(a, (std::vector<float>{11.0f, 22.0f, 33.0f, 4.0f}));
  });
}

// ---- RoPE ----------------------------------------------------------------------------------------------------------

// Interleaved pairs (2i, 2i+1) rotate by p·θ^(−2i/d), in double.
std::vector<double> reference_rope(const std::vector<float>& x, int n_heads, int head_dim, double theta, int pos) {
  std::vector<double> out(x.size());
  for (int h = 0; h < n_heads; ++h) {
    for (int i = 0; i < head_dim / 2; ++i) {
      const double angle = pos * std::pow(theta, -2.0 * i / head_dim);
      const double a = x[h * head_dim + 2 * i], b = x[h * head_dim + 2 * i + 1];
      out[h * head_dim + 2 * i] = a * std::cos(angle) - b * std::sin(angle);
      out[h * head_dim + 2 * i + 1] = b * std::cos(angle) + a * std::sin(angle);
    }
  }
  return out;
}

// Llama/NeoX style: dimension i rotates with i + d/2.
std::vector<double> neox_rope(const std::vector<float>& x, int n_heads, int head_dim, double theta, int pos) {
  std::vector<double> out(x.size());
  const int half = head_dim / 2;
  for (int h = 0; h < n_heads; ++h) {
    for (int i = 0; i < half; ++i) {
      const double angle = pos * std::pow(theta, -2.0 * i / head_dim);
      const double a = x[h * head_dim + i], b = x[h * head_dim + i + half];
      out[h * head_dim + i] = a * std::cos(angle) - b * std::sin(angle);
      out[h * head_dim + i + half] = b * std::cos(angle) + a * std::sin(angle);
    }
  }
  return out;
}

double max_diff(const std::vector<float>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < b.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

// Transformers' own float32 computation (fixtures README, "Precision detail"): inv_freq = 1 / θ^(2i/d) with the
// exponent, the power and the reciprocal in float32, angle = float32(p) · inv_freq in float32, cos/sin of that
// float angle. Only the rotation differs from reference_rope.
std::vector<double> float32_angle_rope(const std::vector<float>& x, int n_heads, int head_dim, float theta, int pos) {
  std::vector<double> out(x.size());
  for (int h = 0; h < n_heads; ++h) {
    for (int i = 0; i < head_dim / 2; ++i) {
      const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
      const float inv_freq = 1.0f / std::pow(theta, exponent);
      const float angle = static_cast<float>(pos) * inv_freq;
      const double c = static_cast<float>(std::cos(static_cast<double>(angle)));
      const double s = static_cast<float>(std::sin(static_cast<double>(angle)));
      const double a = x[h * head_dim + 2 * i], b = x[h * head_dim + 2 * i + 1];
      out[h * head_dim + 2 * i] = a * c - b * s;
      out[h * head_dim + 2 * i + 1] = b * c + a * s;
    }
  }
  return out;
}

// Against the exact (double) rotation, float32 angles are off by up to ~3 float32 roundings of the angle (the power,
// the reciprocal, the product; the exponent 2i/d is exact for power-of-two d), which moves a pair by at most
// (|a|+|b|)·angle·3·2^-24; the trig values and the rotation itself add a few float32 roundings of |v| <= 1.
// At p = 4000 the first term reaches ~1e-3 in the worst case (observed: ~1.7e-4), so the bound is per element.
double rope_bound(const std::vector<float>& x, int head_dim, double theta, int pos, size_t element) {
  const size_t pair = element / 2 * 2;
  const int i = static_cast<int>(pair % head_dim) / 2;
  const double angle = pos * std::pow(theta, -2.0 * i / head_dim);
  return (std::fabs(x[pair]) + std::fabs(x[pair + 1])) * angle * 3 * 0x1p-24 + 1e-6;
}

void expect_rope_matches(const std::vector<float>& x, const std::vector<float>& y, int n_heads, int head_dim,
                         float theta, int pos) {
  const auto exact = reference_rope(x, n_heads, head_dim, theta, pos);
  const auto transformers = float32_angle_rope(x, n_heads, head_dim, theta, pos);
  double worst_exact = 0;
  for (size_t e = 0; e < x.size(); ++e) {
    ASSERT_LE(std::fabs(y[e] - exact[e]), rope_bound(x, head_dim, theta, pos, e)) << "element " << e;
    ASSERT_LE(std::fabs(y[e] - transformers[e]), 2e-6) << "element " << e << " (float32-angle reference)";
    worst_exact = std::max(worst_exact, std::fabs(y[e] - exact[e]));
  }
  // Whatever the angle rounding, the result stays within a few 1e-4 of the exact rotation for p <= 4000.
  EXPECT_LE(worst_exact, pos <= 1000 ? 1e-4 : 5e-4);
}

constexpr double kRopeTolerance = 2e-5;  // p <= 40, |v| <= 1: (|a|+|b|)·p·3·2^-24 + 1e-6 < 2e-5

TEST(Rope, MatchesInterleavedReference) {
  Random rnd(16);
  for (int head_dim : {2, 16, 64, 128}) {
    for (float theta : {10000.0f, 500000.0f}) {
      const Rope table(head_dim, theta);
      EXPECT_EQ(table.head_dim(), head_dim);
      for (int n_heads : {1, 3}) {
        for (int pos : {1, 2, 7, 100, 1000, 2047, 3001, 4000}) {
          SCOPED_TRACE("head_dim " + std::to_string(head_dim) + " theta " + std::to_string(theta) + " heads " +
                       std::to_string(n_heads) + " pos " + std::to_string(pos));
          const auto x = rnd.vector(static_cast<size_t>(n_heads) * head_dim);
          auto y = x;
          table.apply(y.data(), n_heads, pos);
          expect_rope_matches(x, y, n_heads, head_dim, theta, pos);
        }
      }
    }
  }
}

TEST(Rope, PositionZeroIsIdentity) {
  Random rnd(17);
  const Rope table(16, 500000.0f);
  const auto x = rnd.vector(3 * 16);
  auto y = x;
  table.apply(y.data(), 3, 0);
  EXPECT_EQ(y, x);
}

TEST(Rope, HalfSplitRotationWouldBeCaught) {
  Random rnd(18);
  const int head_dim = 16;
  const Rope table(head_dim, 500000.0f);
  for (int pos : {1, 5, 37}) {
    const auto x = rnd.vector(2 * head_dim);
    auto y = x;
    table.apply(y.data(), 2, pos);
    const auto interleaved = reference_rope(x, 2, head_dim, 500000.0, pos);
    const auto half_split = neox_rope(x, 2, head_dim, 500000.0, pos);
    EXPECT_LE(max_diff(y, interleaved), kRopeTolerance) << "pos " << pos;
    EXPECT_GT(max_diff(y, half_split), 100 * kRopeTolerance) << "pos " << pos << ": matches the half-split rotation";
  }
}

TEST(Rope, HeadsRotateIndependentlyWithTheSameAngles) {
  Random rnd(19);
  const Rope table(8, 10000.0f);
  const auto head = rnd.vector(8);
  std::vector<float> three;
  for (int h = 0; h < 3; ++h) three.insert(three.end(), head.begin(), head.end());
  auto single = head;
  table.apply(single.data(), 1, 9);
  table.apply(three.data(), 3, 9);
  for (int h = 0; h < 3; ++h) {
    for (int d = 0; d < 8; ++d) EXPECT_EQ(three[h * 8 + d], single[d]) << "head " << h;
  }
}

// ---- attention -----------------------------------------------------------------------------------------------------

// The kernel over a float32 cache, every head.
void attention_f32(float* out, const float* q, int n_queries, int first_pos, const std::vector<float>& k,
                   const std::vector<float>& v, const AttentionShape& shape) {
  const testing::TestKvCache cache(DType::F32, shape, k, v);
  attention(out, q, n_queries, first_pos, cache.view(), shape, 0, shape.n_heads);
}

// The full [n_queries, n_keys] score matrix per head with a causal mask, softmax and weighted values, in double.
std::vector<double> reference_attention(const std::vector<float>& q, int n_queries, int first_pos,
                                        const std::vector<float>& k, const std::vector<float>& v,
                                        const AttentionShape& s) {
  const int hd = s.head_dim, q_stride = s.n_heads * hd, kv_stride = s.n_kv_heads * hd;
  const int n_keys = first_pos + n_queries;
  const int group = s.n_heads / s.n_kv_heads;
  std::vector<double> out(static_cast<size_t>(n_queries) * q_stride);
  for (int h = 0; h < s.n_heads; ++h) {
    const int kvh = h / group;
    std::vector<std::vector<double>> scores(n_queries, std::vector<double>(n_keys));
    for (int t = 0; t < n_queries; ++t) {
      for (int j = 0; j < n_keys; ++j) {
        if (j > first_pos + t) {
          scores[t][j] = -std::numeric_limits<double>::infinity();
          continue;
        }
        double dot = 0;
        for (int d = 0; d < hd; ++d)
          dot += static_cast<double>(q[t * q_stride + h * hd + d]) * k[j * kv_stride + kvh * hd + d];
        scores[t][j] = dot / std::sqrt(static_cast<double>(hd));
      }
    }
    for (int t = 0; t < n_queries; ++t) {
      double m = -std::numeric_limits<double>::infinity(), sum = 0;
      for (double sc : scores[t]) m = std::max(m, sc);
      std::vector<double> p(n_keys);
      for (int j = 0; j < n_keys; ++j) sum += p[j] = std::exp(scores[t][j] - m);
      for (int d = 0; d < hd; ++d) {
        double acc = 0;
        for (int j = 0; j < n_keys; ++j) acc += p[j] / sum * v[j * kv_stride + kvh * hd + d];
        out[t * q_stride + h * hd + d] = acc;
      }
    }
  }
  return out;
}

struct AttentionCase {
  int n_heads, n_kv_heads, head_dim, n_queries, first_pos;
};

TEST(Attention, CausalGroupedQueryMatchesReference) {
  for_each_simd_target([&] {
    Random rnd(20);
    const AttentionCase cases[] = {
        {4, 2, 16, 1, 0}, {4, 2, 16, 5, 0}, {4, 2, 16, 5, 7}, {4, 2, 16, 1, 33}, {6, 3, 8, 5, 11},
        {6, 3, 8, 1, 0},  {4, 4, 16, 5, 3}, {3, 3, 5, 17, 2}, {4, 1, 16, 3, 4},  {8, 2, 64, 5, 130},
    };
    for (const auto& c : cases) {
      SCOPED_TRACE("heads " + std::to_string(c.n_heads) + "/" + std::to_string(c.n_kv_heads) + " head_dim " +
                   std::to_string(c.head_dim) + " queries " + std::to_string(c.n_queries) + " first_pos " +
                   std::to_string(c.first_pos));
      const AttentionShape shape{c.n_heads, c.n_kv_heads, c.head_dim};
      const int n_keys = c.first_pos + c.n_queries;
      // Scale 2 makes scores of order ±4·sqrt(head_dim)/… so the softmax is far from uniform.
      const auto q = rnd.vector(static_cast<size_t>(c.n_queries) * c.n_heads * c.head_dim, -2.0f, 2.0f);
      const auto k = rnd.vector(static_cast<size_t>(n_keys) * c.n_kv_heads * c.head_dim, -2.0f, 2.0f);
      const auto v = rnd.vector(static_cast<size_t>(n_keys) * c.n_kv_heads * c.head_dim);
      std::vector<float> out(q.size() + 1, kSentinel);
      attention_f32(out.data(), q.data(), c.n_queries, c.first_pos, k, v, shape);
      const auto ref = reference_attention(q, c.n_queries, c.first_pos, k, v, shape);
      double worst = 0;
      for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, std::fabs(out[i] - ref[i]));
      EXPECT_LE(worst, 1e-5);  // outputs are convex combinations of |v| <= 1
      EXPECT_TRUE(is_sentinel(out[q.size()])) << "wrote past the output";
    }
  });
}

// Query t (at position first_pos + t) must not read cache rows after its position: poisoning those rows in both
// K and V may change the other queries' rows but never row t.
TEST(Attention, QueriesDoNotSeeFutureKeys) {
  for_each_simd_target([&] {
    Random rnd(21);
    for (const auto& c : {AttentionCase{4, 2, 16, 5, 6}, AttentionCase{6, 3, 8, 4, 0}, AttentionCase{4, 4, 8, 3, 2}}) {
      const AttentionShape shape{c.n_heads, c.n_kv_heads, c.head_dim};
      const int kv_stride = c.n_kv_heads * c.head_dim;
      const int n_keys = c.first_pos + c.n_queries;
      const int spare = 4;  // rows past the last query: no query may see them
      const auto q = rnd.vector(static_cast<size_t>(c.n_queries) * c.n_heads * c.head_dim);
      const auto k = rnd.vector(static_cast<size_t>(n_keys + spare) * kv_stride);
      const auto v = rnd.vector(static_cast<size_t>(n_keys + spare) * kv_stride);
      const auto ref = reference_attention(q, c.n_queries, c.first_pos, k, v, shape);
      for (int t = 0; t < c.n_queries; ++t) {
        SCOPED_TRACE("query " + std::to_string(t) + " first_pos " + std::to_string(c.first_pos));
        // Poisoned keys align with the first query head of each group (so their scores would dominate the softmax
        // if they were seen) and carry huge values.
        const int group = c.n_heads / c.n_kv_heads;
        auto kp = k, vp = v;
        for (int j = c.first_pos + t + 1; j < n_keys + spare; ++j) {
          for (int g = 0; g < c.n_kv_heads; ++g) {
            for (int d = 0; d < c.head_dim; ++d) {
              const float qd = q[(static_cast<size_t>(t) * c.n_heads + g * group) * c.head_dim + d];
              kp[j * kv_stride + g * c.head_dim + d] = qd >= 0 ? 30.0f : -30.0f;
              vp[j * kv_stride + g * c.head_dim + d] = 1e6f;
            }
          }
        }
        std::vector<float> out(q.size());
        attention_f32(out.data(), q.data(), c.n_queries, c.first_pos, kp, vp, shape);
        const int q_stride = c.n_heads * c.head_dim;
        for (int d = 0; d < q_stride; ++d) {
          ASSERT_LE(std::fabs(out[t * q_stride + d] - ref[t * q_stride + d]), 1e-5) << "dim " << d;
        }
        if (t + 1 < c.n_queries) {  // the poison is strong enough to show wherever it is legitimately visible
          const int last = c.n_queries - 1;
          double shift = 0;
          for (int d = 0; d < q_stride; ++d)
            shift = std::max(shift, std::fabs(out[last * q_stride + d] - ref[last * q_stride + d]));
          EXPECT_GT(shift, 1e3);
        }
      }
    }
  });
}

TEST(Attention, SingleKeyCopiesItsValue) {
  for_each_simd_target([&] {
    // One key: softmax weight 1, so every head returns its kv head's value row exactly.
    const AttentionShape shape{4, 2, 4};
    std::vector<float> q(16), k(8), v(8), out(16);
    Random rnd(22);
    for (auto& x : q) x = rnd.uniform(-1, 1);
    for (auto& x : k) x = rnd.uniform(-1, 1);
    for (int i = 0; i < 8; ++i) v[i] = static_cast<float>(i + 1);
    attention_f32(out.data(), q.data(), 1, 0, k, v, shape);
    for (int h = 0; h < 4; ++h) {
      for (int d = 0; d < 4; ++d) EXPECT_EQ(out[h * 4 + d], v[(h / 2) * 4 + d]) << "head " << h;
    }
  });
}

}  // namespace
}  // namespace ernie
