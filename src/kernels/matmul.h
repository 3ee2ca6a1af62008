// Matrix products against stored weights. A weight matrix is a view of W[rows, cols] in its stored dtype
// (a Linear layer's [out, in]); activations are float32, row-major [n_tokens, cols].
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace ernie {

struct WeightMatrix {
  DType dtype = DType::F32;
  const uint8_t* data = nullptr;  // rows * cols elements, row-major; may be unaligned (mapped file)
  int rows = 0;
  int cols = 0;

  const uint8_t* row_bytes(int64_t r) const { return data + r * cols * static_cast<int64_t>(dtype_size(dtype)); }
};

// out[t, r] = sum_c x[t, c] * W[r, c] + bias[r], for t < n_tokens and r in [row_begin, row_end).
// x: [n_tokens, W.cols]; out: [n_tokens, W.rows] (only the given row range is written); bias: [W.rows] or null.
// Accumulates in float32. The row range lets callers split work across threads without overlap.
void matmul(float* out, const float* x, int n_tokens, const WeightMatrix& w, const float* bias, int row_begin,
            int row_end);

inline void matmul(float* out, const float* x, int n_tokens, const WeightMatrix& w, const float* bias) {
  matmul(out, x, n_tokens, w, bias, 0, w.rows);
}

// Widens row r of W into out[W.cols] as float32 (embedding lookup).
void read_row(float* out, const WeightMatrix& w, int64_t r);

}  // namespace ernie
