// Per-target SIMD building blocks shared by the kernels' Highway translation units: loading stored element types
// as float32 vectors, the exact float32 -> F16/BF16 roundings of core/dtype.h, rounding as the ggml quantizers do,
// and which int8 dot-product instructions the target has (used by matmul_int8-inl.h).
//
// Included once per SIMD target from files that use hwy/foreach_target.h, hence the toggling include guard
// (Highway's convention) instead of #pragma once.
#if defined(ERNIE_KERNELS_SIMD_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef ERNIE_KERNELS_SIMD_INL_H_
#undef ERNIE_KERNELS_SIMD_INL_H_
#else
#define ERNIE_KERNELS_SIMD_INL_H_
#endif

#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/dtype.h"
#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "kernels/quant.h"

// x86 targets with AVX2 instructions get the int8 dot products from maddubs intrinsics; every other target (SSE4 and
// the scalar baseline on x86, NEON, SVE, ...) uses portable code. All produce the same exact int32 sums.
#undef ERNIE_X86_INT8_DOT
#if HWY_ARCH_X86 && (HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL)
#define ERNIE_X86_INT8_DOT 1
#else
#define ERNIE_X86_INT8_DOT 0
#endif

// Whether Highway's F16 -> F32 promotion is a hardware conversion (exact for every input). Its emulation on the
// other targets mishandles infinities and NaN, so those use the exact integer decoding below.
#undef ERNIE_NATIVE_F16
#if (HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2 && !defined(HWY_DISABLE_F16C)) || HWY_ARCH_ARM_A64
#define ERNIE_NATIVE_F16 1
#else
#define ERNIE_NATIVE_F16 0
#endif

// AVX3_DL with GCC uses VNNI's vpdpbusd (uint8 × int8 quadruples summed into int32, no saturation). Highway 1.0.3
// compiles AVX3_DL for "avxvnni" (the VEX form, absent from e.g. Ice Lake) although it selects the target by the
// CPU's AVX512-VNNI; per-target code using the EVEX form enables it with ERNIE_ENABLE_VNNI right after
// HWY_BEFORE_NAMESPACE() (undone by HWY_AFTER_NAMESPACE()).
#undef ERNIE_VNNI
#undef ERNIE_ENABLE_VNNI
#if HWY_ARCH_X86 && HWY_TARGET == HWY_AVX3_DL && HWY_COMPILER_GCC_ACTUAL
#define ERNIE_VNNI 1
#define ERNIE_ENABLE_VNNI _Pragma("GCC target(\"avx512vnni\")")
#else
#define ERNIE_VNNI 0
#define ERNIE_ENABLE_VNNI
#endif

HWY_BEFORE_NAMESPACE();
namespace ernie::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// ---- Stored float formats -> float32 -------------------------------------------------------------------------------

// Tags naming the stored element type of a float weight row or cache row.
struct F32Elements {
  static constexpr size_t kBytes = 4;
};
struct BF16Elements {
  static constexpr size_t kBytes = 2;
};
struct F16Elements {
  static constexpr size_t kBytes = 2;
};

template <class DF>
HWY_INLINE hn::Vec<DF> DecodeF16(DF df, hn::Vec<hn::Rebind<uint16_t, DF>> half_bits) {
#if ERNIE_NATIVE_F16
  const hn::Rebind<hwy::float16_t, DF> dh;
  return hn::PromoteTo(df, hn::BitCast(dh, half_bits));
#else
  // value = (-1)^s * 2^(e-15) * 1.m for e in [1, 30]; m * 2^-24 for e = 0; inf/NaN (payload kept) for e = 31.
  const hn::RebindToUnsigned<DF> du;
  const hn::RebindToSigned<DF> di;
  const auto bits = hn::PromoteTo(du, half_bits);
  const auto sign = hn::ShiftLeft<16>(hn::And(bits, hn::Set(du, 0x8000u)));
  const auto exponent = hn::And(hn::ShiftRight<10>(bits), hn::Set(du, 0x1fu));
  const auto mantissa = hn::And(bits, hn::Set(du, 0x3ffu));
  const auto normal = hn::Or(hn::ShiftLeft<23>(hn::Add(exponent, hn::Set(du, 112u))), hn::ShiftLeft<13>(mantissa));
  const auto special = hn::Or(hn::Set(du, 0x7f800000u), hn::ShiftLeft<13>(mantissa));
  const auto subnormal = hn::BitCast(du, hn::Mul(hn::ConvertTo(df, hn::BitCast(di, mantissa)), hn::Set(df, 0x1p-24f)));
  const auto magnitude = hn::IfThenElse(hn::Eq(exponent, hn::Set(du, 0x1fu)), special,
                                        hn::IfThenElse(hn::Eq(exponent, hn::Zero(du)), subnormal, normal));
  return hn::BitCast(df, hn::Or(magnitude, sign));
#endif
}

