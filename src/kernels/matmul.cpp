#include "kernels/matmul.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>

#include "core/error.h"
#include "hwy/cache_control.h"
#include "kernels/quant.h"

// This file is compiled once per SIMD target (Highway's foreach_target re-includes it); the public functions at the
// end dispatch to the best target the CPU supports.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/matmul.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/simd-inl.h"

#ifndef ERNIE_KERNELS_MATMUL_SHARED_
#define ERNIE_KERNELS_MATMUL_SHARED_
namespace ernie::matmul_detail {

// A quantized activation row: int8 values (value = scale[b] * q[i] for i in block b), then one float scale per
// 32-element block, then each block's int32 sum of q. All are zero-padded to whole pairs of blocks, so that kernels
// reading two blocks at a time never step outside the row, and rows start on cache lines. Values lie in [-127, 127].
struct ActivationRows {
  const uint8_t* base;
  int cols;

  static size_t values_bytes(int cols) { return (static_cast<size_t>(cols) + 63) / 64 * 64; }
  static size_t scales_bytes(int cols) { return values_bytes(cols) / kQuantBlock * sizeof(float); }
  static size_t stride(int cols) { return (values_bytes(cols) + 2 * scales_bytes(cols) + 63) / 64 * 64; }
  const int8_t* q(int t) const { return reinterpret_cast<const int8_t*>(base + t * stride(cols)); }
  const float* scales(int t) const {
    return reinterpret_cast<const float*>(base + t * stride(cols) + values_bytes(cols));
  }
  const int32_t* sums(int t) const {
    return reinterpret_cast<const int32_t*>(base + t * stride(cols) + values_bytes(cols) + scales_bytes(cols));
  }
};

// Everything a tile kernel reads and writes. Output element (t, r) for r in the call's row range goes to
// out[t * out_stride + (r - out_row0)].
struct MatmulArgs {
  float* out;
  size_t out_stride;
  int out_row0;
  const float* x;     // [n, cols]
  const uint8_t* xq;  // quantized x (ActivationRows) for integer weights
  const uint8_t* w;   // row r at w + r * w_row_bytes (plain); group g at w + g * kPackedRows * w_row_bytes (packed)
  size_t w_row_bytes;
  bool packed;
  const uint8_t* w_end;  // the end of the matrix: no load reaches past it
  DType dtype;
  const float* bias;  // [rows] or null
  int cols;
  int n;

  // The same problem for tokens [t0, t0 + count), writing to out (already offset to token t0).
  MatmulArgs tokens(int t0, int count, float* to, size_t to_stride, int to_row0) const {
    MatmulArgs a = *this;
    a.x = x ? x + static_cast<size_t>(t0) * cols : nullptr;
    a.xq = xq ? xq + t0 * ActivationRows::stride(cols) : nullptr;
    a.n = count;
    a.out = to;
    a.out_stride = to_stride;
    a.out_row0 = to_row0;
    return a;
  }
};

inline MatmulArgs make_args(float* out, const MatmulInput& in, const WeightMatrix& w, const float* bias) {
  if (in.cols != w.cols) fail("matmul: input has ", in.cols, " columns, weights ", w.cols);
  if (uses_quantized_input(w.dtype) && !in.quantized)
    fail("matmul: ", dtype_name(w.dtype), " weights need quantized input");
  if (w.packed && !uses_quantized_input(w.dtype)) fail("matmul: ", dtype_name(w.dtype), " weights cannot be packed");
  return MatmulArgs{out,
                    static_cast<size_t>(w.rows),
                    0,
                    in.x,
                    in.quantized,
                    w.data,
                    w.row_bytes(),
                    w.packed,
                    w.data + w.bytes(),
                    w.dtype,
                    bias,
                    w.cols,
                    in.n};
}

}  // namespace ernie::matmul_detail
#endif  // ERNIE_KERNELS_MATMUL_SHARED_

HWY_BEFORE_NAMESPACE();
ERNIE_ENABLE_VNNI
namespace ernie::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using matmul_detail::ActivationRows;
using matmul_detail::MatmulArgs;

// ---- Tile kernels ------------------------------------------------------------------------------------------------
//
// A tile is R weight rows × T tokens. Each weight vector (or prepared int8 block) is loaded once and multiplied into
// the T tokens' accumulators from registers. Whatever R and T, the arithmetic for one (token, row) pair is the same
// sequence of operations: one vector accumulator, blocks in order, one final lane reduction, then the bias. So the
// result never depends on the batch size, the tiling or the row range.
//
// The first token tile over a block of rows (the only one when decoding) streams the weights from memory, R rows
// side by side. The hardware prefetchers alone fall behind on those interleaved streams when the loop does much work
// per byte (measured: Q4_0 at a third of the read bandwidth), so that tile also prefetches the same place one tile
// ahead (R rows further), a whole tile's compute time before it is needed.

