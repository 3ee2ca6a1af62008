#include "cli/common.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <sstream>

#include "core/cpu_topology.h"
#include "core/error.h"
#include "model/gguf_ernie.h"
#include "tokenizer/spm_vocabulary.h"

namespace ernie::cli {

void add_model_options(CLI::App& command, ModelOptions& options) {
  command.add_option("-m,--model", options.dir,
                     "Hugging Face checkpoint directory (config.json, model.safetensors, ...) or GGUF file; "
                     "default: the built-in demo model");
  command.add_option("-c,--ctx", options.context_length, "Context length: KV-cache capacity in tokens")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  command
      .add_option("-t,--threads", options.threads,
                  "Threads (default: one per physical performance core; on big.LITTLE CPUs only the big cores, "
                  "with the threads pinned to them)")
      ->check(CLI::PositiveNumber);
  command.add_option("--cpus", options.cpus,
                     "Pin the threads to these CPUs, e.g. 0-3,6 (default threads: one per physical core of the list)");
  command.add_option("--dtype", options.dtype,
                     "Convert the weights at load: f32, bf16, f16, int8 (q8_0) or int4 (q4_0)");
  command.add_option("--kv-dtype", options.kv_dtype,
                     "KV-cache type: f32, f16 or q8_0 (default: f32, f16 when the weights are quantized)");
  command
      .add_option("--lora", options.lora,
                  "LoRA adapter: a Hugging Face PEFT directory (adapter_config.json, adapter_model.safetensors), "
                  "as DIR or NAME=DIR (repeatable; ernie serve offers each by NAME)")
      ->allow_extra_args(false)  // one value per --lora
      ->type_name("[NAME=]DIR");
  command.add_option("--lora-scale", options.lora_scales, "Scale of the --lora before it (default 1.0)")
      ->allow_extra_args(false)
      ->type_name("S");
  command.add_flag("--lora-merge", options.lora_merge,
                   "Fold the --lora adapters into the weights at load (before any --dtype conversion): no per-token "
                   "cost, one adapter set for everything");
  options.command = &command;
}

std::vector<LoraFlag> lora_flags(const ModelOptions& options) {
  std::vector<LoraFlag> flags;
  size_t scales = 0;
  std::vector<bool> scaled;
  const auto add = [&](const std::string& value) {
    LoraFlag flag;
    const size_t eq = value.find('=');
    if (eq != std::string::npos && eq > 0 && value.find('/') > eq) {
      flag.name = value.substr(0, eq);
      flag.dir = value.substr(eq + 1);
    } else {
      flag.dir = value;
      flag.name = std::filesystem::path(value).lexically_normal().filename().string();
      if (flag.name.empty())
        flag.name = std::filesystem::path(value).lexically_normal().parent_path().filename().string();
    }
    if (flag.dir.empty()) fail("--lora ", value, ": no directory given");
    for (const LoraFlag& f : flags) {
      if (f.name == flag.name) fail("--lora: two adapters named \"", flag.name, "\" (use NAME=DIR)");
    }
    flags.push_back(flag);
    scaled.push_back(false);
  };
  const auto scale = [&](float s) {
    if (flags.empty()) fail("--lora-scale ", s, " comes before any --lora (it scales the --lora before it)");
    if (scaled.back()) fail("--lora-scale: two scales for the adapter ", flags.back().name);
    if (!std::isfinite(s)) fail("--lora-scale must be a finite number");
    flags.back().scale = s;
    scaled.back() = true;
  };
  if (!options.command) {
    for (const std::string& v : options.lora) add(v);
    if (!options.lora_scales.empty()) fail("--lora-scale needs the command line's order");
    return flags;
  }
  size_t next_lora = 0;
  for (const CLI::Option* option : options.command->parse_order()) {
    if (option->get_name() == "--lora" && next_lora < options.lora.size()) add(options.lora[next_lora++]);
    if (option->get_name() == "--lora-scale" && scales < options.lora_scales.size())
      scale(options.lora_scales[scales++]);
  }
  return flags;
}

DType parse_weight_dtype(const std::string& name) {
  std::string lower;
  for (char c : name) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower == "f32") return DType::F32;
  if (lower == "bf16") return DType::BF16;
  if (lower == "f16") return DType::F16;
  if (lower == "int8" || lower == "q8_0") return DType::Q8_0;
  if (lower == "int4" || lower == "q4_0") return DType::Q4_0;
  fail("unknown type \"", name, "\" (expected f32, bf16, f16, int8/q8_0 or int4/q4_0)");
}

