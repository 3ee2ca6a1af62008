#include "kernels/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

// Compiled once per SIMD target; quantize_row and dequantize_row at the end dispatch to the best one.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/quant.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/simd-inl.h"

HWY_BEFORE_NAMESPACE();
namespace ernie::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Every function here computes exactly what the reference computes (the same IEEE operations per element), so the
// bytes are identical; only the order of independent work differs.

// At most one block's worth of lanes, so that a block is a whole number of vectors on every target.
using BlockTag = hn::CappedTag<float, kQuantBlock>;

void QuantizeQ8_0(const float* x, uint8_t* out, int64_t n) {
  const BlockTag df;
  const hn::RebindToSigned<BlockTag> di;
  const hn::Rebind<int8_t, BlockTag> d8;
  const size_t lanes = hn::Lanes(df);
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    const float* v = x + b * kQuantBlock;
    auto magnitude = hn::Zero(df);
    for (size_t i = 0; i < kQuantBlock; i += lanes) magnitude = hn::Max(magnitude, hn::Abs(hn::LoadU(df, v + i)));
    const float scale = hn::GetLane(hn::MaxOfLanes(df, magnitude)) / 127.0f;
    const auto inverse = hn::Set(df, scale != 0.0f ? 1.0f / scale : 0.0f);
    BlockQ8_0 block;
    block.scale = f32_to_f16(scale);
    for (size_t i = 0; i < kQuantBlock; i += lanes) {
      const auto q = hn::ConvertTo(di, RoundHalfAway(df, hn::Mul(hn::LoadU(df, v + i), inverse)));
      hn::StoreU(hn::DemoteTo(d8, q), d8, block.q + i);
    }
    std::memcpy(out + b * sizeof block, &block, sizeof block);
  }
}

void QuantizeQ4_0(const float* x, uint8_t* out, int64_t n) {
  const BlockTag df;
  const hn::RebindToSigned<BlockTag> di;
  const hn::Rebind<uint8_t, BlockTag> d8;
  const hn::CappedTag<uint8_t, kQuantBlock / 2> dpack;
  const size_t lanes = hn::Lanes(df), pack_lanes = hn::Lanes(dpack);
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    const float* v = x + b * kQuantBlock;
    auto magnitude = hn::Zero(df);
    for (size_t i = 0; i < kQuantBlock; i += lanes) magnitude = hn::Max(magnitude, hn::Abs(hn::LoadU(df, v + i)));
    const float amax = hn::GetLane(hn::MaxOfLanes(df, magnitude));
    // The first element of largest magnitude keeps its sign (the reference's strict '>' scan); all-zero gives +0.
    float extreme = 0.0f;
    if (amax != 0.0f) {
      for (int i = 0; i < kQuantBlock; ++i) {
        if (std::fabs(v[i]) == amax) {
          extreme = v[i];
          break;
        }
      }
    }
    const float scale = extreme / -8.0f;
    const auto inverse = hn::Set(df, scale != 0.0f ? 1.0f / scale : 0.0f);
    HWY_ALIGN uint8_t nibbles[kQuantBlock];
    for (size_t i = 0; i < kQuantBlock; i += lanes) {
      const auto shifted = hn::Add(hn::Mul(hn::LoadU(df, v + i), inverse), hn::Set(df, 8.5f));
      const auto q = hn::Min(hn::ConvertTo(di, shifted), hn::Set(di, 15));  // truncation, as the cast to int
      hn::Store(hn::DemoteTo(d8, q), d8, nibbles + i);
    }
    BlockQ4_0 block;
    block.scale = f32_to_f16(scale);
    for (size_t i = 0; i < kQuantBlock / 2; i += pack_lanes) {
      const auto low = hn::Load(dpack, nibbles + i), high = hn::Load(dpack, nibbles + kQuantBlock / 2 + i);
      hn::StoreU(hn::Or(low, hn::ShiftLeft<4>(high)), dpack, block.q + i);
    }
    std::memcpy(out + b * sizeof block, &block, sizeof block);
  }
}

