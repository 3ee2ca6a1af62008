// Options and helpers shared by the `ernie` subcommands. Each subcommand lives in its own file and registers
// itself with register_<name>(app); main() only dispatches.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "engine/chat.h"
#include "engine/generator.h"
#include "model/config.h"
#include "model/session.h"
#include "tokenizer/tokenizer.h"

namespace ernie::cli {

struct ModelOptions {
  std::string dir;  // --model; empty means the built-in demo model
  int context_length = 4096;
  int threads = 0;       // 0: one per performance core (core/cpu_topology.h)
  std::string cpus;      // --cpus LIST ("0-3,6"): pin to these CPUs; empty: the performance cores where they differ
  std::string dtype;     // weight type to convert to at load; empty keeps the stored types
  std::string kv_dtype;  // KV-cache type; empty: F32 for float weights, F16 for quantized
  std::vector<std::string> lora;  // --lora [NAME=]DIR, repeatable
  std::vector<float> lora_scales;  // --lora-scale S, each for the --lora before it
  bool lora_merge = false;         // --lora-merge: fold the adapters into the weights at load
  const CLI::App* command = nullptr;  // the subcommand parsed, for the order of --lora and --lora-scale
};
void add_model_options(CLI::App& command, ModelOptions& options);

// The checkpoint (directory or GGUF file) to read: `model_flag` (--model) when given, else the demo model that ships in the
// repository (models/demo, located by the path CMake compiles in), announced in one stderr line. A missing demo
// folder raises ernie::Error.
std::filesystem::path checkpoint_dir(const std::string& model_flag);
// Where the demo model is: share/ernie/demo beside an installed binary (bin/../share), else the source tree's.
std::filesystem::path demo_model_dir();

// Whether the checkpoint carries a tokenizer: tokenizer.model in a directory, tokenizer.ggml.tokens in a GGUF file.
bool has_tokenizer(const std::filesystem::path& checkpoint);

// Whether the weights came from `ernie make-random`: its RANDOM_WEIGHTS marker in a directory, the
// ernie.random_weights flag that `ernie quantize` carries over into a GGUF file.
bool has_random_weights(const std::filesystem::path& checkpoint);

// A --lora flag: the adapter's directory, the name it is served under (NAME=, else the directory's name) and its
// --lora-scale.
struct LoraFlag {
  std::string name;
  std::filesystem::path dir;
  float scale = 1.0f;
};
// The --lora flags in order, each with the --lora-scale given after it (default 1). A --lora-scale before any --lora,
// two for one adapter, or a name given twice raises ernie::Error.
std::vector<LoraFlag> lora_flags(const ModelOptions& options);

struct LoadedAdapter {
  std::string name;
  std::shared_ptr<const LoraAdapter> adapter;
  float scale = 1.0f;
};

struct LoadedModel {
  std::unique_ptr<ThreadPool> pool;  // shared by loading and every session
  std::unique_ptr<Model> model;
  // The --lora adapters, unless --lora-merge folded them into the weights; session_options applies them all.
  std::vector<LoadedAdapter> adapters;
  std::optional<Tokenizer> tokenizer;
  GenerationDefaults defaults;
  double load_seconds = 0;
};
// Loads the checkpoint of checkpoint_dir(options.dir) (and its tokenizer when asked), reporting the time and
// memory plan on stderr.
LoadedModel load_model(const ModelOptions& options, bool with_tokenizer);
SessionOptions session_options(const ModelOptions& options, const LoadedModel& loaded);
// --kv-dtype parsed (f32 or f16; anything else raises ernie::Error); nullopt when not given.
std::optional<DType> kv_cache_dtype(const ModelOptions& options);

// "int8" / "q8_0" -> Q8_0, "int4" / "q4_0" -> Q4_0, "f32", "bf16", "f16"; raises ernie::Error on anything else.
DType parse_weight_dtype(const std::string& name);

// Flags that override generation_config.json's sampling defaults.
struct GenerationFlags {
  std::optional<int> max_tokens;
  std::optional<float> temperature, top_p, min_p, repetition_penalty, presence_penalty, frequency_penalty;
  std::optional<int> top_k;
  std::optional<uint64_t> seed;
  bool ignore_eos = false;
  std::vector<std::string> stop;
};
void add_generation_flags(CLI::App& command, GenerationFlags& flags);
GenerationOptions resolve_generation_options(const GenerationFlags& flags, const LoadedModel& loaded);

// The prompt as exactly one of --prompt TEXT or --ids 1,5,9; giving neither or both is a usage error.
struct PromptInput {
  std::optional<std::string> text;
  std::optional<std::string> ids;
};
void add_prompt_input(CLI::App& command, PromptInput& input);

// "1,5,9" or "[1, 5, 9]" -> ids; raises ernie::Error on anything else.
std::vector<int32_t> parse_ids(const std::string& text);
std::string ids_to_json(const std::vector<int32_t>& ids);

// One stderr line: prompt and generation speed, finish reason.
void report_generation(const GenerationResult& result);

void register_run(CLI::App& app);
void register_chat(CLI::App& app);
void register_logits(CLI::App& app);
void register_tokenize(CLI::App& app);
void register_info(CLI::App& app);
void register_make_random(CLI::App& app);
void register_serve(CLI::App& app);
void register_bench(CLI::App& app);
void register_accuracy(CLI::App& app);
void register_quantize(CLI::App& app);
void register_calibrate(CLI::App& app);

}  // namespace ernie::cli
