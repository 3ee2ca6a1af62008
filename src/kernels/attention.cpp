#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "kernels/matmul.h"
#include "kernels/matmul_internal.h"
#include "kernels/quant.h"

// Compiled once per SIMD target; attention() at the end dispatches to the best one.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/attention.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/matmul_int8-inl.h"
#include "kernels/simd-inl.h"

HWY_BEFORE_NAMESPACE();
namespace ernie::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Keys are taken in chunks of kChunk (one cache block), always counted from position 0. A call's (query, head) pairs
// that read one kv head are its rows. Each row's scores are computed with the chunk's keys side by side in lanes (the
// cache stores keys transposed for this): float keys are widened to float32 once for all the rows; Q8_0 keys stay
// int8 and meet the rows' queries quantized to int8, in the int8 matmul kernel (a chunk's keys are one packed group
// of its rows). The row's probabilities then weight the chunk's values. Every row keeps its own softmax state and its own accumulation order,
// so a (query, head)'s result never depends on the other rows of the call, nor on how many there are.
constexpr int kChunk = kKvBlockPositions;
static_assert(kAttentionPartition % kChunk == 0);
constexpr int kMaxRows = 128;                    // rows of one pass
constexpr int kPartialFloats = kMaxRows * 128;  // their partitions' outputs: rows × head_dim at most this
constexpr int kScoreRows = 8;                    // rows whose scores are computed together: eight chains in flight
using KeyTag = hn::CappedTag<float, kChunk>;   // a chunk's keys take kChunk / Lanes vectors

// For two rows at once, o_i = o_i * shrink_i + Σ_j p_i[j] * v[j] over head_dim n: each value vector loaded serves
// both rows. Four vectors of each row at a time, so that eight accumulation chains are in flight. A row's arithmetic
// is the same whatever its partner (o1 = nullptr: one row alone), so pairing never changes its bits.
void Accumulate(float* o0, float* o1, float shrink0, float shrink1, const float* p0, const float* p1,
                const float* const* v, int count, int n) {
  const hn::ScalableTag<float> df;
  const int lanes = static_cast<int>(hn::Lanes(df));
  const bool pair = o1 != nullptr;
  if (!pair) {  // the second row's lanes compute a copy of the first, stored nowhere
    o1 = o0;
    shrink1 = shrink0;
    p1 = p0;
  }
  const auto s0 = hn::Set(df, shrink0), s1 = hn::Set(df, shrink1);
  int d = 0;
  for (; d + 4 * lanes <= n; d += 4 * lanes) {
    auto a0 = hn::Mul(hn::LoadU(df, o0 + d), s0), a1 = hn::Mul(hn::LoadU(df, o0 + d + lanes), s0);
    auto a2 = hn::Mul(hn::LoadU(df, o0 + d + 2 * lanes), s0), a3 = hn::Mul(hn::LoadU(df, o0 + d + 3 * lanes), s0);
    auto b0 = hn::Mul(hn::LoadU(df, o1 + d), s1), b1 = hn::Mul(hn::LoadU(df, o1 + d + lanes), s1);
    auto b2 = hn::Mul(hn::LoadU(df, o1 + d + 2 * lanes), s1), b3 = hn::Mul(hn::LoadU(df, o1 + d + 3 * lanes), s1);
    for (int j = 0; j < count; ++j) {
      const auto v0 = hn::LoadU(df, v[j] + d), v1 = hn::LoadU(df, v[j] + d + lanes);
      const auto v2 = hn::LoadU(df, v[j] + d + 2 * lanes), v3 = hn::LoadU(df, v[j] + d + 3 * lanes);
      const auto p0j = hn::Set(df, p0[j]), p1j = hn::Set(df, p1[j]);
      a0 = hn::MulAdd(p0j, v0, a0);
      a1 = hn::MulAdd(p0j, v1, a1);
      a2 = hn::MulAdd(p0j, v2, a2);
      a3 = hn::MulAdd(p0j, v3, a3);
      b0 = hn::MulAdd(p1j, v0, b0);
      b1 = hn::MulAdd(p1j, v1, b1);
      b2 = hn::MulAdd(p1j, v2, b2);
      b3 = hn::MulAdd(p1j, v3, b3);
    }
    hn::StoreU(a0, df, o0 + d);
    hn::StoreU(a1, df, o0 + d + lanes);
    hn::StoreU(a2, df, o0 + d + 2 * lanes);
    hn::StoreU(a3, df, o0 + d + 3 * lanes);
    if (pair) {
      hn::StoreU(b0, df, o1 + d);
      hn::StoreU(b1, df, o1 + d + lanes);
      hn::StoreU(b2, df, o1 + d + 2 * lanes);
      hn::StoreU(b3, df, o1 + d + 3 * lanes);
    }
  }
  for (; d + lanes <= n; d += lanes) {
    auto a = hn::Mul(hn::LoadU(df, o0 + d), s0), b = hn::Mul(hn::LoadU(df, o1 + d), s1);
    for (int j = 0; j < count; ++j) {
      const auto vj = hn::LoadU(df, v[j] + d);
      a = hn::MulAdd(hn::Set(df, p0[j]), vj, a);
      b = hn::MulAdd(hn::Set(df, p1[j]), vj, b);
    }
    hn::StoreU(a, df, o0 + d);
    if (pair) hn::StoreU(b, df, o1 + d);
  }
  for (; d < n; ++d) {
    float a = o0[d] * shrink0, b = o1[d] * shrink1;
    for (int j = 0; j < count; ++j) {
      a += p0[j] * v[j][d];
      b += p1[j] * v[j][d];
    }
    o0[d] = a;
    if (pair) o1[d] = b;
  }
}

