// The SIMD kernels on every compiled target against their scalar definitions (namespace reference) and
// double-precision math: the conversions bit for bit, the matmuls within float rounding, and the contract that a
// result never depends on the batch it was computed in.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/attention.h"
#include "kernels/kernel_test_support.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kernels/quant.h"

namespace ernie {
namespace {

using testing::first_difference;
using testing::for_each_simd_target;
using testing::Random;

constexpr DType kAllDtypes[] = {DType::F32, DType::BF16, DType::F16, DType::Q8_0, DType::Q4_0};
constexpr DType kBlockDtypes[] = {DType::Q8_0, DType::Q4_0};

std::string label(DType t) {
  return std::string(dtype_name(t));
}

bool is_block_type(DType t) {
  return dtype_block_elements(t) > 1;
}

// A weight matrix's dtype and layout (matmul.h): the matmul tests run over every combination the kernels take
// (integer weights only packed).
struct Layout {
  DType dtype;
  bool packed = false;
};
constexpr Layout kAllLayouts[] = {
    {DType::F32}, {DType::BF16}, {DType::F16}, {DType::Q8_0, true}, {DType::Q4_0, true}};

std::string label(Layout l) {
  return label(l.dtype) + (l.packed ? " packed" : "");
}

// ---- Conversions ---------------------------------------------------------------------------------------------------

// Random values at a given magnitude, with awkward ones mixed in: zeros of both signs, ties between +a and -a,
// halves that round differently to even and away from zero, and (for the float encodings) values at the edges of
// F16 and BF16: overflow, subnormals, rounding ties, infinities and NaN.
std::vector<float> awkward_values(size_t n, float scale, bool specials, Random& rnd) {
  std::vector<float> x = rnd.vector(n, -scale, scale);
  if (n >= 32) {
    std::fill(x.begin(), x.begin() + 32, 0.0f);  // an all-zero block
    x[3] = -0.0f;
  }
  if (n >= 64) {  // largest magnitude twice, negative first
    x[32 + 5] = -scale;
    x[32 + 9] = scale;
  }
  if (n >= 96) {  // 127 · k/254 lands on x.5 steps of the Q8_0 grid
    for (int i = 0; i < 32; ++i) x[64 + i] = scale * static_cast<float>(i - 16) / 16.0f;
  }
  if (!specials) return x;
  const float edge[] = {65504.0f,
                        65519.0f,
                        65520.0f,
                        70000.0f,
                        -1e9f,
                        6.0e-5f,
                        6.1035156e-05f,
                        3.0e-8f,
                        2.9e-8f,
                        1e-30f,
                        std::bit_cast<float>(0x3f808000u),
                        std::bit_cast<float>(0x3f818000u),
                        std::bit_cast<float>(0x7f7fffffu),
                        HUGE_VALF,
                        -HUGE_VALF,
                        std::numeric_limits<float>::quiet_NaN(),
                        -std::numeric_limits<float>::quiet_NaN(),
                        std::bit_cast<float>(0x7f800001u),
                        std::bit_cast<float>(0xff812345u)};
  for (size_t i = 0; i < std::size(edge) && i < n; ++i) x[(i * 7 + 1) % n] = edge[i];
  return x;
}

TEST(QuantizeRow, MatchesReferenceBitForBit) {
  for_each_simd_target([] {
    Random rnd(101);
    for (DType dtype : kAllDtypes) {
      const std::vector<int> sizes = is_block_type(dtype) ? std::vector<int>{32, 64, 96, 160, 1024, 4096}
                                                          : std::vector<int>{1, 7, 13, 67, 1000, 4096};
      for (int n : sizes) {
        for (float scale : {1.0f, 1e-3f, 3e4f, 1e-6f}) {
          SCOPED_TRACE(label(dtype) + " n " + std::to_string(n) + " scale " + std::to_string(scale));
          const auto x = awkward_values(n, scale, !is_block_type(dtype), rnd);
          const size_t bytes = dtype_row_bytes(dtype, n);
          std::vector<uint8_t> expected(bytes), got(bytes + 3, 0xEE);
          reference::quantize_row(dtype, x.data(), expected.data(), n);
          quantize_row(dtype, x.data(), got.data() + 1, n);  // an odd output address
          ASSERT_EQ(0, std::memcmp(expected.data(), got.data() + 1, bytes));
          EXPECT_EQ(got[0], 0xEE);
          EXPECT_EQ(got[bytes + 1], 0xEE) << "wrote past the row";
        }
      }
    }
  });
}

TEST(QuantizeRow, Q8_0HandComputedBlock) {
  // max|x| = 127: scale 1 (F16 0x3c00), q = round(x) with ties away from zero.
  float x[32] = {127.0f, -63.5f, 0.5f, -0.5f, 1.49f, 2.5f, -126.6f};
  for_each_simd_target([&] {
    BlockQ8_0 block;
    quantize_row(DType::Q8_0, x, reinterpret_cast<uint8_t*>(&block), 32);
    EXPECT_EQ(block.scale, 0x3c00);
    const int expected[7] = {127, -64, 1, -1, 1, 3, -127};
    for (int i = 0; i < 7; ++i) EXPECT_EQ(block.q[i], expected[i]) << i;
    for (int i = 7; i < 32; ++i) EXPECT_EQ(block.q[i], 0) << i;
  });
}

TEST(QuantizeRow, Q4_0HandComputedBlocks) {
  for_each_simd_target([] {
    // x[i] = i - 16: the extreme is -16, scale = -16 / -8 = 2 (F16 0x4000), nibble = min(15, trunc(x / 2 + 8.5)).
    float ramp[32];
    for (int i = 0; i < 32; ++i) ramp[i] = static_cast<float>(i - 16);
    BlockQ4_0 block;
    quantize_row(DType::Q4_0, ramp, reinterpret_cast<uint8_t*>(&block), 32);
    EXPECT_EQ(block.scale, 0x4000);
    // Low nibbles: x = -16..-1 -> 0,1,1,2,2,...,7,7,8; high nibbles: x = 0..15 -> 8,9,9,10,10,...,15,15,15 (x = 15
    // gives 16, clamped).
    const uint8_t expected[16] = {0x80, 0x91, 0x91, 0xa2, 0xa2, 0xb3, 0xb3, 0xc4,
                                  0xc4, 0xd5, 0xd5, 0xe6, 0xe6, 0xf7, 0xf7, 0xf8};
    for (int i = 0; i < 16; ++i) EXPECT_EQ(block.q[i], expected[i]) << i;

    // A positive extreme: 4 -> scale -0.5 (F16 0xb800); 4 -> nibble 0, 0 -> 8, -1 -> 10, 1 -> 6.
    float peak[32] = {};
    peak[5] = 4.0f;
    peak[6] = -1.0f;
    peak[21] = 1.0f;
    quantize_row(DType::Q4_0, peak, reinterpret_cast<uint8_t*>(&block), 32);
    EXPECT_EQ(block.scale, 0xb800);
    for (int i = 0; i < 16; ++i) {
      const uint8_t low = i == 5 ? 0 : i == 6 ? 10 : 8;
      const uint8_t high = i == 5 ? 6 : 8;
      EXPECT_EQ(block.q[i], low | (high << 4)) << i;
    }
  });
}

TEST(QuantizeRow, Q8_0RoundTripWithinHalfAStep) {
  for_each_simd_target([] {
    Random rnd(102);
    for (float scale : {1.0f, 1e-3f, 50.0f}) {
      const int n = 4096;
      const auto x = rnd.vector(n, -scale, scale);
      std::vector<uint8_t> q(dtype_row_bytes(DType::Q8_0, n));
      std::vector<float> back(n);
      quantize_row(DType::Q8_0, x.data(), q.data(), n);
      dequantize_row(DType::Q8_0, q.data(), back.data(), n);
      for (int b = 0; b < n / 32; ++b) {
        float amax = 0;
        for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b * 32 + i]));
        // Quantized with s = max|x| / 127, stored with s rounded to F16 (d): |x - d·q| <= s/2 + |q|·|d - s|.
        const double s = amax / 127.0;
        BlockQ8_0 block;
        std::memcpy(&block, q.data() + b * sizeof block, sizeof block);
        const double d = f16_to_f32(block.scale);
        for (int i = 0; i < 32; ++i) {
          const double err = std::fabs(static_cast<double>(x[b * 32 + i]) - back[b * 32 + i]);
          ASSERT_LE(err, s / 2 + std::abs(block.q[i]) * std::fabs(d - s) + 1e-6 * s) << "block " << b << " i " << i;
        }
      }
    }
  });
}

