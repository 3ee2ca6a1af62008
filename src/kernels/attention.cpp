#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"

// Compiled once per SIMD target; attention() at the end dispatches to the best one.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/attention.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/simd-inl.h"

HWY_BEFORE_NAMESPACE();
namespace ernie::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Keys are taken in chunks of kChunk, always counted from position 0, and the query heads that share a kv head are
// taken together, one per lane: scores, running maxima, exponentials and denominators are all computed lane-wise, so
// the arithmetic for one (query, head) never depends on the other queries or heads of the call nor on the lane it
// landed in. Where a vector has room, two consecutive queries share it (lanes [0, g) the first query's g heads,
// [g, 2g) the second's): the keys are broadcast and widened once for both. Each chunk of keys and values is widened
// to float32 once for all the lanes.
constexpr int kChunk = kKvBlockPositions;
static_assert(kAttentionPartition % kChunk == 0);
constexpr int kMaxLanes = 16;
using HeadTag = hn::CappedTag<float, 8>;
using PairTag = hn::CappedTag<float, kMaxLanes>;

// o = o * shrink + Σ_j p[j * p_stride] * v[j], over head_dim n; four vectors of o at a time, so that four
// accumulation chains are in flight.
void Accumulate(float* o, float shrink, const float* p, int p_stride, const float* const* v, int count, int n) {
  const hn::ScalableTag<float> df;
  const int lanes = static_cast<int>(hn::Lanes(df));
  const auto s = hn::Set(df, shrink);
  int d = 0;
  for (; d + 4 * lanes <= n; d += 4 * lanes) {
    auto a0 = hn::Mul(hn::LoadU(df, o + d), s), a1 = hn::Mul(hn::LoadU(df, o + d + lanes), s);
    auto a2 = hn::Mul(hn::LoadU(df, o + d + 2 * lanes), s), a3 = hn::Mul(hn::LoadU(df, o + d + 3 * lanes), s);
    for (int j = 0; j < count; ++j) {
      const auto pj = hn::Set(df, p[j * p_stride]);
      a0 = hn::MulAdd(pj, hn::LoadU(df, v[j] + d), a0);
      a1 = hn::MulAdd(pj, hn::LoadU(df, v[j] + d + lanes), a1);
      a2 = hn::MulAdd(pj, hn::LoadU(df, v[j] + d + 2 * lanes), a2);
      a3 = hn::MulAdd(pj, hn::LoadU(df, v[j] + d + 3 * lanes), a3);
    }
    hn::StoreU(a0, df, o + d);
    hn::StoreU(a1, df, o + d + lanes);
    hn::StoreU(a2, df, o + d + 2 * lanes);
    hn::StoreU(a3, df, o + d + 3 * lanes);
  }
  for (; d + lanes <= n; d += lanes) {
    auto a = hn::Mul(hn::LoadU(df, o + d), s);
    for (int j = 0; j < count; ++j) a = hn::MulAdd(hn::Set(df, p[j * p_stride]), hn::LoadU(df, v[j] + d), a);
    hn::StoreU(a, df, o + d);
  }
  for (; d < n; ++d) {
    float a = o[d] * shrink;
    for (int j = 0; j < count; ++j) a += p[j * p_stride] * v[j][d];
    o[d] = a;
  }
}

// scores[j * lanes + i] = scale · (key j · query lane i) for the kChunk keys (rows past `count` are zero) and the
// transposed queries qt[d * lanes + i]; eight keys at a time, so that eight accumulation chains are in flight.
template <class D>
void Scores(D dh, const float* qt, const float* const* keys, int head_dim, float scale, float* scores) {
  const int lanes = static_cast<int>(hn::Lanes(dh));
  for (int j0 = 0; j0 < kChunk; j0 += 8) {
    hn::Vec<D> acc[8];
    for (auto& a : acc) a = hn::Zero(dh);
    for (int d = 0; d < head_dim; ++d) {
      const auto qd = hn::Load(dh, qt + d * lanes);
      for (int i = 0; i < 8; ++i) acc[i] = hn::MulAdd(hn::Set(dh, keys[j0 + i][d]), qd, acc[i]);
    }
    for (int i = 0; i < 8; ++i) hn::Store(hn::Mul(acc[i], hn::Set(dh, scale)), dh, scores + (j0 + i) * lanes);
  }
}

// Tag of a Q8_0 cache: per 32 values an F16 scale and 32 int8 values.
struct Q8Elements {};

// head_dim values of one cached row at `row` widened to float32 into out: exact for every stored type.
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

