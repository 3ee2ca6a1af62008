// Rotary position embedding on interleaved pairs (GPT-J style): dimensions 2i and 2i+1 of a head rotate together
// by angle p * theta^(-2i/head_dim). (Llama/NeoX rotate the two halves instead; ERNIE does not.)
#pragma once

#include <vector>

namespace ernie {

class RopeTable {
 public:
  // cos/sin for positions [0, max_positions), computed as transformers does: inverse frequencies, angles and the
  // trigonometry all in float32.
  RopeTable(int head_dim, float theta, int max_positions);

  // Rotates x[n_heads * head_dim] (one token's heads, contiguous) for position `pos` < max_positions.
  void apply(float* x, int n_heads, int pos) const;

  int head_dim() const { return head_dim_; }
  int max_positions() const { return max_positions_; }

 private:
  int head_dim_;
  int max_positions_;
  std::vector<float> cos_;  // [max_positions, head_dim / 2]
  std::vector<float> sin_;
};

}  // namespace ernie
