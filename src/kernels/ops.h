// Element-wise and per-row operations of a transformer block, on float32 rows (SIMD, best target chosen at run time).
// All sizes are explicit; nothing here allocates. Each row's (element's) result depends only on that row (element).
#pragma once

namespace ernie {

// out[i] = x[i] / sqrt(mean(x²) + eps) * weight[i], for each of `rows` rows of length n. out may alias x.
void rmsnorm(float* out, const float* x, const float* weight, int rows, int n, float eps);

// In-place softmax of x[0..n).
void softmax(float* x, int n);

// out[i] = silu(gate[i]) * up[i], silu(z) = z / (1 + exp(-z)). out may alias gate or up.
void swiglu(float* out, const float* gate, const float* up, int n);

// x[i] += y[i]
void add_inplace(float* x, const float* y, int n);

}  // namespace ernie
