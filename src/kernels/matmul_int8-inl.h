// Per-target matmul kernels for integer weights (Q8_0, Q4_0) in the packed layout of matmul.h, against activations
// quantized to int8 (quantize_input). Included by matmul.cpp once per SIMD target, hence the toggling include guard
// (Highway's convention).
//
// One kernel family serves both formats and every batch size: Int8Tile<F, T> walks one group of kPackedRows rows for
// T tokens, and is parameterised by the weight format F (how a step of packed bytes decodes: Q8_0 bytes, or Q4_0's
// two nibbles) and by T. What differs between targets is only Packed<F>: which instructions load a step and add
// four int8 products into each row's int32 lane.
#if defined(ERNIE_KERNELS_MATMUL_INT8_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef ERNIE_KERNELS_MATMUL_INT8_INL_H_
#undef ERNIE_KERNELS_MATMUL_INT8_INL_H_
#else
#define ERNIE_KERNELS_MATMUL_INT8_INL_H_
#endif

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "kernels/matmul_internal.h"
#include "kernels/simd-inl.h"

HWY_BEFORE_NAMESPACE();
ERNIE_ENABLE_VNNI
namespace ernie::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Tags naming the weight format.
struct Q8_0Format {
  static constexpr size_t kBytes = sizeof(BlockQ8_0);
};
struct Q4_0Format {
  static constexpr size_t kBytes = sizeof(BlockQ4_0);
};

// A tile is one group of kPackedRows rows × T tokens, walked block by block: each step's weights are loaded
// once and multiplied into every token's int32 lanes (one lane per row), so there are no per-row horizontal sums.
// Per (row, token) the block's dot product is exact in int32 whatever the instruction sequence, and it enters the
// float32 sum as sum = MulAdd(float(dot), w_scale * x_scale, sum), blocks in order, then out = sum + bias: the same
// operations whatever the tile, the batch, the row range or the thread count.
//
// Packed<F> per target: Weights = one step of the group loaded; Dot = the group's int32 lanes; Sum = its float32
// lanes. The weights are stored unsigned (Q8_0 plus 128, Q4_0 as nibbles): where the instruction multiplies them as
// unsigned, Start(sum) folds in −kOffset · Σ x of the block (the activation's stored block sum).

constexpr int kPackedStepBytes = kPackedRows * 4;
template <class F>
constexpr int kPackedSteps = std::is_same_v<F, Q8_0Format> ? 8 : 4;  // steps per block
template <class F>
constexpr int kPackedStepQuants = kQuantBlock / kPackedSteps<F>;

#if ERNIE_VNNI  // vpdpbusd: uint8 weights × int8 activations, four per lane, into int32 (16 lanes = the group)

template <class F>
struct Packed {
  static constexpr int32_t kOffset = std::is_same_v<F, Q8_0Format> ? 128 : 8;
  static constexpr int kTokens = 4;  // tokens per prefill tile: 2 × 4 int32 and 4 float32 accumulators
  struct Weights {
    __m512i lo, hi;  // Q8_0: lo only; Q4_0: low and high nibbles
  };
  using Dot = __m512i;
  using Sum = __m512;

  static Weights Load(const uint8_t* step) {
    const __m512i v = _mm512_loadu_si512(step);
    if constexpr (std::is_same_v<F, Q8_0Format>) {
      return {v, v};
    } else {
      const __m512i mask = _mm512_set1_epi8(0x0f);
      return {_mm512_and_si512(v, mask), _mm512_and_si512(_mm512_srli_epi16(v, 4), mask)};
    }
  }
  static Dot Start(int32_t block_sum) { return _mm512_set1_epi32(-kOffset * block_sum); }
  static void Accumulate(Dot& dot, const Weights& w, const int8_t* x) {
    int32_t x4;
    std::memcpy(&x4, x, 4);
    dot = _mm512_dpbusd_epi32(dot, w.lo, _mm512_set1_epi32(x4));
    if constexpr (std::is_same_v<F, Q4_0Format>) {
      std::memcpy(&x4, x + 4, 4);
      dot = _mm512_dpbusd_epi32(dot, w.hi, _mm512_set1_epi32(x4));
    }
  }
  static Sum Zero() { return _mm512_setzero_ps(); }
  static void AddBlock(Sum& sum, const Dot& even, const Dot& odd, const uint8_t* scales, float x_scale) {
    const __m512 w_scales = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(scales)));
    const __m512 scale = _mm512_mul_ps(w_scales, _mm512_set1_ps(x_scale));
    sum = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(even, odd)), scale, sum);
  }
  static void Store(const Sum& sum, float* lanes) { _mm512_store_ps(lanes, sum); }
};

#elif ERNIE_X86_INT8_DOT  // maddubs on two 256-bit halves of 8 rows each

