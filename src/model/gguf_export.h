// Writes a loaded model as a GGUF file in llama.cpp's ernie4_5 layout, streaming: one tensor converted and written at
// a time, so memory holds one tensor's output above the mapped input.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>

#include "io/gguf.h"
#include "model/activation_scaling.h"
#include "model/calibration.h"
#include "model/model.h"

namespace ernie {

// Weight matrices in `matrix_type`, 1-D tensors (norms, biases) in F32 as llama.cpp keeps them; the ernie4_5
// hyper-parameters and general.* keys; then whatever `add_metadata` sets (tokenizer, sampling defaults). Reads
// model.tensors(), so the model must be loaded without LoadOptions::dtype. Raises ernie::Error if a matrix's rows are
// not whole blocks of matrix_type or the file cannot be written.
struct ExportOptions {
  // ernie calibrate's statistics: Q8_0 and Q4_0 matrices are then quantized to minimise the error weighted by their
  // inputs' mean squares (quantize_row_weighted); a matrix without statistics (an untied embedding) is rounded
  // plainly. The file records the statistics' origin under quantize.imatrix.*, as llama-quantize does.
  const ActivationStats* calibration = nullptr;
  // ernie quantize --awq: the tensors are first scaled as it says (exact in float math) and rounded with the
  // importance of their scaled inputs.
  const ActivationScaling* scaling = nullptr;
  ThreadPool* pool = nullptr;  // converts each tensor's rows in parallel when given
  // The LM head's type when it differs from matrix_type (ernie quantize --output-type, llama-quantize's
  // --output-tensor-type): lm_head.weight, or the embedding when it is tied to the head.
  std::optional<DType> output_type = std::nullopt;
};
void export_gguf(const Model& model, DType matrix_type, const std::filesystem::path& out,
                 const std::function<void(GgufWriter&)>& add_metadata = {}, const ExportOptions& options = {});

}  // namespace ernie
