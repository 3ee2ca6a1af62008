// Dequantization of ggml's block types that DType does not store (Q4_1, Q5_0, Q5_1, Q8_1 and the K-quants Q2_K..
// Q8_K), as llama-quantize writes them into GGUF files. They are widened at load and stored again as one of our types,
// so these run once per weight, not per token: plain scalar code, written from the block layouts of ggml-common.h.
#pragma once

#include <cstdint>

#include "core/ggml_type.h"

namespace ernie {

// Widens n elements (whole blocks) of `type`, stored at `in` (any alignment), into float32. Every GgmlType is
// accepted: the ones DType stores go through dequantize_row.
void dequantize_ggml_row(GgmlType type, const uint8_t* in, float* out, int64_t n);

}  // namespace ernie
