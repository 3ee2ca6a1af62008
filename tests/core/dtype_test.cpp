// Scalar conversions between float32 and the stored 16-bit formats, checked against references built in the test
// from the IEEE definitions: a half is (-1)^s · 2^(e-15) · (1 + m/1024) (normal) or 2^-14 · m/1024 (subnormal);
// a bfloat16 is the top half of a float32. Rounding is to nearest, ties to the even significand.
#include "core/dtype.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace ernie {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// binary16 decoded from its fields, in double (every half is exact in double); NaN for NaN patterns.
double half_value(uint16_t bits) {
  const int sign = bits >> 15;
  const int exponent = (bits >> 10) & 0x1f;
  const int mantissa = bits & 0x3ff;
  double magnitude;
  if (exponent == 0x1f) {
    magnitude = mantissa == 0 ? kInf : std::numeric_limits<double>::quiet_NaN();
  } else if (exponent == 0) {
    magnitude = std::ldexp(static_cast<double>(mantissa), -24);  // 2^-14 * m / 1024
  } else {
    magnitude = std::ldexp(1.0 + mantissa / 1024.0, exponent - 15);
  }
  return sign ? -magnitude : magnitude;
}

bool is_half_nan(uint16_t bits) {
  return (bits & 0x7c00) == 0x7c00 && (bits & 0x3ff) != 0;
}

float float_from_bits(uint32_t bits) {
  return std::bit_cast<float>(bits);
}
uint32_t bits_of(float f) {
  return std::bit_cast<uint32_t>(f);
}

// The correctly rounded half of a finite or infinite float: the nearest of the 31744 non-negative finite halves (or
// infinity from the midpoint between 65504 and 65536 on), ties to the even bit pattern.
uint16_t reference_f32_to_f16(float value) {
  static const std::vector<double> positive = [] {
    std::vector<double> v;
    for (uint32_t b = 0; b < 0x7c00; ++b) v.push_back(half_value(static_cast<uint16_t>(b)));
    return v;  // increasing with the bit pattern
  }();
  const uint16_t sign = std::signbit(value) ? 0x8000 : 0;
  const double magnitude = std::fabs(static_cast<double>(value));
  const double overflow_threshold = 65504.0 + 16.0;  // half the spacing (32) above the largest finite half
  if (magnitude >= overflow_threshold) return sign | 0x7c00;
  const auto above = std::lower_bound(positive.begin(), positive.end(), magnitude);
  if (above == positive.end()) return sign | 0x7bff;  // in (65504, 65520)
  const uint16_t hi = static_cast<uint16_t>(above - positive.begin());
  if (*above == magnitude || hi == 0) return sign | hi;
  const uint16_t lo = hi - 1;
  const double d_lo = magnitude - positive[lo], d_hi = positive[hi] - magnitude;
  if (d_lo < d_hi) return sign | lo;
  if (d_hi < d_lo) return sign | hi;
  return sign | ((lo & 1) == 0 ? lo : hi);
}

// The correctly rounded bfloat16 of a finite float: truncations toward zero and away, picked by distance.
uint16_t reference_f32_to_bf16(float value) {
  const uint32_t bits = bits_of(value);
  const uint16_t down = static_cast<uint16_t>(bits >> 16);
  if ((bits & 0xffffu) == 0) return down;
  const uint16_t up = down + 1;  // the next magnitude (may be the infinity pattern)
  const double x = std::fabs(static_cast<double>(value));
  const double d_down = x - std::fabs(static_cast<double>(float_from_bits(uint32_t{down} << 16)));
  // bf16 "up" past the largest finite value is infinity; treat it as the value 2^128 for rounding, as IEEE does.
  const double up_value = (up & 0x7fffu) == 0x7f80u
                              ? std::ldexp(1.0, 128)
                              : std::fabs(static_cast<double>(float_from_bits(uint32_t{up} << 16)));
  const double d_up = up_value - x;
  if (d_down < d_up) return down;
  if (d_up < d_down) return up;
  return (down & 1) == 0 ? down : up;
}

// ---- parse_dtype / names / sizes -------------------------------------------------------------------------------

