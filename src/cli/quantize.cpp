// ernie quantize: a checkpoint (Hugging Face directory or GGUF file) to a GGUF file that llama.cpp loads too
// (arch ernie4_5, its tensor names and tokenizer metadata, ggml's block types). It streams: the input stays mapped and
// each tensor is converted and written in turn, so memory holds one tensor's output above the mapped input.
#include <chrono>
#include <cstring>
#include <cstdio>
#include <filesystem>

#include "cli/common.h"
#include "core/error.h"
#include "io/gguf.h"
#include "kernels/quant.h"
#include "model/gguf_ernie.h"
#include "model/weights.h"
#include "tokenizer/spm_vocabulary.h"

namespace ernie::cli {
namespace {

struct QuantizeOptions {
  std::string model;
  std::string type;
  std::string out;
};

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

void quantize(const QuantizeOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  const std::filesystem::path in(o.model), out(o.out);
  const DType target = parse_weight_dtype(o.type);
  // Stored types stay as they are in the map (no --dtype): every tensor is read straight from the input.
  const auto model = Model::load(in);
  const ModelConfig& config = model->config();

  GgufWriter writer(out);
  writer.set("general.name", in.filename().empty() ? in.parent_path().filename().string() : in.filename().string());
  write_gguf_config(writer, config);
  writer.set("general.file_type", llama_file_type(target));
  if (uses_quantized_input(target)) writer.set("general.quantization_version", uint32_t{2});
  if (has_tokenizer(in)) {
    write_gguf_vocabulary(writer, Tokenizer::load(in).vocabulary(), config.vocab_size);
  } else {
    write_gguf_vocabulary(writer, placeholder_vocabulary(config.vocab_size), config.vocab_size);
    std::fprintf(stderr,
                 "ernie: %s has no tokenizer: writing a placeholder vocabulary of %d entries (<unk>, <s>, </s>, "
                 "byte pieces, fillers) so that llama.cpp loads the file; text tokenizes only into bytes\n",
                 in.c_str(), config.vocab_size);
  }
  write_gguf_generation_defaults(writer, GenerationDefaults::load(in));
  if (has_random_weights(in)) writer.set("ernie.random_weights", true);  // so that figures measured on it say so

  // Matrices in the asked type; 1-D tensors (norms, biases) in F32, as llama.cpp keeps them.
  const std::vector<TensorSpec> specs = expected_tensors(config);
  auto type_of = [&](const TensorSpec& spec) { return spec.shape.size() == 1 ? DType::F32 : target; };
  for (const TensorSpec& spec : specs) {
    if (spec.shape.back() % dtype_block_elements(type_of(spec)) != 0) {
      fail(spec.name, ": rows of ", spec.shape.back(), " elements cannot be stored as ", dtype_name(target));
    }
    writer.declare_tensor(gguf_tensor_name(spec.name), ggml_type_of(type_of(spec)), spec.shape);
  }
  std::vector<uint8_t> buffer;
  std::vector<float> row;
  for (const TensorSpec& spec : specs) {
    const TensorView& t = model->tensors().by_name.at(spec.name);
    const DType to = type_of(spec);
    const int64_t cols = spec.shape.back(), rows = t.element_count() / cols;
    const size_t in_row = dtype_row_bytes(t.dtype, cols), out_row = dtype_row_bytes(to, cols);
    buffer.resize(out_row * rows);
    row.resize(cols);
    for (int64_t r = 0; r < rows; ++r) {
      if (t.dtype == to) {
        std::memcpy(buffer.data() + r * out_row, t.data + r * in_row, out_row);
        continue;
      }
      dequantize_row(t.dtype, t.data + r * in_row, row.data(), cols);
      quantize_row(to, row.data(), buffer.data() + r * out_row, cols);
    }
    writer.write_tensor(buffer);
    release_mapped_range(t.data, t.nbytes);  // read once: keep the input's pages from adding up in resident memory
  }
  writer.finish();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "ernie: wrote %s (%s, %zu tensors, %.1f MiB) in %.2f s\n", out.c_str(),
               std::string(dtype_name(target)).c_str(), specs.size(), std::filesystem::file_size(out) / 1048576.0,
               seconds);
}

}  // namespace

void register_quantize(CLI::App& app) {
  auto options = std::make_shared<QuantizeOptions>();
  CLI::App* cmd = app.add_subcommand("quantize", "Write a checkpoint as a GGUF file (llama.cpp-compatible)");
  cmd->add_option("-m,--model", options->model, "Hugging Face checkpoint directory or GGUF file")->required();
  cmd->add_option("--type", options->type, "Type of the weight matrices: f32, bf16, f16, q8_0 or q4_0")->required();
  cmd->add_option("-o,--out", options->out, "Output .gguf file")->required();
  cmd->callback([options] { quantize(*options); });
}

}  // namespace ernie::cli