template <class E>
constexpr bool kIntegerBlocks = std::is_same_v<E, Q8_0Format> || std::is_same_v<E, Q4_0Format>;

template <class D, int R, int T>
HWY_INLINE void StoreTile(D d, const MatmulArgs& a, int r0, int t0, const hn::Vec<D> (&acc)[R][T]) {
  for (int j = 0; j < T; ++j) {
    float* out = a.out + static_cast<size_t>(t0 + j) * a.out_stride + (r0 - a.out_row0);
    for (int i = 0; i < R; ++i) {
      const float b = a.bias ? a.bias[r0 + i] : 0.0f;
      out[i] = hn::GetLane(hn::SumOfLanes(d, acc[i][j])) + b;
    }
  }
}

template <class E, int R, int T>
HWY_NOINLINE void FloatTile(const MatmulArgs& a, int r0, int t0) {
  const hn::ScalableTag<float> df;
  using V = hn::Vec<decltype(df)>;
  const size_t lanes = hn::Lanes(df);
  const size_t cols = static_cast<size_t>(a.cols);
  const uint8_t* w[R];
  const float* x[T];
  for (int i = 0; i < R; ++i) w[i] = a.w + static_cast<size_t>(r0 + i) * a.w_row_bytes;
  for (int j = 0; j < T; ++j) x[j] = a.x + static_cast<size_t>(t0 + j) * cols;
  V acc[R][T];
  for (int i = 0; i < R; ++i) {
    for (int j = 0; j < T; ++j) acc[i][j] = hn::Zero(df);
  }
  const size_t ahead = t0 == 0 ? R * a.w_row_bytes : 0;
  const auto step = [&](const uint8_t* const(&wk)[R], const float* const(&xk)[T]) HWY_ATTR {
    V wv[R];
    for (int i = 0; i < R; ++i) wv[i] = LoadWidened(df, E{}, wk[i]);
    for (int j = 0; j < T; ++j) {
      const V xv = hn::LoadU(df, xk[j]);
      for (int i = 0; i < R; ++i) acc[i][j] = hn::MulAdd(wv[i], xv, acc[i][j]);
    }
  };
  size_t k = 0;
  for (; k + lanes <= cols; k += lanes) {
    const uint8_t* wk[R];
    const float* xk[T];
    for (int i = 0; i < R; ++i) wk[i] = w[i] + k * E::kBytes;
    if (ahead) {
      for (int i = 0; i < R; ++i) hwy::Prefetch(wk[i] + ahead);
    }
    for (int j = 0; j < T; ++j) xk[j] = x[j] + k;
    step(wk, xk);
  }
  if (k < cols) {
    // The last partial vector, from zero-padded copies: the lanes past cols add exact zeros.
    constexpr size_t kMaxLanes = HWY_MAX_BYTES / sizeof(float);
    HWY_ALIGN uint8_t w_tail[R][kMaxLanes * sizeof(float)] = {};
    HWY_ALIGN float x_tail[T][kMaxLanes] = {};
    const uint8_t* wk[R];
    const float* xk[T];
    for (int i = 0; i < R; ++i) {
      std::memcpy(w_tail[i], w[i] + k * E::kBytes, (cols - k) * E::kBytes);
      wk[i] = w_tail[i];
    }
    for (int j = 0; j < T; ++j) {
      std::memcpy(x_tail[j], x[j] + k, (cols - k) * sizeof(float));
      xk[j] = x_tail[j];
    }
    step(wk, xk);
  }
  StoreTile<decltype(df), R, T>(df, a, r0, t0, acc);
}

