// dequantize_ggml_row against a per-element reading of ggml's block layouts (ggml-common.h), written here
// independently: for element i of a block, which bytes and bits hold its quant, its scale and its min. The
// implementation walks blocks the way ggml's loops do; agreement on random blocks checks both readings.
#include "kernels/ggml_blocks.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "kernels/quant.h"

namespace ernie {
namespace {

float f16_at(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return f16_to_f32(bits);
}

// Random block bytes, with every f16 scale replaced by a modest finite value (random bits would make NaN and inf).
std::vector<uint8_t> random_blocks(GgmlType type, int n_blocks, std::mt19937& rng,
                                   const std::vector<int>& f16_offsets) {
  const GgmlTypeTraits traits = ggml_type_traits(type);
  std::vector<uint8_t> bytes(n_blocks * traits.block_bytes);
  for (auto& b : bytes) b = static_cast<uint8_t>(rng());
  std::uniform_real_distribution<float> scale(-0.05f, 0.05f);
  for (int k = 0; k < n_blocks; ++k) {
    for (int offset : f16_offsets) {
      const uint16_t h = f32_to_f16(scale(rng));
      std::memcpy(&bytes[k * traits.block_bytes + offset], &h, 2);
    }
  }
  return bytes;
}

// Element i (0..255) of a K-quant super-block, read as the layout comments of ggml-common.h describe it.
float q2_k_element(const uint8_t* b, int i) {
  const uint8_t* scales = b;  // [16]: low nibble scale, high nibble min, one per 16 elements
  const uint8_t* qs = b + 16; // [64]: 2-bit quants; 128 elements per 32 bytes, in four bit planes of 32
  const int half = i / 128, plane = (i % 128) / 32, l = i % 32;
  const int q = (qs[half * 32 + l] >> (2 * plane)) & 3;
  const int group = i / 16;
  return f16_at(b + 80) * (scales[group] & 0xF) * q - f16_at(b + 82) * (scales[group] >> 4);
}

float q3_k_element(const uint8_t* b, int i) {
  const uint8_t* hmask = b;      // [32]: bit plane p of byte l is the high bit of element 32p + l
  const uint8_t* qs = b + 32;    // [64]: low 2 bits, laid out as Q2_K's
  const uint8_t* scales = b + 96;  // [12]: 16 6-bit scales
  const int half = i / 128, plane = (i % 128) / 32, l = i % 32;
  const int low = (qs[half * 32 + l] >> (2 * plane)) & 3;
  const int high = (hmask[l] >> (i / 32)) & 1;
  const int group = i / 16;
  const int scale_low = group < 8 ? scales[group] & 0xF : scales[group - 8] >> 4;
  const int scale_high = (scales[8 + group % 4] >> (2 * (group / 4))) & 3;
  const int scale = (scale_low | scale_high << 4) - 32;
  return f16_at(b + 108) * scale * (low - (high ? 0 : 4));
}

// The 6-bit scale and min of sub-block j of Q4_K / Q5_K: j < 4 in the low 6 bits of bytes j and j + 4; j >= 4
// split between a nibble of byte j + 4 and the top 2 bits of bytes j - 4 and j.
void k_scale_min(const uint8_t* s, int j, int& scale, int& min) {
  if (j < 4) {
    scale = s[j] & 0x3F;
    min = s[j + 4] & 0x3F;
  } else {
    scale = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
    min = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

float q4_k_element(const uint8_t* b, int i) {
  const int sub = i / 32, l = i % 32;
  int scale, min;
  k_scale_min(b + 4, sub, scale, min);
  const uint8_t byte = b[16 + (sub / 2) * 32 + l];
  const int q = sub % 2 ? byte >> 4 : byte & 0xF;
  return f16_at(b) * scale * q - f16_at(b + 2) * min;
}

float q5_k_element(const uint8_t* b, int i) {
  const int sub = i / 32, l = i % 32;
  int scale, min;
  k_scale_min(b + 4, sub, scale, min);
  const uint8_t byte = b[48 + (sub / 2) * 32 + l];
  const int q = (sub % 2 ? byte >> 4 : byte & 0xF) + (((b[16 + l] >> sub) & 1) << 4);
  return f16_at(b) * scale * q - f16_at(b + 2) * min;
}

float q6_k_element(const uint8_t* b, int i) {
  const int half = i / 128, quarter = (i % 128) / 32, l = i % 32;
  const uint8_t low_byte = b[half * 64 + (quarter % 2) * 32 + l];
  const int low = quarter < 2 ? low_byte & 0xF : low_byte >> 4;
  const int high = (b[128 + half * 32 + l] >> (2 * quarter)) & 3;
  const auto scale = static_cast<int8_t>(b[192 + i / 16]);
  return f16_at(b + 208) * scale * ((low | high << 4) - 32);
}

float q8_k_element(const uint8_t* b, int i) {
  float d;
  std::memcpy(&d, b, 4);
  return d * static_cast<int8_t>(b[4 + i]);
}

// Elements of the 32-wide legacy blocks: nibble i of the 16 bytes is the low half for i < 16, else the high half.
int nibble(const uint8_t* qs, int i) {
  return i < 16 ? qs[i] & 0xF : qs[i - 16] >> 4;
}
float q4_1_element(const uint8_t* b, int i) {
  return f16_at(b) * nibble(b + 4, i) + f16_at(b + 2);
}
float q5_0_element(const uint8_t* b, int i) {
  uint32_t qh;
  std::memcpy(&qh, b + 2, 4);
  const int q = nibble(b + 6, i) | static_cast<int>((qh >> i) & 1) << 4;
  return f16_at(b) * (q - 16);
}
float q5_1_element(const uint8_t* b, int i) {
  uint32_t qh;
  std::memcpy(&qh, b + 4, 4);
  const int q = nibble(b + 8, i) | static_cast<int>((qh >> i) & 1) << 4;
  return f16_at(b) * q + f16_at(b + 2);
}
float q8_1_element(const uint8_t* b, int i) {
  return f16_at(b) * static_cast<int8_t>(b[4 + i]);
}

struct Case {
  GgmlType type;
  std::vector<int> f16_offsets;
  float (*element)(const uint8_t*, int);
};

class GgmlBlocks : public ::testing::TestWithParam<Case> {};

TEST_P(GgmlBlocks, MatchesThePerElementReading) {
  const Case& c = GetParam();
  const GgmlTypeTraits traits = ggml_type_traits(c.type);
  std::mt19937 rng(static_cast<unsigned>(c.type) + 1);
  const int n_blocks = 5;
  auto bytes = random_blocks(c.type, n_blocks, rng, c.f16_offsets);
  if (c.type == GgmlType::Q8_K) {  // its scale is an f32
    for (int k = 0; k < n_blocks; ++k) {
      const float d = 0.01f * (k + 1);
      std::memcpy(&bytes[k * traits.block_bytes], &d, 4);
    }
  }
  const int n = n_blocks * traits.block_elements;
  std::vector<float> out(n);
  dequantize_ggml_row(c.type, bytes.data(), out.data(), n);
  for (int i = 0; i < n; ++i) {
    const float expected = c.element(bytes.data() + (i / traits.block_elements) * traits.block_bytes,
                                     i % traits.block_elements);
    // Same products in a possibly different association: equal to the last bits of a float.
    ASSERT_NEAR(out[i], expected, 1e-6f * (1.0f + std::abs(expected))) << traits.name << " element " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Types, GgmlBlocks,
    ::testing::Values(Case{GgmlType::Q4_1, {0, 2}, q4_1_element}, Case{GgmlType::Q5_0, {0}, q5_0_element},
                      Case{GgmlType::Q5_1, {0, 2}, q5_1_element}, Case{GgmlType::Q8_1, {0, 2}, q8_1_element},
                      Case{GgmlType::Q2_K, {80, 82}, q2_k_element}, Case{GgmlType::Q3_K, {108}, q3_k_element},
                      Case{GgmlType::Q4_K, {0, 2}, q4_k_element}, Case{GgmlType::Q5_K, {0, 2}, q5_k_element},
                      Case{GgmlType::Q6_K, {208}, q6_k_element}, Case{GgmlType::Q8_K, {}, q8_k_element}),
    [](const auto& info) { return std::string(ggml_type_traits(info.param.type).name); });

TEST(GgmlBlocks, StoredTypesGoThroughDequantizeRow) {
  std::vector<float> values(64);
  for (int i = 0; i < 64; ++i) values[i] = 0.01f * (i - 30);
  std::vector<uint8_t> q8(dtype_row_bytes(DType::Q8_0, 64));
  quantize_row(DType::Q8_0, values.data(), q8.data(), 64);
  std::vector<float> a(64), b(64);
  dequantize_ggml_row(GgmlType::Q8_0, q8.data(), a.data(), 64);
  dequantize_row(DType::Q8_0, q8.data(), b.data(), 64);
  EXPECT_EQ(a, b);
}

}  // namespace
}  // namespace ernie