// scores[r * kChunk + j] = scale · (query r · key j) for the chunk's keys kt[d * kChunk + j] and rows [0, n),
// kScoreRows at a time (rows past n, up to the next multiple, repeat row n - 1: scores must have room for them).
void Scores(const float* const* queries, int n, const float* kt, int head_dim, float scale, float* scores) {
  const KeyTag dk;
  const int lanes = static_cast<int>(hn::Lanes(dk));
  const auto s = hn::Set(dk, scale);
  for (int r0 = 0; r0 < n; r0 += kScoreRows) {
    const float* q[kScoreRows];
    for (int i = 0; i < kScoreRows; ++i) q[i] = queries[std::min(r0 + i, n - 1)];
    for (int j = 0; j < kChunk; j += lanes) {
      auto a0 = hn::Zero(dk), a1 = hn::Zero(dk), a2 = hn::Zero(dk), a3 = hn::Zero(dk);
      auto a4 = hn::Zero(dk), a5 = hn::Zero(dk), a6 = hn::Zero(dk), a7 = hn::Zero(dk);
      for (int d = 0; d < head_dim; ++d) {
        const auto k = hn::LoadU(dk, kt + d * kChunk + j);
        a0 = hn::MulAdd(hn::Set(dk, q[0][d]), k, a0);
        a1 = hn::MulAdd(hn::Set(dk, q[1][d]), k, a1);
        a2 = hn::MulAdd(hn::Set(dk, q[2][d]), k, a2);
        a3 = hn::MulAdd(hn::Set(dk, q[3][d]), k, a3);
        a4 = hn::MulAdd(hn::Set(dk, q[4][d]), k, a4);
        a5 = hn::MulAdd(hn::Set(dk, q[5][d]), k, a5);
        a6 = hn::MulAdd(hn::Set(dk, q[6][d]), k, a6);
        a7 = hn::MulAdd(hn::Set(dk, q[7][d]), k, a7);
      }
      float* out = scores + r0 * kChunk + j;
      hn::StoreU(hn::Mul(a0, s), dk, out);
      hn::StoreU(hn::Mul(a1, s), dk, out + kChunk);
      hn::StoreU(hn::Mul(a2, s), dk, out + 2 * kChunk);
      hn::StoreU(hn::Mul(a3, s), dk, out + 3 * kChunk);
      hn::StoreU(hn::Mul(a4, s), dk, out + 4 * kChunk);
      hn::StoreU(hn::Mul(a5, s), dk, out + 5 * kChunk);
      hn::StoreU(hn::Mul(a6, s), dk, out + 6 * kChunk);
      hn::StoreU(hn::Mul(a7, s), dk, out + 7 * kChunk);
    }
  }
}