std::optional<DType> kv_cache_dtype(const ModelOptions& options) {
  if (options.kv_dtype.empty()) return std::nullopt;
  const DType kv = parse_weight_dtype(options.kv_dtype);
  if (kv != DType::F32 && kv != DType::F16 && kv != DType::Q8_0) fail("--kv-dtype must be f32, f16 or q8_0");
  return kv;
}

SessionOptions session_options(const ModelOptions& options, const LoadedModel& loaded) {
  SessionOptions session{
      .context_length = options.context_length, .kv_dtype = kv_cache_dtype(options), .pool = loaded.pool.get()};
  for (const LoadedAdapter& a : loaded.adapters) session.lora.push_back({a.adapter.get(), a.scale});
  return session;
}

std::filesystem::path demo_model_dir() {
  // An installed ernie (the .deb's /usr/bin/ernie) has the demo in ../share/ernie/demo beside it; a build uses the
  // source tree's, whose path CMake compiles in.
  std::error_code error;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", error);
  if (!error) {
    const std::filesystem::path installed = exe.parent_path().parent_path() / "share" / "ernie" / "demo";
    if (std::filesystem::is_regular_file(installed / "config.json", error)) return installed;
  }
  return ERNIE_DEMO_MODEL_DIR;
}

std::filesystem::path checkpoint_dir(const std::string& model_flag) {
  if (!model_flag.empty()) return model_flag;
  const std::filesystem::path demo = demo_model_dir();
  if (!std::filesystem::is_regular_file(demo / "config.json")) {
    fail("no --model given, and the built-in demo model is missing from ", demo.string(),
         " (restore models/demo from the repository, or pass --model DIR)");
  }
  std::fprintf(stderr, "ernie: using the built-in demo model; pass --model DIR for ERNIE-4.5-0.3B\n");
  return demo;
}

bool has_tokenizer(const std::filesystem::path& checkpoint) {
  return is_gguf_file(checkpoint) ? GgufFile::open(checkpoint).find("tokenizer.ggml.tokens") != nullptr
                                  : std::filesystem::exists(checkpoint / "tokenizer.model");
}

bool has_random_weights(const std::filesystem::path& checkpoint) {
  return is_gguf_file(checkpoint) ? GgufFile::open(checkpoint).get_bool("ernie.random_weights").value_or(false)
                                  : std::filesystem::exists(checkpoint / "RANDOM_WEIGHTS");
}

LoadedModel load_model(const ModelOptions& options, bool with_tokenizer) {
  const auto start = std::chrono::steady_clock::now();
  const std::filesystem::path dir = checkpoint_dir(options.dir);
  LoadedModel loaded;
  const ThreadPlan plan = plan_threads(read_cpu_topology(), options.threads, options.cpus);
  loaded.pool = std::make_unique<ThreadPool>(plan.threads, plan.cpus);
  LoadOptions load_options{.pool = loaded.pool.get()};
  if (!options.dtype.empty()) load_options.dtype = parse_weight_dtype(options.dtype);
  const std::vector<LoraFlag> lora = lora_flags(options);
  if (options.lora_merge && lora.empty()) fail("--lora-merge needs at least one --lora");
  if (options.lora_merge) {
    for (const LoraFlag& f : lora) load_options.merge_lora.push_back({f.dir, f.scale});
  }
  loaded.model = Model::load(dir, load_options);
  if (!options.lora_merge) {
    for (const LoraFlag& f : lora)
      loaded.adapters.push_back({f.name, LoraAdapter::load(f.dir, loaded.model->config()), f.scale});
  }
  if (const GgufFile* gguf = loaded.model->gguf()) {  // one parse of the file serves all three
    loaded.defaults = generation_defaults_from_gguf(*gguf);
    if (with_tokenizer) loaded.tokenizer = Tokenizer::from_vocabulary(read_gguf_vocabulary(*gguf), dir.string());
  } else {
    loaded.defaults = GenerationDefaults::load(dir);
    if (with_tokenizer) loaded.tokenizer = Tokenizer::load(dir);
  }
  loaded.load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::string pinned;
  for (int cpu : plan.cpus) pinned += (pinned.empty() ? " pinned to CPUs " : ",") + std::to_string(cpu);
  std::fprintf(stderr, "ernie: loaded %s (%.1f M parameters, %s, %.1f MiB of weights) in %.3f s, %d threads%s\n",
               dir.c_str(), loaded.model->parameter_count() / 1e6, loaded.model->weight_dtype().c_str(),
               loaded.model->weight_bytes() / 1048576.0, loaded.load_seconds, loaded.pool->size(), pinned.c_str());
  for (const LoraFlag& f : lora) {
    std::fprintf(stderr, "ernie: LoRA adapter %s (%s), scale %g, %s\n", f.name.c_str(), f.dir.c_str(), f.scale,
                 options.lora_merge ? "merged into the weights" : "applied per token");
  }
  return loaded;
}

