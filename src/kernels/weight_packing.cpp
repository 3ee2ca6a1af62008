// The packed layout of Q8_0/Q4_0 matrices (matmul.h): packing plain ggml rows into groups, and reading rows back.
#include <algorithm>
#include <bit>
#include <cstring>

#include "core/error.h"
#include "kernels/matmul.h"
#include "kernels/quant.h"

namespace ernie {
namespace {

// The packed layout (matmul.h) in steps: byte j (0..3) of step s of row `lane` in a block's quants is at
// step_byte(lane, s, j). A Q8_0 step holds quants 4s + j; a Q4_0 step quants 8s + j (low nibble) and 8s + 4 + j (high).
constexpr int kStepBytes = kPackedRows * 4;
size_t step_byte(int lane, int s, int j) {
  return static_cast<size_t>(s * kStepBytes + lane * 4 + j);
}

// Packing moves a step's 4 bytes of a row as one little-endian word.
static_assert(std::endian::native == std::endian::little);

// Or-s Q4_0 quant i into a plain block's zeroed quants q (ggml: quant i in the low nibble of byte i, quant 16 + i in
// its high nibble).
void set_q4_nibble(uint8_t* q, int i, uint8_t nibble) {
  q[i % (kQuantBlock / 2)] |= i < kQuantBlock / 2 ? nibble : nibble << 4;
}

size_t packed_scales_bytes(int blocks) {
  return static_cast<size_t>(blocks) * kPackedRows * sizeof(uint16_t);
}
size_t packed_quant_bytes(DType dtype) {
  return kPackedRows * dtype_block_bytes(dtype) - kPackedRows * sizeof(uint16_t);
}

// Blocks [b0, b0 + count) of row r of the packed matrix w, in the plain layout.
void unpack_weight_blocks(const WeightMatrix& w, int64_t r, int b0, int count, uint8_t* out) {
  const int blocks = w.cols / kQuantBlock;
  const int lane = static_cast<int>(r % kPackedRows);
  const uint8_t* group = w.data + r / kPackedRows * kPackedRows * w.row_bytes();
  for (int b = b0; b < b0 + count; ++b) {
    const uint8_t* quants = group + packed_scales_bytes(blocks) + b * packed_quant_bytes(w.dtype);
    uint8_t* block = out + (b - b0) * dtype_block_bytes(w.dtype);
    std::memcpy(block, group + packed_scales_bytes(b) + lane * sizeof(uint16_t), sizeof(uint16_t));
    uint8_t* q = block + sizeof(uint16_t);
    if (w.dtype == DType::Q8_0) {
      for (int s = 0; s < kQuantBlock / 4; ++s) {
        for (int j = 0; j < 4; ++j) q[4 * s + j] = quants[step_byte(lane, s, j)] ^ 0x80;
      }
    } else {
      std::memset(q, 0, kQuantBlock / 2);
      for (int s = 0; s < kQuantBlock / 8; ++s) {
        for (int j = 0; j < 4; ++j) {
          const uint8_t byte = quants[step_byte(lane, s, j)];
          set_q4_nibble(q, 8 * s + j, byte & 0x0f);
          set_q4_nibble(q, 8 * s + 4 + j, byte >> 4);
        }
      }
    }
  }
}

}  // namespace

void pack_weight_group(DType dtype, int cols, const uint8_t* rows, int n_rows, uint8_t* out) {
  if (!uses_quantized_input(dtype)) fail("pack_weight_group: ", dtype_name(dtype), " cannot be packed");
  const int blocks = cols / kQuantBlock;
  const size_t row_bytes = dtype_row_bytes(dtype, cols);
  // Missing rows: zero scales, quants that decode to 0 (every byte of the group is written).
  if (n_rows < kPackedRows) {
    std::memset(out, 0, packed_scales_bytes(blocks));
    std::memset(out + packed_scales_bytes(blocks), dtype == DType::Q8_0 ? 0x80 : 0x88,
                static_cast<size_t>(blocks) * packed_quant_bytes(dtype));
  }
  for (int lane = 0; lane < n_rows; ++lane) {
    for (int b = 0; b < blocks; ++b) {
      const uint8_t* block = rows + lane * row_bytes + b * dtype_block_bytes(dtype);
      std::memcpy(out + packed_scales_bytes(b) + lane * sizeof(uint16_t), block, sizeof(uint16_t));
      const uint8_t* q = block + sizeof(uint16_t);
      uint8_t* quants = out + packed_scales_bytes(blocks) + b * packed_quant_bytes(dtype);
      // A step's 4 bytes of the row at a time.
      for (int s = 0; s < kQuantBlock / (dtype == DType::Q8_0 ? 4 : 8); ++s) {
        uint32_t word;
        if (dtype == DType::Q8_0) {
          std::memcpy(&word, q + 4 * s, 4);
          word ^= 0x80808080u;  // int8 + 128
        } else {
          // Quants 8s + j and 8s + 4 + j: low nibbles of bytes 8s + j and 8s + 4 + j for s < 2, high ones of
          // bytes 8s - 16 + j and 8s - 12 + j after.
          uint32_t a, b;
          std::memcpy(&a, q + 8 * (s % 2), 4);
          std::memcpy(&b, q + 8 * (s % 2) + 4, 4);
          word = s < 2 ? (a & 0x0f0f0f0fu) | (b & 0x0f0f0f0fu) << 4 : (a >> 4 & 0x0f0f0f0fu) | (b & 0xf0f0f0f0u);
        }
        std::memcpy(quants + step_byte(lane, s, 0), &word, 4);
      }
    }
  }
}

void unpack_weight_row(const WeightMatrix& w, int64_t r, uint8_t* out) {
  unpack_weight_blocks(w, r, 0, w.cols / kQuantBlock, out);
}

void read_row(float* out, const WeightMatrix& w, int64_t r) {
  if (!w.packed) return dequantize_row(w.dtype, w.row(r), out, w.cols);
  // Packed rows are the embedding of a quantized model: one row per token, so a stack buffer for the unpacked row
  // (up to 8192 columns; wider rows are dequantized in pieces).
  constexpr int kMaxBlocks = 256;
  uint8_t plain[kMaxBlocks * sizeof(BlockQ8_0)];
  const int blocks = w.cols / kQuantBlock;
  for (int b0 = 0; b0 < blocks; b0 += kMaxBlocks) {
    const int count = std::min(kMaxBlocks, blocks - b0);
    unpack_weight_blocks(w, r, b0, count, plain);
    dequantize_row(w.dtype, plain, out + b0 * kQuantBlock, count * kQuantBlock);
  }
}

}  // namespace ernie
