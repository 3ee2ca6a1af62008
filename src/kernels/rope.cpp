#include "kernels/rope.h"

#include <cmath>

#include "kernels/attention.h"

namespace ernie {

Rope::Rope(int head_dim, float theta) : head_dim_(head_dim), inv_freq_(head_dim / 2) {
  for (int i = 0; i < head_dim / 2; ++i) {
    inv_freq_[i] = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(head_dim));
  }
}

void Rope::angles(int pos, float* cos, float* sin) const {
  for (int i = 0; i < head_dim_ / 2; ++i) {
    const float angle = static_cast<float>(pos) * inv_freq_[i];
    cos[i] = std::cos(angle);
    sin[i] = std::sin(angle);
  }
}

void Rope::apply(float* x, int n_heads, const float* c, const float* s) const {
  const int half = head_dim_ / 2;
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

void Rope::apply(float* x, int n_heads, int pos) const {
  float c[kMaxHeadDim / 2], s[kMaxHeadDim / 2];
  angles(pos, c, s);
  apply(x, n_heads, c, s);
}

}  // namespace ernie