TEST(DType, ParseKnownNames) {
  EXPECT_EQ(parse_dtype("F32"), DType::F32);
  EXPECT_EQ(parse_dtype("BF16"), DType::BF16);
  EXPECT_EQ(parse_dtype("F16"), DType::F16);
}

TEST(DType, ParseRejectsEverythingElse) {
  for (const char* name : {"I8", "U8", "F64", "F8_E4M3", "I64", "BOOL", "f32", "bf16", "Bf16", "", " F32", "F32 ",
                           "BF16\n", "F1", "F320"}) {
    EXPECT_FALSE(parse_dtype(name).has_value()) << "\"" << name << "\"";
  }
}

TEST(DType, NamesAndSizesRoundTrip) {
  for (DType t : {DType::F32, DType::BF16, DType::F16}) {
    EXPECT_EQ(parse_dtype(dtype_name(t)), t);
  }
  EXPECT_EQ(dtype_row_bytes(DType::F32, 64), 256u);
  EXPECT_EQ(dtype_row_bytes(DType::BF16, 64), 128u);
  EXPECT_EQ(dtype_row_bytes(DType::F16, 64), 128u);
  // ggml: a Q8_0 block is an F16 scale and 32 int8; a Q4_0 block an F16 scale and 32 packed nibbles.
  EXPECT_EQ(dtype_row_bytes(DType::Q8_0, 64), 68u);
  EXPECT_EQ(dtype_row_bytes(DType::Q4_0, 64), 36u);
  EXPECT_EQ(dtype_name(DType::F32), "F32");
  EXPECT_EQ(dtype_name(DType::BF16), "BF16");
  EXPECT_EQ(dtype_name(DType::F16), "F16");
}

// ---- float16 -------------------------------------------------------------------------------------------------------

TEST(Float16, EveryBitPatternDecodesExactlyAndRoundTrips) {
  int checked = 0;
  for (uint32_t b = 0; b <= 0xffff; ++b) {
    const uint16_t bits = static_cast<uint16_t>(b);
    const float decoded = f16_to_f32(bits);
    if (is_half_nan(bits)) {
      ASSERT_TRUE(std::isnan(decoded)) << std::hex << b;
      const uint16_t back = f32_to_f16(decoded);
      ASSERT_TRUE(is_half_nan(back)) << std::hex << b << " -> " << back;
      ASSERT_EQ(back & 0x8000, bits & 0x8000) << "NaN sign " << std::hex << b;
      continue;
    }
    const double expected = half_value(bits);
    ASSERT_EQ(static_cast<double>(decoded), expected) << std::hex << b;
    ASSERT_EQ(std::signbit(decoded), (bits & 0x8000) != 0) << std::hex << b;  // -0 stays -0
    ASSERT_EQ(f32_to_f16(decoded), bits) << std::hex << b;
    ++checked;
  }
  EXPECT_EQ(checked, 65536 - 2 * 1023);  // two signs x 1023 NaN mantissas
}

TEST(Float16, RoundsHalfwayCasesToEven) {
  // Near 1.0 the half spacing is 2^-10.
  EXPECT_EQ(f32_to_f16(1.0f + 0x1p-11f), 0x3c00);                 // halfway 1 | 1+2^-10: even is 1
  EXPECT_EQ(f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);             // halfway 1+2^-10 | 1+2^-9: even is 1+2^-9
  EXPECT_EQ(f32_to_f16(1.0f + 0x1p-11f + 0x1p-23f), 0x3c01);      // just above halfway rounds up
  EXPECT_EQ(f32_to_f16(1.0f + 3 * 0x1p-11f - 0x1p-23f), 0x3c01);  // just below halfway rounds down
  EXPECT_EQ(f32_to_f16(-(1.0f + 0x1p-11f)), 0xbc00);
  EXPECT_EQ(f32_to_f16(-(1.0f + 3 * 0x1p-11f)), 0xbc02);
  // A tie whose rounding carries into the exponent: 2 - 2^-11 is halfway between 0x3bff (odd) and 2.0.
  EXPECT_EQ(f32_to_f16(2.0f - 0x1p-11f), 0x4000);
  // Large values: spacing 32 in [32768, 65536).
  EXPECT_EQ(f32_to_f16(32768.0f + 16.0f), 0x7800);  // tie, even is 32768
  EXPECT_EQ(f32_to_f16(32768.0f + 48.0f), 0x7802);  // tie between 32800 (odd) and 32832
}

