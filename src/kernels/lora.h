// The two products of a low-rank adapter (LoRA, model/lora.h), y += scale · B(A x), over a set of activation rows
// that share one adapter: the "shrink" t = A x into the adapter's rank, and the "expand" y += scale · B t back to
// the projection's width. A is PEFT's lora_A, [rank, in] row-major; B is stored transposed, b_t = Bᵀ [rank, out], so
// that the expand streams it a row at a time. Rows are given by index (rows[i] selects row rows[i] of x, t and y,
// each with its own stride), so the rows of one adapter need not be adjacent in the batch. The kernels run a few
// rows against a few rows of A (or B) at once, so each weight loaded serves several rows.
//
// Each output element is computed the same way whatever rows and range a call covers, so splitting the work across
// threads (by rows, by k or by j) never changes a bit, and a row's result never depends on the other rows. Results
// may differ in the last bits between SIMD targets. Nothing here allocates.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ernie {

// Rows of a LoRA product: rows[0..n) index x, t and y, whose rows are x_stride / t_stride / y_stride floats apart.
struct LoraRows {
  const int32_t* rows;
  int n;
};

// t[r][k] = sum_c x[r][c] · a[k·in + c] for each row r and k in [k_begin, k_end).
void lora_shrink(float* t, size_t t_stride, const float* x, size_t x_stride, LoraRows rows, const float* a, int in,
                 int k_begin, int k_end);

// y[r][j] += scale · sum_k t[r][k] · b_t[k·out + j] (k in [0, rank)) for each row r and j in [j_begin, j_end).
void lora_expand(float* y, size_t y_stride, const float* t, size_t t_stride, LoraRows rows, const float* b_t, int rank,
                 int out, float scale, int j_begin, int j_end);

// The scalar definitions the SIMD versions are tested against (double accumulation).
namespace reference {
void lora_shrink(float* t, size_t t_stride, const float* x, size_t x_stride, LoraRows rows, const float* a, int in,
                 int k_begin, int k_end);
void lora_expand(float* y, size_t y_stride, const float* t, size_t t_stride, LoraRows rows, const float* b_t, int rank,
                 int out, float scale, int j_begin, int j_end);
}  // namespace reference

}  // namespace ernie
