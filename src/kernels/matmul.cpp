#include "kernels/matmul.h"

#include <cstring>

namespace ernie {
namespace {

// Element loaders for each stored format; memcpy keeps loads from unaligned mapped memory well-defined.
struct LoadF32 {
  static float at(const uint8_t* p, int i) {
    float v;
    std::memcpy(&v, p + 4 * i, 4);
    return v;
  }
};
struct LoadBF16 {
  static float at(const uint8_t* p, int i) {
    uint16_t v;
    std::memcpy(&v, p + 2 * i, 2);
    return bf16_to_f32(v);
  }
};
struct LoadF16 {
  static float at(const uint8_t* p, int i) {
    uint16_t v;
    std::memcpy(&v, p + 2 * i, 2);
    return f16_to_f32(v);
  }
};

// Eight independent partial sums: lets the compiler keep them in vector registers without reassociating.
template <class Load>
float dot(const float* x, const uint8_t* w, int n) {
  float acc[8] = {};
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += x[i + j] * Load::at(w, i + j);
  }
  for (; i < n; ++i) acc[0] += x[i] * Load::at(w, i);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

template <class Load>
void matmul_rows(float* out, const float* x, int n_tokens, const WeightMatrix& w, const float* bias, int row_begin,
                 int row_end) {
  // Weight row outer, tokens inner: each weight row is read from memory once and reused from cache by every token.
  for (int r = row_begin; r < row_end; ++r) {
    const uint8_t* wr = w.row_bytes(r);
    const float b = bias ? bias[r] : 0.0f;
    for (int t = 0; t < n_tokens; ++t) {
      out[static_cast<int64_t>(t) * w.rows + r] = dot<Load>(x + static_cast<int64_t>(t) * w.cols, wr, w.cols) + b;
    }
  }
}

template <class Load>
void widen(float* out, const uint8_t* p, int n) {
  for (int i = 0; i < n; ++i) out[i] = Load::at(p, i);
}

}  // namespace

void matmul(float* out, const float* x, int n_tokens, const WeightMatrix& w, const float* bias, int row_begin,
            int row_end) {
  switch (w.dtype) {
    case DType::F32: return matmul_rows<LoadF32>(out, x, n_tokens, w, bias, row_begin, row_end);
    case DType::BF16: return matmul_rows<LoadBF16>(out, x, n_tokens, w, bias, row_begin, row_end);
    case DType::F16: return matmul_rows<LoadF16>(out, x, n_tokens, w, bias, row_begin, row_end);
  }
}

void read_row(float* out, const WeightMatrix& w, int64_t r) {
  const uint8_t* p = w.row_bytes(r);
  switch (w.dtype) {
    case DType::F32: return widen<LoadF32>(out, p, w.cols);
    case DType::BF16: return widen<LoadBF16>(out, p, w.cols);
    case DType::F16: return widen<LoadF16>(out, p, w.cols);
  }
}

}  // namespace ernie
