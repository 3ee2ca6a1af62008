// ernie quantize: a checkpoint (Hugging Face directory or GGUF file) to a GGUF file that llama.cpp loads too
// (arch ernie4_5, its tensor names and tokenizer metadata, ggml's block types), streamed by export_gguf.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <thread>

#include "cli/common.h"
#include "core/error.h"
#include "io/gguf.h"
#include "model/activation_scaling.h"
#include "model/calibration.h"
#include "model/gguf_ernie.h"
#include "model/gguf_export.h"
#include "tokenizer/spm_vocabulary.h"

namespace ernie::cli {
namespace {

struct QuantizeOptions {
  std::string model;
  std::string type;
  std::string out;
  std::string calibration;  // ernie calibrate's statistics; empty: plain rounding
  std::string output_type;  // the LM head's type; empty: --type
  int threads = 0;          // 0: every CPU
  bool awq = false;         // activation-aware scaling from the statistics
  float awq_alpha = 0.25f;
};

void quantize(const QuantizeOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  const std::filesystem::path in(o.model), out(o.out);
  const DType target = parse_weight_dtype(o.type);
  std::optional<DType> output_type;
  std::string types(dtype_name(target));
  if (!o.output_type.empty()) {
    output_type = parse_weight_dtype(o.output_type);
    types += ", LM head " + std::string(dtype_name(*output_type));
  }
  // The input stays mapped while the output is written: truncating it would pull the pages from under the reader.
  std::error_code ec;
  if (std::filesystem::equivalent(in, out, ec)) fail(out.string(), ": --out is the same file as --model");
  // Stored types stay as they are in the map (no --dtype): every tensor is read straight from the input.
  const auto model = Model::load(in);
  ThreadPool pool(o.threads > 0 ? o.threads : static_cast<int>(std::thread::hardware_concurrency()));
  const ModelConfig& config = model->config();
  std::optional<ActivationStats> calibration;
  std::optional<ActivationScaling> scaling;
  if (o.awq && o.calibration.empty()) fail("--awq needs --calibration (the statistics it chooses its scales from)");
  if (!o.calibration.empty()) {
    calibration = ActivationStats::load(o.calibration, config);
    if (!uses_quantized_input(target))
      std::fprintf(stderr,
                   "ernie: --calibration has no effect on %s weights: they are stored without rounding to levels\n",
                   std::string(dtype_name(target)).c_str());
    if (o.awq) {
      if (!uses_quantized_input(target)) fail("--awq scales inputs for q8_0 or q4_0 rounding, not ", o.type);
      if (!(o.awq_alpha >= 0.0f && o.awq_alpha <= 1.0f)) fail("--awq-alpha must be in [0, 1]");
      scaling = ActivationScaling::from(config, *calibration, o.awq_alpha);
    }
  }

  export_gguf(*model, target, out,
              [&](GgufWriter& writer) {
                if (has_tokenizer(in)) {
                  write_gguf_vocabulary(writer, Tokenizer::load(in).vocabulary(), config.vocab_size);
                } else {
                  write_gguf_vocabulary(writer, placeholder_vocabulary(config.vocab_size), config.vocab_size);
                  std::fprintf(
                      stderr,
                      "ernie: %s has no tokenizer: writing a placeholder vocabulary of %d entries (<unk>, <s>, </s>, "
                      "byte pieces, fillers) so that llama.cpp loads the file; text tokenizes only into bytes\n",
                      in.c_str(), config.vocab_size);
                }
                write_gguf_generation_defaults(writer, GenerationDefaults::load(in));
                if (has_random_weights(in))
                  writer.set("ernie.random_weights", true);  // so that figures measured on it say so
              },
              {.calibration = calibration ? &*calibration : nullptr,
               .scaling = scaling ? &*scaling : nullptr,
               .pool = &pool,
               .output_type = output_type});
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "ernie: wrote %s (%s%s, %.1f MiB) in %.2f s\n", out.c_str(), types.c_str(),
               scaling       ? ", calibrated, activation-scaled"
               : calibration ? ", calibrated"
                             : "",
               std::filesystem::file_size(out) / 1048576.0, seconds);
}

}  // namespace

void register_quantize(CLI::App& app) {
  auto options = std::make_shared<QuantizeOptions>();
  CLI::App* cmd = app.add_subcommand("quantize", "Write a checkpoint as a GGUF file (llama.cpp-compatible)");
  cmd->add_option("-m,--model", options->model, "Hugging Face checkpoint directory or GGUF file")->required();
  cmd->add_option("--type", options->type, "Type of the weight matrices: f32, bf16, f16, q8_0 or q4_0")->required();
  cmd->add_option("-o,--out", options->out, "Output .gguf file")->required();
  cmd->add_option("--calibration", options->calibration,
                  "Activation statistics (ernie calibrate, or llama-imatrix's GGUF): q8_0/q4_0 blocks then minimise "
                  "the activation-weighted error");
  cmd->add_flag("--awq", options->awq,
                "With --calibration: scale each matrix's input channels by rms(x)^alpha first (AWQ/SmoothQuant-style), "
                "folded into the norms, v_proj and up_proj so that the float model is unchanged");
  cmd->add_option(
      "--output-type", options->output_type,
      "Type of the LM head (the embedding, when tied to it), e.g. q8_0 beside --type q4_0 as llama-quantize's "
      "Q4_0 does (default: --type)");
  cmd->add_option("-t,--threads", options->threads, "Threads converting rows (default: every CPU)");
  cmd->add_option("--awq-alpha", options->awq_alpha, "The migration strength of --awq, in [0, 1]")
      ->capture_default_str();
  cmd->callback([options] { quantize(*options); });
}

}  // namespace ernie::cli
