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

// Scratch of one AttendHeads call; about 100 KiB, on the caller's stack.
struct AttentionScratch {
  HWY_ALIGN float keys[kChunk * kMaxHeadDim];
  HWY_ALIGN float values[kChunk * kMaxHeadDim];
  HWY_ALIGN float qt[kMaxHeadDim * kMaxLanes];
  HWY_ALIGN float scores[kChunk * kMaxLanes];
  HWY_ALIGN float shrink[kMaxLanes];
  HWY_ALIGN float denominator[kMaxLanes];
};

// Heads [h0, h0 + g) of kv head kv_head for queries t .. t + n_q - 1 (n_q = 1 or 2, n_q * g <= lanes of D).
// Lane q * g + h holds query t + q, head h0 + h; a lane whose query has no key in a chunk keeps its state exactly
// (factor 1, probabilities 0), so every lane computes what it would alone.
template <class E, class D>
void AttendHeads(D dh, float* out, const float* q, int t, int n_q, int first_pos, const KvCacheView& cache,
                 const AttentionShape& shape, int h0, int g, int kv_head, AttentionScratch& s) {
  HWY_ALIGN static const float zeros[kMaxHeadDim] = {};
  const int lanes = static_cast<int>(hn::Lanes(dh));
  const int hd = shape.head_dim;
  const size_t q_stride = static_cast<size_t>(shape.n_heads) * hd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const size_t head_offset = dtype_row_bytes(cache.dtype, static_cast<int64_t>(kv_head) * hd);
  int n_keys[2] = {first_pos + t + 1, first_pos + t + n_q};
  float* o[2];
  for (int i = 0; i < n_q; ++i) {
    o[i] = out + (t + i) * q_stride + static_cast<size_t>(h0) * hd;
    const float* qh = q + (t + i) * q_stride + static_cast<size_t>(h0) * hd;
    std::fill(o[i], o[i] + static_cast<size_t>(g) * hd, 0.0f);
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
  auto m = hn::Set(dh, -HUGE_VALF), l = hn::Zero(dh);
  for (int j0 = 0; j0 < n_keys[n_q - 1]; j0 += kChunk) {
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
      const auto p = hn::IfThenElseZero(visible(j), hn::Exp(dh, hn::Sub(hn::Load(dh, s.scores + j * lanes), new_max)));
      hn::Store(p, dh, s.scores + j * lanes);
      l = hn::Add(l, p);
    }
    m = new_max;
    hn::Store(factor, dh, s.shrink);
    for (int i = 0; i < n_q; ++i) {
      if (count[i] == 0) continue;
      for (int h = 0; h < g; ++h) {
        const int lane = i * g + h;
        Accumulate(o[i] + static_cast<size_t>(h) * hd, s.shrink[lane], s.scores + lane, lanes, values, count[i], hd);
      }
    }
  }
  hn::Store(l, dh, s.denominator);
  for (int i = 0; i < n_q; ++i) {
    for (int h = 0; h < g; ++h) {
      for (int d = 0; d < hd; ++d) o[i][static_cast<size_t>(h) * hd + d] /= s.denominator[i * g + h];
    }
  }
}

template <class E>
void AttentionImpl(float* out, const float* q, int n_queries, int first_pos, const KvCacheView& cache,
                   const AttentionShape& shape, int head_begin, int head_end) {
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
        AttendHeads<E>(dp, out, q, t, 2, first_pos, cache, shape, h0, h1 - h0, kv_head, scratch);
      } else {
        for (int i = 0; i < n_q; ++i) {
          AttendHeads<E>(dh, out, q, t + i, 1, first_pos, cache, shape, h0, h1 - h0, kv_head, scratch);
        }
      }
      h0 = h1;
    }
  }
}

void Attention(float* out, const float* q, int n_queries, int first_pos, const KvCacheView& cache,
               const AttentionShape& shape, int head_begin, int head_end) {
  if (cache.dtype == DType::F16) {
    AttentionImpl<F16Elements>(out, q, n_queries, first_pos, cache, shape, head_begin, head_end);
  } else if (cache.dtype == DType::Q8_0) {
    AttentionImpl<Q8Elements>(out, q, n_queries, first_pos, cache, shape, head_begin, head_end);
  } else {
    AttentionImpl<F32Elements>(out, q, n_queries, first_pos, cache, shape, head_begin, head_end);
  }
}

}  // namespace ernie::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace ernie {

HWY_EXPORT(Attention);

void attention(float* out, const float* q, int n_queries, int first_pos, const KvCacheView& cache,
               const AttentionShape& shape, int head_begin, int head_end) {
  if (cache.dtype != DType::F32 && cache.dtype != DType::F16 && cache.dtype != DType::Q8_0)
    fail("attention: the cache must be F32, F16 or Q8_0");
  if (cache.dtype == DType::Q8_0 && shape.head_dim % 32 != 0) fail("attention: a Q8_0 cache needs head_dim % 32 == 0");
  if (shape.head_dim > kMaxHeadDim) fail("attention: head_dim ", shape.head_dim, " exceeds ", kMaxHeadDim);
  HWY_DYNAMIC_DISPATCH(Attention)(out, q, n_queries, first_pos, cache, shape, head_begin, head_end);
}

}  // namespace ernie
#endif  // HWY_ONCE