TEST(DequantizeRow, MatchesReferenceBitForBit) {
  for_each_simd_target([] {
    Random rnd(103);
    for (DType dtype : kAllDtypes) {
      const std::vector<int> sizes =
          is_block_type(dtype) ? std::vector<int>{32, 96, 1024} : std::vector<int>{1, 7, 13, 67, 1000};
      for (int n : sizes) {
        for (size_t misalign : {0, 1, 2, 3}) {
          SCOPED_TRACE(label(dtype) + " n " + std::to_string(n) + " misalign " + std::to_string(misalign));
          const size_t bytes = dtype_row_bytes(dtype, n);
          std::vector<uint8_t> stored(bytes + misalign);
          // Arbitrary bytes: every F16/BF16 bit pattern is a value (NaN payloads included), every block a block.
          for (auto& b : stored) b = static_cast<uint8_t>(rnd.bits());
          std::vector<float> expected(n), got(n + 1, -1.0f);
          reference::dequantize_row(dtype, stored.data() + misalign, expected.data(), n);
          dequantize_row(dtype, stored.data() + misalign, got.data(), n);
          got.pop_back();
          // F16 NaNs come back as NaNs, but a hardware conversion may set the quiet bit of a signalling one.
          for (int i = 0; i < n; ++i) {
            if (std::isnan(expected[i]) && std::isnan(got[i])) got[i] = expected[i];
          }
          ASSERT_EQ(first_difference(expected, got), -1);
        }
      }
    }
  });
}

