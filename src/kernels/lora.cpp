#include "kernels/lora.h"

#include <algorithm>
#include <cstddef>
#include <type_traits>

// Compiled once per SIMD target; the public functions at the end dispatch to the best one.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/lora.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/simd-inl.h"

HWY_BEFORE_NAMESPACE();
namespace ernie::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

template <int N>
using Count = std::integral_constant<int, N>;

// kRows rows of x against kRanks rows of A: one accumulator per (row, k), each summing over c in the same order
// (zero-padded tail included), so a (row, k) sum is the same whatever group it runs in.
template <int kRows, int kRanks>
HWY_INLINE void ShrinkTile(float* t, size_t t_stride, const float* x, size_t x_stride, const int32_t* rows,
                           const float* a, int in, int k) {
  const hn::ScalableTag<float> df;
  const int lanes = static_cast<int>(hn::Lanes(df));
  hn::Vec<decltype(df)> sum[kRows][kRanks];
  const float* xr[kRows];
  const float* ak[kRanks];
  for (int r = 0; r < kRows; ++r) {
    xr[r] = x + static_cast<size_t>(rows[r]) * x_stride;
    for (int g = 0; g < kRanks; ++g) sum[r][g] = hn::Zero(df);
  }
  for (int g = 0; g < kRanks; ++g) ak[g] = a + static_cast<ptrdiff_t>(k + g) * in;
  for (int c = 0; c < in; c += lanes) {
    const int count = std::min(lanes, in - c);
    hn::Vec<decltype(df)> av[kRanks];
    for (int g = 0; g < kRanks; ++g) av[g] = LoadPart(df, ak[g] + c, count);
    for (int r = 0; r < kRows; ++r) {
      const auto xv = LoadPart(df, xr[r] + c, count);
      for (int g = 0; g < kRanks; ++g) sum[r][g] = hn::MulAdd(xv, av[g], sum[r][g]);
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int g = 0; g < kRanks; ++g)
      t[static_cast<size_t>(rows[r]) * t_stride + k + g] = hn::GetLane(hn::SumOfLanes(df, sum[r][g]));
  }
}

void LoraShrink(float* t, size_t t_stride, const float* x, size_t x_stride, LoraRows rows, const float* a, int in,
                int k_begin, int k_end) {
  const auto ranks = [&](const int32_t* r, auto n_rows) HWY_ATTR {
    int k = k_begin;
    for (; k + 2 <= k_end; k += 2) ShrinkTile<decltype(n_rows)::value, 2>(t, t_stride, x, x_stride, r, a, in, k);
    if (k < k_end) ShrinkTile<decltype(n_rows)::value, 1>(t, t_stride, x, x_stride, r, a, in, k);
  };
  int i = 0;
  for (; i + 4 <= rows.n; i += 4) ranks(rows.rows + i, Count<4>());
  switch (rows.n - i) {
    case 3: return ranks(rows.rows + i, Count<3>());
    case 2: return ranks(rows.rows + i, Count<2>());
    case 1: return ranks(rows.rows + i, Count<1>());
  }
}

// kRows rows times kVectors vectors of outputs: acc = sum_k t[r][k] · b_t[k][j] in k order, then y += scale · acc;
// a partial vector gets the same operations on zero-padded lanes.
template <int kRows, int kVectors>
HWY_INLINE void ExpandTile(float* y, size_t y_stride, const float* t, size_t t_stride, const int32_t* rows,
                           const float* b_t, int rank, int out, float scale, int j, int count) {
  const hn::ScalableTag<float> df;
  const int lanes = static_cast<int>(hn::Lanes(df));
  hn::Vec<decltype(df)> acc[kRows][kVectors];
  for (int r = 0; r < kRows; ++r) {
    for (int v = 0; v < kVectors; ++v) acc[r][v] = hn::Zero(df);
  }
  for (int k = 0; k < rank; ++k) {
    hn::Vec<decltype(df)> b[kVectors];
    const float* bk = b_t + static_cast<ptrdiff_t>(k) * out + j;
    for (int v = 0; v < kVectors; ++v) b[v] = LoadPart(df, bk + v * lanes, std::min(lanes, count - v * lanes));
    for (int r = 0; r < kRows; ++r) {
      const auto tk = hn::Set(df, t[static_cast<size_t>(rows[r]) * t_stride + k]);
      for (int v = 0; v < kVectors; ++v) acc[r][v] = hn::MulAdd(tk, b[v], acc[r][v]);
    }
  }
  const auto s = hn::Set(df, scale);
  for (int r = 0; r < kRows; ++r) {
    float* yr = y + static_cast<size_t>(rows[r]) * y_stride + j;
    for (int v = 0; v < kVectors; ++v) {
      const int n = std::min(lanes, count - v * lanes);
      StorePart(df, hn::MulAdd(s, acc[r][v], LoadPart(df, yr + v * lanes, n)), yr + v * lanes, n);
    }
  }
}

