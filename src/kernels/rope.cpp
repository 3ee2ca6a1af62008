#include "kernels/rope.h"

#include <cmath>

namespace ernie {

RopeTable::RopeTable(int head_dim, float theta, int max_positions)
    : head_dim_(head_dim),
      max_positions_(max_positions),
      cos_(static_cast<size_t>(max_positions) * (head_dim / 2)),
      sin_(cos_.size()) {
  const int half = head_dim / 2;
  std::vector<float> inv_freq(half);
  for (int i = 0; i < half; ++i) {
    inv_freq[i] = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(head_dim));
  }
  for (int p = 0; p < max_positions; ++p) {
    for (int i = 0; i < half; ++i) {
      const float angle = static_cast<float>(p) * inv_freq[i];
      cos_[static_cast<size_t>(p) * half + i] = std::cos(angle);
      sin_[static_cast<size_t>(p) * half + i] = std::sin(angle);
    }
  }
}

void RopeTable::apply(float* x, int n_heads, int pos) const {
  const int half = head_dim_ / 2;
  const float* c = cos_.data() + static_cast<size_t>(pos) * half;
  const float* s = sin_.data() + static_cast<size_t>(pos) * half;
  for (int h = 0; h < n_heads; ++h) {
    float* v = x + h * head_dim_;
    for (int i = 0; i < half; ++i) {
      const float a = v[2 * i];
      const float b = v[2 * i + 1];
      v[2 * i] = a * c[i] - b * s[i];
      v[2 * i + 1] = b * c[i] + a * s[i];
    }
  }
}

}  // namespace ernie
