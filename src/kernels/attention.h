// Causal scaled-dot-product attention with grouped-query heads over a block key/value cache.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace ernie {

struct AttentionShape {
  int n_heads;     // query heads
  int n_kv_heads;  // key/value heads; query head h reads kv head h / (n_heads / n_kv_heads)
  int head_dim;    // at most kMaxHeadDim
};
constexpr int kMaxHeadDim = 512;

// Positions per KV-cache block: keys and values live in blocks of this many consecutive positions, and attention
// takes keys a block at a time.
constexpr int kKvBlockPositions = 16;

// One layer's keys and values of one sequence, in blocks of kKvBlockPositions positions: position p lives in slot
// p % kKvBlockPositions of block block_table[p / kKvBlockPositions], each block block_bytes() from the last, in
// F32, F16 or Q8_0. Values are rows of n_kv_heads * head_dim elements, one per slot, as quantize_row writes them.
// Keys are stored transposed, so that attention takes a block's keys side by side in SIMD lanes: per kv head a
// segment of key_segment_bytes(), holding element [d][slot] for F32 and F16; for Q8_0 the segment is one group of
// the int8 matmul's packed layout (matmul.h), the slots its rows, so that the keys stay int8 and meet int8 queries
// (the same values and scales as quantize_row of the head's row). A block takes exactly the bytes of
// kKvBlockPositions rows either way. Write a position with kv_store().
struct KvCacheView {
  DType dtype = DType::F32;
  uint8_t* k = nullptr;  // block 0 of the keys
  uint8_t* v = nullptr;  // block 0 of the values
  const int32_t* block_table = nullptr;
  int row_elements = 0;  // n_kv_heads * head_dim

  size_t row_bytes() const { return dtype_row_bytes(dtype, row_elements); }
  size_t block_bytes() const { return row_bytes() * kKvBlockPositions; }
  size_t block_offset(int64_t position) const { return block_table[position / kKvBlockPositions] * block_bytes(); }
  uint8_t* v_row(int64_t position) const {
    return v + block_offset(position) + (position % kKvBlockPositions) * row_bytes();
  }
  size_t key_segment_bytes(int head_dim) const { return dtype_row_bytes(dtype, head_dim) * kKvBlockPositions; }
};

// Stores position `position`'s keys k and values v (n_kv_heads * head_dim floats each) into its block, rounded to the
// cache's type exactly as quantize_row rounds them.
void kv_store(const KvCacheView& cache, const AttentionShape& shape, int64_t position, const float* k, const float* v);

// For each of n_queries query rows at positions first_pos, first_pos+1, ... and each query head in
// [head_begin, head_end): attends to cache rows [0, its position] (causal), with scale 1/sqrt(head_dim) and an
// online (single-pass, running-maximum) softmax in float32. q, out: [n_queries, n_heads*head_dim]; only the given
// heads' columns of out are written, so threads can split the heads. The result for one (query, head) does not depend
// on n_queries, first_pos of the other queries or the head range. Allocates nothing (about 150 KiB of stack).
void attention(float* out, const float* q, int n_queries, int first_pos, const KvCacheView& cache,
               const AttentionShape& shape, int head_begin, int head_end);

// Keys are taken in partitions of this many positions: a query's result is its partitions' results merged in order
// (each a softmax over its own keys, rescaled to the common maximum). attention() merges them as it goes; a decoding
// query over a long context can instead compute its partitions on different threads (attention_partition) and merge
// them after (attention_merge), with the same bits: split-K ("flash-decoding"), so that several threads work on one
// sequence.
constexpr int kAttentionPartition = 256;

// Floats one partition's state takes for one query row: per head its maximum score, denominator and head_dim
// unnormalised outputs.
constexpr size_t attention_partial_floats(const AttentionShape& shape) {
  return static_cast<size_t>(shape.n_heads) * (shape.head_dim + 2);
}
// Partition `partition` (keys [partition, partition + 1) x kAttentionPartition, up to `position`) of the single query
// q at `position`, heads [head_begin, head_end), into partials[partition * attention_partial_floats(shape) ...].
void attention_partition(float* partials, const float* q, int position, const KvCacheView& cache,
                         const AttentionShape& shape, int head_begin, int head_end, int partition);
// out[heads] = the query's result from all position / kAttentionPartition + 1 partitions' states: exactly what
// attention(out, q, 1, position, ...) writes.
void attention_merge(float* out, const float* partials, int position, const AttentionShape& shape, int head_begin,
                     int head_end);

}  // namespace ernie
