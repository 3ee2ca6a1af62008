// Per-target matmul kernels for float weights (F32, BF16, F16), widened to float32 in registers. Included by
// matmul.cpp once per SIMD target, hence the toggling include guard (Highway's convention).
#if defined(ERNIE_KERNELS_MATMUL_FLOAT_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef ERNIE_KERNELS_MATMUL_FLOAT_INL_H_
#undef ERNIE_KERNELS_MATMUL_FLOAT_INL_H_
#else
#define ERNIE_KERNELS_MATMUL_FLOAT_INL_H_
#endif

#include <algorithm>
#include <cstring>

#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "kernels/matmul_internal.h"
#include "kernels/simd-inl.h"

HWY_BEFORE_NAMESPACE();
namespace ernie::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// A tile is R weight rows × T tokens. Each weight vector is loaded and widened once and multiplied into the T tokens'
// accumulators from registers. Whatever R and T, the arithmetic for one (token, row) pair is the same sequence of
// operations: one vector accumulator, columns in order, one final lane reduction, then the bias. So the result never
// depends on the batch size, the tiling or the row range.
//
// The first token tile over a block of rows (the only one when decoding) streams the weights from memory, R rows
// side by side. The hardware prefetchers alone fall behind on those interleaved streams, so that tile also prefetches
// the same place one tile ahead (R rows further), a whole tile's compute time before it is needed.
template <class E, int R, int T>
HWY_NOINLINE void FloatTile(const matmul_detail::MatmulArgs& a, int r0, int t0) {
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
  for (int j = 0; j < T; ++j) {
    float* out = a.out + static_cast<size_t>(t0 + j) * a.out_stride + (r0 - a.out_row0);
    for (int i = 0; i < R; ++i) out[i] = hn::GetLane(hn::SumOfLanes(df, acc[i][j])) + (a.bias ? a.bias[r0 + i] : 0.0f);
  }
}

constexpr int kFloatTileTokens = 4;
constexpr int kFloatDecodeRows = 4;  // one token: four independent rows in flight hide the accumulation latency
// Rows per tile with kFloatTileTokens tokens: as many accumulators as the register file holds beside the weights
// (32 registers on AVX-512: 4x4 tiles; 16 elsewhere: 2x4).
constexpr int kFloatTileRows = HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL ? 4 : 2;
// Several tokens: for each chunk of tokens (kActivationChunkBytes, in L2) the weight rows are taken in blocks that stay
// in L1 while every token tile of the chunk passes over them.
constexpr size_t kFloatWeightBlockBytes = 24 * 1024;

template <class E, int R, int T>
void FloatTileRows(const matmul_detail::MatmulArgs& a, int row_begin, int row_end, int t0) {
  int r = row_begin;
  for (; r + R <= row_end; r += R) FloatTile<E, R, T>(a, r, t0);
  for (; r < row_end; ++r) FloatTile<E, 1, T>(a, r, t0);
}

// Rows [row_begin, row_end) of a matmul with weights stored as E.
template <class E>
void FloatMatmulRows(const matmul_detail::MatmulArgs& a, int row_begin, int row_end) {
  if (a.n == 1) return FloatTileRows<E, kFloatDecodeRows, 1>(a, row_begin, row_end, 0);
  constexpr int R = kFloatTileRows, T = kFloatTileTokens;
  const size_t token_bytes = a.cols * sizeof(float);
  const int chunk_tokens = std::max<int>(T, matmul_detail::kActivationChunkBytes / token_bytes / T * T);
  const int block_rows = std::max<int>(R, kFloatWeightBlockBytes / a.w_row_bytes / R * R);
  for (int c0 = 0; c0 < a.n; c0 += chunk_tokens) {
    const int c1 = std::min(a.n, c0 + chunk_tokens);
    for (int r0 = row_begin; r0 < row_end; r0 += block_rows) {
      const int r1 = std::min(row_end, r0 + block_rows);
      int t0 = c0;
      for (; t0 + T <= c1; t0 += T) FloatTileRows<E, R, T>(a, r0, r1, t0);
      switch (c1 - t0) {
        case 3: FloatTileRows<E, R, 3>(a, r0, r1, t0); break;
        case 2: FloatTileRows<E, R, 2>(a, r0, r1, t0); break;
        case 1: FloatTileRows<E, R, 1>(a, r0, r1, t0); break;
        default: break;
      }
    }
  }
}

}  // namespace ernie::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // ERNIE_KERNELS_MATMUL_FLOAT_INL_H_
