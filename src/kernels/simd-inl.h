// Per-target SIMD building blocks shared by the kernels' Highway translation units: loading stored element types
// as float32 vectors, the exact float32 -> F16/BF16 roundings of core/dtype.h, rounding as the ggml quantizers do,
// and the int8 dot products of ggml Q8_0/Q4_0 blocks.
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

// x86 targets with AVX2 instructions get the int8 dot products from maddubs intrinsics (see GroupDot below); every
// other target (SSE4 and the scalar baseline on x86, NEON, SVE, ...) uses the portable widening multiply. All produce
// the same exact int32 sums.
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
// CPU's AVX512-VNNI; the integer-dot helpers below enable the EVEX form, and so must the per-target code calling
// them: ERNIE_ENABLE_VNNI right after HWY_BEFORE_NAMESPACE() (undone by HWY_AFTER_NAMESPACE()).
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

// ---- int8 dot products of ggml blocks ----------------------------------------------------------------------------
//
// The integer matmuls walk a row kGroupBlocks blocks at a time (two on AVX-512, one elsewhere). A group of weights is
// loaded and unpacked once (WeightGroup) and multiplied by the same group of every token in a tile
// (ActivationGroup). GroupDot returns int32 lanes, each lane belonging to one block of the group, whose per-block sums
// are the exact integer dot products; DotF is the float32 tag with the same lanes, and both groups carry each block's
// scale on its lanes.
//
// Activations are int8 in [-127, 127] (quantize_input guarantees it), laid out so that a group can always be loaded
// whole: the row's int8 values and its scales are zero-padded to whole groups. A weight group may be cut short at the
// end of a row (`blocks` < kGroupBlocks); its missing blocks read as zero. Weight loads never go past `end`, the end
// of the matrix, or null when the caller knows the group is at least 64 bytes before it.
//
// x86 uses instructions Highway 1.0.3 has no portable equivalent of: vpdpbusd (AVX512-VNNI) on AVX3_DL, else
// maddubs (uint8 × int8 pairs summed in int16). With maddubs, Q8_0 weights move their signs onto the activations
// (|w| ≤ 128, so a pair sum stays below 2^15); Q4_0 nibbles are already unsigned: Σ(n-8)x is computed as
// Σ n·x − Σ 8·x, the second sum once per token and group.

#if ERNIE_VNNI
#pragma GCC push_options
ERNIE_ENABLE_VNNI
#endif

struct Q8_0Format {
  static constexpr size_t kBytes = sizeof(BlockQ8_0);
};
struct Q4_0Format {
  static constexpr size_t kBytes = sizeof(BlockQ4_0);
};

#if ERNIE_X86_INT8_DOT && HWY_TARGET != HWY_AVX2  // AVX-512: two blocks per 512-bit vector

constexpr int kGroupBlocks = 2;
using DotI = hn::Full512<int32_t>;
using DotF = hn::Full512<float>;

// Lanes 0-7 take value 0, lanes 8-15 value 1: per-block scales onto their int32 lanes.
HWY_INLINE __m512 SpreadPair(__m128 pair) {
  return _mm512_permutexvar_ps(_mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0),
                               _mm512_castps128_ps512(pair));
}

HWY_INLINE hn::Vec<DotF> ActivationScales(const float* scales) {
  return hn::Vec<DotF>{SpreadPair(_mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(scales))))};
}