// acc[i][j] += the products of `count` blocks from b on, for the tile's rows w[i] and tokens (xq[j], xs[j]).
template <class F, int R, int T>
HWY_INLINE void IntegerStep(const uint8_t* const (&w)[R], const int8_t* const (&xq)[T], const float* const (&xs)[T],
                            int b, int count, const uint8_t* w_end, size_t ahead, hn::Vec<DotF> (&acc)[R][T]) {
  const DotF df;
  WeightGroup<F> wg[R];
  for (int i = 0; i < R; ++i) wg[i] = WeightGroup<F>::load(w[i] + b * F::kBytes, count, w_end);
  if (ahead) {
    for (int i = 0; i < R; ++i) hwy::Prefetch(w[i] + b * F::kBytes + ahead);
  }
  for (int j = 0; j < T; ++j) {
    const auto xg = ActivationGroup<F>::load(xq[j] + b * kQuantBlock, xs[j] + b);
    for (int i = 0; i < R; ++i) {
      acc[i][j] = hn::MulAdd(hn::ConvertTo(df, GroupDot(wg[i], xg)), hn::Mul(wg[i].scale, xg.scale), acc[i][j]);
    }
  }
}

template <class F, int R, int T>
HWY_INLINE void IntegerRows(const uint8_t* const (&w)[R], const int8_t* const (&xq)[T], const float* const (&xs)[T],
                            int blocks, const uint8_t* w_end, size_t ahead, hn::Vec<DotF> (&acc)[R][T]) {
  int b = 0;
  for (; b + kGroupBlocks <= blocks; b += kGroupBlocks)
    IntegerStep<F, R, T>(w, xq, xs, b, kGroupBlocks, w_end, ahead, acc);
  if (b < blocks)
    IntegerStep<F, R, T>(w, xq, xs, b, blocks - b, w_end, ahead, acc);  // a group cut short by the row's end
}

template <class F, int R, int T>
HWY_NOINLINE void IntegerTile(const MatmulArgs& a, int r0, int t0) {
  const DotF df;
  const ActivationRows activations{a.xq, a.cols};
  const int blocks = a.cols / kQuantBlock;
  const uint8_t* w[R];
  const int8_t* xq[T];
  const float* xs[T];
  for (int i = 0; i < R; ++i) w[i] = a.w + static_cast<size_t>(r0 + i) * a.w_row_bytes;
  for (int j = 0; j < T; ++j) {
    xq[j] = activations.q(t0 + j);
    xs[j] = activations.scales(t0 + j);
  }
  hn::Vec<DotF> acc[R][T];
  for (int i = 0; i < R; ++i) {
    for (int j = 0; j < T; ++j) acc[i][j] = hn::Zero(df);
  }
  const size_t ahead = t0 == 0 ? R * a.w_row_bytes : 0;
  // Only the matrix's last rows need their loads checked against its end (a constant null elsewhere).
  if (w[R - 1] + a.w_row_bytes + 64 <= a.w_end) {
    IntegerRows<F, R, T>(w, xq, xs, blocks, nullptr, ahead, acc);
  } else {
    IntegerRows<F, R, T>(w, xq, xs, blocks, a.w_end, ahead, acc);
  }
  StoreTile<DotF, R, T>(df, a, r0, t0, acc);
}

template <class E, int R, int T>
HWY_INLINE void Tile(const MatmulArgs& a, int r0, int t0) {
  if constexpr (kIntegerBlocks<E>) {
    IntegerTile<E, R, T>(a, r0, t0);
  } else {
    FloatTile<E, R, T>(a, r0, t0);
  }
}

// ---- Tiling -------------------------------------------------------------------------------------------------------

constexpr int kTileTokens = 4;
constexpr int kDecodeRows = 4;  // one token: four independent rows in flight hide the accumulation latency
// Rows per tile with kTileTokens tokens: as many accumulators as the register file holds beside the weights (32
// registers on AVX-512: 4x4 tiles, also for the integer kernels, whose per-token work is then shared by 4 rows).
constexpr int kTileRows = HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL ? 4 : 2;
// Several tokens: the tokens are taken in chunks whose activations stay in L2, and for each chunk the weight rows in
// blocks that stay in L1 while every token tile of the chunk passes over them.
constexpr size_t kActivationChunkBytes = 256 * 1024;
constexpr size_t kWeightBlockBytes = 24 * 1024;