// Lanes(df) stored elements at p (any alignment) widened to float32. Exact.
template <class DF>
HWY_INLINE hn::Vec<DF> LoadWidened(DF df, F32Elements, const uint8_t* p) {
  return hn::LoadU(df, reinterpret_cast<const float*>(p));
}
template <class DF>
HWY_INLINE hn::Vec<DF> LoadWidened(DF df, BF16Elements, const uint8_t* p) {
  const hn::Rebind<uint16_t, DF> d16;
  const hn::RebindToUnsigned<DF> du;
  return hn::BitCast(df, hn::ShiftLeft<16>(hn::PromoteTo(du, hn::LoadU(d16, reinterpret_cast<const uint16_t*>(p)))));
}
template <class DF>
HWY_INLINE hn::Vec<DF> LoadWidened(DF df, F16Elements, const uint8_t* p) {
  const hn::Rebind<uint16_t, DF> d16;
  return DecodeF16(df, hn::LoadU(d16, reinterpret_cast<const uint16_t*>(p)));
}

// The F16 at p (any alignment) as float32.
HWY_INLINE float LoadF16Scalar(const uint8_t* p) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2 && !defined(HWY_DISABLE_F16C)
  uint16_t bits;
  std::memcpy(&bits, p, sizeof bits);
  return _cvtsh_ss(bits);
#else
  const hn::CappedTag<float, 1> d1;
  return hn::GetLane(LoadWidened(d1, F16Elements{}, p));
#endif
}

// ---- float32 -> stored formats, bit for bit as core/dtype.h ----------------------------------------------------

// f32_to_bf16: round to nearest even; NaN stays a quiet NaN.
template <class DF>
HWY_INLINE hn::Vec<hn::Rebind<uint16_t, DF>> EncodeBF16(DF df, hn::Vec<DF> v) {
  const hn::RebindToUnsigned<DF> du;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<uint16_t, DF> d16;
  const auto bits = hn::BitCast(du, v);
  const auto is_nan =
      hn::RebindMask(du, hn::Gt(hn::BitCast(di, hn::And(bits, hn::Set(du, 0x7fffffffu))), hn::Set(di, 0x7f800000)));
  const auto quiet_nan = hn::Or(hn::ShiftRight<16>(bits), hn::Set(du, 0x40u));
  const auto rounding = hn::Add(hn::Set(du, 0x7fffu), hn::And(hn::ShiftRight<16>(bits), hn::Set(du, 1u)));
  const auto rounded = hn::ShiftRight<16>(hn::Add(bits, rounding));
  // Every lane is below 2^16, so the saturating narrowing is exact.
  return hn::DemoteTo(d16, hn::BitCast(di, hn::IfThenElse(is_nan, quiet_nan, rounded)));
}

// f32_to_f16: round to nearest even, overflow to infinity, NaN -> quiet NaN 0x7e00 with the sign kept.
template <class DF>
HWY_INLINE hn::Vec<hn::Rebind<uint16_t, DF>> EncodeF16(DF df, hn::Vec<DF> v) {
  const hn::RebindToUnsigned<DF> du;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<uint16_t, DF> d16;
  const auto bits = hn::BitCast(du, v);
  const auto sign = hn::And(hn::ShiftRight<16>(bits), hn::Set(du, 0x8000u));
  const auto magnitude_bits = hn::And(bits, hn::Set(du, 0x7fffffffu));
  const auto magnitude = hn::BitCast(df, magnitude_bits);
  const auto is_nan = hn::RebindMask(du, hn::Gt(hn::BitCast(di, magnitude_bits), hn::Set(di, 0x7f800000)));
  const auto overflows = hn::RebindMask(du, hn::Ge(magnitude, hn::Set(df, 65520.0f)));
  const auto is_subnormal = hn::RebindMask(du, hn::Lt(magnitude, hn::Set(df, 6.103515625e-05f)));
  // Subnormal halves are multiples of 2^-24: round magnitude * 2^24 to nearest even.
  const auto subnormal = hn::BitCast(du, hn::ConvertTo(di, hn::Round(hn::Mul(magnitude, hn::Set(df, 16777216.0f)))));
  // Normal: rebase the exponent, then drop 13 mantissa bits rounding to nearest even (a carry bumps the exponent).
  const auto rebased = hn::Sub(magnitude_bits, hn::Set(du, 112u << 23));
  const auto rounding = hn::Add(hn::Set(du, 0xfffu), hn::And(hn::ShiftRight<13>(rebased), hn::Set(du, 1u)));
  const auto normal = hn::ShiftRight<13>(hn::Add(rebased, rounding));
  const auto half =
      hn::IfThenElse(is_nan, hn::Set(du, 0x7e00u),
                     hn::IfThenElse(overflows, hn::Set(du, 0x7c00u), hn::IfThenElse(is_subnormal, subnormal, normal)));
  return hn::DemoteTo(d16, hn::BitCast(di, hn::Or(half, sign)));
}

