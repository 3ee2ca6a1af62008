#include "kernels/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace ernie {
namespace {

void quantize_q8_0(const float* x, BlockQ8_0& block) {
  float amax = 0.0f;
  for (int i = 0; i < kQuantBlock; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float scale = amax / 127.0f;
  const float inverse = scale != 0.0f ? 1.0f / scale : 0.0f;
  block.scale = f32_to_f16(scale);
  for (int i = 0; i < kQuantBlock; ++i) block.q[i] = static_cast<int8_t>(std::round(x[i] * inverse));
}

void quantize_q4_0(const float* x, BlockQ4_0& block) {
  // The signed extreme maps to -8, so the full range [-8, 7] is used on its side.
  float extreme = 0.0f;
  for (int i = 0; i < kQuantBlock; ++i) {
    if (std::fabs(x[i]) > std::fabs(extreme)) extreme = x[i];
  }
  const float scale = extreme / -8.0f;
  const float inverse = scale != 0.0f ? 1.0f / scale : 0.0f;
  block.scale = f32_to_f16(scale);
  const auto nibble = [&](float v) { return static_cast<uint8_t>(std::min(15, static_cast<int>(v * inverse + 8.5f))); };
  for (int i = 0; i < kQuantBlock / 2; ++i) {
    block.q[i] = static_cast<uint8_t>(nibble(x[i]) | (nibble(x[i + kQuantBlock / 2]) << 4));
  }
}

template <class Block, class Fn>
void for_each_block(const uint8_t* data, int64_t n, Fn&& fn) {
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    Block block;
    std::memcpy(&block, data + b * sizeof(Block), sizeof(Block));
    fn(b * kQuantBlock, block);
  }
}

}  // namespace

void quantize_row(DType dtype, const float* x, uint8_t* out, int64_t n) {
  switch (dtype) {
    case DType::F32: std::memcpy(out, x, n * sizeof(float)); return;
    case DType::BF16:
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t v = dtype == DType::BF16 ? f32_to_bf16(x[i]) : f32_to_f16(x[i]);
        std::memcpy(out + 2 * i, &v, 2);
      }
      return;
    case DType::Q8_0:
      for (int64_t b = 0; b < n / kQuantBlock; ++b) {
        BlockQ8_0 block;
        quantize_q8_0(x + b * kQuantBlock, block);
        std::memcpy(out + b * sizeof block, &block, sizeof block);
      }
      return;
    case DType::Q4_0:
      for (int64_t b = 0; b < n / kQuantBlock; ++b) {
        BlockQ4_0 block;
        quantize_q4_0(x + b * kQuantBlock, block);
        std::memcpy(out + b * sizeof block, &block, sizeof block);
      }
      return;
  }
}

void dequantize_row(DType dtype, const uint8_t* in, float* out, int64_t n) {
  switch (dtype) {
    case DType::F32: std::memcpy(out, in, n * sizeof(float)); return;
    case DType::BF16:
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t v;
        std::memcpy(&v, in + 2 * i, 2);
        out[i] = dtype == DType::BF16 ? bf16_to_f32(v) : f16_to_f32(v);
      }
      return;
    case DType::Q8_0:
      for_each_block<BlockQ8_0>(in, n, [&](int64_t at, const BlockQ8_0& block) {
        const float scale = f16_to_f32(block.scale);
        for (int i = 0; i < kQuantBlock; ++i) out[at + i] = scale * block.q[i];
      });
      return;
    case DType::Q4_0:
      for_each_block<BlockQ4_0>(in, n, [&](int64_t at, const BlockQ4_0& block) {
        const float scale = f16_to_f32(block.scale);
        for (int i = 0; i < kQuantBlock / 2; ++i) {
          out[at + i] = scale * ((block.q[i] & 0x0f) - 8);
          out[at + i + kQuantBlock / 2] = scale * ((block.q[i] >> 4) - 8);
        }
      });
      return;
  }
}

}  // namespace ernie