template <class Encode>
void QuantizeHalf(const float* x, uint8_t* out, int64_t n, Encode encode) {
  const hn::ScalableTag<float> df;
  const hn::Rebind<uint16_t, decltype(df)> d16;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    hn::StoreU(encode(df, hn::LoadU(df, x + i)), d16, reinterpret_cast<uint16_t*>(out + 2 * i));
  }
  if (i < n) {
    HWY_ALIGN float in[HWY_MAX_BYTES / sizeof(float)] = {};
    HWY_ALIGN uint16_t bits[HWY_MAX_BYTES / sizeof(float)];
    std::memcpy(in, x + i, (n - i) * sizeof(float));
    hn::Store(encode(df, hn::Load(df, in)), d16, bits);
    std::memcpy(out + 2 * i, bits, (n - i) * 2);
  }
}

void QuantizeRow(DType dtype, const float* x, uint8_t* out, int64_t n) {
  switch (dtype) {
    case DType::F32: std::memcpy(out, x, n * sizeof(float)); return;
    case DType::BF16: return QuantizeHalf(x, out, n, [](auto df, auto v) HWY_ATTR { return EncodeBF16(df, v); });
    case DType::F16: return QuantizeHalf(x, out, n, [](auto df, auto v) HWY_ATTR { return EncodeF16(df, v); });
    case DType::Q8_0: return QuantizeQ8_0(x, out, n);
    case DType::Q4_0: return QuantizeQ4_0(x, out, n);
  }
}

template <class E>
void WidenRow(const uint8_t* in, float* out, int64_t n) {
  const hn::ScalableTag<float> df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) hn::StoreU(LoadWidened(df, E{}, in + i * E::kBytes), df, out + i);
  if (i < n) {
    HWY_ALIGN uint8_t bytes[HWY_MAX_BYTES] = {};
    HWY_ALIGN float widened[HWY_MAX_BYTES / sizeof(float)];
    std::memcpy(bytes, in + i * E::kBytes, (n - i) * E::kBytes);
    hn::Store(LoadWidened(df, E{}, bytes), df, widened);
    std::memcpy(out + i, widened, (n - i) * sizeof(float));
  }
}

// One block's int8 values q (Q8_0) or nibbles minus 8 (Q4_0) times the block scale.
template <class Block>
void DequantizeBlocks(const uint8_t* in, float* out, int64_t n) {
  const BlockTag df;
  const hn::RebindToSigned<BlockTag> di;
  const size_t lanes = hn::Lanes(df);
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    Block block;
    std::memcpy(&block, in + b * sizeof block, sizeof block);
    HWY_ALIGN int8_t q[kQuantBlock];
    if constexpr (std::is_same_v<Block, BlockQ8_0>) {
      std::memcpy(q, block.q, kQuantBlock);
    } else {
      for (int i = 0; i < kQuantBlock / 2; ++i) {
        q[i] = static_cast<int8_t>((block.q[i] & 0x0f) - 8);
        q[i + kQuantBlock / 2] = static_cast<int8_t>((block.q[i] >> 4) - 8);
      }
    }
    const auto scale = hn::Set(df, LoadF16Scalar(in + b * sizeof block));
    const hn::Rebind<int8_t, BlockTag> d8;
    for (size_t i = 0; i < kQuantBlock; i += lanes) {
      const auto values = hn::ConvertTo(df, hn::PromoteTo(di, hn::Load(d8, q + i)));
      hn::StoreU(hn::Mul(scale, values), df, out + b * kQuantBlock + i);
    }
  }
}

void DequantizeRow(DType dtype, const uint8_t* in, float* out, int64_t n) {
  switch (dtype) {
    case DType::F32: std::memcpy(out, in, n * sizeof(float)); return;
    case DType::BF16: return WidenRow<BF16Elements>(in, out, n);
    case DType::F16: return WidenRow<F16Elements>(in, out, n);
    case DType::Q8_0: return DequantizeBlocks<BlockQ8_0>(in, out, n);
    case DType::Q4_0: return DequantizeBlocks<BlockQ4_0>(in, out, n);
  }
}

}  // namespace ernie::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace ernie {

HWY_EXPORT(QuantizeRow);
HWY_EXPORT(DequantizeRow);

void quantize_row(DType dtype, const float* x, uint8_t* out, int64_t n) {
  HWY_DYNAMIC_DISPATCH(QuantizeRow)(dtype, x, out, n);
}