// ---- Activation quantization ---------------------------------------------------------------------------------------

TEST(QuantizeInput, MatchesReferenceBitForBitAndWritesOnlyItsRows) {
  for_each_simd_target([] {
    Random rnd(104);
    for (int cols : {32, 64, 96, 1024, 3072}) {
      SCOPED_TRACE("cols " + std::to_string(cols));
      const int n = 5;
      auto x = rnd.vector(static_cast<size_t>(n) * cols, -3.0f, 3.0f);
      std::fill(x.begin(), x.begin() + 32, 0.0f);  // a zero block: scale 0, q 0
      for (int i = 0; i < 32 && cols >= 64; ++i) x[32 + i] = static_cast<float>(i - 16) * 0.25f;  // rounding ties
      const size_t bytes = quantized_input_bytes(n, cols);
      const size_t row = bytes / n;
      std::vector<uint8_t> expected(bytes, 0x77), got(bytes, 0x77);
      reference::quantize_input(x.data(), cols, 1, 4, expected.data());
      quantize_input(x.data(), cols, 1, 4, got.data());
      ASSERT_EQ(expected, got);
      for (size_t i = 0; i < row; ++i) {
        ASSERT_EQ(got[i], 0x77) << "row 0 written";
        ASSERT_EQ(got[4 * row + i], 0x77) << "row 4 written";
      }
    }
  });
}

TEST(RmsNormQuantizeInput, SameBitsAsRmsNormThenQuantizeInput) {
  for_each_simd_target([] {
    Random rnd(105);
    for (int cols : {32, 160, 1024}) {
      const int n = 4;
      const auto x = rnd.vector(static_cast<size_t>(n) * cols, -3.0f, 3.0f);
      const auto weight = rnd.vector(cols, 0.5f, 1.5f);
      std::vector<float> normed(x.size()), fused(x.size(), -1.0f);
      std::vector<uint8_t> q(quantized_input_bytes(n, cols)), fused_q(q.size());
      rmsnorm(normed.data(), x.data(), weight.data(), n, cols, 1e-5f);
      quantize_input(normed.data(), cols, 0, n, q.data());
      rmsnorm_quantize_input(fused.data(), fused_q.data(), x.data(), weight.data(), cols, 1e-5f, 0, n);
      EXPECT_EQ(first_difference(normed, fused), -1) << "cols " << cols;
      EXPECT_EQ(q, fused_q) << "cols " << cols;
      // In place, and a row range: rows outside it keep their input values.
      auto inplace = x;
      rmsnorm_quantize_input(inplace.data(), nullptr, inplace.data(), weight.data(), cols, 1e-5f, 1, 3);
      for (size_t i = 0; i < x.size(); ++i) {
        const bool in_range = i >= static_cast<size_t>(cols) && i < 3 * static_cast<size_t>(cols);
        ASSERT_TRUE(testing::same_bits(inplace[i], in_range ? normed[i] : x[i])) << "element " << i;
      }
    }
  });
}