// The int8 weights of a group (Q8_0 values, or Q4_0 nibbles in [0, 15]) in element order, block 0 then block 1, and
// each block's scale on its lanes. A whole pair's first 64 bytes hold both scales (words 0 and kBytes/2) and, for
// Q4_0, both blocks entirely, so word permutations of one load gather them. A Q4_0 pair is only 36 bytes: within
// 64 bytes of the end of the weights the load is masked to the pair (a masked load cannot fault; elsewhere it is
// slower). A pair cut short at the row's end reads only its one block, leaving zeros.
template <class F>
HWY_INLINE __m512i LoadWeights(const uint8_t* block, int blocks, const uint8_t* end, hn::Vec<DotF>& scale) {
  constexpr uint16_t kSecond = F::kBytes / 2;
  constexpr __mmask64 kPairBytes = 2 * F::kBytes >= 64 ? ~__mmask64{0} : (__mmask64{1} << (2 * F::kBytes)) - 1;
  if (blocks == 2) {
    const bool whole = end == nullptr || block + 64 <= end;
    const __m512i head = whole ? _mm512_loadu_si512(block) : _mm512_maskz_loadu_epi8(kPairBytes, block);
    alignas(64) static constexpr uint16_t kScales[32] = {
        0, 0, 0, 0, 0, 0, 0, 0, kSecond, kSecond, kSecond, kSecond, kSecond, kSecond, kSecond, kSecond};
    const __m512i halves = _mm512_permutexvar_epi16(_mm512_load_si512(kScales), head);
    scale = hn::Vec<DotF>{_mm512_cvtph_ps(_mm512_castsi512_si256(halves))};
    if constexpr (std::is_same_v<F, Q8_0Format>) {
      const __m512i first = _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2)));
      return _mm512_inserti64x4(first, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + F::kBytes + 2)), 1);
    } else {
      // 128-bit lanes (p0, p0, p1, p1) of packed nibbles; the high nibbles of lanes 1 and 3 shifted down.
      alignas(64) static constexpr uint16_t kPacked[32] = {1,  2,  3,  4,  5,  6,  7,  8,  1,  2,  3,
                                                           4,  5,  6,  7,  8,  10, 11, 12, 13, 14, 15,
                                                           16, 17, 10, 11, 12, 13, 14, 15, 16, 17};
      const __m512i packed = _mm512_permutexvar_epi16(_mm512_load_si512(kPacked), head);
      return _mm512_and_si512(_mm512_mask_srli_epi16(packed, 0xff00ff00, packed, 4), _mm512_set1_epi8(0x0f));
    }
  }
  uint16_t bits;
  std::memcpy(&bits, block, 2);
  scale = hn::Vec<DotF>{SpreadPair(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)))};
  if constexpr (std::is_same_v<F, Q8_0Format>) {
    return _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2)));
  } else {
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2));
    const __m256i both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
    return _mm512_zextsi256_si512(_mm256_and_si256(both, _mm256_set1_epi8(0x0f)));
  }
}

#if ERNIE_VNNI

// Both formats as unsigned weights u = w + offset (Q8_0: w xor 0x80 = w + 128; Q4_0: the nibble, w + 8):
// Σ w·x = Σ u·x − offset·Σ x, the second sum once per token and group, folded into vpdpbusd's accumulator.
template <class F>
struct WeightGroup {
  __m512i unsigned_w;
  hn::Vec<DotF> scale;

  static WeightGroup load(const uint8_t* block, int blocks, const uint8_t* end) {
    WeightGroup group;
    const __m512i w = LoadWeights<F>(block, blocks, end, group.scale);
    group.unsigned_w =
        std::is_same_v<F, Q8_0Format> ? _mm512_xor_si512(w, _mm512_set1_epi8(static_cast<char>(0x80))) : w;
    return group;
  }
};
template <class F>
struct ActivationGroup {
  __m512i x;
  __m512i minus_offset_x;  // −offset · (sum of the 4 activations of each int32 lane)
  hn::Vec<DotF> scale;

  static ActivationGroup load(const int8_t* q, const float* scales) {
    const __m512i x = _mm512_loadu_si512(q);
    const char offset = std::is_same_v<F, Q8_0Format> ? static_cast<char>(0x80) : 8;
    const __m512i offset_x = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(offset), x);
    return {x, _mm512_sub_epi32(_mm512_setzero_si512(), offset_x), ActivationScales(scales)};
  }
};
template <class F>
HWY_INLINE hn::Vec<DotI> GroupDot(const WeightGroup<F>& w, const ActivationGroup<F>& a) {
  return hn::Vec<DotI>{_mm512_dpbusd_epi32(a.minus_offset_x, w.unsigned_w, a.x)};
}

#else  // AVX-512 without VNNI: maddubs

template <class F>
struct WeightGroup;
template <class F>
struct ActivationGroup;

