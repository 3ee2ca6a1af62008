#include "model/gguf_export.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "kernels/quant.h"
#include "model/gguf_ernie.h"

namespace ernie {
namespace {

// llama.cpp's general.file_type (LLAMA_FTYPE_*): what a file's matrices mostly are.
uint32_t llama_file_type(DType dtype) {
  switch (dtype) {
    case DType::F32: return 0;
    case DType::F16: return 1;
    case DType::Q4_0: return 2;
    case DType::Q8_0: return 7;
    case DType::BF16: return 32;
  }
  return 0;
}

}  // namespace

void export_gguf(const Model& model, DType matrix_type, const std::filesystem::path& out,
                 const std::function<void(GgufWriter&)>& add_metadata, const ExportOptions& options) {
  const ActivationStats* calibration = options.calibration;
  const ActivationScaling* scaling = options.scaling;
  ThreadPool serial(1);
  ThreadPool& pool = options.pool ? *options.pool : serial;
  const ModelConfig& config = model.config();
  GgufWriter writer(out);
  const std::filesystem::path& in = model.path();
  writer.set("general.name", in.filename().empty() ? in.parent_path().filename().string() : in.stem().string());
  write_gguf_config(writer, config);
  writer.set("general.file_type", llama_file_type(matrix_type));
  if (uses_quantized_input(matrix_type)) writer.set("general.quantization_version", uint32_t{2});
  const bool weighted = calibration && uses_quantized_input(matrix_type);
  if (weighted) {
    const ActivationStats::Provenance& from = calibration->provenance();
    if (!from.file.empty()) writer.set("quantize.imatrix.file", from.file);
    if (!from.datasets.empty()) writer.set("quantize.imatrix.dataset", from.datasets.front());
    writer.set("quantize.imatrix.entries_count", static_cast<int32_t>(calibration->matrices_with_stats()));
    writer.set("quantize.imatrix.chunks_count", static_cast<int32_t>(from.chunks));
  }
  if (add_metadata) add_metadata(writer);

  const std::vector<TensorSpec> specs = expected_tensors(config);
  const std::string head = config.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
  auto type_of = [&](const TensorSpec& spec) {
    if (spec.shape.size() == 1) return DType::F32;
    return spec.name == head && options.output_type ? *options.output_type : matrix_type;
  };
  for (const TensorSpec& spec : specs) {
    if (spec.shape.back() % dtype_block_elements(type_of(spec)) != 0) {
      fail(spec.name, ": rows of ", spec.shape.back(), " elements cannot be stored as ", dtype_name(type_of(spec)));
    }
    writer.declare_tensor(gguf_tensor_name(spec.name), ggml_type_of(type_of(spec)), spec.shape);
  }
  std::vector<uint8_t> buffer;
  for (const TensorSpec& spec : specs) {
    const TensorView& t = model.tensors().by_name.at(spec.name);
    const DType to = type_of(spec);
    const ChannelStats* stats =
        calibration && spec.shape.size() == 2 && uses_quantized_input(to) ? calibration->of(spec.name) : nullptr;
    const std::vector<float> importance = !stats    ? std::vector<float>{}
                                          : scaling ? scaling->importance(spec.name, *stats)
                                                    : stats->mean_squares();
    const int64_t cols = spec.shape.back(), rows = t.element_count() / cols;
    const size_t in_row = dtype_row_bytes(t.dtype, cols), out_row = dtype_row_bytes(to, cols);
    buffer.resize(out_row * rows);
    constexpr int64_t kRowsPerTask = 64;
    pool.run(static_cast<int>((rows + kRowsPerTask - 1) / kRowsPerTask), [&](int task) {
      std::vector<float> row(cols);
      for (int64_t r = task * kRowsPerTask; r < std::min(rows, (task + 1) * kRowsPerTask); ++r) {
        if (t.dtype == to && !scaling) {  // bytes as they are: a same-type export is exact
          std::memcpy(buffer.data() + r * out_row, t.data + r * in_row, out_row);
          continue;
        }
        dequantize_row(t.dtype, t.data + r * in_row, row.data(), cols);
        if (scaling) scaling->apply(spec.name, r, row);
        if (stats) {
          quantize_row_weighted(to, row.data(), importance.data(), buffer.data() + r * out_row, cols);
        } else {
          quantize_row(to, row.data(), buffer.data() + r * out_row, cols);
        }
      }
    });
    writer.write_tensor(buffer);
    release_mapped_range(t.data, t.nbytes);  // read once: keep the input's pages from adding up in resident memory
  }
  writer.finish();
}

}  // namespace ernie