// ---- Matmul
// ----------------------------------------------------------------------------------------------------------

// Random weights [rows, cols] in dtype, starting misalign bytes past a 64-byte boundary (plain layout) or packed,
// plus their exact values.
struct Weights {
  std::vector<uint8_t> buffer;
  std::vector<float> values;  // dequantized, [rows, cols]
  WeightMatrix view;
};

Weights make_weights(DType dtype, int rows, int cols, Random& rnd, size_t misalign = 0);

Weights make_weights(Layout layout, int rows, int cols, Random& rnd, size_t misalign = 0) {
  Weights w = make_weights(layout.dtype, rows, cols, rnd, misalign);
  if (!layout.packed) return w;
  const size_t row_bytes = w.view.row_bytes();
  std::vector<uint8_t> packed(WeightMatrix::packed_rows(rows) * row_bytes + 64);
  uint8_t* base = packed.data() + (64 - reinterpret_cast<uintptr_t>(packed.data()) % 64) % 64;
  for (int r = 0; r < rows; r += kPackedRows) {
    pack_weight_group(layout.dtype, cols, w.view.row(r), std::min(kPackedRows, rows - r), base + r * row_bytes);
  }
  w.buffer = std::move(packed);
  w.view = WeightMatrix{layout.dtype, base, rows, cols, true};
  return w;
}

Weights make_weights(DType dtype, int rows, int cols, Random& rnd, size_t misalign) {
  Weights w;
  const size_t row_bytes = dtype_row_bytes(dtype, cols);
  w.buffer.assign(row_bytes * rows + misalign + 128, 0xCD);
  const size_t pad = (64 - reinterpret_cast<uintptr_t>(w.buffer.data()) % 64) % 64;
  uint8_t* base = w.buffer.data() + pad + misalign;
  w.values.resize(static_cast<size_t>(rows) * cols);
  for (int r = 0; r < rows; ++r) {
    const auto row = rnd.vector(cols);
    reference::quantize_row(dtype, row.data(), base + r * row_bytes, cols);
    reference::dequantize_row(dtype, base + r * row_bytes, w.values.data() + static_cast<size_t>(r) * cols, cols);
  }
  w.view = WeightMatrix{dtype, base, rows, cols};
  return w;
}

// Activations [n, cols] and, when cols is a whole number of blocks, their quantized form.
struct Input {
  std::vector<float> x;
  std::vector<uint8_t> quantized;
  MatmulInput view;
};

Input make_input(int n, int cols, Random& rnd) {
  Input in;
  in.x = rnd.vector(static_cast<size_t>(n) * cols, -2.0f, 2.0f);
  if (cols % 32 == 0) {
    in.quantized.resize(quantized_input_bytes(n, cols));
    quantize_input(in.x.data(), cols, 0, n, in.quantized.data());
  }
  in.view = MatmulInput{in.x.data(), in.quantized.empty() ? nullptr : in.quantized.data(), n, cols};
  return in;
}

// The matmul against reference::matmul (same arithmetic up to summation order: within 2e-6 of Σ|x·w|) and, for integer
// weights, against the exact product in double, which it may miss by the activation quantization error: at most half
// a quantization step (max|x_block| / 254) times Σ|w| per block.
void check_matmul(Layout layout, int rows, int cols, int n, Random& rnd) {
  const DType dtype = layout.dtype;
  SCOPED_TRACE(label(layout) + " rows " + std::to_string(rows) + " cols " + std::to_string(cols) + " tokens " +
               std::to_string(n));
  const Weights w = make_weights(layout, rows, cols, rnd, rnd.below(4));
  const Input in = make_input(n, cols, rnd);
  const auto bias = rnd.vector(rows);
  std::vector<float> got(static_cast<size_t>(n) * rows), ref(got.size());
  matmul(got.data(), in.view, w.view, bias.data(), 0, rows);
  reference::matmul(ref.data(), in.view, w.view, bias.data(), 0, rows);
  for (int t = 0; t < n; ++t) {
    for (int r = 0; r < rows; ++r) {
      double exact = bias[r], magnitude = std::fabs(bias[r]), quantization = 0;
      for (int b = 0; b * 32 < cols; ++b) {
        double amax = 0, w_sum = 0;
        for (int k = b * 32; k < std::min(cols, b * 32 + 32); ++k) {
          const double xv = in.x[static_cast<size_t>(t) * cols + k], wv = w.values[static_cast<size_t>(r) * cols + k];
          exact += xv * wv;
          magnitude += std::fabs(xv * wv);
          amax = std::max(amax, std::fabs(xv));
          w_sum += std::fabs(wv);
        }
        quantization += amax / 254 * w_sum;
      }
      const size_t i = static_cast<size_t>(t) * rows + r;
      ASSERT_LE(std::fabs(got[i] - ref[i]), 2e-6 * magnitude) << "token " << t << " row " << r << " vs reference";
      const double bound = uses_quantized_input(dtype) ? quantization * 1.0001 + 2e-6 * magnitude : 1e-5 * magnitude;
      ASSERT_LE(std::fabs(got[i] - exact), bound) << "token " << t << " row " << r << " vs exact";
    }
  }
}