template <>
struct WeightGroup<Q8_0Format> {
  __m512i magnitude;  // |w|
  __mmask64 negative;
  hn::Vec<DotF> scale;

  static WeightGroup load(const uint8_t* block, int blocks, const uint8_t* end) {
    WeightGroup group;
    const __m512i w = LoadWeights<Q8_0Format>(block, blocks, end, group.scale);
    group.magnitude = _mm512_abs_epi8(w);
    group.negative = _mm512_movepi8_mask(w);
    return group;
  }
};
template <>
struct ActivationGroup<Q8_0Format> {
  __m512i x;
  hn::Vec<DotF> scale;

  static ActivationGroup load(const int8_t* q, const float* scales) {
    return {_mm512_loadu_si512(q), ActivationScales(scales)};
  }
};
HWY_INLINE hn::Vec<DotI> GroupDot(const WeightGroup<Q8_0Format>& w, const ActivationGroup<Q8_0Format>& a) {
  const __m512i signed_x = _mm512_mask_sub_epi8(a.x, w.negative, _mm512_setzero_si512(), a.x);
  return hn::Vec<DotI>{_mm512_madd_epi16(_mm512_maddubs_epi16(w.magnitude, signed_x), _mm512_set1_epi16(1))};
}

template <>
struct WeightGroup<Q4_0Format> {
  __m512i nibbles;
  hn::Vec<DotF> scale;

  static WeightGroup load(const uint8_t* block, int blocks, const uint8_t* end) {
    WeightGroup group;
    group.nibbles = LoadWeights<Q4_0Format>(block, blocks, end, group.scale);
    return group;
  }
};
template <>
struct ActivationGroup<Q4_0Format> {
  __m512i x;
  __m512i eight_x;  // 8·(x[2i] + x[2i+1]) as int16
  hn::Vec<DotF> scale;

  static ActivationGroup load(const int8_t* q, const float* scales) {
    const __m512i x = _mm512_loadu_si512(q);
    return {x, _mm512_maddubs_epi16(_mm512_set1_epi8(8), x), ActivationScales(scales)};
  }
};
HWY_INLINE hn::Vec<DotI> GroupDot(const WeightGroup<Q4_0Format>& w, const ActivationGroup<Q4_0Format>& a) {
  const __m512i pairs = _mm512_sub_epi16(_mm512_maddubs_epi16(w.nibbles, a.x), a.eight_x);
  return hn::Vec<DotI>{_mm512_madd_epi16(pairs, _mm512_set1_epi16(1))};
}

#endif  // ERNIE_VNNI

#elif ERNIE_X86_INT8_DOT  // AVX2: one block per 256-bit vector

constexpr int kGroupBlocks = 1;
using DotI = hn::Full256<int32_t>;
using DotF = hn::Full256<float>;

template <class F>
struct WeightGroup;
template <class F>
struct ActivationGroup;

template <>
struct WeightGroup<Q8_0Format> {
  __m256i magnitude;  // |w|
  __m256i w;          // whose signs move onto the activations
  hn::Vec<DotF> scale;

  static WeightGroup load(const uint8_t* block, int, const uint8_t*) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2));
    return {_mm256_sign_epi8(w, w), w, hn::Set(DotF(), LoadF16Scalar(block))};
  }
};
template <>
struct ActivationGroup<Q8_0Format> {
  __m256i x;
  hn::Vec<DotF> scale;

  static ActivationGroup load(const int8_t* q, const float* scales) {
    return {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q)), hn::Set(DotF(), scales[0])};
  }
};
HWY_INLINE hn::Vec<DotI> GroupDot(const WeightGroup<Q8_0Format>& w, const ActivationGroup<Q8_0Format>& a) {
  const __m256i pairs = _mm256_maddubs_epi16(w.magnitude, _mm256_sign_epi8(a.x, w.w));
  return hn::Vec<DotI>{_mm256_madd_epi16(pairs, _mm256_set1_epi16(1))};
}

template <>
struct WeightGroup<Q4_0Format> {
  __m256i nibbles;  // elements 0-31
  hn::Vec<DotF> scale;

