// Attention over a block KV cache: a Q8_0 cache against the textbook computation on its dequantized values, and a
// scattered block table against the same keys laid out contiguously (the same bits), on every SIMD target.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/attention.h"
#include "kernels/kernel_test_support.h"
#include "kernels/matmul.h"
#include "kernels/matmul_internal.h"
#include "kernels/quant.h"

namespace ernie {
namespace {

using testing::first_difference;
using testing::for_each_simd_target;
using testing::Random;
using testing::TestKvCache;

// The query rows as a Q8_0 cache's scores see them: each head's head_dim values quantized to int8 by quantize_input
// (one scale per 32), widened back.
std::vector<float> int8_queries(const std::vector<float>& q, int head_dim) {
  const int rows = static_cast<int>(q.size()) / head_dim;
  std::vector<uint8_t> bytes(quantized_input_bytes(rows, head_dim));
  quantize_input(q.data(), head_dim, 0, rows, bytes.data());
  const matmul_detail::ActivationRows quantized{bytes.data(), head_dim};
  std::vector<float> out(q.size());
  for (int r = 0; r < rows; ++r) {
    for (int d = 0; d < head_dim; ++d) out[r * head_dim + d] = quantized.scales(r)[d / kQuantBlock] * quantized.q(r)[d];
  }
  return out;
}

// A Q8_0 cache keeps its keys int8 and quantizes the queries to int8 to meet them (as llama.cpp does): the kernel
// must then compute the textbook attention of those int8-rounded queries over the cache's values, to float32
// rounding. (What the rounding costs a model is bounded end to end: DemoPerplexity.Q8KvCache*.)
TEST(AttentionBlocks, Q8CacheMatchesDoublePrecisionOnItsValues) {
  for_each_simd_target([] {
    Random rnd(120);
    for (const AttentionShape shape :
         {AttentionShape{16, 2, 64}, AttentionShape{4, 2, 32}, AttentionShape{8, 1, 128}}) {
      for (const auto& [n_queries, first_pos] : {std::pair{1, 0}, std::pair{1, 47}, std::pair{5, 30}}) {
        SCOPED_TRACE("head_dim " + std::to_string(shape.head_dim) + " queries " + std::to_string(n_queries) +
                     " first_pos " + std::to_string(first_pos));
        const int n_keys = first_pos + n_queries, kv = shape.n_kv_heads * shape.head_dim;
        const int hd = shape.head_dim, q_stride = shape.n_heads * hd, group = shape.n_heads / shape.n_kv_heads;
        const auto q = rnd.vector(static_cast<size_t>(n_queries) * q_stride, -2.0f, 2.0f);
        const auto keys = rnd.vector(static_cast<size_t>(n_keys) * kv, -2.0f, 2.0f);
        const TestKvCache cache(DType::Q8_0, shape, keys, rnd.vector(static_cast<size_t>(n_keys) * kv));
        const std::vector<float>&k = cache.stored_keys, &v = cache.stored_values;
        const std::vector<float> q8 = int8_queries(q, hd);
        std::vector<float> out(q.size());
        attention(out.data(), q.data(), n_queries, first_pos, cache.view(), shape, 0, shape.n_heads);
        for (int t = 0; t < n_queries; ++t) {
          for (int h = 0; h < shape.n_heads; ++h) {
            const int kvh = h / group, visible = first_pos + t + 1;
            std::vector<double> score(visible);
            double m = -HUGE_VAL, sum = 0;
            for (int j = 0; j < visible; ++j) {
              double dot = 0;
              for (int d = 0; d < hd; ++d)
                dot += q8[t * q_stride + h * hd + d] * double{k[j * kv + kvh * hd + d]};
              score[j] = dot / std::sqrt(static_cast<double>(hd));
              m = std::max(m, score[j]);
            }
            for (double& s : score) sum += s = std::exp(s - m);
            for (int d = 0; d < hd; ++d) {
              double expected = 0;
              for (int j = 0; j < visible; ++j) expected += score[j] / sum * v[j * kv + kvh * hd + d];
              ASSERT_NEAR(out[t * q_stride + h * hd + d], expected, 1e-5) << "query " << t << " head " << h;
            }
          }
        }
      }
    }
  });
}

// The same keys and values, once in blocks 0, 1, 2, ... and once in a shuffled set of blocks of a larger pool: the
// kernel reads each position through the table and gives the same bits.
TEST(AttentionBlocks, ScatteredBlocksGiveTheContiguousResult) {
  for_each_simd_target([] {
    Random rnd(121);
    const AttentionShape shape{8, 2, 64};
    const int kv = 2 * 64, q_stride = 8 * 64, n_queries = 3, first_pos = 50, n_keys = first_pos + n_queries;
    const int blocks = (n_keys + kKvBlockPositions - 1) / kKvBlockPositions, pool_blocks = 3 * blocks;
    for (DType dtype : {DType::F32, DType::F16, DType::Q8_0}) {
      SCOPED_TRACE(std::string(dtype_name(dtype)));
      const size_t row = dtype_row_bytes(dtype, kv), block_bytes = row * kKvBlockPositions;
      const auto values = rnd.vector(static_cast<size_t>(blocks) * kKvBlockPositions * kv);
      const TestKvCache cache(dtype, shape, values, values);
      const std::vector<uint8_t>&k = cache.k, &v = cache.v;
      std::vector<int32_t> table(pool_blocks);
      std::iota(table.begin(), table.end(), 0);
      std::shuffle(table.begin(), table.end(), std::mt19937(7));
      table.resize(blocks);
      std::vector<uint8_t> pool_k(pool_blocks * block_bytes, 0xee), pool_v(pool_k.size(), 0xee);
      for (int b = 0; b < blocks; ++b) {
        std::copy_n(k.data() + b * block_bytes, block_bytes, pool_k.data() + table[b] * block_bytes);
        std::copy_n(v.data() + b * block_bytes, block_bytes, pool_v.data() + table[b] * block_bytes);
      }
      const auto q = rnd.vector(static_cast<size_t>(n_queries) * q_stride);
      std::vector<float> contiguous(q.size()), scattered(q.size());
      attention(contiguous.data(), q.data(), n_queries, first_pos, cache.view(), shape, 0, 8);
      attention(scattered.data(), q.data(), n_queries, first_pos,
                KvCacheView{dtype, pool_k.data(), pool_v.data(), table.data(), kv}, shape, 0, 8);
      EXPECT_EQ(first_difference(contiguous, scattered), -1);
    }
  });
}

// A decoding query's partitions computed one by one (on any thread) and merged give attention()'s bits, for a query
// in the first partition, on a partition boundary and deep in a long context.
TEST(AttentionBlocks, SplitPartitionsMergeToTheSameBits) {
  for_each_simd_target([] {
    Random rnd(122);
    const AttentionShape shape{8, 2, 64};
    const int kv = 2 * 64, q_stride = 8 * 64;
    for (DType dtype : {DType::F32, DType::F16, DType::Q8_0}) {
      for (int position : {5, kAttentionPartition - 1, kAttentionPartition, 3 * kAttentionPartition + 17}) {
        SCOPED_TRACE(std::string(dtype_name(dtype)) + " position " + std::to_string(position));
        const int n_keys = (position / kKvBlockPositions + 1) * kKvBlockPositions;
        const auto values = rnd.vector(static_cast<size_t>(n_keys) * kv);
        const TestKvCache stored(dtype, shape, values, rnd.vector(values.size()));
        const KvCacheView cache = stored.view();
        const auto q = rnd.vector(q_stride);
        std::vector<float> whole(q_stride), merged(q_stride);
        attention(whole.data(), q.data(), 1, position, cache, shape, 0, 8);
        const int parts = position / kAttentionPartition + 1;
        std::vector<float> partials(parts * attention_partial_floats(shape));
        for (int p = parts - 1; p >= 0; --p) {  // any order: each partition is independent
          for (int kv_head = 0; kv_head < 2; ++kv_head) {
            attention_partition(partials.data(), q.data(), position, cache, shape, 4 * kv_head, 4 * kv_head + 4, p);
          }
        }
        attention_merge(merged.data(), partials.data(), position, shape, 0, 8);
        EXPECT_EQ(first_difference(whole, merged), -1);
      }
    }
  });
}

}  // namespace
}  // namespace ernie
