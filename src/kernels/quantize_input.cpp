// quantize_input and rmsnorm_quantize_input: activation rows into the int8 layout the integer matmuls read
// (matmul_internal.h's ActivationRows), per SIMD target with dispatch to the best one the CPU supports.
#include <cstring>

#include "kernels/matmul.h"
#include "kernels/matmul_internal.h"

// This file is compiled once per SIMD target (Highway's foreach_target re-includes it).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/quantize_input.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/simd-inl.h"

HWY_BEFORE_NAMESPACE();
namespace ernie::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using matmul_detail::ActivationRows;

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

HWY_EXPORT(QuantizeInput);
HWY_EXPORT(RmsNormQuantizeInput);

size_t quantized_input_bytes(int n, int cols) {
  return n * matmul_detail::ActivationRows::stride(cols);
}

void quantize_input(const float* x, int cols, int row_begin, int row_end, uint8_t* out) {
  HWY_DYNAMIC_DISPATCH(QuantizeInput)(x, cols, row_begin, row_end, out);
}

void rmsnorm_quantize_input(float* out, uint8_t* quantized, const float* x, const float* weight, int cols, float eps,
                            int row_begin, int row_end) {
  HWY_DYNAMIC_DISPATCH(RmsNormQuantizeInput)(out, quantized, x, weight, cols, eps, row_begin, row_end);
}

}  // namespace ernie
#endif  // HWY_ONCE