// ---- Packed integer weights ---------------------------------------------------------------------------------------
//
// A packed tile is one group of kPackedRows rows × T tokens, walked block by block: each step's weights are loaded
// once and multiplied into every token's int32 lanes (one lane per row), so there are no per-row horizontal sums.
// Per (row, token) the block's dot product is exact in int32 whatever the instruction sequence, and it enters the
// float32 sum as sum = MulAdd(float(dot), w_scale * x_scale, sum), blocks in order, then out = sum + bias: the same
// operations whatever the tile, the batch or the row range, as the plain kernels guarantee.
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
        const __m256i pairs =
            _mm256_add_epi16(_mm256_maddubs_epi16(w.a[h], xv), _mm256_maddubs_epi16(w.b[h], xv_hi));
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
HWY_NOINLINE void PackedTile(const MatmulArgs& a, int group, int t0, int row_begin, int row_end, bool streaming) {
  using K = Packed<F>;
  const ActivationRows activations{a.xq, a.cols};
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

template <class F>
void PackedRows(const MatmulArgs& a, int row_begin, int row_end) {
  constexpr int T = Packed<F>::kTokens;
  const int g_begin = row_begin / kPackedRows, g_end = (row_end + kPackedRows - 1) / kPackedRows;
  // Tokens in chunks whose activations stay in L2; each group's weights stay in L1 while the chunk passes over them.
  const int chunk_tokens = std::max<int>(T, kActivationChunkBytes / ActivationRows::stride(a.cols) / T * T);
  for (int c0 = 0; c0 < a.n; c0 += chunk_tokens) {
    const int c1 = std::min(a.n, c0 + chunk_tokens);
    for (int g = g_begin; g < g_end; ++g) {
      int t0 = c0;
      for (; t0 + T <= c1; t0 += T) PackedTile<F, T>(a, g, t0, row_begin, row_end, t0 == c0);
      for (; t0 < c1; ++t0) PackedTile<F, 1>(a, g, t0, row_begin, row_end, t0 == c0);
    }
  }
}

template <class E, int R, int T>
void TileRows(const MatmulArgs& a, int row_begin, int row_end, int t0) {
  int r = row_begin;
  for (; r + R <= row_end; r += R) Tile<E, R, T>(a, r, t0);
  for (; r < row_end; ++r) Tile<E, 1, T>(a, r, t0);
}

template <class E>
void MatmulRows(const MatmulArgs& a, int row_begin, int row_end) {
  if constexpr (kIntegerBlocks<E>) {
    if (a.packed) return PackedRows<E>(a, row_begin, row_end);
  }
  if (a.n == 1) {
    TileRows<E, kDecodeRows, 1>(a, row_begin, row_end, 0);
    return;
  }
  constexpr int R = kTileRows;
  const size_t token_bytes = kIntegerBlocks<E> ? ActivationRows::stride(a.cols) : a.cols * sizeof(float);
  const int chunk_tokens = std::max<int>(kTileTokens, kActivationChunkBytes / token_bytes / kTileTokens * kTileTokens);
  const int block_rows = std::max<int>(R, kWeightBlockBytes / a.w_row_bytes / R * R);
  for (int c0 = 0; c0 < a.n; c0 += chunk_tokens) {
    const int c1 = std::min(a.n, c0 + chunk_tokens);
    for (int r0 = row_begin; r0 < row_end; r0 += block_rows) {
      const int r1 = std::min(row_end, r0 + block_rows);
      int t0 = c0;
      for (; t0 + kTileTokens <= c1; t0 += kTileTokens) TileRows<E, R, kTileTokens>(a, r0, r1, t0);
      switch (c1 - t0) {
        case 3: TileRows<E, R, 3>(a, r0, r1, t0); break;
        case 2: TileRows<E, R, 2>(a, r0, r1, t0); break;
        case 1: TileRows<E, R, 1>(a, r0, r1, t0); break;
        default: break;
      }
    }
  }
}

void Matmul(const MatmulArgs& a, int row_begin, int row_end) {
  switch (a.dtype) {
    case DType::F32: return MatmulRows<F32Elements>(a, row_begin, row_end);
    case DType::BF16: return MatmulRows<BF16Elements>(a, row_begin, row_end);
    case DType::F16: return MatmulRows<F16Elements>(a, row_begin, row_end);
    case DType::Q8_0: return MatmulRows<Q8_0Format>(a, row_begin, row_end);
    case DType::Q4_0: return MatmulRows<Q4_0Format>(a, row_begin, row_end);
  }
}

// Gate and up for a few rows and tokens at a time into small buffers that stay in L1, then silu(gate) * up.
void MatmulSwiglu(const MatmulArgs& gate, const MatmulArgs& up, int row_begin, int row_end) {
  const hn::ScalableTag<float> df;
  const size_t lanes = hn::Lanes(df);
  constexpr int kRows = 16, kTokens = 32;
  constexpr size_t kStride = std::max<size_t>(kRows, HWY_MAX_BYTES / sizeof(float));
  HWY_ALIGN float g[kTokens * kStride] = {};
  HWY_ALIGN float u[kTokens * kStride] = {};
  HWY_ALIGN float h[kStride];
  for (int r0 = row_begin; r0 < row_end; r0 += kRows) {
    const int rows = std::min(kRows, row_end - r0);
    for (int t0 = 0; t0 < gate.n; t0 += kTokens) {
      const int tokens = std::min(kTokens, gate.n - t0);
      Matmul(gate.tokens(t0, tokens, g, kStride, r0), r0, r0 + rows);
      Matmul(up.tokens(t0, tokens, u, kStride, r0), r0, r0 + rows);
      for (int t = 0; t < tokens; ++t) {
        for (size_t i = 0; i < static_cast<size_t>(rows); i += lanes) {
          const auto gv = hn::Load(df, g + t * kStride + i);
          hn::Store(hn::Mul(Silu(df, gv), hn::Load(df, u + t * kStride + i)), df, h + i);
        }
        std::memcpy(gate.out + static_cast<size_t>(t0 + t) * gate.out_stride + r0, h, rows * sizeof(float));
      }
    }
  }
}

// ---- Activation quantization ------------------------------------------------------------------------------------

// Row t of x into the quantized layout: scale = max|x| / 127, q = round-to-nearest-even(x * (127 / max|x|)).
void QuantizeRow(const float* x, int cols, uint8_t* row) {
  const hn::CappedTag<float, kQuantBlock> df;
  const hn::RebindToSigned<decltype(df)> di;
  const hn::Rebind<int8_t, decltype(df)> d8;
  const size_t lanes = hn::Lanes(df);
  const size_t values = ActivationRows::values_bytes(cols);
  int8_t* q = reinterpret_cast<int8_t*>(row);
  float* scales = reinterpret_cast<float*>(row + values);
  int32_t* sums = reinterpret_cast<int32_t*>(row + values + ActivationRows::scales_bytes(cols));
  // Padding: zero values, scales and sums, so that a padded block contributes exactly nothing.
  std::memset(row + cols, 0, ActivationRows::stride(cols) - cols);
  for (int b = 0; b < cols / kQuantBlock; ++b) {
    const float* v = x + b * kQuantBlock;
    auto magnitude = hn::Zero(df);
    for (size_t i = 0; i < kQuantBlock; i += lanes) magnitude = hn::Max(magnitude, hn::Abs(hn::LoadU(df, v + i)));
    const float amax = hn::GetLane(hn::MaxOfLanes(df, magnitude));
    scales[b] = amax / 127.0f;
    const auto inverse = hn::Set(df, amax != 0.0f ? 127.0f / amax : 0.0f);
    for (size_t i = 0; i < kQuantBlock; i += lanes) {
      const auto rounded = hn::ConvertTo(di, hn::Round(hn::Mul(hn::LoadU(df, v + i), inverse)));
      hn::StoreU(hn::DemoteTo(d8, rounded), d8, q + b * kQuantBlock + i);
    }
    int32_t sum = 0;
    for (int i = 0; i < kQuantBlock; ++i) sum += q[b * kQuantBlock + i];
    sums[b] = sum;
  }
}

void QuantizeInput(const float* x, int cols, int row_begin, int row_end, uint8_t* out) {
  for (int t = row_begin; t < row_end; ++t) {
    QuantizeRow(x + static_cast<size_t>(t) * cols, cols, out + t * ActivationRows::stride(cols));
  }
}

// Each row normalized and then quantized while it is still in L1.
void RmsNormQuantizeInput(float* out, uint8_t* quantized, const float* x, const float* weight, int cols, float eps,
                          int row_begin, int row_end) {
  for (int t = row_begin; t < row_end; ++t) {
    float* row = out + static_cast<size_t>(t) * cols;
    RmsNormRow(row, x + static_cast<size_t>(t) * cols, weight, cols, eps);
    if (quantized) QuantizeRow(row, cols, quantized + t * ActivationRows::stride(cols));
  }
}

}  // namespace ernie::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace ernie {
using matmul_detail::ActivationRows;
using matmul_detail::make_args;
using matmul_detail::MatmulArgs;