void LoraExpand(float* y, size_t y_stride, const float* t, size_t t_stride, LoraRows rows, const float* b_t, int rank,
                int out, float scale, int j_begin, int j_end) {
  const hn::ScalableTag<float> df;
  const int lanes = static_cast<int>(hn::Lanes(df));
  const auto columns = [&](const int32_t* r, auto n_rows) HWY_ATTR {
    constexpr int kRows = decltype(n_rows)::value;
    int j = j_begin;
    for (; j + 2 * lanes <= j_end; j += 2 * lanes)
      ExpandTile<kRows, 2>(y, y_stride, t, t_stride, r, b_t, rank, out, scale, j, 2 * lanes);
    for (; j < j_end; j += lanes)
      ExpandTile<kRows, 1>(y, y_stride, t, t_stride, r, b_t, rank, out, scale, j, std::min(lanes, j_end - j));
  };
  int i = 0;
  for (; i + 4 <= rows.n; i += 4) columns(rows.rows + i, Count<4>());
  switch (rows.n - i) {
    case 3: return columns(rows.rows + i, Count<3>());
    case 2: return columns(rows.rows + i, Count<2>());
    case 1: return columns(rows.rows + i, Count<1>());
  }
}

}  // namespace ernie::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace ernie {

HWY_EXPORT(LoraShrink);
HWY_EXPORT(LoraExpand);

void lora_shrink(float* t, size_t t_stride, const float* x, size_t x_stride, LoraRows rows, const float* a, int in,
                 int k_begin, int k_end) {
  if (rows.n <= 0 || k_begin >= k_end) return;
  HWY_DYNAMIC_DISPATCH(LoraShrink)(t, t_stride, x, x_stride, rows, a, in, k_begin, k_end);
}

void lora_expand(float* y, size_t y_stride, const float* t, size_t t_stride, LoraRows rows, const float* b_t, int rank,
                 int out, float scale, int j_begin, int j_end) {
  if (rows.n <= 0 || j_begin >= j_end) return;
  HWY_DYNAMIC_DISPATCH(LoraExpand)(y, y_stride, t, t_stride, rows, b_t, rank, out, scale, j_begin, j_end);
}

namespace reference {

void lora_shrink(float* t, size_t t_stride, const float* x, size_t x_stride, LoraRows rows, const float* a, int in,
                 int k_begin, int k_end) {
  for (int i = 0; i < rows.n; ++i) {
    const float* xr = x + static_cast<size_t>(rows.rows[i]) * x_stride;
    for (int k = k_begin; k < k_end; ++k) {
      double sum = 0;
      for (int c = 0; c < in; ++c) sum += static_cast<double>(xr[c]) * a[static_cast<ptrdiff_t>(k) * in + c];
      t[static_cast<size_t>(rows.rows[i]) * t_stride + k] = static_cast<float>(sum);
    }
  }
}

void lora_expand(float* y, size_t y_stride, const float* t, size_t t_stride, LoraRows rows, const float* b_t, int rank,
                 int out, float scale, int j_begin, int j_end) {
  for (int i = 0; i < rows.n; ++i) {
    const float* tr = t + static_cast<size_t>(rows.rows[i]) * t_stride;
    float* yr = y + static_cast<size_t>(rows.rows[i]) * y_stride;
    for (int j = j_begin; j < j_end; ++j) {
      double sum = 0;
      for (int k = 0; k < rank; ++k) sum += static_cast<double>(tr[k]) * b_t[static_cast<ptrdiff_t>(k) * out + j];
      yr[j] = static_cast<float>(yr[j] + scale * sum);
    }
  }
}

}  // namespace reference
}  // namespace ernie
#endif  // HWY_ONCE