// std::round: to nearest, ties away from zero (hn::Round ties to even). |v| - trunc(|v|) is exact.
template <class DF>
HWY_INLINE hn::Vec<DF> RoundHalfAway(DF df, hn::Vec<DF> v) {
  const auto truncated = hn::Trunc(v);
  const auto fraction = hn::Abs(hn::Sub(v, truncated));
  const auto step = hn::CopySignToAbs(hn::Set(df, 1.0f), v);
  return hn::Add(truncated, hn::IfThenElseZero(hn::Ge(fraction, hn::Set(df, 0.5f)), step));
}

// ---- Normalization ------------------------------------------------------------------------------------------------

// out[i] = weight[i] * (x[i] * r), r = 1 / sqrt(mean(x²) + eps), for one row of n. The squares are summed in
// float64 where the target has it, so r is within float rounding of the exact value whatever the lane count.
HWY_INLINE void RmsNormRow(float* out, const float* x, const float* weight, int n, float eps) {
#if HWY_HAVE_FLOAT64
  const hn::ScalableTag<double> dd;
  const hn::Rebind<float, decltype(dd)> dh;
  const int lanes = static_cast<int>(hn::Lanes(dd));
  auto acc = hn::Zero(dd);
  int i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto v = hn::PromoteTo(dd, hn::LoadU(dh, x + i));
    acc = hn::MulAdd(v, v, acc);
  }
  double sum_sq = hn::GetLane(hn::SumOfLanes(dd, acc));
#else
  int i = 0;
  double sum_sq = 0.0;
#endif
  for (; i < n; ++i) sum_sq += static_cast<double>(x[i]) * x[i];
  const float r = 1.0f / std::sqrt(static_cast<float>(sum_sq / n) + eps);

  const hn::ScalableTag<float> df;
  const int flanes = static_cast<int>(hn::Lanes(df));
  const auto rv = hn::Set(df, r);
  int j = 0;
  for (; j + flanes <= n; j += flanes) {
    hn::StoreU(hn::Mul(hn::LoadU(df, weight + j), hn::Mul(hn::LoadU(df, x + j), rv)), df, out + j);
  }
  for (; j < n; ++j) out[j] = weight[j] * (x[j] * r);
}

// ---- Activations --------------------------------------------------------------------------------------------------

// Loads count <= Lanes(df) floats; the lanes past count are zero.
template <class DF>
HWY_INLINE hn::Vec<DF> LoadPart(DF df, const float* p, int count) {
  if (count == static_cast<int>(hn::Lanes(df))) return hn::LoadU(df, p);
  HWY_ALIGN float buffer[HWY_MAX_BYTES / sizeof(float)] = {};
  for (int i = 0; i < count; ++i) buffer[i] = p[i];
  return hn::Load(df, buffer);
}
template <class DF>
HWY_INLINE void StorePart(DF df, hn::Vec<DF> v, float* p, int count) {
  if (count == static_cast<int>(hn::Lanes(df))) return hn::StoreU(v, df, p);
  HWY_ALIGN float buffer[HWY_MAX_BYTES / sizeof(float)];
  hn::Store(v, df, buffer);
  for (int i = 0; i < count; ++i) p[i] = buffer[i];
}

// SiLU(g) = g / (1 + e^-g). e^-g is clamped at e^100 (= inf in float32, inside hn::Exp's valid range) so that very
// negative gates give -0 rather than garbage.
template <class DF>
HWY_INLINE hn::Vec<DF> Silu(DF df, hn::Vec<DF> g) {
  const auto e = hn::Exp(df, hn::Min(hn::Neg(g), hn::Set(df, 100.0f)));
  return hn::Div(g, hn::Add(hn::Set(df, 1.0f), e));
}

}  // namespace ernie::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // ERNIE_KERNELS_SIMD_INL_H_