// Tag of a Q8_0 cache: per 32 values an F16 scale and 32 int8 values.
struct Q8Elements {};

// Scores against a chunk of Q8_0 keys: segment holds them as one packed group of the int8 matmul (kChunk rows of
// head_dim), and `quantized` the rows' queries as quantize_input lays them out. Each score is the exact int32 dot
// product per 32-element block, scaled by the key's and the query's block scales and summed in block order
// (Int8Tile), times `scale`.
static_assert(kChunk == kPackedRows, "a chunk of keys is one packed group");
void ScoresQ8(const uint8_t* segment, const uint8_t* quantized, int rows, int head_dim, float scale, float* scores) {
  matmul_detail::MatmulArgs a{};
  a.out = scores;
  a.out_stride = kChunk;
  a.xq = quantized;
  a.w = segment;
  a.w_row_bytes = dtype_row_bytes(DType::Q8_0, head_dim);
  a.dtype = DType::Q8_0;
  a.cols = head_dim;
  a.n = rows;
  Int8MatmulRows<Q8_0Format>(a, 0, kChunk);
  const KeyTag dk;
  const int lanes = static_cast<int>(hn::Lanes(dk));
  const auto s = hn::Set(dk, scale);
  for (int i = 0; i < rows * kChunk; i += lanes) hn::Store(hn::Mul(hn::Load(dk, scores + i), s), dk, scores + i);
}

// One kv head's float keys of a chunk (its segment of a block) as float32 [d][kChunk]: in place for an F32 cache,
// else widened into buffer. Exact.
template <class E>
const float* WidenKeys(const uint8_t* segment, int head_dim, float* buffer) {
  const KeyTag dk;
  const int lanes = static_cast<int>(hn::Lanes(dk));
  if constexpr (std::is_same_v<E, F32Elements>) {
    return reinterpret_cast<const float*>(segment);
  } else {
    for (int i = 0; i < head_dim * kChunk; i += lanes) {
      hn::StoreU(LoadWidened(dk, E{}, segment + E::kBytes * i), dk, buffer + i);
    }
  }
  return buffer;
}

// head_dim values of one cached value row widened to float32 into out: exact for every stored type.
template <class E>
void WidenRow(const uint8_t* row, int head_dim, float* out) {
  const hn::CappedTag<float, 16> df;  // 16 lanes at most: a power of two that divides a Q8_0 block
  const int lanes = static_cast<int>(hn::Lanes(df));
  if constexpr (std::is_same_v<E, Q8Elements>) {
    const hn::Rebind<int8_t, decltype(df)> d8;
    const hn::RebindToSigned<decltype(df)> di;
    constexpr int kBlock = 32, kBlockBytes = 34;
    for (int b = 0; b < head_dim / kBlock; ++b) {
      const uint8_t* block = row + b * kBlockBytes;
      const auto scale = hn::Set(df, LoadF16Scalar(block));
      const int8_t* q = reinterpret_cast<const int8_t*>(block + 2);
      for (int i = 0; i < kBlock; i += lanes) {
        hn::StoreU(hn::Mul(scale, hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(d8, q + i)))), df,
                   out + b * kBlock + i);
      }
    }
  } else {
    int d = 0;
    for (; d + lanes <= head_dim; d += lanes) hn::StoreU(LoadWidened(df, E{}, row + E::kBytes * d), df, out + d);
    for (; d < head_dim; ++d) {
      const hn::CappedTag<float, 1> d1;
      out[d] = hn::GetLane(LoadWidened(d1, E{}, row + E::kBytes * d));
    }
  }
}

