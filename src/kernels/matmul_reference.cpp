// The scalar definitions the SIMD matmuls and the activation quantization are tested against (namespace reference).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>

#include "kernels/matmul.h"
#include "kernels/matmul_internal.h"
#include "kernels/quant.h"

namespace ernie::reference {
namespace {

using matmul_detail::ActivationRows;

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

}  // namespace

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
      int32_t sum = 0;
      for (int i = 0; i < kQuantBlock; ++i) {
        q[b * kQuantBlock + i] = static_cast<int8_t>(std::nearbyint(v[i] * inverse));
        sum += q[b * kQuantBlock + i];
      }
      std::memcpy(row + ActivationRows::values_bytes(cols) + ActivationRows::scales_bytes(cols) + b * sizeof sum, &sum,
                  sizeof sum);
    }
  }
}

void matmul(float* out, const MatmulInput& in, const WeightMatrix& w, const float* bias, int row_begin, int row_end) {
  const bool quantized = uses_quantized_input(w.dtype);
  const ActivationRows activations{in.quantized, in.cols};
  // The reference is for tests; it widens (or unpacks) a weight row at a time into a heap buffer.
  std::unique_ptr<float[]> widened(quantized ? nullptr : new float[w.cols]);
  std::unique_ptr<uint8_t[]> unpacked(w.packed ? new uint8_t[w.row_bytes()] : nullptr);
  for (int r = row_begin; r < row_end; ++r) {
    if (!quantized) reference::dequantize_row(w.dtype, w.row(r), widened.get(), w.cols);
    if (w.packed) unpack_weight_row(w, r, unpacked.get());
    const uint8_t* w_row = w.packed ? unpacked.get() : w.row(r);
    const float b = bias ? bias[r] : 0.0f;
    for (int t = 0; t < in.n; ++t) {
      const float d = quantized ? dot_quantized(w_row, w.dtype, activations.q(t), activations.scales(t), w.cols)
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

}  // namespace ernie::reference
