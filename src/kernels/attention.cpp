#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/quant.h"

namespace ernie {

void attention(float* out, const float* q, int n_queries, int first_pos, const KvCacheView& cache,
               const AttentionShape& shape, int head_begin, int head_end) {
  const int hd = shape.head_dim;
  const int q_stride = shape.n_heads * hd;
  const int group = shape.n_heads / shape.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  float key[kMaxHeadDim], value[kMaxHeadDim];

  for (int t = 0; t < n_queries; ++t) {
    const int n_keys = first_pos + t + 1;
    for (int h = head_begin; h < head_end; ++h) {
      const float* qh = q + static_cast<size_t>(t) * q_stride + h * hd;
      const size_t kv_offset = dtype_row_bytes(cache.dtype, (h / group) * hd);
      float* oh = out + static_cast<size_t>(t) * q_stride + h * hd;
      std::fill(oh, oh + hd, 0.0f);
      // Running maximum m and denominator l: oh holds sum_j exp(s_j - m) v_j, rescaled whenever m grows.
      float m = -std::numeric_limits<float>::infinity(), l = 0.0f;
      for (int j = 0; j < n_keys; ++j) {
        dequantize_row(cache.dtype, cache.k_row(j) + kv_offset, key, hd);
        float s = 0.0f;
        for (int d = 0; d < hd; ++d) s += qh[d] * key[d];
        s *= scale;
        if (s > m) {
          const float shrink = std::exp(m - s);
          l *= shrink;
          for (int d = 0; d < hd; ++d) oh[d] *= shrink;
          m = s;
        }
        const float p = std::exp(s - m);
        l += p;
        dequantize_row(cache.dtype, cache.v_row(j) + kv_offset, value, hd);
        for (int d = 0; d < hd; ++d) oh[d] += p * value[d];
      }
      for (int d = 0; d < hd; ++d) oh[d] /= l;
    }
  }
}

}  // namespace ernie