// Points rows[j] at key/value j0 + j (j0 a multiple of kChunk, so the chunk is one cache block) of the kv head at
// head_offset as float32: in place for an F32 cache, else widened into buffer [kChunk][head_dim]. Rows past count
// point at zeros.
template <class E>
void Widen(const KvCacheView& cache, const uint8_t* base, int j0, int count, size_t head_offset, int head_dim,
           float* buffer, const float* zeros, const float** rows) {
  const uint8_t* block = base + cache.offset(j0) + head_offset;
  for (int j = 0; j < kChunk; ++j) {
    if (j >= count) {
      rows[j] = zeros;
      continue;
    }
    const uint8_t* row = block + static_cast<size_t>(j) * cache.row_bytes();
    if constexpr (std::is_same_v<E, F32Elements>) {
      rows[j] = reinterpret_cast<const float*>(row);
    } else {
      WidenRow<E>(row, head_dim, buffer + j * head_dim);
      rows[j] = buffer + j * head_dim;
    }
  }
}

// Scratch of one AttendHeads call; about 170 KiB, on the caller's stack.
struct AttentionScratch {
  HWY_ALIGN float keys[kChunk * kMaxHeadDim];
  HWY_ALIGN float values[kChunk * kMaxHeadDim];
  HWY_ALIGN float qt[kMaxHeadDim * kMaxLanes];
  HWY_ALIGN float scores[kChunk * kMaxLanes];
  HWY_ALIGN float shrink[kMaxLanes];
  HWY_ALIGN float denominator[kMaxLanes];
  HWY_ALIGN float maximum[kMaxLanes];
  HWY_ALIGN float partial[kMaxLanes * kMaxHeadDim];  // one partition's unnormalised outputs, lane after lane
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

// Heads [h0, h0 + g) of kv head kv_head for queries t .. t + n_q - 1 (n_q = 1 or 2, n_q * g <= lanes of D), over
// the key partitions [part_begin, part_end) of kAttentionPartition keys. Lane q * g + h holds query t + q, head
// h0 + h; a lane whose query has no key in a chunk keeps its state exactly (factor 1, probabilities 0), so every lane
// computes what it would alone. Each partition starts from a fresh state and is merged into the running one
// (MergePartition). With `partials` set (n_q = 1, one partition), the partition's state is stored there instead,
// [head][m, l, o...], for MergePartitions.
template <class E, class D>
void AttendHeads(D dh, float* out, const float* q, int t, int n_q, int first_pos, const KvCacheView& cache,
                 const AttentionShape& shape, int h0, int g, int kv_head, int part_begin, int part_end, float* partials,
                 AttentionScratch& s) {
  HWY_ALIGN static const float zeros[kMaxHeadDim] = {};
  const int lanes = static_cast<int>(hn::Lanes(dh));
  const int hd = shape.head_dim;
  const size_t q_stride = static_cast<size_t>(shape.n_heads) * hd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const size_t head_offset = dtype_row_bytes(cache.dtype, static_cast<int64_t>(kv_head) * hd);
  int n_keys[2] = {first_pos + t + 1, first_pos + t + n_q};
  float* o[2];
  for (int i = 0; i < n_q; ++i) {
    o[i] = partials ? nullptr : out + (t + i) * q_stride + static_cast<size_t>(h0) * hd;
    const float* qh = q + (t + i) * q_stride + static_cast<size_t>(h0) * hd;
    if (!partials) std::fill(o[i], o[i] + static_cast<size_t>(g) * hd, 0.0f);
    for (int d = 0; d < hd; ++d) {
      for (int h = 0; h < g; ++h) s.qt[d * lanes + i * g + h] = qh[h * hd + d];
    }
  }
  for (int d = 0; d < hd; ++d) {
    for (int lane = n_q * g; lane < lanes; ++lane) s.qt[d * lanes + lane] = 0.0f;
  }
  // Lanes of the second query (none when n_q = 1).
  const auto second = hn::Ge(hn::Iota(dh, 0), hn::Set(dh, static_cast<float>(n_q == 2 ? g : lanes)));
  const float* keys[kChunk];
  const float* values[kChunk];
  float total_max[kMaxLanes], total_sum[kMaxLanes];
  std::fill(total_max, total_max + kMaxLanes, -HUGE_VALF);
  std::fill(total_sum, total_sum + kMaxLanes, 0.0f);
  for (int part = part_begin; part < part_end; ++part) {
    const int part_first = part * kAttentionPartition;
    const int part_last = std::min(part_first + kAttentionPartition, n_keys[n_q - 1]);
    std::fill(s.partial, s.partial + static_cast<size_t>(n_q) * g * hd, 0.0f);
    auto m = hn::Set(dh, -HUGE_VALF), l = hn::Zero(dh);
    for (int j0 = part_first; j0 < part_last; j0 += kChunk) {
      int count[2];
      for (int i = 0; i < 2; ++i) count[i] = std::clamp(n_keys[i] - j0, 0, kChunk);
      const int widest = count[n_q - 1];
      Widen<E>(cache, cache.k, j0, widest, head_offset, hd, s.keys, zeros, keys);
      Widen<E>(cache, cache.v, j0, widest, head_offset, hd, s.values, zeros, values);
      Scores(dh, s.qt, keys, hd, scale, s.scores);
      // Online softmax per lane: the new maximum rescales what was accumulated (by 0 on the first chunk). Key j is
      // visible to a lane when j < its query's count.
      const auto counts =
          hn::IfThenElse(second, hn::Set(dh, static_cast<float>(count[1])), hn::Set(dh, static_cast<float>(count[0])));
      const auto visible = [&](int j) { return hn::Lt(hn::Set(dh, static_cast<float>(j)), counts); };
      const auto active = visible(0);  // lanes whose query sees a key of this chunk
      auto chunk_max = hn::Set(dh, -HUGE_VALF);
      for (int j = 0; j < widest; ++j) {
        chunk_max =
            hn::Max(chunk_max, hn::IfThenElse(visible(j), hn::Load(dh, s.scores + j * lanes), hn::Set(dh, -HUGE_VALF)));
      }
      const auto new_max = hn::Max(m, chunk_max);
      const auto factor = hn::IfThenElse(active, hn::Exp(dh, hn::Sub(m, new_max)), hn::Set(dh, 1.0f));
      l = hn::Mul(l, factor);
      for (int j = 0; j < widest; ++j) {
        const auto p =
            hn::IfThenElseZero(visible(j), hn::Exp(dh, hn::Sub(hn::Load(dh, s.scores + j * lanes), new_max)));
        hn::Store(p, dh, s.scores + j * lanes);
        l = hn::Add(l, p);
      }
      m = new_max;
      hn::Store(factor, dh, s.shrink);
      for (int i = 0; i < n_q; ++i) {
        if (count[i] == 0) continue;
        for (int h = 0; h < g; ++h) {
          const int lane = i * g + h;
          Accumulate(s.partial + static_cast<size_t>(lane) * hd, s.shrink[lane], s.scores + lane, lanes, values,
                     count[i], hd);
        }
      }
    }
    hn::Store(l, dh, s.denominator);
    hn::Store(m, dh, s.maximum);
    for (int i = 0; i < n_q; ++i) {
      for (int h = 0; h < g; ++h) {
        const int lane = i * g + h;
        const float* o_p = s.partial + static_cast<size_t>(lane) * hd;
        if (partials) {
          float* slot = partials + static_cast<size_t>(h0 + h) * (hd + 2);
          slot[0] = s.maximum[lane];
          slot[1] = s.denominator[lane];
          std::copy(o_p, o_p + hd, slot + 2);
        } else {
          MergePartition(total_max[lane], total_sum[lane], o[i] + static_cast<size_t>(h) * hd, s.maximum[lane],
                         s.denominator[lane], o_p, hd);
        }
      }
    }
  }
  if (partials) return;
  for (int i = 0; i < n_q; ++i) {
    for (int h = 0; h < g; ++h) {
      for (int d = 0; d < hd; ++d) o[i][static_cast<size_t>(h) * hd + d] /= total_sum[i * g + h];
    }
  }
}

template <class E>
void AttentionImpl(float* out, const float* q, int n_queries, int first_pos, const KvCacheView& cache,
                   const AttentionShape& shape, int head_begin, int head_end, int partition, float* partials) {
  const HeadTag dh;
  const PairTag dp;
  const int lanes = static_cast<int>(hn::Lanes(dh)), pair_lanes = static_cast<int>(hn::Lanes(dp));
  const int group = shape.n_heads / shape.n_kv_heads;
  AttentionScratch scratch;
  for (int t = 0; t < n_queries; t += 2) {
    const int n_q = std::min(2, n_queries - t);
    for (int h0 = head_begin; h0 < head_end;) {
      // Query heads [h0, h1) all read kv head h0 / group.
      const int kv_head = h0 / group;
      const int h1 = std::min({head_end, (kv_head + 1) * group, h0 + lanes});
      if (n_q == 2 && 2 * (h1 - h0) <= pair_lanes) {
        AttendHeads<E>(dp, out, q, t, 2, first_pos, cache, shape, h0, h1 - h0, kv_head, 0,
                       (first_pos + t + 1) / kAttentionPartition + 1, nullptr, scratch);
      } else {
        for (int i = 0; i < n_q; ++i) {
          const int parts = (first_pos + t + i) / kAttentionPartition + 1;  // through the query's own position
          AttendHeads<E>(dh, out, q, t + i, 1, first_pos, cache, shape, h0, h1 - h0, kv_head, partials ? partition : 0,
                         partials ? partition + 1 : parts, partials, scratch);
        }
      }
      h0 = h1;
    }
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
}
}  // namespace

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