HWY_EXPORT(Matmul);
HWY_EXPORT(MatmulSwiglu);
HWY_EXPORT(QuantizeInput);
HWY_EXPORT(RmsNormQuantizeInput);

namespace {

float silu(float z) {
  return z / (1.0f + std::exp(-z));
}

// Eight independent partial sums, as a vector unit would keep them.
float dot_f32(const float* x, const float* w, int n) {
  float acc[8] = {};
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += x[i + j] * w[i + j];
  }
  for (; i < n; ++i) acc[0] += x[i] * w[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// Σ_blocks scale_w * scale_x * Σ_i qw[i] * qx[i], the inner sums exact in int32.
float dot_quantized(const uint8_t* w_row, DType dtype, const int8_t* xq, const float* x_scales, int cols) {
  float sum = 0.0f;
  for (int b = 0; b < cols / kQuantBlock; ++b) {
    const int8_t* x = xq + b * kQuantBlock;
    int32_t acc = 0;
    float scale;
    if (dtype == DType::Q8_0) {
      BlockQ8_0 w;
      std::memcpy(&w, w_row + b * sizeof w, sizeof w);
      for (int i = 0; i < kQuantBlock; ++i) acc += int32_t{w.q[i]} * x[i];
      scale = f16_to_f32(w.scale);
    } else {
      BlockQ4_0 w;
      std::memcpy(&w, w_row + b * sizeof w, sizeof w);
      for (int i = 0; i < kQuantBlock / 2; ++i) {
        acc += ((w.q[i] & 0x0f) - 8) * int32_t{x[i]};
        acc += ((w.q[i] >> 4) - 8) * int32_t{x[i + kQuantBlock / 2]};
      }
      scale = f16_to_f32(w.scale);
    }
    sum += scale * x_scales[b] * static_cast<float>(acc);
  }
  return sum;
}

// Where the packed layout (matmul.h) keeps quant i (0..31) of a block of row `lane`, relative to the block's quants:
// the byte, and for Q4_0 whether the high nibble.
struct PackedQuant {
  size_t byte;
  bool high;
};
PackedQuant packed_quant(DType dtype, int lane, int i) {
  if (dtype == DType::Q8_0) return {static_cast<size_t>(i / 4 * kPackedRows * 4 + lane * 4 + i % 4), false};
  return {static_cast<size_t>(i / 8 * kPackedRows * 4 + lane * 4 + i % 4), i % 8 >= 4};
}

// The nibble of Q4_0 quant i in a plain block.
uint8_t q4_nibble(const BlockQ4_0& block, int i) {
  return i < kQuantBlock / 2 ? block.q[i] & 0x0f : block.q[i - kQuantBlock / 2] >> 4;
}

size_t packed_scales_bytes(int blocks) {
  return static_cast<size_t>(blocks) * kPackedRows * sizeof(uint16_t);
}
size_t packed_quant_bytes(DType dtype) {
  return kPackedRows * dtype_block_bytes(dtype) - kPackedRows * sizeof(uint16_t);
}

// Blocks [b0, b0 + count) of row r of the packed matrix w, in the plain layout.
void unpack_weight_blocks(const WeightMatrix& w, int64_t r, int b0, int count, uint8_t* out) {
  const int blocks = w.cols / kQuantBlock;
  const int lane = static_cast<int>(r % kPackedRows);
  const uint8_t* group = w.data + r / kPackedRows * kPackedRows * w.row_bytes();
  for (int b = b0; b < b0 + count; ++b) {
    const uint8_t* quants = group + packed_scales_bytes(blocks) + b * packed_quant_bytes(w.dtype);
    uint16_t scale;
    std::memcpy(&scale, group + packed_scales_bytes(b) + lane * sizeof scale, sizeof scale);
    uint8_t* block = out + (b - b0) * dtype_block_bytes(w.dtype);
    if (w.dtype == DType::Q8_0) {
      BlockQ8_0 q{scale, {}};
      for (int i = 0; i < kQuantBlock; ++i) q.q[i] = static_cast<int8_t>(quants[packed_quant(w.dtype, lane, i).byte] - 128);
      std::memcpy(block, &q, sizeof q);
    } else {
      BlockQ4_0 q{scale, {}};
      for (int i = 0; i < kQuantBlock; ++i) {
        const PackedQuant at = packed_quant(w.dtype, lane, i);
        const uint8_t nibble = at.high ? quants[at.byte] >> 4 : quants[at.byte] & 0x0f;
        q.q[i % 16] |= i < kQuantBlock / 2 ? nibble : nibble << 4;
      }
      std::memcpy(block, &q, sizeof q);
    }
  }
}

// Chunks of output rows small enough to balance the pool, large enough to amortise the dispatch.
int rows_per_chunk(int total_rows, int threads) {
  const int target_chunks = threads * 8;
  const int rows = (total_rows + target_chunks - 1) / target_chunks;
  return std::max(16, (rows + 15) / 16 * 16);
}

}  // namespace

size_t quantized_input_bytes(int n, int cols) {
  return n * ActivationRows::stride(cols);
}

void quantize_input(const float* x, int cols, int row_begin, int row_end, uint8_t* out) {
  HWY_DYNAMIC_DISPATCH(QuantizeInput)(x, cols, row_begin, row_end, out);
}

void rmsnorm_quantize_input(float* out, uint8_t* quantized, const float* x, const float* weight, int cols, float eps,
                            int row_begin, int row_end) {
  HWY_DYNAMIC_DISPATCH(RmsNormQuantizeInput)(out, quantized, x, weight, cols, eps, row_begin, row_end);
}

namespace reference {

void quantize_input(const float* x, int cols, int row_begin, int row_end, uint8_t* out) {
  const size_t stride = ActivationRows::stride(cols);
  for (int t = row_begin; t < row_end; ++t) {
    uint8_t* row = out + t * stride;
    std::memset(row, 0, stride);
    auto* q = reinterpret_cast<int8_t*>(row);
    for (int b = 0; b < cols / kQuantBlock; ++b) {
      const float* v = x + static_cast<size_t>(t) * cols + b * kQuantBlock;
      float amax = 0.0f;
      for (int i = 0; i < kQuantBlock; ++i) amax = std::max(amax, std::fabs(v[i]));
      const float scale = amax / 127.0f;
      std::memcpy(row + ActivationRows::values_bytes(cols) + b * sizeof(float), &scale, sizeof scale);
      const float inverse = amax != 0.0f ? 127.0f / amax : 0.0f;
      int32_t sum = 0;
      for (int i = 0; i < kQuantBlock; ++i) {
        q[b * kQuantBlock + i] = static_cast<int8_t>(std::nearbyint(v[i] * inverse));
        sum += q[b * kQuantBlock + i];
      }
      std::memcpy(row + ActivationRows::values_bytes(cols) + ActivationRows::scales_bytes(cols) + b * sizeof sum, &sum,
                  sizeof sum);
    }
  }
}

void matmul(float* out, const MatmulInput& in, const WeightMatrix& w, const float* bias, int row_begin, int row_end) {
  const bool quantized = uses_quantized_input(w.dtype);
  const ActivationRows activations{in.quantized, in.cols};
  // The reference is for tests; it widens (or unpacks) a weight row at a time into a heap buffer.
  std::unique_ptr<float[]> widened(quantized ? nullptr : new float[w.cols]);
  std::unique_ptr<uint8_t[]> unpacked(w.packed ? new uint8_t[w.row_bytes()] : nullptr);
  for (int r = row_begin; r < row_end; ++r) {
    if (!quantized) reference::dequantize_row(w.dtype, w.row(r), widened.get(), w.cols);
    if (w.packed) unpack_weight_row(w, r, unpacked.get());
    const uint8_t* w_row = w.packed ? unpacked.get() : w.row(r);
    const float b = bias ? bias[r] : 0.0f;
    for (int t = 0; t < in.n; ++t) {
      const float d = quantized ? dot_quantized(w_row, w.dtype, activations.q(t), activations.scales(t), w.cols)
                                : dot_f32(in.x + static_cast<size_t>(t) * in.cols, widened.get(), w.cols);
      out[static_cast<size_t>(t) * w.rows + r] = d + b;
    }
  }
}

void matmul_swiglu(float* out, const MatmulInput& in, const WeightMatrix& gate, const float* gate_bias,
                   const WeightMatrix& up, const float* up_bias, int row_begin, int row_end) {
  std::unique_ptr<float[]> g(new float[static_cast<size_t>(in.n) * gate.rows]);
  std::unique_ptr<float[]> u(new float[static_cast<size_t>(in.n) * up.rows]);
  reference::matmul(g.get(), in, gate, gate_bias, row_begin, row_end);
  reference::matmul(u.get(), in, up, up_bias, row_begin, row_end);
  for (int t = 0; t < in.n; ++t) {
    for (int r = row_begin; r < row_end; ++r) {
      const size_t i = static_cast<size_t>(t) * gate.rows + r;
      out[i] = silu(g[i]) * u[i];
    }
  }
}

}  // namespace reference

void matmul(float* out, const MatmulInput& in, const WeightMatrix& w, const float* bias, int row_begin, int row_end) {
  if (row_begin >= row_end || in.n == 0) return;
  HWY_DYNAMIC_DISPATCH(Matmul)(make_args(out, in, w, bias), row_begin, row_end);
}

void matmul_swiglu(float* out, const MatmulInput& in, const WeightMatrix& gate, const float* gate_bias,
                   const WeightMatrix& up, const float* up_bias, int row_begin, int row_end) {
  if (row_begin >= row_end || in.n == 0) return;
  if (gate.rows != up.rows || gate.cols != up.cols || gate.dtype != up.dtype) {
    fail("matmul_swiglu: gate and up differ in shape or dtype");
  }
  HWY_DYNAMIC_DISPATCH(MatmulSwiglu)
  (make_args(out, in, gate, gate_bias), make_args(out, in, up, up_bias), row_begin, row_end);
}

void matmul_parallel(ThreadPool& pool, const MatmulInput& in, std::span<const MatmulTask> tasks) {
  int total_rows = 0;
  for (const MatmulTask& task : tasks) total_rows += task.w->rows;
  const int chunk = rows_per_chunk(total_rows, pool.size());
  int n_chunks = 0;
  for (const MatmulTask& task : tasks) n_chunks += (task.w->rows + chunk - 1) / chunk;
  pool.run(n_chunks, [&](int index) {
    for (const MatmulTask& task : tasks) {
      const int chunks = (task.w->rows + chunk - 1) / chunk;
      if (index >= chunks) {
        index -= chunks;
        continue;
      }
      const int r0 = index * chunk, r1 = std::min(task.w->rows, r0 + chunk);
      if (task.up) {
        matmul_swiglu(task.out, in, *task.w, task.bias, *task.up, task.up_bias, r0, r1);
      } else {
        matmul(task.out, in, *task.w, task.bias, r0, r1);
      }
      return;
    }
  });
}

void pack_weight_group(DType dtype, int cols, const uint8_t* rows, int n_rows, uint8_t* out) {
  if (!uses_quantized_input(dtype)) fail("pack_weight_group: ", dtype_name(dtype), " cannot be packed");
  const int blocks = cols / kQuantBlock;
  const size_t row_bytes = dtype_row_bytes(dtype, cols);
  // Missing rows: zero scales, quants that decode to 0.
  std::memset(out, 0, packed_scales_bytes(blocks));
  std::memset(out + packed_scales_bytes(blocks), dtype == DType::Q8_0 ? 0x80 : 0x88,
              static_cast<size_t>(blocks) * packed_quant_bytes(dtype));
  for (int lane = 0; lane < n_rows; ++lane) {
    for (int b = 0; b < blocks; ++b) {
      const uint8_t* block = rows + lane * row_bytes + b * dtype_block_bytes(dtype);
      std::memcpy(out + packed_scales_bytes(b) + lane * sizeof(uint16_t), block, sizeof(uint16_t));
      uint8_t* quants = out + packed_scales_bytes(blocks) + b * packed_quant_bytes(dtype);
      if (dtype == DType::Q8_0) {
        BlockQ8_0 q;
        std::memcpy(&q, block, sizeof q);
        for (int i = 0; i < kQuantBlock; ++i) quants[packed_quant(dtype, lane, i).byte] = static_cast<uint8_t>(q.q[i] + 128);
      } else {
        BlockQ4_0 q;
        std::memcpy(&q, block, sizeof q);
        for (int i = 0; i < kQuantBlock; ++i) {
          const PackedQuant at = packed_quant(dtype, lane, i);
          uint8_t& byte = quants[at.byte];
          byte = at.high ? (byte & 0x0f) | q4_nibble(q, i) << 4 : (byte & 0xf0) | q4_nibble(q, i);
        }
      }
    }
  }
}

void unpack_weight_row(const WeightMatrix& w, int64_t r, uint8_t* out) {
  unpack_weight_blocks(w, r, 0, w.cols / kQuantBlock, out);
}

void read_row(float* out, const WeightMatrix& w, int64_t r) {
  if (!w.packed) return dequantize_row(w.dtype, w.row(r), out, w.cols);
  // Packed rows are the embedding of a quantized model: one row per token, so a stack buffer for the unpacked row
  // (up to 8192 columns; wider rows are dequantized in pieces).
  constexpr int kMaxBlocks = 256;
  uint8_t plain[kMaxBlocks * sizeof(BlockQ8_0)];
  const int blocks = w.cols / kQuantBlock;
  for (int b0 = 0; b0 < blocks; b0 += kMaxBlocks) {
    const int count = std::min(kMaxBlocks, blocks - b0);
    unpack_weight_blocks(w, r, b0, count, plain);
    dequantize_row(w.dtype, plain, out + b0 * kQuantBlock, count * kQuantBlock);
  }
}

}  // namespace ernie
#endif  // HWY_ONCE
