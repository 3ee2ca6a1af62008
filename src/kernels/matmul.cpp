// matmul and matmul_swiglu: the per-target entry points over the kernel families (matmul_float-inl.h for float
// weights, matmul_int8-inl.h for integer ones), and the dispatch to the best target the CPU supports.
#include "kernels/matmul.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "kernels/matmul_internal.h"

// This file is compiled once per SIMD target (Highway's foreach_target re-includes it).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/matmul.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/matmul_float-inl.h"
#include "kernels/matmul_int8-inl.h"
#include "kernels/simd-inl.h"

HWY_BEFORE_NAMESPACE();
ERNIE_ENABLE_VNNI
namespace ernie::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using matmul_detail::MatmulArgs;

void Matmul(const MatmulArgs& a, int row_begin, int row_end) {
  switch (a.dtype) {
    case DType::F32: return FloatMatmulRows<F32Elements>(a, row_begin, row_end);
    case DType::BF16: return FloatMatmulRows<BF16Elements>(a, row_begin, row_end);
    case DType::F16: return FloatMatmulRows<F16Elements>(a, row_begin, row_end);
    case DType::Q8_0: return Int8MatmulRows<Q8_0Format>(a, row_begin, row_end);
    case DType::Q4_0: return Int8MatmulRows<Q4_0Format>(a, row_begin, row_end);
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

}  // namespace ernie::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace ernie {
using matmul_detail::MatmulArgs;

HWY_EXPORT(Matmul);
HWY_EXPORT(MatmulSwiglu);

namespace {

MatmulArgs make_args(float* out, const MatmulInput& in, const WeightMatrix& w, const float* bias) {
  if (in.cols != w.cols) fail("matmul: input has ", in.cols, " columns, weights ", w.cols);
  if (uses_quantized_input(w.dtype)) {
    if (!in.quantized) fail("matmul: ", dtype_name(w.dtype), " weights need quantized input");
    if (!w.packed) fail("matmul: ", dtype_name(w.dtype), " weights must be packed (pack_weight_group)");
  } else if (w.packed) {
    fail("matmul: ", dtype_name(w.dtype), " weights cannot be packed");
  }
  return MatmulArgs{
      out, static_cast<size_t>(w.rows), 0, in.x, in.quantized, w.data, w.row_bytes(), w.dtype, bias, w.cols, in.n};
}

}  // namespace

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

}  // namespace ernie
#endif  // HWY_ONCE