TEST(Matmul, EveryDtypeMatchesReferenceAndExactProduct) {
  for_each_simd_target([] {
    Random rnd(106);
    for (const Layout layout : kAllLayouts) {
      const DType dtype = layout.dtype;
      const std::vector<int> col_sizes =
          is_block_type(dtype) ? std::vector<int>{32, 64, 96, 160, 1024} : std::vector<int>{1, 7, 13, 67, 129, 1000};
      for (int cols : col_sizes) {
        for (int rows : {1, 3, 17, 67}) {
          for (int n : {1, 2, 3, 4, 5, 9}) {
            check_matmul(layout, rows, cols, n, rnd);
            if (::testing::Test::HasFatalFailure()) return;
          }
        }
      }
      check_matmul(layout, 5, is_block_type(dtype) ? 4096 : 4099, 3, rnd);
      check_matmul(layout, 19, 128, 128, rnd);
      if (::testing::Test::HasFatalFailure()) return;
    }
  });
}

// out[t, r] for t < n and rows [row_begin, row_end), computed with the given call.
template <class Call>
std::vector<float> run(int n, int rows, Call&& call) {
  std::vector<float> out(static_cast<size_t>(n) * rows, std::bit_cast<float>(0x7fa5a5a5u));
  call(out.data());
  return out;
}

// Weights mapped so that their last byte is the last byte before an inaccessible page: a kernel loading a whole
// vector or block pair past the end of the matrix (as a mapped file's last tensor would allow) crashes here.
TEST(Matmul, NeverReadsPastTheEndOfTheWeights) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  for_each_simd_target([&] {
    Random rnd(112);
    for (const Layout layout : kAllLayouts) {
      const DType dtype = layout.dtype;
      for (int cols : {32, 96, 160}) {
        const int rows = 5;
        const Weights source = make_weights(layout, rows, cols, rnd);
        const size_t bytes = source.view.bytes();
        const size_t mapped = (bytes + page - 1) / page * page + page;
        auto* base =
            static_cast<uint8_t*>(mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
        ASSERT_NE(base, MAP_FAILED);
        ASSERT_EQ(mprotect(base + mapped - page, page, PROT_NONE), 0);
        uint8_t* data = base + mapped - page - bytes;
        std::memcpy(data, source.view.data, bytes);
        const WeightMatrix at_end{dtype, data, rows, cols, layout.packed};
        for (int n : {1, 3}) {
          const Input in = make_input(n, cols, rnd);
          const auto expected = run(n, rows, [&](float* out) { matmul(out, in.view, source.view, nullptr, 0, rows); });
          const auto got = run(n, rows, [&](float* out) { matmul(out, in.view, at_end, nullptr, 0, rows); });
          EXPECT_EQ(first_difference(expected, got), -1) << label(layout) << " cols " << cols << " tokens " << n;
        }
        munmap(base, mapped);
      }
    }
  });
}

// The integer kernels read only the packed layout: plain rows (a GGUF file's, before Model::load packs them) are
// refused, never misread.
TEST(Matmul, PlainIntegerWeightsAreRefused) {
  Random rnd(114);
  for (DType dtype : kBlockDtypes) {
    const Weights plain = make_weights(dtype, 16, 64, rnd);
    const Input in = make_input(2, 64, rnd);
    std::vector<float> out(2 * 16);
    EXPECT_THROW(matmul(out.data(), in.view, plain.view, nullptr, 0, 16), Error) << label(dtype);
    EXPECT_THROW(matmul_swiglu(out.data(), in.view, plain.view, nullptr, plain.view, nullptr, 0, 16), Error)
        << label(dtype);
  }
}