  static WeightGroup load(const uint8_t* block, int, const uint8_t*) {
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2));
    const __m256i both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
    return {_mm256_and_si256(both, _mm256_set1_epi8(0x0f)), hn::Set(DotF(), LoadF16Scalar(block))};
  }
};
template <>
struct ActivationGroup<Q4_0Format> {
  __m256i x;
  __m256i eight_x;  // 8·(x[2i] + x[2i+1]) as int16
  hn::Vec<DotF> scale;

  static ActivationGroup load(const int8_t* q, const float* scales) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q));
    return {x, _mm256_maddubs_epi16(_mm256_set1_epi8(8), x), hn::Set(DotF(), scales[0])};
  }
};
HWY_INLINE hn::Vec<DotI> GroupDot(const WeightGroup<Q4_0Format>& w, const ActivationGroup<Q4_0Format>& a) {
  const __m256i pairs = _mm256_sub_epi16(_mm256_maddubs_epi16(w.nibbles, a.x), a.eight_x);
  return hn::Vec<DotI>{_mm256_madd_epi16(pairs, _mm256_set1_epi16(1))};
}

#else  // portable: one block as int16 vectors of up to 8 lanes (one on the scalar target)

constexpr int kGroupBlocks = 1;
using DotI16 = hn::CappedTag<int16_t, 8>;
using DotI = hn::RepartitionToWide<DotI16>;
using DotF = hn::Rebind<float, DotI>;
constexpr size_t kDotLanes = HWY_MIN(8, HWY_LANES(int16_t));
constexpr size_t kDotVectors = kQuantBlock / kDotLanes;

template <class F>
struct WeightGroup {
  hn::Vec<DotI16> w[kDotVectors];  // elements 0-31 as int16
  hn::Vec<DotF> scale;

  static WeightGroup load(const uint8_t* block, int, const uint8_t*) {
    const DotI16 d16;
    WeightGroup group;
    group.scale = hn::Set(DotF(), LoadF16Scalar(block));
    if constexpr (std::is_same_v<F, Q8_0Format>) {
      const hn::Rebind<int8_t, DotI16> d8;
      for (size_t v = 0; v < kDotVectors; ++v) {
        group.w[v] = hn::PromoteTo(d16, hn::LoadU(d8, reinterpret_cast<const int8_t*>(block + 2) + v * kDotLanes));
      }
    } else {
      const hn::Rebind<uint8_t, DotI16> d8;
      constexpr size_t kHalf = kQuantBlock / 2;
      for (size_t v = 0; v < kDotVectors; ++v) {
        const size_t element = v * kDotLanes;
        const auto bytes =
            hn::BitCast(d16, hn::PromoteTo(hn::RebindToUnsigned<DotI16>(), hn::LoadU(d8, block + 2 + element % kHalf)));
        const auto nibbles = element < kHalf ? hn::And(bytes, hn::Set(d16, 0x0f)) : hn::ShiftRight<4>(bytes);
        group.w[v] = hn::Sub(nibbles, hn::Set(d16, 8));
      }
    }
    return group;
  }
};
template <class F>
struct ActivationGroup {
  const int8_t* x;
  hn::Vec<DotF> scale;

  static ActivationGroup load(const int8_t* q, const float* scales) { return {q, hn::Set(DotF(), scales[0])}; }
};
template <class F>
HWY_INLINE hn::Vec<DotI> GroupDot(const WeightGroup<F>& w, const ActivationGroup<F>& a) {
  const DotI16 d16;
  const hn::Rebind<int8_t, DotI16> d8;
  const DotI d32;
  auto sum0 = hn::Zero(d32), sum1 = hn::Zero(d32);
  for (size_t v = 0; v < kDotVectors; ++v) {
    const auto x16 = hn::PromoteTo(d16, hn::LoadU(d8, a.x + v * kDotLanes));
    sum0 = hn::ReorderWidenMulAccumulate(d32, w.w[v], x16, sum0, sum1);
  }
  return hn::RearrangeToOddPlusEven(sum0, sum1);
}

#endif

#if ERNIE_VNNI
#pragma GCC pop_options
#endif

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
