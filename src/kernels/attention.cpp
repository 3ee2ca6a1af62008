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
// taken together, one per lane of a HeadTag vector: scores, running maxima, exponentials and denominators are all
// computed lane-wise, so the arithmetic for one (query, head) never depends on the other queries or heads of the call
// nor on the lane it landed in. Each chunk of keys and values is widened to float32 once for all those heads.
constexpr int kChunk = 16;
using HeadTag = hn::CappedTag<float, 8>;

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

// scores[j * lanes + h] = scale · (key j · query h) for the kChunk keys (rows past `count` are zero) and the
// transposed queries qt[d * lanes + h]; eight keys at a time, so that eight accumulation chains are in flight.
void Scores(const float* qt, const float* const* keys, int head_dim, float scale, float* scores) {
  const HeadTag dh;
  const int lanes = static_cast<int>(hn::Lanes(dh));
  for (int j0 = 0; j0 < kChunk; j0 += 8) {
    hn::Vec<HeadTag> acc[8];
    for (auto& a : acc) a = hn::Zero(dh);
    for (int d = 0; d < head_dim; ++d) {
      const auto qd = hn::Load(dh, qt + d * lanes);
      for (int i = 0; i < 8; ++i) acc[i] = hn::MulAdd(hn::Set(dh, keys[j0 + i][d]), qd, acc[i]);
    }
    for (int i = 0; i < 8; ++i) hn::Store(hn::Mul(acc[i], hn::Set(dh, scale)), dh, scores + (j0 + i) * lanes);
  }
}

// Points rows[j] at key/value j0 + j of the kv head at head_offset as float32: in place for an F32 cache, else
// widened into buffer [kChunk][head_dim]. Rows past count point at zeros.
template <class E>
void Widen(const KvCacheView& cache, const uint8_t* base, int j0, int count, size_t head_offset, int head_dim,
           float* buffer, const float* zeros, const float** rows) {
  for (int j = 0; j < kChunk; ++j) {
    if (j >= count) {
      rows[j] = zeros;
      continue;
    }
    const uint8_t* row = base + static_cast<size_t>(j0 + j) * cache.row_bytes() + head_offset;
    if constexpr (std::is_same_v<E, F32Elements>) {
      rows[j] = reinterpret_cast<const float*>(row);
    } else {
      const hn::ScalableTag<float> df;
      const int lanes = static_cast<int>(hn::Lanes(df));
      float* out = buffer + j * head_dim;
      int d = 0;
      for (; d + lanes <= head_dim; d += lanes) hn::StoreU(LoadWidened(df, E{}, row + 2 * d), df, out + d);
      for (; d < head_dim; ++d) {
        uint16_t bits;
        std::memcpy(&bits, row + 2 * d, 2);
        out[d] = f16_to_f32(bits);
      }
      rows[j] = out;
    }
  }
}

template <class E>
void AttentionImpl(float* out, const float* q, int n_queries, int first_pos, const KvCacheView& cache,
                   const AttentionShape& shape, int head_begin, int head_end) {
  const HeadTag dh;
  const int lanes = static_cast<int>(hn::Lanes(dh));
  const int hd = shape.head_dim;
  const int q_stride = shape.n_heads * hd;
  const int group = shape.n_heads / shape.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  HWY_ALIGN float key_buffer[kChunk * kMaxHeadDim];
  HWY_ALIGN float value_buffer[kChunk * kMaxHeadDim];
  HWY_ALIGN static const float zeros[kMaxHeadDim] = {};
  HWY_ALIGN float qt[kMaxHeadDim * 8];
  HWY_ALIGN float scores[kChunk * 8];
  HWY_ALIGN float shrink[8];
  HWY_ALIGN float denominator[8];
  const float* keys[kChunk];
  const float* values[kChunk];

  for (int t = 0; t < n_queries; ++t) {
    const int n_keys = first_pos + t + 1;
    for (int h0 = head_begin; h0 < head_end;) {
      // Query heads [h0, h1) all read kv head h0 / group; lane h - h0 is head h, lanes past h1 - h0 see zeros.
      const int kv_head = h0 / group;
      const int h1 = std::min({head_end, (kv_head + 1) * group, h0 + lanes});
      const size_t head_offset = dtype_row_bytes(cache.dtype, static_cast<int64_t>(kv_head) * hd);
      float* o = out + static_cast<size_t>(t) * q_stride + static_cast<size_t>(h0) * hd;
      const float* qh = q + static_cast<size_t>(t) * q_stride + static_cast<size_t>(h0) * hd;
      for (int d = 0; d < hd; ++d) {
        for (int h = 0; h < lanes; ++h) qt[d * lanes + h] = h < h1 - h0 ? qh[h * hd + d] : 0.0f;
      }
      std::fill(o, o + static_cast<size_t>(h1 - h0) * hd, 0.0f);
      auto m = hn::Set(dh, -HUGE_VALF), l = hn::Zero(dh);
      for (int j0 = 0; j0 < n_keys; j0 += kChunk) {
        const int count = std::min(kChunk, n_keys - j0);
        Widen<E>(cache, cache.k, j0, count, head_offset, hd, key_buffer, zeros, keys);
        Widen<E>(cache, cache.v, j0, count, head_offset, hd, value_buffer, zeros, values);
        Scores(qt, keys, hd, scale, scores);
        // Online softmax per lane: the new maximum rescales what was accumulated (by 0 on the first chunk).
        auto chunk_max = hn::Set(dh, -HUGE_VALF);
        for (int j = 0; j < count; ++j) chunk_max = hn::Max(chunk_max, hn::Load(dh, scores + j * lanes));
        const auto new_max = hn::Max(m, chunk_max);
        const auto factor = hn::Exp(dh, hn::Sub(m, new_max));
        l = hn::Mul(l, factor);
        for (int j = 0; j < count; ++j) {
          const auto p = hn::Exp(dh, hn::Sub(hn::Load(dh, scores + j * lanes), new_max));
          hn::Store(p, dh, scores + j * lanes);
          l = hn::Add(l, p);
        }
        m = new_max;
        hn::Store(factor, dh, shrink);
        for (int h = 0; h < h1 - h0; ++h) {
          Accumulate(o + static_cast<size_t>(h) * hd, shrink[h], scores + h, lanes, values, count, hd);
        }
      }
      hn::Store(l, dh, denominator);
      for (int h = 0; h < h1 - h0; ++h) {
        for (int d = 0; d < hd; ++d) o[static_cast<size_t>(h) * hd + d] /= denominator[h];
      }
      h0 = h1;
    }
  }
}

void Attention(float* out, const float* q, int n_queries, int first_pos, const KvCacheView& cache,
               const AttentionShape& shape, int head_begin, int head_end) {
  if (cache.dtype == DType::F16) {
    AttentionImpl<F16Elements>(out, q, n_queries, first_pos, cache, shape, head_begin, head_end);
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
  if (cache.dtype != DType::F32 && cache.dtype != DType::F16) fail("attention: the cache must be F32 or F16");
  if (shape.head_dim > kMaxHeadDim) fail("attention: head_dim ", shape.head_dim, " exceeds ", kMaxHeadDim);
  HWY_DYNAMIC_DISPATCH(Attention)(out, q, n_queries, first_pos, cache, shape, head_begin, head_end);
}

}  // namespace ernie
#endif  // HWY_ONCE
