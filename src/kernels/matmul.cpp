#include "kernels/matmul.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/quant.h"

namespace ernie {
namespace {

// One 32-element block of a quantized activation row: value[i] = scale * q[i], scale = max|x| / 127.
struct ActivationBlock {
  float scale;
  int8_t q[kQuantBlock];
};

float silu(float z) {
  return z / (1.0f + std::exp(-z));
}

// Eight independent partial sums: lets the compiler keep them in vector registers without reassociating.
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
float dot_quantized(const uint8_t* w_row, DType dtype, const ActivationBlock* x, int cols) {
  float sum = 0.0f;
  for (int b = 0; b < cols / kQuantBlock; ++b) {
    int32_t acc = 0;
    float scale;
    if (dtype == DType::Q8_0) {
      BlockQ8_0 w;
      std::memcpy(&w, w_row + b * sizeof w, sizeof w);
      for (int i = 0; i < kQuantBlock; ++i) acc += int32_t{w.q[i]} * x[b].q[i];
      scale = f16_to_f32(w.scale);
    } else {
      BlockQ4_0 w;
      std::memcpy(&w, w_row + b * sizeof w, sizeof w);
      for (int i = 0; i < kQuantBlock / 2; ++i) {
        acc += ((w.q[i] & 0x0f) - 8) * int32_t{x[b].q[i]};
        acc += ((w.q[i] >> 4) - 8) * int32_t{x[b].q[i + kQuantBlock / 2]};
      }
      scale = f16_to_f32(w.scale);
    }
    sum += scale * x[b].scale * static_cast<float>(acc);
  }
  return sum;
}

const ActivationBlock* quantized_row(const MatmulInput& in, int t) {
  return reinterpret_cast<const ActivationBlock*>(in.quantized) + static_cast<size_t>(t) * (in.cols / kQuantBlock);
}

// Chunks of output rows small enough to balance the pool, large enough to amortise the dispatch.
int rows_per_chunk(int total_rows, int threads) {
  const int target_chunks = threads * 8;
  const int rows = (total_rows + target_chunks - 1) / target_chunks;
  return std::max(16, (rows + 15) / 16 * 16);
}

}  // namespace

size_t quantized_input_bytes(int n, int cols) {
  return static_cast<size_t>(n) * (cols / kQuantBlock) * sizeof(ActivationBlock);
}

void quantize_input(const float* x, int cols, int row_begin, int row_end, uint8_t* out) {
  auto* blocks = reinterpret_cast<ActivationBlock*>(out);
  const int per_row = cols / kQuantBlock;
  for (int t = row_begin; t < row_end; ++t) {
    for (int b = 0; b < per_row; ++b) {
      const float* v = x + static_cast<size_t>(t) * cols + b * kQuantBlock;
      ActivationBlock& block = blocks[static_cast<size_t>(t) * per_row + b];
      float amax = 0.0f;
      for (int i = 0; i < kQuantBlock; ++i) amax = std::max(amax, std::fabs(v[i]));
      block.scale = amax / 127.0f;
      const float inverse = amax != 0.0f ? 127.0f / amax : 0.0f;
      for (int i = 0; i < kQuantBlock; ++i) block.q[i] = static_cast<int8_t>(std::nearbyint(v[i] * inverse));
    }
  }
}

namespace reference {

void matmul(float* out, const MatmulInput& in, const WeightMatrix& w, const float* bias, int row_begin, int row_end) {
  const bool quantized = uses_quantized_input(w.dtype);
  for (int r = row_begin; r < row_end; ++r) {
    const float b = bias ? bias[r] : 0.0f;
    for (int t = 0; t < in.n; ++t) {
      float d = 0.0f;
      if (quantized) {
        d = dot_quantized(w.row(r), w.dtype, quantized_row(in, t), w.cols);
      } else {
        // The weight row widened a slice at a time on the stack (no allocation, any row length).
        constexpr int kSlice = 256;
        float widened[kSlice];
        const float* x = in.x + static_cast<size_t>(t) * in.cols;
        for (int c = 0; c < w.cols; c += kSlice) {
          const int n = std::min(kSlice, w.cols - c);
          dequantize_row(w.dtype, w.row(r) + dtype_row_bytes(w.dtype, c), widened, n);
          d += dot_f32(x + c, widened, n);
        }
      }
      out[static_cast<size_t>(t) * w.rows + r] = d + b;
    }
  }
}

}  // namespace reference

void matmul(float* out, const MatmulInput& in, const WeightMatrix& w, const float* bias, int row_begin, int row_end) {
  reference::matmul(out, in, w, bias, row_begin, row_end);
}

void matmul_swiglu(float* out, const MatmulInput& in, const WeightMatrix& gate, const float* gate_bias,
                   const WeightMatrix& up, const float* up_bias, int row_begin, int row_end) {
  // A few rows of gate and up at a time for one token, so both stay in registers or L1 until combined.
  constexpr int kRows = 16;
  float g[kRows], u[kRows];
  for (int r0 = row_begin; r0 < row_end; r0 += kRows) {
    const int rows = std::min(row_end - r0, kRows);
    const WeightMatrix gate_rows{gate.dtype, gate.row(r0), rows, gate.cols};
    const WeightMatrix up_rows{up.dtype, up.row(r0), rows, up.cols};
    for (int t = 0; t < in.n; ++t) {
      const MatmulInput token{in.x + static_cast<size_t>(t) * in.cols,
                              in.quantized ? reinterpret_cast<const uint8_t*>(quantized_row(in, t)) : nullptr, 1,
                              in.cols};
      matmul(g, token, gate_rows, gate_bias ? gate_bias + r0 : nullptr, 0, rows);
      matmul(u, token, up_rows, up_bias ? up_bias + r0 : nullptr, 0, rows);
      float* o = out + static_cast<size_t>(t) * gate.rows + r0;
      for (int r = 0; r < rows; ++r) o[r] = silu(g[r]) * u[r];
    }
  }
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
