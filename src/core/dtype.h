// Element types of stored tensors and the scalar conversions between them.
// BF16 is the top half of an IEEE float32; F16 is IEEE binary16.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace ernie {

enum class DType : uint8_t { F32, BF16, F16 };

constexpr size_t dtype_size(DType t) {
  return t == DType::F32 ? 4 : 2;
}

constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
  }
  return "?";
}

// Names as safetensors writes them ("F32", "BF16", "F16"); nullopt for anything else.
std::optional<DType> parse_dtype(std::string_view name);

inline float bf16_to_f32(uint16_t bits) {
  const uint32_t wide = uint32_t{bits} << 16;
  float out;
  std::memcpy(&out, &wide, sizeof out);
  return out;
}

// Round to nearest even, as torch does; NaN stays a (quiet) NaN.
inline uint16_t f32_to_bf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float f16_to_f32(uint16_t bits);
uint16_t f32_to_f16(float value);

}  // namespace ernie