template <class F>
struct Packed {
  static constexpr int32_t kOffset = std::is_same_v<F, Q8_0Format> ? 0 : 8;  // Q8_0 goes back to signed
  static constexpr int kTokens = 2;  // 16 ymm registers: 2 × 2 × 2 int32 and 2 × 2 float32 accumulators
  struct Weights {
    __m256i a[2], b[2];  // per half: Q8_0 |w| and w (signed); Q4_0 low and high nibbles
  };
  struct Dot {
    __m256i half[2];
  };
  struct Sum {
    __m256 half[2];
  };

  static Weights Load(const uint8_t* step) {
    Weights w;
    for (int h = 0; h < 2; ++h) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(step + 32 * h));
      if constexpr (std::is_same_v<F, Q8_0Format>) {
        w.b[h] = _mm256_xor_si256(v, _mm256_set1_epi8(static_cast<char>(0x80)));
        w.a[h] = _mm256_sign_epi8(w.b[h], w.b[h]);
      } else {
        const __m256i mask = _mm256_set1_epi8(0x0f);
        w.a[h] = _mm256_and_si256(v, mask);
        w.b[h] = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
      }
    }
    return w;
  }
  static Dot Start(int32_t block_sum) {
    const __m256i v = _mm256_set1_epi32(-kOffset * block_sum);
    return {{v, v}};
  }
  static void Accumulate(Dot& dot, const Weights& w, const int8_t* x) {
    int32_t x4;
    std::memcpy(&x4, x, 4);
    const __m256i xv = _mm256_set1_epi32(x4);
    const __m256i ones = _mm256_set1_epi16(1);
    if constexpr (std::is_same_v<F, Q8_0Format>) {
      // |w| · (x with w's sign): each pair sum stays within int16 (|w| <= 128, |x| <= 127).
      for (int h = 0; h < 2; ++h) {
        const __m256i pairs = _mm256_maddubs_epi16(w.a[h], _mm256_sign_epi8(xv, w.b[h]));
        dot.half[h] = _mm256_add_epi32(dot.half[h], _mm256_madd_epi16(pairs, ones));
      }
    } else {
      std::memcpy(&x4, x + 4, 4);
      const __m256i xv_hi = _mm256_set1_epi32(x4);
      for (int h = 0; h < 2; ++h) {
        const __m256i pairs = _mm256_add_epi16(_mm256_maddubs_epi16(w.a[h], xv), _mm256_maddubs_epi16(w.b[h], xv_hi));
        dot.half[h] = _mm256_add_epi32(dot.half[h], _mm256_madd_epi16(pairs, ones));
      }
    }
  }
  static Sum Zero() { return {{_mm256_setzero_ps(), _mm256_setzero_ps()}}; }
  static void AddBlock(Sum& sum, const Dot& even, const Dot& odd, const uint8_t* scales, float x_scale) {
    for (int h = 0; h < 2; ++h) {
      const __m256 w_scales = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scales + 16 * h)));
      const __m256 scale = _mm256_mul_ps(w_scales, _mm256_set1_ps(x_scale));
      const __m256 dot = _mm256_cvtepi32_ps(_mm256_add_epi32(even.half[h], odd.half[h]));
      sum.half[h] = _mm256_fmadd_ps(dot, scale, sum.half[h]);
    }
  }
  static void Store(const Sum& sum, float* lanes) {
    _mm256_store_ps(lanes, sum.half[0]);
    _mm256_store_ps(lanes + 8, sum.half[1]);
  }
};

#else  // portable: the integer lanes in plain code (the compiler vectorizes it), the float lanes with Highway

template <class F>
struct Packed {
  static constexpr int kTokens = 4;
  struct Weights {
    const uint8_t* step;
  };
  struct Dot {
    int32_t lane[kPackedRows];
  };
  struct alignas(64) Sum {
    float lane[kPackedRows];
  };

  static Weights Load(const uint8_t* step) { return {step}; }
  static Dot Start(int32_t) { return {}; }  // the weights are decoded to signed values here
  static void Accumulate(Dot& dot, const Weights& w, const int8_t* x) {
    for (int r = 0; r < kPackedRows; ++r) {
      const uint8_t* q = w.step + 4 * r;
      int32_t d = 0;
      for (int j = 0; j < 4; ++j) {
        if constexpr (std::is_same_v<F, Q8_0Format>) {
          d += (int32_t{q[j]} - 128) * x[j];
        } else {
          d += ((q[j] & 0x0f) - 8) * int32_t{x[j]} + ((q[j] >> 4) - 8) * int32_t{x[4 + j]};
        }
      }
      dot.lane[r] += d;
    }
  }
  static Sum Zero() { return {}; }
  static void AddBlock(Sum& sum, const Dot& even, const Dot& odd, const uint8_t* scales, float x_scale) {
    const hn::CappedTag<float, kPackedRows> df;
    const hn::RebindToSigned<decltype(df)> di;
    const size_t lanes = hn::Lanes(df);
    HWY_ALIGN int32_t dot[kPackedRows];
    for (int r = 0; r < kPackedRows; ++r) dot[r] = even.lane[r] + odd.lane[r];
    for (size_t i = 0; i < kPackedRows; i += lanes) {
      const auto scale = hn::Mul(LoadWidened(df, F16Elements{}, scales + 2 * i), hn::Set(df, x_scale));
      const auto s = hn::MulAdd(hn::ConvertTo(df, hn::Load(di, dot + i)), scale, hn::Load(df, sum.lane + i));
      hn::Store(s, df, sum.lane + i);
    }
  }
  static void Store(const Sum& sum, float* lanes) { std::memcpy(lanes, sum.lane, sizeof sum.lane); }
};