void add_generation_flags(CLI::App& command, GenerationFlags& flags) {
  command.add_option("-n,--max-tokens", flags.max_tokens, "Maximum new tokens (default 256)")
      ->check(CLI::NonNegativeNumber);
  command.add_option("--temperature", flags.temperature,
                     "Sampling temperature; 0 = greedy (default: generation_config.json)");
  command.add_option("--top-p", flags.top_p, "Nucleus sampling mass in (0, 1]");
  command.add_option("--top-k", flags.top_k, "Keep the k most likely tokens; 0 = off");
  command.add_option("--min-p", flags.min_p, "Drop tokens below min-p x the top probability");
  command.add_option("--repeat-penalty", flags.repetition_penalty, "Repetition penalty over the context (1 = off)");
  command.add_option("--presence-penalty", flags.presence_penalty, "OpenAI presence penalty");
  command.add_option("--frequency-penalty", flags.frequency_penalty, "OpenAI frequency penalty");
  command.add_option("--seed", flags.seed, "Random seed (default: random, printed to stderr)");
  command.add_flag("--ignore-eos", flags.ignore_eos, "Do not stop at end-of-sequence tokens");
  command.add_option("--stop", flags.stop, "Stop when this text is generated (repeatable)");
}

GenerationOptions resolve_generation_options(const GenerationFlags& flags, const LoadedModel& loaded) {
  GenerationOptions options = default_generation_options(loaded.model->config(), loaded.defaults);
  SamplingParams& s = options.sampling;
  if (flags.max_tokens) options.max_new_tokens = *flags.max_tokens;
  if (flags.temperature) s.temperature = *flags.temperature;
  if (flags.top_p) s.top_p = *flags.top_p;
  if (flags.top_k) s.top_k = *flags.top_k;
  if (flags.min_p) s.min_p = *flags.min_p;
  if (flags.repetition_penalty) s.repetition_penalty = *flags.repetition_penalty;
  if (flags.presence_penalty) s.presence_penalty = *flags.presence_penalty;
  if (flags.frequency_penalty) s.frequency_penalty = *flags.frequency_penalty;
  s.seed = flags.seed ? *flags.seed : std::random_device{}();
  options.ignore_eos = flags.ignore_eos;
  options.stop_strings = flags.stop;
  s.validate();
  if (!s.greedy()) std::fprintf(stderr, "ernie: sampling with seed %llu\n", static_cast<unsigned long long>(s.seed));
  return options;
}

void add_prompt_input(CLI::App& command, PromptInput& input) {
  CLI::Option_group* group = command.add_option_group("prompt", "exactly one of");
  group->add_option("-p,--prompt", input.text, "Prompt text");
  group->add_option("--ids", input.ids, "Prompt as token ids, e.g. 1,5,9");
  group->require_option(1);
}

std::vector<int32_t> parse_ids(const std::string& text) {
  std::string cleaned;
  for (char c : text) cleaned += (c == ',' || c == '[' || c == ']') ? ' ' : c;
  std::istringstream in(cleaned);
  std::vector<int32_t> ids;
  std::string word;
  while (in >> word) {
    size_t used = 0;
    long long value = -1;
    try {
      value = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != word.size() || value < 0 || value > INT32_MAX) fail("--ids: \"", word, "\" is not a token id");
    ids.push_back(static_cast<int32_t>(value));
  }
  if (ids.empty()) fail("--ids: no token ids given");
  return ids;
}

std::string ids_to_json(const std::vector<int32_t>& ids) {
  std::string out = "[";
  for (size_t i = 0; i < ids.size(); ++i) out += (i ? ", " : "") + std::to_string(ids[i]);
  return out + "]";
}

void report_generation(const GenerationResult& r) {
  const int generated = static_cast<int>(r.tokens.size());
  // The first token comes out of the prompt pass, so decode speed counts the steps after it.
  std::fprintf(
      stderr, "ernie: prompt %d tokens in %.1f ms (%.1f tok/s) | generated %d tokens, decode %.1f tok/s | finish: %s\n",
      r.prompt_tokens, r.prefill_seconds * 1e3, r.prompt_tokens / std::max(r.prefill_seconds, 1e-9), generated,
      generated > 1 ? (generated - 1) / std::max(r.decode_seconds, 1e-9) : 0.0,
      std::string(finish_reason_name(r.finish_reason)).c_str());
}

}  // namespace ernie::cli
