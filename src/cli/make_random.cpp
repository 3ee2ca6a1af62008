// ernie make-random: a checkpoint with a given config.json's exact shapes and random weights, so anyone can measure
// speed and memory without downloading the real model (random weights run at exactly the real model's speed; their
// text is noise).
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "cli/common.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "kernels/quant.h"
#include "model/weights.h"

namespace ernie::cli {
namespace {

struct MakeRandomOptions {
  std::string config;
  std::string out;
  std::string dtype = "bf16";
  std::string tokenizer_from;
  uint64_t seed = 1;
};

// splitmix64: a fast, well-mixed stream; each tensor gets its own from (seed, index) so files are reproducible.
struct SplitMix {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  float uniform() { return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f; }
};

void make_random(const MakeRandomOptions& o) {
  const std::filesystem::path out(o.out);
  std::filesystem::create_directories(out);
  std::filesystem::copy_file(o.config, out / "config.json", std::filesystem::copy_options::overwrite_existing);
  const ModelConfig config = ModelConfig::load(out);
  const DType dtype = parse_weight_dtype(o.dtype);
  if (dtype != DType::F32 && dtype != DType::BF16 && dtype != DType::F16) {
    fail("make-random writes f32, bf16 or f16 (quantize at load with --dtype, or with ernie quantize)");
  }

  std::vector<TensorToWrite> tensors;
  uint64_t index = 0;
  for (const TensorSpec& spec : expected_tensors(config)) {
    const bool is_vector = spec.shape.size() == 1;
    const bool is_norm = spec.name.find("norm") != std::string::npos;
    const uint64_t stream = o.seed * 0x100000001b3ull + index++;
    tensors.push_back({spec.name, dtype, spec.shape, [=](uint8_t* bytes) {
                         int64_t count = 1;
                         for (int64_t d : spec.shape) count *= d;
                         // Uniform with the standard deviation of the usual 0.02 initialisation; norms at 1 and
                         // biases small, so activations stay in the real model's range.
                         const float scale = is_norm ? 0.0f : (is_vector ? 0.01f : 0.02f * 1.7320508f);
                         SplitMix rng{stream};
                         std::vector<float> row(std::min<int64_t>(count, 1 << 16));
                         for (int64_t done = 0; done < count; done += static_cast<int64_t>(row.size())) {
                           const int64_t n = std::min<int64_t>(row.size(), count - done);
                           for (int64_t i = 0; i < n; ++i) row[i] = (is_norm ? 1.0f : 0.0f) + scale * rng.uniform();
                           quantize_row(dtype, row.data(), bytes + dtype_row_bytes(dtype, done), n);
                         }
                       }});
  }
  write_safetensors(out / "model.safetensors", tensors);
  std::FILE* f = std::fopen((out / "generation_config.json").c_str(), "w");
  if (!f) fail((out / "generation_config.json").string(), ": cannot create file");
  std::fprintf(f, "{\"do_sample\": false, \"bos_token_id\": %d, \"eos_token_id\": %d}\n", config.bos_token_id,
               config.eos_token_ids.empty() ? 2 : config.eos_token_ids.front());
  std::fclose(f);
  // A marker that benchmarks read, so every figure measured on this checkpoint says it came from random weights.
  std::ofstream(out / "RANDOM_WEIGHTS") << "made by ernie make-random --seed " << o.seed << ": speed and memory only\n";
  if (!o.tokenizer_from.empty()) {
    for (const char* name :
         {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"}) {
      const auto from = std::filesystem::path(o.tokenizer_from) / name;
      if (std::filesystem::exists(from)) {
        std::filesystem::copy_file(from, out / name, std::filesystem::copy_options::overwrite_existing);
      }
    }
  }
  std::fprintf(stderr, "ernie: wrote %s: random %s weights with the shapes of %s (for speed and memory tests only)\n",
               out.c_str(), std::string(dtype_name(dtype)).c_str(), o.config.c_str());
}

}  // namespace

void register_make_random(CLI::App& app) {
  auto options = std::make_shared<MakeRandomOptions>();
  CLI::App* cmd = app.add_subcommand("make-random", "Write a random-weights checkpoint with a config.json's shapes");
  cmd->add_option("--config", options->config, "config.json to copy (e.g. the official ERNIE-4.5-0.3B one)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("-o,--out", options->out, "Output directory")->required();
  cmd->add_option("--dtype", options->dtype, "f32, bf16 or f16")->capture_default_str();
  cmd->add_option("--seed", options->seed, "Random seed")->capture_default_str();
  cmd->add_option("--tokenizer-from", options->tokenizer_from, "Copy the tokenizer files from this checkpoint");
  cmd->callback([options] { make_random(*options); });
}

}  // namespace ernie::cli