#endif

// Rows [row_begin, row_end) ∩ group `group` for tokens t0 .. t0+T-1. Two interleaved int32 chains per token (even
// and odd steps) keep the dot-product instructions' latency hidden when decoding a single token. A group is one
// contiguous stream (the next group follows it); the tile that first reads it from memory (`streaming`) prefetches
// kPackedPrefetchBytes ahead, since the hardware prefetchers alone keep too few cache lines in flight here.
constexpr size_t kPackedPrefetchBytes = 4096;

template <class F, int T>
HWY_NOINLINE void Int8Tile(const matmul_detail::MatmulArgs& a, int group, int t0, int row_begin, int row_end,
                           bool streaming) {
  using K = Packed<F>;
  const matmul_detail::ActivationRows activations{a.xq, a.cols};
  const int blocks = a.cols / kQuantBlock;
  constexpr size_t kScaleBytes = kPackedRows * sizeof(uint16_t);
  constexpr size_t kQuantBytes = kPackedRows * F::kBytes - kScaleBytes;
  const uint8_t* scales = a.w + static_cast<size_t>(group) * kPackedRows * a.w_row_bytes;
  const uint8_t* quants = scales + blocks * kScaleBytes;
  typename K::Sum sum[T];
  for (int j = 0; j < T; ++j) sum[j] = K::Zero();
  for (int b = 0; b < blocks; ++b, scales += kScaleBytes, quants += kQuantBytes) {
    typename K::Dot even[T], odd[T];
    const int8_t* x[T];
    for (int j = 0; j < T; ++j) {
      even[j] = K::Start(activations.sums(t0 + j)[b]);
      odd[j] = K::Start(0);
      x[j] = activations.q(t0 + j) + b * kQuantBlock;
    }
    if (streaming) {
      for (size_t offset = 0; offset < kQuantBytes; offset += 64) hwy::Prefetch(quants + offset + kPackedPrefetchBytes);
    }
    for (int s = 0; s < kPackedSteps<F>; s += 2) {
      const auto w_even = K::Load(quants + s * kPackedStepBytes);
      const auto w_odd = K::Load(quants + (s + 1) * kPackedStepBytes);
      for (int j = 0; j < T; ++j) {
        K::Accumulate(even[j], w_even, x[j] + s * kPackedStepQuants<F>);
        K::Accumulate(odd[j], w_odd, x[j] + (s + 1) * kPackedStepQuants<F>);
      }
    }
    for (int j = 0; j < T; ++j) K::AddBlock(sum[j], even[j], odd[j], scales, activations.scales(t0 + j)[b]);
  }
  const int r0 = std::max(row_begin, group * kPackedRows), r1 = std::min(row_end, (group + 1) * kPackedRows);
  HWY_ALIGN float lanes[kPackedRows];
  for (int j = 0; j < T; ++j) {
    K::Store(sum[j], lanes);
    float* out = a.out + static_cast<size_t>(t0 + j) * a.out_stride - a.out_row0;
    for (int r = r0; r < r1; ++r) out[r] = lanes[r - group * kPackedRows] + (a.bias ? a.bias[r] : 0.0f);
  }
}

// Rows [row_begin, row_end) of a matmul with packed weights of format F.
template <class F>
void Int8MatmulRows(const matmul_detail::MatmulArgs& a, int row_begin, int row_end) {
  constexpr int T = Packed<F>::kTokens;
  const int g_begin = row_begin / kPackedRows, g_end = (row_end + kPackedRows - 1) / kPackedRows;
  // Tokens in chunks whose activations stay in L2; each group's weights stay in L1 while the chunk passes over them.
  const int chunk_tokens =
      std::max<int>(T, matmul_detail::kActivationChunkBytes / matmul_detail::ActivationRows::stride(a.cols) / T * T);
  for (int c0 = 0; c0 < a.n; c0 += chunk_tokens) {
    const int c1 = std::min(a.n, c0 + chunk_tokens);
    for (int g = g_begin; g < g_end; ++g) {
      int t0 = c0;
      for (; t0 + T <= c1; t0 += T) Int8Tile<F, T>(a, g, t0, row_begin, row_end, t0 == c0);
      for (; t0 < c1; ++t0) Int8Tile<F, 1>(a, g, t0, row_begin, row_end, t0 == c0);
    }
  }
}

}  // namespace ernie::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // ERNIE_KERNELS_MATMUL_INT8_INL_H_
