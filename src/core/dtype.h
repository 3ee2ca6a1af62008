// Element types of stored tensors and the scalar conversions between them.
// BF16 is the top half of an IEEE float32; F16 is IEEE binary16. Q8_0 and Q4_0 are ggml's block formats (32
// weights per block sharing one F16 scale), bit for bit, so that GGUF files are shared with llama.cpp; their layout
// and arithmetic live in kernels/quant.h.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace ernie {

enum class DType : uint8_t { F32, BF16, F16, Q8_0, Q4_0 };

// Elements stored together (1 for the float types, 32 for the block formats) and the bytes they take.
constexpr int dtype_block_elements(DType t) {
  return t == DType::Q8_0 || t == DType::Q4_0 ? 32 : 1;
}
constexpr size_t dtype_block_bytes(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::BF16:
    case DType::F16: return 2;
    case DType::Q8_0: return 34;
    case DType::Q4_0: return 18;
  }
  return 0;
}
// Bytes of n consecutive elements; n must be a multiple of dtype_block_elements(t).
constexpr size_t dtype_row_bytes(DType t, int64_t n) {
  return static_cast<size_t>(n / dtype_block_elements(t)) * dtype_block_bytes(t);
}

constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
    case DType::Q8_0: return "Q8_0";
    case DType::Q4_0: return "Q4_0";
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
