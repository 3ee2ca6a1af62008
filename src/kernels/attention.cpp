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

// Keys are taken in chunks of kChunk, always counted from position 0, so the arithmetic for one (query, head) never
// depends on the other queries or heads of the call. Query heads sharing a kv head are processed kHeadsPerPass at a
// time over each chunk, which is widened to float32 once for all of them.
constexpr int kChunk = 16;
constexpr int kHeadsPerPass = 8;

// Running state of one query head: maximum score m, denominator l; its output row holds Σ_j exp(s_j - m) v_j.
struct HeadState {
  const float* q;
  float* o;
  float m;
  float l;
};

float Dot(const float* a, const float* b, int n) {
  const hn::ScalableTag<float> df;
  const int lanes = static_cast<int>(hn::Lanes(df));
  auto acc = hn::Zero(df);
  int d = 0;
  for (; d + lanes <= n; d += lanes) acc = hn::MulAdd(hn::LoadU(df, a + d), hn::LoadU(df, b + d), acc);
  float sum = hn::GetLane(hn::SumOfLanes(df, acc));
  for (; d < n; ++d) sum += a[d] * b[d];
  return sum;
}

// o = o * shrink + Σ_j p[j] * v[j], over head_dim n.
void Accumulate(float* o, float shrink, const float* p, const float* const* v, int count, int n) {
  const hn::ScalableTag<float> df;
  const int lanes = static_cast<int>(hn::Lanes(df));
  int d = 0;
  for (; d + lanes <= n; d += lanes) {
    auto acc = hn::Mul(hn::LoadU(df, o + d), hn::Set(df, shrink));
    for (int j = 0; j < count; ++j) acc = hn::MulAdd(hn::Set(df, p[j]), hn::LoadU(df, v[j] + d), acc);
    hn::StoreU(acc, df, o + d);
  }
  for (; d < n; ++d) {
    float acc = o[d] * shrink;
    for (int j = 0; j < count; ++j) acc += p[j] * v[j][d];
    o[d] = acc;
  }
}

void UpdateHead(HeadState& h, const float* const* keys, const float* const* values, int count, int head_dim,
                float scale) {
  const hn::CappedTag<float, kChunk> df;
  HWY_ALIGN float s[kChunk];
  float chunk_max = -HUGE_VALF;
  for (int j = 0; j < kChunk; ++j) {
    s[j] = j < count ? Dot(h.q, keys[j], head_dim) * scale : -HUGE_VALF;
    chunk_max = std::max(chunk_max, s[j]);
  }
  const float m = std::max(h.m, chunk_max);
  const float shrink = std::exp(h.m - m);  // 0 on the first chunk (m was -inf)
  HWY_ALIGN float p[kChunk];
  for (int j = 0; j < kChunk; j += static_cast<int>(hn::Lanes(df))) {
    hn::Store(hn::Exp(df, hn::Sub(hn::Load(df, s + j), hn::Set(df, m))), df, p + j);
  }
  float l = h.l * shrink;
  for (int j = 0; j < count; ++j) l += p[j];
  h.m = m;
  h.l = l;
  Accumulate(h.o, shrink, p, values, count, head_dim);
}

// Points rows[j] at key/value j0 + j of kv head `kv_head` as float32: in place for an F32 cache, else widened into
// buffer [kChunk][head_dim].
template <class E>
void Widen(const KvCacheView& cache, const uint8_t* base, int j0, int count, size_t head_offset, int head_dim,
           float* buffer, const float** rows) {
  for (int j = 0; j < count; ++j) {
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
  const int hd = shape.head_dim;
  const int q_stride = shape.n_heads * hd;
  const int group = shape.n_heads / shape.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  HWY_ALIGN float key_buffer[kChunk * kMaxHeadDim];
  HWY_ALIGN float value_buffer[kChunk * kMaxHeadDim];
  const float* keys[kChunk];
  const float* values[kChunk];

  for (int t = 0; t < n_queries; ++t) {
    const int n_keys = first_pos + t + 1;
    for (int h0 = head_begin; h0 < head_end;) {
      // Query heads [h0, h1): all read kv head h0 / group.
      const int kv_head = h0 / group;
      const int h1 = std::min({head_end, (kv_head + 1) * group, h0 + kHeadsPerPass});
      const size_t head_offset = dtype_row_bytes(cache.dtype, static_cast<int64_t>(kv_head) * hd);
      HeadState heads[kHeadsPerPass];
      for (int h = h0; h < h1; ++h) {
        float* o = out + static_cast<size_t>(t) * q_stride + static_cast<size_t>(h) * hd;
        std::fill(o, o + hd, 0.0f);
        heads[h - h0] = {q + static_cast<size_t>(t) * q_stride + static_cast<size_t>(h) * hd, o, -HUGE_VALF, 0.0f};
      }
      for (int j0 = 0; j0 < n_keys; j0 += kChunk) {
        const int count = std::min(kChunk, n_keys - j0);
        Widen<E>(cache, cache.k, j0, count, head_offset, hd, key_buffer, keys);
        Widen<E>(cache, cache.v, j0, count, head_offset, hd, value_buffer, values);
        for (int h = h0; h < h1; ++h) UpdateHead(heads[h - h0], keys, values, count, hd, scale);
      }
      for (int h = h0; h < h1; ++h) {
        const HeadState& s = heads[h - h0];
        for (int d = 0; d < hd; ++d) s.o[d] /= s.l;
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
