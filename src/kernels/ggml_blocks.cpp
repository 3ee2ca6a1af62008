#include "kernels/ggml_blocks.h"

#include <cstring>

#include "core/error.h"
#include "kernels/quant.h"

namespace ernie {
namespace {

constexpr int kSuperBlock = 256;  // QK_K: elements per K-quant super-block

float half_at(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return f16_to_f32(bits);
}

// Q4_1: f16 d, f16 m, 16 bytes of nibbles (low halves = elements 0..15, high halves = 16..31); x = d*q + m.
void q4_1(const uint8_t* b, float* y) {
  const float d = half_at(b), m = half_at(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = (qs[j] & 0xF) * d + m;
    y[j + 16] = (qs[j] >> 4) * d + m;
  }
}

// Q5_0 / Q5_1: as Q4_0 / Q4_1 with a fifth bit per element in a 32-bit mask (bit j for element j).
void q5(const uint8_t* b, float* y, bool with_min) {
  const float d = half_at(b), m = with_min ? half_at(b + 2) : 0.0f;
  const uint8_t* p = b + (with_min ? 4 : 2);
  uint32_t qh;
  std::memcpy(&qh, p, 4);
  const uint8_t* qs = p + 4;
  const int offset = with_min ? 0 : 16;
  for (int j = 0; j < 16; ++j) {
    const int lo = (qs[j] & 0xF) | (((qh >> j) & 1) << 4);
    const int hi = (qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
    y[j] = (lo - offset) * d + m;
    y[j + 16] = (hi - offset) * d + m;
  }
}

// Q8_1: f16 d, f16 sum (unused here), 32 int8.
void q8_1(const uint8_t* b, float* y) {
  const float d = half_at(b);
  for (int j = 0; j < 32; ++j) y[j] = d * static_cast<int8_t>(b[4 + j]);
}

// Q2_K: 16 bytes of 4-bit (scale, min) pairs, 64 bytes of 2-bit values, f16 d, f16 dmin. 16 groups of 16: each half
// of the block reads 32 bytes, whose four 2-bit planes are four pairs of groups.
void q2_k(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* q = b + 16;
  const float d = half_at(b + 80), dmin = half_at(b + 82);
  int group = 0;
  for (int half = 0; half < 2; ++half, q += 32) {
    for (int shift = 0; shift < 8; shift += 2) {
      for (int part = 0; part < 2; ++part, ++group) {
        const float scale = d * (scales[group] & 0xF), min = dmin * (scales[group] >> 4);
        for (int l = 0; l < 16; ++l) *y++ = scale * ((q[part * 16 + l] >> shift) & 3) - min;
      }
    }
  }
}

// The 16 signed 6-bit group scales of Q3_K, packed in 12 bytes: low nibbles in bytes 0..7 (groups 0..7 low halves,
// 8..15 high halves), the top two bits in bytes 8..11.
void q3_k_scales(const uint8_t* packed, int* scales) {
  for (int i = 0; i < 16; ++i) {
    const int low = i < 8 ? packed[i] & 0xF : packed[i - 8] >> 4;
    const int high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
    scales[i] = (low | (high << 4)) - 32;
  }
}

// Q3_K: 32 bytes of high bits, 64 bytes of 2-bit low parts, 12 bytes of scales, f16 d. A value is its 2 low bits
// minus 4 unless its high bit is set.
void q3_k(const uint8_t* b, float* y) {
  const uint8_t* hmask = b;
  const uint8_t* q = b + 32;
  int scales[16];
  q3_k_scales(b + 96, scales);
  const float d = half_at(b + 108);
  int group = 0;
  uint8_t bit = 1;
  for (int half = 0; half < 2; ++half, q += 32) {
    for (int shift = 0; shift < 8; shift += 2, bit <<= 1) {
      for (int part = 0; part < 2; ++part, ++group) {
        const float scale = d * scales[group];
        for (int l = 0; l < 16; ++l) {
          const int k = part * 16 + l;
          *y++ = scale * (((q[k] >> shift) & 3) - ((hmask[k] & bit) ? 0 : 4));
        }
      }
    }
  }
}

// Q4_K and Q5_K's 6-bit scale and min of sub-block j (0..7), packed in 12 bytes.
void k4_scale_min(int j, const uint8_t* packed, int& scale, int& min) {
  if (j < 4) {
    scale = packed[j] & 63;
    min = packed[j + 4] & 63;
  } else {
    scale = (packed[j + 4] & 0xF) | ((packed[j - 4] >> 6) << 4);
    min = (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4);
  }
}

// Q4_K: f16 d, f16 dmin, 12 bytes of scales/mins, 128 bytes of nibbles; eight sub-blocks of 32, each 64 elements
// sharing 32 bytes (low nibbles first). Q5_K adds 32 bytes of fifth bits (bit s of byte l for sub-block s).
void q45_k(const uint8_t* b, float* y, bool five_bits) {
  const float d = half_at(b), dmin = half_at(b + 2);
  const uint8_t* packed = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* q = b + (five_bits ? 48 : 16);
  for (int sub = 0; sub < 8; ++sub) {
    int sc, m;
    k4_scale_min(sub, packed, sc, m);
    const float scale = d * sc, min = dmin * m;
    const uint8_t* bytes = q + (sub / 2) * 32;
    for (int l = 0; l < 32; ++l) {
      int value = sub % 2 == 0 ? bytes[l] & 0xF : bytes[l] >> 4;
      if (five_bits && ((qh[l] >> sub) & 1)) value += 16;
      *y++ = scale * value - min;
    }
  }
}

// Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 int8 scales, f16 d; values are 6 bits minus 32.
void q6_k(const uint8_t* b, float* y) {
  const float d = half_at(b + 208);
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
  for (int half = 0; half < 2; ++half, ql += 64, qh += 32, sc += 8, y += 128) {
    for (int l = 0; l < 32; ++l) {
      const int g = l / 16;
      const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * sc[g] * q1;
      y[l + 32] = d * sc[g + 2] * q2;
      y[l + 64] = d * sc[g + 4] * q3;
      y[l + 96] = d * sc[g + 6] * q4;
    }
  }
}

// Q8_K: f32 d, 256 int8, 16 int16 group sums (unused here).
void q8_k(const uint8_t* b, float* y) {
  float d;
  std::memcpy(&d, b, 4);
  for (int j = 0; j < kSuperBlock; ++j) y[j] = d * static_cast<int8_t>(b[4 + j]);
}

}  // namespace

void dequantize_ggml_row(GgmlType type, const uint8_t* in, float* out, int64_t n) {
  if (const auto dtype = dtype_of(type)) {
    dequantize_row(*dtype, in, out, n);
    return;
  }
  const GgmlTypeTraits traits = ggml_type_traits(type);
  if (n % traits.block_elements != 0) fail("dequantize: ", n, " elements are not whole ", traits.name, " blocks");
  for (int64_t i = 0; i < n; i += traits.block_elements, in += traits.block_bytes, out += traits.block_elements) {
    switch (type) {
      case GgmlType::Q4_1: q4_1(in, out); break;
      case GgmlType::Q5_0: q5(in, out, false); break;
      case GgmlType::Q5_1: q5(in, out, true); break;
      case GgmlType::Q8_1: q8_1(in, out); break;
      case GgmlType::Q2_K: q2_k(in, out); break;
      case GgmlType::Q3_K: q3_k(in, out); break;
      case GgmlType::Q4_K: q45_k(in, out, false); break;
      case GgmlType::Q5_K: q45_k(in, out, true); break;
      case GgmlType::Q6_K: q6_k(in, out); break;
      case GgmlType::Q8_K: q8_k(in, out); break;
      default: fail("dequantize: unexpected type ", traits.name);
    }
  }
}

}  // namespace ernie
