// Matrix products against stored weights. A weight matrix is a view of W[rows, cols] in its stored dtype
// (a Linear layer's [out, in]); activations are float32, row-major [n_tokens, cols]. For integer weights (Q8_0,
// Q4_0) the activations are first quantized per 32-element block to int8 (dynamic quantization) and each block's
// dot product is accumulated in int32.
//
// Every output element depends only on its own input row and weight row: results never change with the number of
// tokens in the batch, the row range or the thread count (batched serving relies on this). They may differ in the
// last bits between SIMD targets (the best one the CPU supports is chosen once, at the first call).
//
// Cost: one token streams the weights once (memory-bound: several rows at a time, sequentially); several tokens reuse
// each weight vector from registers across a tile of tokens, with activations blocked for L2 and weights for L1.
// Nothing here allocates; calls on disjoint row ranges (or different outputs) may run concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "core/dtype.h"
#include "core/thread_pool.h"

namespace ernie {

// Q8_0 and Q4_0 matrices come in two layouts. The plain one is ggml's, as GGUF files store it; read_row and the
// references take it, the matmul kernels do not (they refuse it): a model packs its integer matrices at load, so that
// every integer matmul runs through one kernel family whatever file the weights came from. The packed layout
// (pack_weight_group) lets one SIMD dot-product instruction advance kPackedRows rows at once, each row in
// its own 32-bit lane, with no per-row horizontal sums: rows are taken in groups of kPackedRows (the last group
// padded with zero rows). A group stores first, block by block, its rows' F16 scales in row order, then, block by
// block, the quants in steps of 4 bytes per row, row after row. A Q8_0 step holds 4 consecutive quants of each row,
// each stored plus 128 as uint8; a Q4_0 step holds 8, quant j of the step in the low nibble of byte j and quant 4 + j
// in its high nibble (nibble = quant + 8, as in ggml). A packed group is exactly as large as its rows in the plain
// layout.
constexpr int kPackedRows = 16;

struct WeightMatrix {
  DType dtype = DType::F32;
  const uint8_t* data = nullptr;  // rows * row_bytes(), row-major; may be unaligned (mapped file)
  int rows = 0;
  int cols = 0;         // a multiple of dtype_block_elements(dtype)
  bool packed = false;  // Q8_0/Q4_0 in the packed layout (matmul needs it; fastest when data is 64-byte aligned)

  size_t row_bytes() const { return dtype_row_bytes(dtype, cols); }       // as stored in the plain layout
  const uint8_t* row(int64_t r) const { return data + r * row_bytes(); }  // plain layout only
  size_t bytes() const { return row_bytes() * (packed ? packed_rows(rows) : rows); }
  static int64_t packed_rows(int64_t rows) { return (rows + kPackedRows - 1) / kPackedRows * kPackedRows; }
};

// Writes n_rows <= kPackedRows consecutive plain rows of a Q8_0/Q4_0 matrix with cols columns as one packed group at
// out (kPackedRows * dtype_row_bytes(dtype, cols) bytes), zero rows standing in for missing ones.
void pack_weight_group(DType dtype, int cols, const uint8_t* rows, int n_rows, uint8_t* out);
// Row r of a packed matrix in the plain layout, into out (w.row_bytes() bytes).
void unpack_weight_row(const WeightMatrix& w, int64_t r, uint8_t* out);

// Whether matmuls with weights of this dtype read MatmulInput::quantized.
constexpr bool uses_quantized_input(DType weights) {
  return weights == DType::Q8_0 || weights == DType::Q4_0;
}

// Activation rows as the matmuls consume them: float32, plus (for integer weights) the same rows quantized with
// quantize_input. One input is prepared once and shared by every matrix that reads it (Q/K/V, gate/up).
struct MatmulInput {
  const float* x = nullptr;            // [n, cols]
  const uint8_t* quantized = nullptr;  // quantize_input(x), or null when no consumer has integer weights
  int n = 0;
  int cols = 0;
};

// Bytes quantize_input writes for n rows of cols (cols a multiple of 32).
size_t quantized_input_bytes(int n, int cols);
// Quantizes rows [row_begin, row_end) of x [*, cols] into out (laid out for all rows, as quantized_input_bytes): per
// 32-element block, scale = max|x| / 127 and q = x * (127 / max|x|) rounded to nearest even, so |q| <= 127; each
// block's sum of q is stored beside it (the packed kernels correct for unsigned weights with it).
void quantize_input(const float* x, int cols, int row_begin, int row_end, uint8_t* out);

// rmsnorm (ops.h) of rows [row_begin, row_end) of x [*, cols] into out, and, unless quantized is null, those rows of
// out quantized into `quantized` as quantize_input does, in one pass over each row. Bit-identical to rmsnorm followed
// by quantize_input. out may alias x.
void rmsnorm_quantize_input(float* out, uint8_t* quantized, const float* x, const float* weight, int cols, float eps,
                            int row_begin, int row_end);

// out[t, r] = sum_c x[t, c] * W[r, c] + bias[r] for t < in.n and r in [row_begin, row_end); out is [in.n, W.rows]
// and only the given rows are written; bias is [W.rows] or null. Q8_0/Q4_0 weights must be packed.
void matmul(float* out, const MatmulInput& in, const WeightMatrix& w, const float* bias, int row_begin, int row_end);

// The SwiGLU feed-forward's first half in one pass: out[t, r] = silu(g) * u with g = x·gate[r] + gate_bias[r] and
// u = x·up[r] + up_bias[r]; out is [in.n, gate.rows]. gate and up have the same shape and dtype.
void matmul_swiglu(float* out, const MatmulInput& in, const WeightMatrix& gate, const float* gate_bias,
                   const WeightMatrix& up, const float* up_bias, int row_begin, int row_end);

// One matrix of a parallel job: out = in × w^T (+ bias), or with `up` set, out = matmul_swiglu(in, w, up).
struct MatmulTask {
  float* out;
  const WeightMatrix* w;
  const float* bias = nullptr;
  const WeightMatrix* up = nullptr;
  const float* up_bias = nullptr;
};

// Runs every task on the pool as one job, split by output rows, so that e.g. Q, K and V cost one dispatch.
void matmul_parallel(ThreadPool& pool, const MatmulInput& in, std::span<const MatmulTask> tasks);

// Widens row r of W into out[W.cols] as float32 (embedding lookup).
void read_row(float* out, const WeightMatrix& w, int64_t r);

// The scalar definitions the fast kernels are tested against (slow; they allocate).
namespace reference {
void quantize_input(const float* x, int cols, int row_begin, int row_end, uint8_t* out);
void matmul(float* out, const MatmulInput& in, const WeightMatrix& w, const float* bias, int row_begin, int row_end);
void matmul_swiglu(float* out, const MatmulInput& in, const WeightMatrix& gate, const float* gate_bias,
                   const WeightMatrix& up, const float* up_bias, int row_begin, int row_end);
}  // namespace reference

}  // namespace ernie