// Points rows[j] at value j0 + j (j < count; j0 a multiple of kChunk, so the chunk is one cache block) of the kv
// head at head_offset as float32: in place for an F32 cache, else widened into buffer [kChunk][head_dim].
template <class E>
void WidenValues(const KvCacheView& cache, int j0, int count, size_t head_offset, int head_dim, float* buffer,
                 const float** rows) {
  const uint8_t* block = cache.v + cache.block_offset(j0) + head_offset;
  for (int j = 0; j < count; ++j) {
    const uint8_t* row = block + static_cast<size_t>(j) * cache.row_bytes();
    if constexpr (std::is_same_v<E, F32Elements>) {
      rows[j] = reinterpret_cast<const float*>(row);
    } else {
      WidenRow<E>(row, head_dim, buffer + j * head_dim);
      rows[j] = buffer + j * head_dim;
    }
  }
}

// Bytes of quantize_input for the rows of a pass: kMaxRows rows, fewer as head_dim passes 128 (kPartialFloats).
constexpr size_t kQuantizedBytes = 32 * 1024;
static_assert(kMaxRows * matmul_detail::ActivationRows::stride(128) <= kQuantizedBytes &&
              kPartialFloats / kMaxHeadDim * matmul_detail::ActivationRows::stride(kMaxHeadDim) <= kQuantizedBytes);

// Scratch of one AttendRows call; about 150 KiB, on the caller's stack.
struct AttentionScratch {
  HWY_ALIGN float keys[kChunk * kMaxHeadDim];
  HWY_ALIGN float values[kChunk * kMaxHeadDim];
  HWY_ALIGN float scores[(kMaxRows + kScoreRows) * kChunk];  // per row: scores, then probabilities
  HWY_ALIGN float partial[kPartialFloats];                   // per row: one partition's unnormalised outputs
  alignas(64) uint8_t quantized[kQuantizedBytes];            // Q8_0 keys: the rows' queries, quantize_input'ed
  const float* queries[kMaxRows];
  float* outputs[kMaxRows];
  int n_keys[kMaxRows];
  float maximum[kMaxRows], denominator[kMaxRows];              // per row: the partition's softmax state
  float total_maximum[kMaxRows], total_denominator[kMaxRows];  // per row: merged over the partitions so far
};

// Folds one partition's state (m_p, l_p, o_p: its maximum score, denominator and unnormalised output of one head)
// into the running state (m, l, o). Every path (a whole row here, split partitions in MergePartitions) merges with
// this one function, partition after partition in order, so a split gives the same bits. A partition without keys
// for the head (m_p = -inf) changes nothing.
void MergePartition(float& m, float& l, float* o, float m_p, float l_p, const float* o_p, int head_dim) {
  if (m_p == -HUGE_VALF) return;
  const hn::CappedTag<float, 1> d1;
  const float new_max = std::max(m, m_p);
  const float a = hn::GetLane(hn::Exp(d1, hn::Set(d1, m - new_max)));  // 0 for the first partition (m = -inf)
  const float b = hn::GetLane(hn::Exp(d1, hn::Set(d1, m_p - new_max)));
  l = l * a + l_p * b;
  m = new_max;
  const hn::ScalableTag<float> df;
  const int lanes = static_cast<int>(hn::Lanes(df));
  int d = 0;
  for (; d + lanes <= head_dim; d += lanes) {
    hn::StoreU(hn::MulAdd(hn::LoadU(df, o_p + d), hn::Set(df, b), hn::Mul(hn::LoadU(df, o + d), hn::Set(df, a))), df,
               o + d);
  }
  for (; d < head_dim; ++d) o[d] = o_p[d] * b + o[d] * a;
}

