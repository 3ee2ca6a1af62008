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
// 32-element block. Both are zero-padded to whole pairs of blocks, so that kernels reading two blocks at a time never
// step outside the row, and rows start on cache lines. Values lie in [-127, 127].
struct ActivationRows {
  const uint8_t* base;
  int cols;

  static size_t values_bytes(int cols) { return (static_cast<size_t>(cols) + 63) / 64 * 64; }
  static size_t scales_bytes(int cols) { return values_bytes(cols) / kQuantBlock * sizeof(float); }
  static size_t stride(int cols) { return (values_bytes(cols) + scales_bytes(cols) + 63) / 64 * 64; }
  const int8_t* q(int t) const { return reinterpret_cast<const int8_t*>(base + t * stride(cols)); }
  const float* scales(int t) const {
    return reinterpret_cast<const float*>(base + t * stride(cols) + values_bytes(cols));
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
  const uint8_t* w;   // row r at w + r * w_row_bytes
  size_t w_row_bytes;
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
  return MatmulArgs{out,
                    static_cast<size_t>(w.rows),
                    0,
                    in.x,
                    in.quantized,
                    w.data,
                    w.row_bytes(),
                    w.row(w.rows),
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

template <class E, int R, int T>
void TileRows(const MatmulArgs& a, int row_begin, int row_end, int t0) {
  int r = row_begin;
  for (; r + R <= row_end; r += R) Tile<E, R, T>(a, r, t0);
  for (; r < row_end; ++r) Tile<E, 1, T>(a, r, t0);
}

template <class E>
void MatmulRows(const MatmulArgs& a, int row_begin, int row_end) {
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
  }
  // Padding: zero values and zero scales, so that a padded block contributes exactly nothing.
  std::memset(row + cols, 0, values - cols);
  const size_t used = values + cols / kQuantBlock * sizeof(float);
  std::memset(row + used, 0, ActivationRows::stride(cols) - used);
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
      for (int i = 0; i < kQuantBlock; ++i)
        q[b * kQuantBlock + i] = static_cast<int8_t>(std::nearbyint(v[i] * inverse));
    }
  }
}

void matmul(float* out, const MatmulInput& in, const WeightMatrix& w, const float* bias, int row_begin, int row_end) {
  const bool quantized = uses_quantized_input(w.dtype);
  const ActivationRows activations{in.quantized, in.cols};
  // The reference is for tests; it widens a weight row at a time into a heap buffer.
  std::unique_ptr<float[]> widened(quantized ? nullptr : new float[w.cols]);
  for (int r = row_begin; r < row_end; ++r) {
    if (!quantized) reference::dequantize_row(w.dtype, w.row(r), widened.get(), w.cols);
    const float b = bias ? bias[r] : 0.0f;
    for (int t = 0; t < in.n; ++t) {
      const float d = quantized ? dot_quantized(w.row(r), w.dtype, activations.q(t), activations.scales(t), w.cols)
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

void read_row(float* out, const WeightMatrix& w, int64_t r) {
  dequantize_row(w.dtype, w.row(r), out, w.cols);
}

}  // namespace ernie
#endif  // HWY_ONCE
