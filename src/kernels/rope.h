// Rotary position embedding on interleaved pairs (GPT-J style): dimensions 2i and 2i+1 of a head rotate together
// by angle p * theta^(-2i/head_dim). (Llama/NeoX rotate the two halves instead; ERNIE does not.)
#pragma once

#include <vector>

namespace ernie {

// The inverse frequencies of one model, computed once. The cosines and sines of a position are computed when needed
// (once per token per forward pass, head_dim / 2 of each) rather than tabled: a table for the 131,072 positions
// ERNIE allows would hold 64 MiB. Both are computed as transformers does: inverse frequencies, angles and the
// trigonometry all in float32.
class Rope {
 public:
  Rope(int head_dim, float theta);

  // cos and sin of position pos's angles, head_dim / 2 of each.
  void angles(int pos, float* cos, float* sin) const;
  // Rotates x[n_heads * head_dim] (one token's heads, contiguous) by one position's angles.
  void apply(float* x, int n_heads, const float* cos, const float* sin) const;
  // The same for position pos (computing its angles).
  void apply(float* x, int n_heads, int pos) const;

  int head_dim() const { return head_dim_; }

 private:
  int head_dim_;
  std::vector<float> inv_freq_;  // [head_dim / 2]
};

}  // namespace ernie
