// The per-token cost of an unmerged LoRA adapter: decode steps of `batch` sequences through forward(), with and
// without a random adapter on every sequence, measured alternately in one process so that both see the same machine.
// Prints the median step time of each and their ratio, per batch size.
//
//   build/bench_lora --model DIR [--rank 16] [--batches 1,8] [--steps 32] [--rounds 5] [--dtype q8_0] [--threads N]
//   build/bench_lora --model DIR --rank 16 --write-adapter OUT   (the random PEFT adapter, for ernie run/serve --lora)
//
// The adapter targets all seven projections of every layer (A and B uniform in +-0.02, lora_alpha = 2 r).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "io/safetensors.h"
#include "model/lora.h"
#include "model/model.h"
#include "model/session.h"

namespace ernie {
namespace {

void write_random_adapter(const std::filesystem::path& dir, const ModelConfig& c, int rank) {
  std::filesystem::create_directories(dir);
  std::vector<TensorToWrite> tensors;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    for (Projection p : kProjections) {
      const auto [out, in] = projection_shape(c, p);
      const std::string prefix = "base_model.model." + module_name(l, p);
      for (const auto& [suffix, shape] : {std::pair{".lora_A.weight", std::vector<int64_t>{rank, in}},
                                          std::pair{".lora_B.weight", std::vector<int64_t>{out, rank}}}) {
        const uint32_t seed = static_cast<uint32_t>(tensors.size() + 1);
        tensors.push_back({prefix + suffix, DType::F32, shape, [shape, seed](uint8_t* bytes) {
                             std::mt19937 rng(seed);
                             std::uniform_real_distribution<float> u(-0.02f, 0.02f);
                             auto* f = reinterpret_cast<float*>(bytes);
                             for (int64_t i = 0; i < shape[0] * shape[1]; ++i) f[i] = u(rng);
                           }});
      }
    }
  }
  write_safetensors(dir / "adapter_model.safetensors", tensors);
  const nlohmann::json config = {
      {"peft_type", "LORA"},
      {"r", rank},
      {"lora_alpha", 2 * rank},
      {"target_modules", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}},
      {"bias", "none"},
      {"task_type", "CAUSAL_LM"}};
  std::ofstream(dir / "adapter_config.json") << config.dump(2);
}

// Median seconds per decode step of `batch` sequences (each with a 32-token prompt run first).
double median_step(const Model& model, ThreadPool& pool, int batch, int steps, LoraStack lora) {
  constexpr int kPrompt = 32;
  KvCache cache(model.config(), KvCacheOptions{.blocks = KvCache::blocks_for(kPrompt + steps + 1) * batch,
                                               .dtype = default_kv_dtype(model),
                                               .prefix_reuse = false});
  Workspace ws(model, std::max(batch, kPrompt), &pool, kPrompt + steps + 1, lora_stack_rank(lora));
  std::vector<Sequence> seqs(batch, Sequence(kPrompt + steps + 1));
  std::vector<int32_t> prompt(kPrompt), tokens(batch);
  for (int i = 0; i < kPrompt; ++i) prompt[i] = 100 + 37 * i;
  std::vector<float> logits(static_cast<size_t>(batch) * model.config().vocab_size);
  for (Sequence& s : seqs) {
    if (!cache.reserve(s, kPrompt + steps)) fail("bench: no KV blocks");
    const Chunk c{&s, prompt, Logits::kNone, lora};
    forward(model, cache, ws, std::span(&c, 1), {});
  }
  std::vector<Chunk> step(batch);
  std::vector<double> times;
  for (int t = 0; t < steps; ++t) {
    for (int b = 0; b < batch; ++b) {
      tokens[b] = 1000 + 13 * t + b;
      step[b] = Chunk{&seqs[b], std::span(&tokens[b], 1), Logits::kLast, lora};
    }
    const auto start = std::chrono::steady_clock::now();
    forward(model, cache, ws, step, logits);
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  return times[times.size() / 2];
}

int run(int argc, char** argv) {
  std::string model_dir, write_adapter, dtype;
  int rank = 16, steps = 32, rounds = 5, threads = 0;
  std::vector<int> batches = {1, 8};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--model")
      model_dir = value;
    else if (flag == "--rank")
      rank = std::stoi(value);
    else if (flag == "--steps")
      steps = std::stoi(value);
    else if (flag == "--rounds")
      rounds = std::stoi(value);
    else if (flag == "--threads")
      threads = std::stoi(value);
    else if (flag == "--dtype")
      dtype = value;
    else if (flag == "--write-adapter")
      write_adapter = value;
    else if (flag == "--batches") {
      batches.clear();
      std::stringstream list(value);
      for (std::string b; std::getline(list, b, ',');) batches.push_back(std::stoi(b));
    } else {
      fail("unknown flag ", flag);
    }
  }
  if (model_dir.empty()) fail("usage: bench_lora --model DIR [--rank R] [--batches 1,8] [--write-adapter DIR]");
  ThreadPool pool(threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  LoadOptions load{.pool = &pool};
  if (dtype == "q8_0" || dtype == "int8") load.dtype = DType::Q8_0;
  if (dtype == "q4_0" || dtype == "int4") load.dtype = DType::Q4_0;
  const auto model = Model::load(model_dir, load);
  const std::filesystem::path adapter_dir =
      write_adapter.empty() ? std::filesystem::temp_directory_path() / ("ernie-bench-lora-" + std::to_string(getpid()))
                            : std::filesystem::path(write_adapter);
  write_random_adapter(adapter_dir, model->config(), rank);
  const auto adapter = LoraAdapter::load(adapter_dir, model->config());
  if (write_adapter.empty()) std::filesystem::remove_all(adapter_dir);
  if (!write_adapter.empty()) std::printf("wrote a rank-%d adapter to %s\n", rank, write_adapter.c_str());
  const LoraApplication application{adapter.get(), 1.0f};
  std::printf("model %s (%s), %d threads, rank-%d adapter on all 7 projections (%.1f MiB)\n", model_dir.c_str(),
              model->weight_dtype().c_str(), pool.size(), rank, adapter->bytes() / 1048576.0);
  std::printf("%6s %14s %14s %8s\n", "batch", "base ms/step", "lora ms/step", "ratio");
  for (int batch : batches) {
    std::vector<double> base, lora;
    for (int r = 0; r < rounds; ++r) {  // alternating, so that both see the same machine
      base.push_back(median_step(*model, pool, batch, steps, {}));
      lora.push_back(median_step(*model, pool, batch, steps, std::span(&application, 1)));
    }
    std::sort(base.begin(), base.end());
    std::sort(lora.begin(), lora.end());
    const double b = base[base.size() / 2], l = lora[lora.size() / 2];
    std::printf("%6d %14.2f %14.2f %8.3f\n", batch, b * 1e3, l * 1e3, l / b);
  }
  return 0;
}

}  // namespace
}  // namespace ernie

int main(int argc, char** argv) {
  try {
    return ernie::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_lora: %s\n", e.what());
    return 1;
  }
}