TEST(Float16, OverflowGoesToInfinity) {
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65519.996f), 0x7bff);  // below the midpoint 65520
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);    // the midpoint rounds to even, which is past the largest finite
  EXPECT_EQ(f32_to_f16(65536.0f), 0x7c00);
  EXPECT_EQ(f32_to_f16(1e10f), 0x7c00);
  EXPECT_EQ(f32_to_f16(std::numeric_limits<float>::max()), 0x7c00);
  EXPECT_EQ(f32_to_f16(-65520.0f), 0xfc00);
  EXPECT_EQ(f32_to_f16(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(f32_to_f16(-std::numeric_limits<float>::infinity()), 0xfc00);
}

TEST(Float16, Subnormals) {
  EXPECT_EQ(f32_to_f16(0.0f), 0x0000);
  EXPECT_EQ(f32_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_f16(0x1p-24f), 0x0001);  // smallest subnormal
  EXPECT_EQ(f32_to_f16(-0x1p-24f), 0x8001);
  EXPECT_EQ(f32_to_f16(0x1p-25f), 0x0000);               // tie between 0 and 2^-24: even is 0
  EXPECT_EQ(f32_to_f16(0x1p-25f * 1.0000001f), 0x0001);  // just above the tie
  EXPECT_EQ(f32_to_f16(3 * 0x1p-25f), 0x0002);           // tie between 1 and 2 ulps: even is 2
  EXPECT_EQ(f32_to_f16(5 * 0x1p-25f), 0x0002);           // tie between 2 and 3 ulps: even is 2
  EXPECT_EQ(f32_to_f16(1023 * 0x1p-24f), 0x03ff);        // largest subnormal
  EXPECT_EQ(f32_to_f16(1023.5f * 0x1p-24f), 0x0400);     // tie with the smallest normal (even)
  EXPECT_EQ(f32_to_f16(0x1p-14f), 0x0400);               // smallest normal
  EXPECT_EQ(f32_to_f16(1e-30f), 0x0000);                 // far below: underflows to zero
  EXPECT_EQ(f32_to_f16(-1e-30f), 0x8000);
  EXPECT_EQ(f32_to_f16(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(f16_to_f32(0x0001), 0x1p-24f);
  EXPECT_EQ(f16_to_f32(0x03ff), 1023 * 0x1p-24f);
  EXPECT_EQ(f16_to_f32(0x8001), -0x1p-24f);
}

TEST(Float16, NaNStaysNaN) {
  const float nans[] = {std::numeric_limits<float>::quiet_NaN(),
                        -std::numeric_limits<float>::quiet_NaN(),
                        float_from_bits(0x7f800001u),  // signalling, payload only in the low bits
                        float_from_bits(0xff800001u),
                        float_from_bits(0x7fc00000u),
                        float_from_bits(0x7fffffffu)};
  for (float nan : nans) {
    const uint16_t h = f32_to_f16(nan);
    EXPECT_TRUE(is_half_nan(h)) << std::hex << bits_of(nan) << " -> " << h;
    EXPECT_EQ((h & 0x8000) != 0, std::signbit(nan)) << std::hex << bits_of(nan);
  }
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7e00)));
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7c01)));
  EXPECT_TRUE(std::isnan(f16_to_f32(0xfc01)));
  EXPECT_TRUE(std::isinf(f16_to_f32(0x7c00)));
  EXPECT_TRUE(std::isinf(f16_to_f32(0xfc00)) && f16_to_f32(0xfc00) < 0);
}