// Packing keeps every block: each row unpacks to its plain bytes and reads as the same floats, whatever its lane, and
// the padding rows of the last group read as zeros.
TEST(PackWeights, EveryRowUnpacksToItsPlainBlocks) {
  Random rnd(113);
  for (DType dtype : kBlockDtypes) {
    for (int rows : {1, 16, 37}) {
      const int cols = 96;
      const Weights plain = make_weights(dtype, rows, cols, rnd);
      const Weights packed = make_weights(Layout{dtype, true}, rows, cols, rnd);
      // make_weights drew new values for the packed one; pack `plain` itself for the comparison.
      std::vector<uint8_t> buffer(packed.view.bytes());
      for (int r = 0; r < rows; r += kPackedRows) {
        pack_weight_group(dtype, cols, plain.view.row(r), std::min(kPackedRows, rows - r),
                          buffer.data() + r * plain.view.row_bytes());
      }
      const WeightMatrix view{dtype, buffer.data(), rows, cols, true};
      std::vector<uint8_t> row(view.row_bytes());
      std::vector<float> a(cols), b(cols);
      for (int r = 0; r < rows; ++r) {
        unpack_weight_row(view, r, row.data());
        ASSERT_EQ(std::memcmp(row.data(), plain.view.row(r), row.size()), 0) << label(dtype) << " row " << r;
        read_row(a.data(), plain.view, r);
        read_row(b.data(), view, r);
        ASSERT_EQ(first_difference(a, b), -1) << label(dtype) << " row " << r;
      }
      for (int r = rows; r < WeightMatrix::packed_rows(rows); ++r) {
        const WeightMatrix whole{dtype, buffer.data(), static_cast<int>(WeightMatrix::packed_rows(rows)), cols, true};
        read_row(a.data(), whole, r);
        for (float v : a) ASSERT_EQ(v, 0.0f) << label(dtype) << " padding row " << r;
      }
    }
  }
}

// The contract batched serving relies on: the bits of out[t, r] depend only on token t's input and row r's weights,
// never on how many tokens were in the batch, which rows the call covered, how they were tiled or how many threads
// took part.
TEST(Matmul, ResultsAreBitIdenticalWhateverTheBatchRowsAndThreads) {
  for_each_simd_target([] {
    Random rnd(107);
    ThreadPool two(2), three(3);
    for (const Layout layout : kAllLayouts) {
      for (int cols : {96, 1024}) {
        const int rows = 67;
        const Weights w = make_weights(layout, rows, cols, rnd, 1);
        const auto bias = rnd.vector(rows);
        for (int n : {128, 9, 5, 2}) {
          SCOPED_TRACE(label(layout) + " cols " + std::to_string(cols) + " tokens " + std::to_string(n));
          const Input in = make_input(n, cols, rnd);
          const auto all = run(n, rows, [&](float* out) { matmul(out, in.view, w.view, bias.data(), 0, rows); });
          // Each token alone.
          for (int t = 0; t < n; ++t) {
            const float* x = in.x.data() + static_cast<size_t>(t) * cols;
            const uint8_t* q = in.quantized.data() + quantized_input_bytes(t, cols);
            const MatmulInput one{x, q, 1, cols};
            const auto alone = run(1, rows, [&](float* out) { matmul(out, one, w.view, bias.data(), 0, rows); });
            const std::vector<float> row_t(all.begin() + static_cast<size_t>(t) * rows,
                                           all.begin() + static_cast<size_t>(t + 1) * rows);
            ASSERT_EQ(first_difference(row_t, alone), -1) << "token " << t << " alone";
          }
          // Row ranges of every length and alignment, pieced together.
          auto pieces = run(n, rows, [&](float* out) {
            for (int r0 = 0, len = 1; r0 < rows; r0 += len, len = len % 7 + 1) {
              matmul(out, in.view, w.view, bias.data(), r0, std::min(rows, r0 + len));
            }
          });
          ASSERT_EQ(first_difference(all, pieces), -1) << "row ranges";
          // Threads.
          for (ThreadPool* pool : {&two, &three}) {
            const MatmulTask task{nullptr, &w.view, bias.data()};
            const auto threaded = run(n, rows, [&](float* out) {
              MatmulTask t = task;
              t.out = out;
              matmul_parallel(*pool, in.view, std::span<const MatmulTask>(&t, 1));
            });
            ASSERT_EQ(first_difference(all, threaded), -1) << pool->size() << " threads";
          }
        }
      }
    }
  });
}