void dequantize_row(DType dtype, const uint8_t* in, float* out, int64_t n) {
  HWY_DYNAMIC_DISPATCH(DequantizeRow)(dtype, in, out, n);
}

namespace reference {
namespace {

void quantize_q8_0(const float* x, BlockQ8_0& block) {
  float amax = 0.0f;
  for (int i = 0; i < kQuantBlock; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float scale = amax / 127.0f;
  const float inverse = scale != 0.0f ? 1.0f / scale : 0.0f;
  block.scale = f32_to_f16(scale);
  for (int i = 0; i < kQuantBlock; ++i) block.q[i] = static_cast<int8_t>(std::round(x[i] * inverse));
}

void quantize_q4_0(const float* x, BlockQ4_0& block) {
  // The signed extreme maps to -8, so the full range [-8, 7] is used on its side.
  float extreme = 0.0f;
  for (int i = 0; i < kQuantBlock; ++i) {
    if (std::fabs(x[i]) > std::fabs(extreme)) extreme = x[i];
  }
  const float scale = extreme / -8.0f;
  const float inverse = scale != 0.0f ? 1.0f / scale : 0.0f;
  block.scale = f32_to_f16(scale);
  const auto nibble = [&](float v) { return static_cast<uint8_t>(std::min(15, static_cast<int>(v * inverse + 8.5f))); };
  for (int i = 0; i < kQuantBlock / 2; ++i) {
    block.q[i] = static_cast<uint8_t>(nibble(x[i]) | (nibble(x[i + kQuantBlock / 2]) << 4));
  }
}

template <class Block, class Fn>
void for_each_block(const uint8_t* data, int64_t n, Fn&& fn) {
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    Block block;
    std::memcpy(&block, data + b * sizeof(Block), sizeof(Block));
    fn(b * kQuantBlock, block);
  }
}

}  // namespace

void quantize_row(DType dtype, const float* x, uint8_t* out, int64_t n) {
  switch (dtype) {
    case DType::F32: std::memcpy(out, x, n * sizeof(float)); return;
    case DType::BF16:
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t v = dtype == DType::BF16 ? f32_to_bf16(x[i]) : f32_to_f16(x[i]);
        std::memcpy(out + 2 * i, &v, 2);
      }
      return;
    case DType::Q8_0:
      for (int64_t b = 0; b < n / kQuantBlock; ++b) {
        BlockQ8_0 block;
        quantize_q8_0(x + b * kQuantBlock, block);
        std::memcpy(out + b * sizeof block, &block, sizeof block);
      }
      return;
    case DType::Q4_0:
      for (int64_t b = 0; b < n / kQuantBlock; ++b) {
        BlockQ4_0 block;
        quantize_q4_0(x + b * kQuantBlock, block);
        std::memcpy(out + b * sizeof block, &block, sizeof block);
      }
      return;
  }
}

void dequantize_row(DType dtype, const uint8_t* in, float* out, int64_t n) {
  switch (dtype) {
    case DType::F32: std::memcpy(out, in, n * sizeof(float)); return;
    case DType::BF16:
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t v;
        std::memcpy(&v, in + 2 * i, 2);
        out[i] = dtype == DType::BF16 ? bf16_to_f32(v) : f16_to_f32(v);
      }
      return;
    case DType::Q8_0:
      for_each_block<BlockQ8_0>(in, n, [&](int64_t at, const BlockQ8_0& block) {
        const float scale = f16_to_f32(block.scale);
        for (int i = 0; i < kQuantBlock; ++i) out[at + i] = scale * block.q[i];
      });
      return;
    case DType::Q4_0:
      for_each_block<BlockQ4_0>(in, n, [&](int64_t at, const BlockQ4_0& block) {
        const float scale = f16_to_f32(block.scale);
        for (int i = 0; i < kQuantBlock / 2; ++i) {
          out[at + i] = scale * ((block.q[i] & 0x0f) - 8);
          out[at + i + kQuantBlock / 2] = scale * ((block.q[i] >> 4) - 8);
        }
      });
      return;
  }
}

}  // namespace reference
}  // namespace ernie
#endif  // HWY_ONCE
