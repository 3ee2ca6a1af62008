// ggml's tensor element types as GGUF files number them, with their block sizes. The five that DType stores
// bit-identically (F32, F16, BF16, Q8_0, Q4_0) load without requantizing; the others are dequantized at load
// (kernels/ggml_blocks.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "core/dtype.h"

namespace ernie {

// Numbered as in ggml.h.
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9, Q2_K = 10, Q3_K = 11, Q4_K = 12,
  Q5_K = 13, Q6_K = 14, Q8_K = 15, BF16 = 30,
};
struct GgmlTypeTraits {
  std::string_view name;  // "Q4_K"
  int block_elements;     // elements per block (1 for the float types)
  size_t block_bytes;
};
// Traits of a known type; nullopt for a type number this reader does not know.
std::optional<GgmlTypeTraits> ggml_type_traits(uint32_t type);
GgmlTypeTraits ggml_type_traits(GgmlType type);
// The DType stored bit-identically as this ggml type (F32, F16, BF16, Q8_0, Q4_0), else nullopt; and back.
std::optional<DType> dtype_of(GgmlType type);
GgmlType ggml_type_of(DType dtype);

}  // namespace ernie
