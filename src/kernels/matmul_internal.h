// Shared by the matmul kernels' translation units, not part of the kernels' interface: the quantized activation
// layout (written by quantize_input, read by the int8 kernels and the reference) and the argument block every tile
// kernel reads.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"
#include "kernels/matmul.h"
#include "kernels/quant.h"

namespace ernie::matmul_detail {

// A quantized activation row: int8 values (value = scale[b] * q[i] for i in block b), then one float scale per
// 32-element block, then each block's int32 sum of q (the packed kernels' correction for unsigned weights). The values
// are zero-padded to whole cache lines (the scales and sums to match, with zeros) and rows start on cache lines.
// Values lie in [-127, 127].
struct ActivationRows {
  const uint8_t* base;
  int cols;

  static constexpr size_t values_bytes(int cols) { return (static_cast<size_t>(cols) + 63) / 64 * 64; }
  static constexpr size_t scales_bytes(int cols) { return values_bytes(cols) / kQuantBlock * sizeof(float); }
  static constexpr size_t stride(int cols) { return (values_bytes(cols) + 2 * scales_bytes(cols) + 63) / 64 * 64; }
  const int8_t* q(int t) const { return reinterpret_cast<const int8_t*>(base + t * stride(cols)); }
  const float* scales(int t) const {
    return reinterpret_cast<const float*>(base + t * stride(cols) + values_bytes(cols));
  }
  const int32_t* sums(int t) const {
    return reinterpret_cast<const int32_t*>(base + t * stride(cols) + values_bytes(cols) + scales_bytes(cols));
  }
};

// Several tokens: the kernels take them in chunks whose activations stay in L2.
constexpr size_t kActivationChunkBytes = 256 * 1024;

// Everything a tile kernel reads and writes. Output element (t, r) for r in the call's row range goes to
// out[t * out_stride + (r - out_row0)].
struct MatmulArgs {
  float* out;
  size_t out_stride;
  int out_row0;
  const float* x;     // [n, cols]
  const uint8_t* xq;  // quantized x (ActivationRows) for integer weights
  const uint8_t* w;   // float types: row r at w + r * w_row_bytes; integer types: packed group g at
                      // w + g * kPackedRows * w_row_bytes
  size_t w_row_bytes;
  DType dtype;
  const float* bias;  // [rows] or null
  int cols;
  int n;

  // The same problem for tokens [t0, t0 + count), writing to out (already offset to token t0).
  MatmulArgs tokens(int t0, int count, float* to, size_t to_stride, int to_row0) const {
    MatmulArgs a = *this;
    a.x = x ? x + static_cast<size_t>(t0) * cols : nullptr;
    a.xq = xq ? xq + t0 * ActivationRows::stride(cols) : nullptr;
    a.n = count;
    a.out = to;
    a.out_stride = to_stride;
    a.out_row0 = to_row0;
    return a;
  }
};

}  // namespace ernie::matmul_detail
