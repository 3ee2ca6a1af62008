// Weight formats stored in blocks (ggml's Q8_0 and Q4_0, bit for bit) and conversion of float rows to and from
// every stored dtype. The SIMD conversions write exactly the bytes of the scalar definitions in namespace reference.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace ernie {

constexpr int kQuantBlock = 32;  // weights per Q8_0 / Q4_0 block

// value[i] = f16(scale) * q[i]
struct BlockQ8_0 {
  uint16_t scale;  // F16
  int8_t q[kQuantBlock];
};
// value[i] = f16(scale) * (nibble[i] - 8), where nibble[i] is the low half of q[i] for i < 16 and the high half of
// q[i - 16] for i >= 16.
struct BlockQ4_0 {
  uint16_t scale;  // F16
  uint8_t q[kQuantBlock / 2];
};
static_assert(sizeof(BlockQ8_0) == dtype_block_bytes(DType::Q8_0));
static_assert(sizeof(BlockQ4_0) == dtype_block_bytes(DType::Q4_0));

// Writes n floats (n a multiple of the dtype's block) as dtype into out (dtype_row_bytes(dtype, n) bytes; any
// alignment), rounding as ggml's reference quantizers and torch's casts do: Q8_0 scale = max|x| / 127, q = round(x /
// scale); Q4_0 scale = (the value of largest magnitude) / -8, q = min(15, trunc(x / scale + 8.5)). Rows are
// independent: call it from several threads on different rows (about 1 GB/s of input per core for the block types).
void quantize_row(DType dtype, const float* x, uint8_t* out, int64_t n);

// The same blocks with each block's scale and levels chosen to minimise the importance-weighted squared error
// sum_i importance[i] * (x[i] - value[i])^2 rather than from the block's extreme alone: the output error of a matrix
// row is sum_i (w_i - value_i) x_i, whose expected square is that sum when importance[i] is column i's mean squared
// input and the inputs are uncorrelated (ernie calibrate measures it). Never worse by that measure than
// quantize_row's rounding, which is one of the candidates. The bytes are standard blocks that any reader decodes.
// Q8_0 and Q4_0 (other dtypes raise ernie::Error); importance[n], non-negative. Scalar: for ernie quantize, not the
// forward pass (about 30 ns per weight).
void quantize_row_weighted(DType dtype, const float* x, const float* importance, uint8_t* out, int64_t n);

// Widens n elements of dtype (possibly unaligned) into float32.
void dequantize_row(DType dtype, const uint8_t* in, float* out, int64_t n);

// Both conversions as scalar code: the definitions the fast ones are tested against.
namespace reference {
void quantize_row(DType dtype, const float* x, uint8_t* out, int64_t n);
void dequantize_row(DType dtype, const uint8_t* in, float* out, int64_t n);
}  // namespace reference

}  // namespace ernie