// Online softmax of row r over one chunk whose first `count` keys it sees: its scores become probabilities in place,
// and the chunk's maximum updates the row's state. Returns the factor that rescales what the row accumulated so far
// (0 on its first chunk).
float Softmax(AttentionScratch& s, int r, int count) {
  const KeyTag dk;
  const int lanes = static_cast<int>(hn::Lanes(dk));
  float* scores = s.scores + r * kChunk;
  const auto counts = hn::Set(dk, static_cast<float>(count));
  auto chunk_max = hn::Set(dk, -HUGE_VALF);
  for (int j = 0; j < kChunk; j += lanes) {
    const auto visible = hn::Lt(hn::Iota(dk, static_cast<float>(j)), counts);
    chunk_max = hn::Max(chunk_max, hn::IfThenElse(visible, hn::Load(dk, scores + j), hn::Set(dk, -HUGE_VALF)));
  }
  const float new_max = std::max(s.maximum[r], hn::GetLane(hn::MaxOfLanes(dk, chunk_max)));
  const hn::CappedTag<float, 1> d1;
  // Past the first few chunks the maximum rarely moves: then nothing needs rescaling (exactly).
  const float factor =
      new_max == s.maximum[r] ? 1.0f : hn::GetLane(hn::Exp(d1, hn::Set(d1, s.maximum[r] - new_max)));
  auto sum = hn::Zero(dk);
  for (int j = 0; j < kChunk; j += lanes) {
    const auto visible = hn::Lt(hn::Iota(dk, static_cast<float>(j)), counts);
    const auto p = hn::IfThenElseZero(visible, hn::Exp(dk, hn::Sub(hn::Load(dk, scores + j), hn::Set(dk, new_max))));
    hn::Store(p, dk, scores + j);
    sum = hn::Add(sum, p);
  }
  s.denominator[r] = s.denominator[r] * factor + hn::GetLane(hn::SumOfLanes(dk, sum));
  s.maximum[r] = new_max;
  return factor;
}

// Rows of heads [h0, h0 + g) (all reading kv head kv_head) × queries [t0, t0 + n_q), row r = (query t0 + r / g,
// head h0 + r % g), over the key partitions [part_begin, part_end) of kAttentionPartition keys. Each partition
// starts from a fresh state per row and is merged into the row's running one (MergePartition). With `partials` set
// (n_q = 1, one partition), the partition's state is stored there instead, [head][m, l, o...], for MergePartitions.
template <class E>
void AttendRows(float* out, const float* q, int t0, int n_q, int first_pos, const KvCacheView& cache,
                const AttentionShape& shape, int h0, int g, int kv_head, int part_begin, int part_end,
                float* partials, AttentionScratch& s) {
  const int hd = shape.head_dim, rows = n_q * g;
  const size_t q_stride = static_cast<size_t>(shape.n_heads) * hd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const size_t value_offset = dtype_row_bytes(cache.dtype, static_cast<int64_t>(kv_head) * hd);
  const size_t key_offset = cache.key_segment_bytes(hd) * kv_head;
  for (int r = 0; r < rows; ++r) {
    const size_t offset = (t0 + r / g) * q_stride + static_cast<size_t>(h0 + r % g) * hd;
    s.queries[r] = q + offset;
    s.outputs[r] = partials ? nullptr : out + offset;
    if (!partials) std::fill(s.outputs[r], s.outputs[r] + hd, 0.0f);
    s.n_keys[r] = first_pos + t0 + r / g + 1;
    s.total_maximum[r] = -HUGE_VALF;
    s.total_denominator[r] = 0.0f;
  }
  const int last_key = s.n_keys[rows - 1];  // the last row sees the most keys
  if constexpr (std::is_same_v<E, Q8Elements>) {
    for (int i = 0; i < n_q; ++i) {  // one query's g heads are g consecutive rows of head_dim
      quantize_input(q + (t0 + i) * q_stride + static_cast<size_t>(h0) * hd, hd, 0, g,
                     s.quantized + i * g * matmul_detail::ActivationRows::stride(hd));
    }
  }
  const float* values[kChunk];
  for (int part = part_begin; part < part_end; ++part) {
    const int part_first = part * kAttentionPartition;
    const int part_last = std::min(part_first + kAttentionPartition, last_key);
    std::fill(s.partial, s.partial + static_cast<size_t>(rows) * hd, 0.0f);
    std::fill(s.maximum, s.maximum + rows, -HUGE_VALF);
    std::fill(s.denominator, s.denominator + rows, 0.0f);
    for (int j0 = part_first; j0 < part_last; j0 += kChunk) {
      const int widest = std::min(kChunk, last_key - j0);
      const uint8_t* segment = cache.k + cache.block_offset(j0) + key_offset;
      if constexpr (std::is_same_v<E, Q8Elements>) {
        ScoresQ8(segment, s.quantized, rows, hd, scale, s.scores);
      } else {
        Scores(s.queries, rows, WidenKeys<E>(segment, hd, s.keys), hd, scale, s.scores);
      }
      WidenValues<E>(cache, j0, widest, value_offset, hd, s.values, values);
      // Rows of one query see the same keys: those go through the values in pairs.
      for (int r = 0; r < rows;) {
        const int count = std::min(kChunk, s.n_keys[r] - j0);
        const bool pair = r + 1 < rows && s.n_keys[r + 1] == s.n_keys[r];
        if (count > 0) {
          float* o = s.partial + static_cast<size_t>(r) * hd;
          const float factor = Softmax(s, r, count);
          const float factor1 = pair ? Softmax(s, r + 1, count) : 0.0f;
          Accumulate(o, pair ? o + hd : nullptr, factor, factor1, s.scores + r * kChunk,
                     s.scores + (r + 1) * kChunk, values, count, hd);
        }
        r += pair ? 2 : 1;
      }
    }
    for (int r = 0; r < rows; ++r) {
      const float* o_p = s.partial + static_cast<size_t>(r) * hd;
      if (partials) {
        float* slot = partials + static_cast<size_t>(h0 + r) * (hd + 2);
        slot[0] = s.maximum[r];
        slot[1] = s.denominator[r];
        std::copy(o_p, o_p + hd, slot + 2);
      } else {
        MergePartition(s.total_maximum[r], s.total_denominator[r], s.outputs[r], s.maximum[r], s.denominator[r], o_p,
                       hd);
      }
    }
  }
  if (partials) return;
  for (int r = 0; r < rows; ++r) {
    for (int d = 0; d < hd; ++d) s.outputs[r][d] /= s.total_denominator[r];
  }
}

