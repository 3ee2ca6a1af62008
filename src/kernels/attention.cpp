#include "kernels/attention.h"

#include <cmath>
#include <cstring>

#include "kernels/ops.h"

namespace ernie {

void attention(float* out, const float* q, int n_queries, int first_pos, const float* k_cache, const float* v_cache,
               const AttentionShape& shape, float* scores) {
  const int hd = shape.head_dim;
  const int q_stride = shape.n_heads * hd;
  const int kv_stride = shape.n_kv_heads * hd;
  const int group = shape.n_heads / shape.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));

  for (int t = 0; t < n_queries; ++t) {
    const int n_keys = first_pos + t + 1;
    for (int h = 0; h < shape.n_heads; ++h) {
      const float* qh = q + static_cast<long>(t) * q_stride + h * hd;
      const int kv_offset = (h / group) * hd;
      for (int j = 0; j < n_keys; ++j) {
        const float* kj = k_cache + static_cast<long>(j) * kv_stride + kv_offset;
        float dot = 0.0f;
        for (int d = 0; d < hd; ++d) dot += qh[d] * kj[d];
        scores[j] = dot * scale;
      }
      softmax(scores, n_keys);
      float* oh = out + static_cast<long>(t) * q_stride + h * hd;
      std::memset(oh, 0, sizeof(float) * hd);
      for (int j = 0; j < n_keys; ++j) {
        const float* vj = v_cache + static_cast<long>(j) * kv_stride + kv_offset;
        const float p = scores[j];
        for (int d = 0; d < hd; ++d) oh[d] += p * vj[d];
      }
    }
  }
}

}  // namespace ernie
