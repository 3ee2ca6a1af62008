// Causal scaled-dot-product attention with grouped-query heads over a key/value cache.
#pragma once

namespace ernie {

struct AttentionShape {
  int n_heads;     // query heads
  int n_kv_heads;  // key/value heads; query head h reads kv head h / (n_heads / n_kv_heads)
  int head_dim;
};

// For each of n_queries query rows at positions first_pos, first_pos+1, ...: attends to cache rows
// [0, its position] (causal), softmax in float32 with scale 1/sqrt(head_dim).
// q, out: [n_queries, n_heads*head_dim]; k_cache, v_cache: [>= first_pos + n_queries, n_kv_heads*head_dim];
// scores: scratch of at least first_pos + n_queries floats.
void attention(float* out, const float* q, int n_queries, int first_pos, const float* k_cache, const float* v_cache,
               const AttentionShape& shape, float* scores);

}  // namespace ernie