TEST(MatmulSwiglu, SameBitsAsSeparateMatmulsThenSwiglu) {
  for_each_simd_target([] {
    Random rnd(108);
    ThreadPool pool(2);
    for (const Layout layout : kAllLayouts) {
      for (int n : {1, 3, 40}) {
        const int rows = 37, cols = 96;
        SCOPED_TRACE(label(layout) + " tokens " + std::to_string(n));
        const Weights gate = make_weights(layout, rows, cols, rnd), up = make_weights(layout, rows, cols, rnd, 3);
        const auto gate_bias = rnd.vector(rows), up_bias = rnd.vector(rows);
        const Input in = make_input(n, cols, rnd);
        auto g = run(n, rows, [&](float* out) { matmul(out, in.view, gate.view, gate_bias.data(), 0, rows); });
        const auto u = run(n, rows, [&](float* out) { matmul(out, in.view, up.view, up_bias.data(), 0, rows); });
        swiglu(g.data(), g.data(), u.data(), n * rows);
        const auto fused = run(n, rows, [&](float* out) {
          matmul_swiglu(out, in.view, gate.view, gate_bias.data(), up.view, up_bias.data(), 0, 20);
          matmul_swiglu(out, in.view, gate.view, gate_bias.data(), up.view, up_bias.data(), 20, rows);
        });
        ASSERT_EQ(first_difference(g, fused), -1);
        const auto threaded = run(n, rows, [&](float* out) {
          const MatmulTask task{out, &gate.view, gate_bias.data(), &up.view, up_bias.data()};
          matmul_parallel(pool, in.view, std::span<const MatmulTask>(&task, 1));
        });
        ASSERT_EQ(first_difference(g, threaded), -1) << "threaded";
        // And the scalar definition, within float rounding of silu(g)·u.
        const auto ref = run(n, rows, [&](float* out) {
          reference::matmul_swiglu(out, in.view, gate.view, gate_bias.data(), up.view, up_bias.data(), 0, rows);
        });
        for (size_t i = 0; i < ref.size(); ++i) ASSERT_NEAR(fused[i], ref[i], 1e-4 * (1 + std::fabs(ref[i]))) << i;
      }
    }
  });
}

TEST(MatmulParallel, SeveralMatricesInOneJob) {
  for_each_simd_target([] {
    Random rnd(109);
    ThreadPool pool(2);
    const int cols = 64;
    const Input in = make_input(3, cols, rnd);
    const Weights q = make_weights(Layout{DType::Q8_0, true}, 70, cols, rnd),
                  k = make_weights(Layout{DType::Q4_0, true}, 18, cols, rnd),
                  v = make_weights(DType::BF16, 18, cols, rnd);
    std::vector<float> oq(3 * 70), ok(3 * 18), ov(3 * 18);
    const MatmulTask tasks[] = {{oq.data(), &q.view}, {ok.data(), &k.view}, {ov.data(), &v.view}};
    matmul_parallel(pool, in.view, tasks);
    for (const auto& [out, w] : {std::pair{&oq, &q}, std::pair{&ok, &k}, std::pair{&ov, &v}}) {
      const auto direct =
          run(3, w->view.rows, [&](float* o) { matmul(o, in.view, w->view, nullptr, 0, w->view.rows); });
      EXPECT_EQ(first_difference(*out, direct), -1) << label(w->view.dtype);
    }
  });
}

// ---- Attention ----------------------------------------------------------------------------------------------------

