#include "kernels/ops.h"

#include <cstddef>

// Compiled once per SIMD target; the public functions at the end dispatch to the best one.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/ops.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/simd-inl.h"

HWY_BEFORE_NAMESPACE();
namespace ernie::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void RmsNorm(float* out, const float* x, const float* weight, int rows, int n, float eps) {
  for (int r = 0; r < rows; ++r)
    RmsNormRow(out + static_cast<ptrdiff_t>(r) * n, x + static_cast<ptrdiff_t>(r) * n, weight, n, eps);
}

// Applies fn to n elements as full vectors; the tail goes through a zero-padded vector so that every element, tail or
// not, gets the same arithmetic.
template <class Fn>
HWY_INLINE void ForEachVector(int n, Fn&& fn) {
  const hn::ScalableTag<float> df;
  const int lanes = static_cast<int>(hn::Lanes(df));
  int i = 0;
  for (; i + lanes <= n; i += lanes) fn(i, lanes);
  if (i < n) fn(i, n - i);
}

void Softmax(float* x, int n) {
  const hn::ScalableTag<float> df;
  auto max = hn::Set(df, -HUGE_VALF);
  ForEachVector(n, [&](int i, int count) HWY_ATTR {
    max = hn::Max(max, hn::IfThenElse(hn::FirstN(df, count), LoadPart(df, x + i, count), hn::Set(df, -HUGE_VALF)));
  });
  const auto m = hn::MaxOfLanes(df, max);
  auto sum = hn::Zero(df);
  ForEachVector(n, [&](int i, int count) HWY_ATTR {
    const auto e = hn::IfThenElseZero(hn::FirstN(df, count), hn::Exp(df, hn::Sub(LoadPart(df, x + i, count), m)));
    sum = hn::Add(sum, e);
    StorePart(df, e, x + i, count);
  });
  const auto inverse = hn::Div(hn::Set(df, 1.0f), hn::SumOfLanes(df, sum));
  ForEachVector(
      n, [&](int i, int count) HWY_ATTR { StorePart(df, hn::Mul(LoadPart(df, x + i, count), inverse), x + i, count); });
}

void Swiglu(float* out, const float* gate, const float* up, int n) {
  const hn::ScalableTag<float> df;
  ForEachVector(n, [&](int i, int count) HWY_ATTR {
    const auto g = LoadPart(df, gate + i, count), u = LoadPart(df, up + i, count);
    StorePart(df, hn::Mul(Silu(df, g), u), out + i, count);
  });
}

void AddInplace(float* x, const float* y, int n) {
  const hn::ScalableTag<float> df;
  ForEachVector(n, [&](int i, int count) HWY_ATTR {
    StorePart(df, hn::Add(LoadPart(df, x + i, count), LoadPart(df, y + i, count)), x + i, count);
  });
}

}  // namespace ernie::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace ernie {

HWY_EXPORT(RmsNorm);
HWY_EXPORT(Softmax);
HWY_EXPORT(Swiglu);
HWY_EXPORT(AddInplace);

void rmsnorm(float* out, const float* x, const float* weight, int rows, int n, float eps) {
  HWY_DYNAMIC_DISPATCH(RmsNorm)(out, x, weight, rows, n, eps);
}

void softmax(float* x, int n) {
  HWY_DYNAMIC_DISPATCH(Softmax)(x, n);
}

void swiglu(float* out, const float* gate, const float* up, int n) {
  HWY_DYNAMIC_DISPATCH(Swiglu)(out, gate, up, n);
}

void add_inplace(float* x, const float* y, int n) {
  HWY_DYNAMIC_DISPATCH(AddInplace)(x, y, n);
}

}  // namespace ernie
#endif  // HWY_ONCE