template <class E>
void AttentionImpl(float* out, const float* q, int n_queries, int first_pos, const KvCacheView& cache,
                   const AttentionShape& shape, int head_begin, int head_end, int partition, float* partials) {
  const int group = shape.n_heads / shape.n_kv_heads;
  const int max_rows = std::min(kMaxRows, kPartialFloats / shape.head_dim);
  AttentionScratch scratch;
  for (int h0 = head_begin; h0 < head_end;) {
    // Query heads [h0, h1) all read kv head h0 / group; as many queries as fit go into one pass of rows.
    const int kv_head = h0 / group;
    const int h1 = std::min({head_end, (kv_head + 1) * group, h0 + max_rows});
    const int g = h1 - h0, queries_per_pass = max_rows / g;
    for (int t0 = 0; t0 < n_queries; t0 += queries_per_pass) {
      const int n_q = std::min(queries_per_pass, n_queries - t0);
      const int parts = (first_pos + t0 + n_q - 1) / kAttentionPartition + 1;  // through the last query's position
      AttendRows<E>(out, q, t0, n_q, first_pos, cache, shape, h0, g, kv_head, partials ? partition : 0,
                    partials ? partition + 1 : parts, partials, scratch);
    }
    h0 = h1;
  }
}

void Attention(float* out, const float* q, int n_queries, int first_pos, const KvCacheView& cache,
               const AttentionShape& shape, int head_begin, int head_end, int partition, float* partials) {
  if (cache.dtype == DType::F16) {
    AttentionImpl<F16Elements>(out, q, n_queries, first_pos, cache, shape, head_begin, head_end, partition, partials);
  } else if (cache.dtype == DType::Q8_0) {
    AttentionImpl<Q8Elements>(out, q, n_queries, first_pos, cache, shape, head_begin, head_end, partition, partials);
  } else {
    AttentionImpl<F32Elements>(out, q, n_queries, first_pos, cache, shape, head_begin, head_end, partition, partials);
  }
}

void MergePartitions(float* out, const float* partials, int n_partitions, const AttentionShape& shape, int head_begin,
                     int head_end) {
  const int hd = shape.head_dim;
  const size_t stride = static_cast<size_t>(shape.n_heads) * (hd + 2);
  for (int h = head_begin; h < head_end; ++h) {
    float* o = out + static_cast<size_t>(h) * hd;
    std::fill(o, o + hd, 0.0f);
    float m = -HUGE_VALF, l = 0.0f;
    for (int p = 0; p < n_partitions; ++p) {
      const float* slot = partials + p * stride + static_cast<size_t>(h) * (hd + 2);
      MergePartition(m, l, o, slot[0], slot[1], slot + 2, hd);
    }
    for (int d = 0; d < hd; ++d) o[d] /= l;
  }
}

}  // namespace ernie::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace ernie {