// An F16 cache: the kernel must match the textbook computation on the F16-rounded keys and values.
TEST(Attention, F16CacheMatchesDoublePrecision) {
  for_each_simd_target([] {
    Random rnd(110);
    // 8 and 16 query heads per kv head (more than one pass of head lanes), 3 per kv head, odd head sizes.
    for (const AttentionShape shape : {AttentionShape{4, 2, 16}, AttentionShape{16, 2, 64}, AttentionShape{3, 1, 5},
                                       AttentionShape{16, 1, 8}, AttentionShape{6, 2, 33}}) {
      for (const auto& [n_queries, first_pos] : {std::pair{1, 0}, std::pair{1, 40}, std::pair{6, 27}}) {
        SCOPED_TRACE("head_dim " + std::to_string(shape.head_dim) + " queries " + std::to_string(n_queries) +
                     " first_pos " + std::to_string(first_pos));
        const int n_keys = first_pos + n_queries, kv = shape.n_kv_heads * shape.head_dim;
        const int q_stride = shape.n_heads * shape.head_dim, group = shape.n_heads / shape.n_kv_heads;
        const auto q = rnd.vector(static_cast<size_t>(n_queries) * q_stride, -2.0f, 2.0f);
        const testing::TestKvCache cache(DType::F16, shape, rnd.vector(static_cast<size_t>(n_keys) * kv, -2.0f, 2.0f),
                                         rnd.vector(static_cast<size_t>(n_keys) * kv));
        const std::vector<float>&k = cache.stored_keys, &v = cache.stored_values;  // the F16-rounded values
        std::vector<float> out(q.size());
        attention(out.data(), q.data(), n_queries, first_pos, cache.view(), shape, 0, shape.n_heads);
        for (int t = 0; t < n_queries; ++t) {
          for (int h = 0; h < shape.n_heads; ++h) {
            const int kvh = h / group, visible = first_pos + t + 1;
            std::vector<double> score(visible);
            double m = -HUGE_VAL, sum = 0;
            for (int j = 0; j < visible; ++j) {
              double dot = 0;
              for (int d = 0; d < shape.head_dim; ++d) {
                dot += q[t * q_stride + h * shape.head_dim + d] * static_cast<double>(k[j * kv + kvh * shape.head_dim + d]);
              }
              score[j] = dot / std::sqrt(static_cast<double>(shape.head_dim));
              m = std::max(m, score[j]);
            }
            for (double& s : score) sum += s = std::exp(s - m);
            for (int d = 0; d < shape.head_dim; ++d) {
              double expected = 0;
              for (int j = 0; j < visible; ++j)
                expected += score[j] / sum * v[j * kv + kvh * shape.head_dim + d];
              ASSERT_NEAR(out[t * q_stride + h * shape.head_dim + d], expected, 1e-5) << "query " << t << " head " << h;
            }
          }
        }
      }
    }
  });
}

// Query t of a batch gets the bits it gets alone (decoding at position first_pos + t), whatever head range a thread
// was given.
TEST(Attention, QueryResultsAreBitIdenticalWhateverTheBatchAndHeadSplit) {
  for_each_simd_target([] {
    Random rnd(111);
    const AttentionShape shape{8, 2, 64};
    // first_pos 31: a pair of queries where the first sees exactly two chunks of keys and the second one key more.
    for (const auto& [dtype, first_pos] :
         {std::pair{DType::F32, 30}, std::pair{DType::F16, 30}, std::pair{DType::Q8_0, 30}, std::pair{DType::F32, 31},
          std::pair{DType::F16, 31}, std::pair{DType::Q8_0, 31}}) {
      SCOPED_TRACE(label(dtype) + " first_pos " + std::to_string(first_pos));
      const int n_queries = 7, n_keys = first_pos + n_queries, kv = 2 * 64, q_stride = 8 * 64;
      const auto values = rnd.vector(static_cast<size_t>(2 * n_keys) * kv);
      const testing::TestKvCache stored(
          dtype, shape, std::vector<float>(values.begin(), values.begin() + static_cast<size_t>(n_keys) * kv),
          std::vector<float>(values.begin() + static_cast<size_t>(n_keys) * kv, values.end()));
      const KvCacheView cache = stored.view();
      const auto q = rnd.vector(static_cast<size_t>(n_queries) * q_stride);
      std::vector<float> all(q.size()), split(q.size());
      attention(all.data(), q.data(), n_queries, first_pos, cache, shape, 0, 8);
      for (const auto& [h0, h1] : {std::pair{0, 3}, std::pair{3, 4}, std::pair{4, 8}}) {
        attention(split.data(), q.data(), n_queries, first_pos, cache, shape, h0, h1);
      }
      ASSERT_EQ(first_difference(all, split), -1) << "head split";
      for (int t = 0; t < n_queries; ++t) {
        std::vector<float> alone(q_stride);
        attention(alone.data(), q.data() + t * q_stride, 1, first_pos + t, cache, shape, 0, 8);
        const std::vector<float> row(all.begin() + t * q_stride, all.begin() + (t + 1) * q_stride);
        ASSERT_EQ(first_difference(row, alone), -1) << "query " << t;
      }
    }
  });
}

}  // namespace
}  // namespace ernie