// Every midpoint between two adjacent halves, and the floats on either side of it, against the reference.
TEST(Float16, EveryMidpointAndItsNeighboursMatchReference) {
  for (uint32_t b = 0; b < 0x7bff; ++b) {
    const double lo = half_value(static_cast<uint16_t>(b)), hi = half_value(static_cast<uint16_t>(b + 1));
    const float mid = static_cast<float>((lo + hi) / 2);  // exact: halves have 11-bit significands
    ASSERT_EQ(static_cast<double>(mid), (lo + hi) / 2);
    for (float f : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e30f)}) {
      ASSERT_EQ(f32_to_f16(f), reference_f32_to_f16(f)) << std::hexfloat << f;
      ASSERT_EQ(f32_to_f16(-f), reference_f32_to_f16(-f)) << std::hexfloat << -f;
    }
  }
}

TEST(Float16, RandomFloatsMatchReference) {
  std::mt19937 rng(1234);
  for (int i = 0; i < 2'000'000; ++i) {
    float f;
    if (i % 2 == 0) {
      f = float_from_bits(rng());  // any pattern
    } else {
      // Exponents in and around the half range, random significand.
      const uint32_t exponent = 127 - 28 + rng() % 46;  // 2^-28 .. 2^17
      f = float_from_bits((rng() & 0x80000000u) | (exponent << 23) | (rng() & 0x7fffffu));
    }
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_f16(f), reference_f32_to_f16(f)) << std::hexfloat << f;
  }
}

// ---- bfloat16 ------------------------------------------------------------------------------------------------------

TEST(BFloat16, EveryBitPatternIsTheTopHalfOfAFloat) {
  for (uint32_t b = 0; b <= 0xffff; ++b) {
    const float decoded = bf16_to_f32(static_cast<uint16_t>(b));
    ASSERT_EQ(bits_of(decoded), b << 16) << std::hex << b;
    if (!std::isnan(decoded))
      ASSERT_EQ(f32_to_bf16(decoded), b) << std::hex << b;
    else
      ASSERT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(decoded)))) << std::hex << b;
  }
}

TEST(BFloat16, RoundsToNearestEven) {
  // Near 1.0 the bf16 spacing is 2^-7.
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(float_from_bits(0x3f808000u)), 0x3f80);  // tie 0x3f80 | 0x3f81: even is 0x3f80
  EXPECT_EQ(f32_to_bf16(float_from_bits(0x3f818000u)), 0x3f82);  // tie 0x3f81 | 0x3f82: even is 0x3f82
  EXPECT_EQ(f32_to_bf16(float_from_bits(0x3f808001u)), 0x3f81);  // above the tie
  EXPECT_EQ(f32_to_bf16(float_from_bits(0x3f807fffu)), 0x3f80);  // below the tie
  EXPECT_EQ(f32_to_bf16(float_from_bits(0xbf818000u)), 0xbf82);  // negative tie
  EXPECT_EQ(f32_to_bf16(float_from_bits(0x3fff8000u)), 0x4000);  // tie carrying into the exponent
  EXPECT_EQ(f32_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_bf16(float_from_bits(0x00008000u)), 0x0000);       // subnormal tie to even zero
  EXPECT_EQ(f32_to_bf16(float_from_bits(0x00018000u)), 0x0002);       // subnormal tie to even
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7f80);  // rounds past the largest bf16
  EXPECT_EQ(f32_to_bf16(float_from_bits(0x7f7f7fffu)), 0x7f7f);       // stays finite below the midpoint
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(f32_to_bf16(-std::numeric_limits<float>::infinity()), 0xff80);
}

TEST(BFloat16, NaNStaysNaN) {
  // 0x7f800001 truncates to the infinity pattern 0x7f80: a naive rounding would turn this NaN into infinity.
  for (uint32_t bits : {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu, 0x7f80ffffu, 0x7fbfffffu}) {
    const uint16_t b = f32_to_bf16(float_from_bits(bits));
    EXPECT_TRUE(std::isnan(bf16_to_f32(b))) << std::hex << bits << " -> " << b;
    EXPECT_EQ(uint32_t{b} & 0x8000u, (bits >> 16) & 0x8000u) << std::hex << bits;
  }
}

TEST(BFloat16, RandomFloatsMatchReference) {
  std::mt19937 rng(99);
  for (int i = 0; i < 2'000'000; ++i) {
    const float f = float_from_bits(rng());
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_bf16(f), reference_f32_to_bf16(f)) << std::hex << bits_of(f);
  }
}

}  // namespace
}  // namespace ernie
