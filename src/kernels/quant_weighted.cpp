// Importance-weighted choice of a block's scale (quant.h: quantize_row_weighted). For a block of 32 weights x with
// importances w, a candidate scale d gives levels q_i = clamp(round(x_i / d)); for those levels the best scale is
// the weighted least-squares one, d* = sum w x q / sum w q^2, stored as F16 with the levels re-rounded for it.
// Candidates sweep the divisor that maps the block's extreme onto the last levels (as llama.cpp's make_qx_quants
// does), on both signs for Q4_0's asymmetric range, and include plain rounding; the error is measured with the F16
// scale exactly as stored.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "kernels/quant.h"

namespace ernie {
namespace {

struct Levels {
  int lo, hi;
};

struct Choice {
  float scale = 0.0f;  // as stored: F16-rounded
  int8_t level[kQuantBlock] = {};
  double error = INFINITY;
};

double weighted_error(const float* x, const float* w, float scale, const int8_t* level) {
  double error = 0.0;
  for (int i = 0; i < kQuantBlock; ++i) {
    const double e = static_cast<double>(x[i]) - static_cast<double>(scale) * level[i];
    error += w[i] * e * e;
  }
  return error;
}

// Levels for scale d, then kept if they beat `best`.
void try_scale(const float* x, const float* w, float d, Levels range, Choice& best) {
  const float stored = f16_to_f32(f32_to_f16(d));
  if (!std::isfinite(stored) || stored == 0.0f) return;
  Choice c;
  c.scale = stored;
  for (int i = 0; i < kQuantBlock; ++i) {
    // Clamped before rounding, so that a tiny fitted scale cannot overflow the conversion.
    const float level = std::clamp(x[i] / stored, static_cast<float>(range.lo), static_cast<float>(range.hi));
    c.level[i] = static_cast<int8_t>(std::lround(level));
  }
  c.error = weighted_error(x, w, c.scale, c.level);
  if (c.error < best.error) best = c;
}

// try_scale(d), then the least-squares scale of the levels d gave. (For a fixed scale, rounding each level is
// optimal on its own, so the fitted scale is tried with re-rounded levels only.)
void try_refined(const float* x, const float* w, float d, Levels range, Choice& best) {
  Choice local;
  try_scale(x, w, d, range, local);
  if (local.error == INFINITY) return;
  double xq = 0.0, qq = 0.0;
  for (int i = 0; i < kQuantBlock; ++i) {
    xq += static_cast<double>(w[i]) * x[i] * local.level[i];
    qq += static_cast<double>(w[i]) * local.level[i] * local.level[i];
  }
  if (qq > 0.0) try_scale(x, w, static_cast<float>(xq / qq), range, local);
  if (local.error < best.error) best = local;
}

// Plain rounding (quantize_row's bytes), decoded to a choice.
Choice plain(DType dtype, const float* x, const float* w) {
  uint8_t bytes[sizeof(BlockQ8_0)];
  reference::quantize_row(dtype, x, bytes, kQuantBlock);
  Choice c;
  uint16_t scale_bits;
  std::memcpy(&scale_bits, bytes, 2);
  c.scale = f16_to_f32(scale_bits);
  for (int i = 0; i < kQuantBlock; ++i) {
    c.level[i] = dtype == DType::Q8_0  ? static_cast<int8_t>(bytes[2 + i])
                 : i < kQuantBlock / 2 ? static_cast<int8_t>((bytes[2 + i] & 0x0f) - 8)
                                       : static_cast<int8_t>((bytes[2 + i - kQuantBlock / 2] >> 4) - 8);
  }
  c.error = weighted_error(x, w, c.scale, c.level);
  return c;
}

void write_block(DType dtype, const Choice& c, uint8_t* out) {
  const uint16_t scale = f32_to_f16(c.scale);
  if (dtype == DType::Q8_0) {
    BlockQ8_0 block;
    block.scale = scale;
    std::memcpy(block.q, c.level, kQuantBlock);
    std::memcpy(out, &block, sizeof block);
    return;
  }
  BlockQ4_0 block;
  block.scale = scale;
  for (int i = 0; i < kQuantBlock / 2; ++i) {
    block.q[i] = static_cast<uint8_t>((c.level[i] + 8) | ((c.level[i + kQuantBlock / 2] + 8) << 4));
  }
  std::memcpy(out, &block, sizeof block);
}

Choice best_block(DType dtype, const float* x, const float* importance) {
  // A block whose columns no calibration token reached weighs its weights equally.
  float w[kQuantBlock];
  double total = 0.0;
  for (int i = 0; i < kQuantBlock; ++i) total += importance[i];
  for (int i = 0; i < kQuantBlock; ++i) w[i] = total > 0.0 ? importance[i] : 1.0f;

  Choice best = plain(dtype, x, w);
  float extreme = 0.0f;
  for (int i = 0; i < kQuantBlock; ++i) {
    if (std::fabs(x[i]) > std::fabs(extreme)) extreme = x[i];
  }
  if (extreme == 0.0f) return best;
  constexpr int kSteps = 9;  // divisors from 0.9 levels under the extreme's to 0.9 over, by tenths
  if (dtype == DType::Q8_0) {
    const Levels range{-127, 127};
    for (int s = -kSteps; s <= kSteps; ++s) try_refined(x, w, std::fabs(extreme) / (127.0f + 0.1f * s), range, best);
  } else {
    const Levels range{-8, 7};
    for (int s = -kSteps; s <= kSteps; ++s) {
      try_refined(x, w, extreme / -(8.0f + 0.1f * s), range, best);  // the extreme towards level -8
      try_refined(x, w, extreme / (7.0f + 0.1f * s), range, best);   // or towards level 7
    }
  }
  return best;
}

}  // namespace

void quantize_row_weighted(DType dtype, const float* x, const float* importance, uint8_t* out, int64_t n) {
  if (dtype != DType::Q8_0 && dtype != DType::Q4_0)
    fail("importance-weighted quantization is for Q8_0 and Q4_0, not ", dtype_name(dtype));
  if (n % kQuantBlock != 0) fail("a row of ", n, " weights is not whole blocks of ", kQuantBlock);
  const size_t block_bytes = dtype_block_bytes(dtype);
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    const Choice c = best_block(dtype, x + b * kQuantBlock, importance + b * kQuantBlock);
    write_block(dtype, c, out + b * block_bytes);
  }
}

}  // namespace ernie