HWY_EXPORT(Attention);
HWY_EXPORT(MergePartitions);

namespace {
void check(const KvCacheView& cache, const AttentionShape& shape) {
  if (cache.dtype != DType::F32 && cache.dtype != DType::F16 && cache.dtype != DType::Q8_0)
    fail("attention: the cache must be F32, F16 or Q8_0");
  if (shape.head_dim > kMaxHeadDim) fail("attention: head_dim ", shape.head_dim, " exceeds ", kMaxHeadDim);
  if (cache.dtype == DType::Q8_0 && shape.head_dim % 32 != 0) fail("attention: a Q8_0 cache needs head_dim % 32 == 0");
  if (cache.row_elements != shape.n_kv_heads * shape.head_dim)
    fail("attention: cache rows of ", cache.row_elements, " elements for ", shape.n_kv_heads, " kv heads of ",
         shape.head_dim);
}
}  // namespace

void kv_store(const KvCacheView& cache, const AttentionShape& shape, int64_t position, const float* k, const float* v) {
  check(cache, shape);
  const int hd = shape.head_dim;
  quantize_row(cache.dtype, v, cache.v_row(position), cache.row_elements);
  const int slot = static_cast<int>(position % kKvBlockPositions);
  uint8_t* block = cache.k + cache.block_offset(position);
  uint8_t row[kMaxHeadDim * sizeof(float)];  // one head's keys as quantize_row lays them out
  for (int h = 0; h < shape.n_kv_heads; ++h) {
    quantize_row(cache.dtype, k + static_cast<size_t>(h) * hd, row, hd);
    uint8_t* segment = block + cache.key_segment_bytes(hd) * h;
    if (cache.dtype == DType::Q8_0) {  // the packed layout of matmul.h, this slot being row `slot` of the group
      const int blocks = hd / kQuantBlock;
      uint8_t* quants = segment + static_cast<size_t>(blocks) * kPackedRows * 2;
      for (int b = 0; b < blocks; ++b) {
        const uint8_t* source = row + b * sizeof(BlockQ8_0);
        std::memcpy(segment + (b * kPackedRows + slot) * 2, source, 2);
        for (int i = 0; i < kQuantBlock; ++i) {
          quants[(b * kQuantBlock / 4 + i / 4) * kPackedRows * 4 + slot * 4 + i % 4] = source[2 + i] ^ 0x80;
        }
      }
    } else {
      const size_t bytes = cache.dtype == DType::F16 ? 2 : 4;
      for (int d = 0; d < hd; ++d) std::memcpy(segment + (d * kKvBlockPositions + slot) * bytes, row + d * bytes, bytes);
    }
  }
}

void attention(float* out, const float* q, int n_queries, int first_pos, const KvCacheView& cache,
               const AttentionShape& shape, int head_begin, int head_end) {
  check(cache, shape);
  HWY_DYNAMIC_DISPATCH(Attention)(out, q, n_queries, first_pos, cache, shape, head_begin, head_end, 0, nullptr);
}

void attention_partition(float* partials, const float* q, int position, const KvCacheView& cache,
                         const AttentionShape& shape, int head_begin, int head_end, int partition) {
  check(cache, shape);
  if (partition < 0 || partition > position / kAttentionPartition) fail("attention: no keys in that partition");
  HWY_DYNAMIC_DISPATCH(Attention)
  (nullptr, q, 1, position, cache, shape, head_begin, head_end, partition,
   partials + static_cast<size_t>(partition) * attention_partial_floats(shape));
}

void attention_merge(float* out, const float* partials, int position, const AttentionShape& shape, int head_begin,
                     int head_end) {
  HWY_DYNAMIC_DISPATCH(MergePartitions)(out, partials, position / kAttentionPartition + 1, shape, head_begin, head_end);
}

}  // namespace ernie
#endif  // HWY_ONCE
