// Low-rank adapters (LoRA) in Hugging Face PEFT's format, applied to the seven projections of each decoder layer:
// y = W x + scale · B(A x), with A [r, in] and B [out, r]. An adapter is immutable once loaded and shared by every
// sequence that uses it; forward() applies the adapters of each chunk's stack (Chunk::lora) to that chunk's rows
// only, so sequences with different adapters share one pass over the base weights. Model::load can instead fold an
// adapter into the weights (LoadOptions::merge_lora).
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "model/config.h"
#include "model/weights.h"

namespace ernie {

// The module's name in the Hugging Face model: "model.layers.3.self_attn.q_proj".
std::string module_name(int layer, Projection p);
// The projection's [out, in] in a model of this config.
std::array<int, 2> projection_shape(const ModelConfig& config, Projection p);

// One adapted projection: delta(x) = scale · B(A x).
struct LoraModule {
  int rank = 0;
  int in = 0, out = 0;
  float scale = 0;         // lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA (this module's r and alpha)
  std::vector<float> a;    // A [rank, in]
  std::vector<float> b_t;  // Bᵀ [rank, out]
};

class LoraAdapter {
 public:
  // Reads a PEFT LoRA directory (adapter_config.json + adapter_model.safetensors with F32/BF16/F16 tensors) for a
  // model of `config`. Honours r, lora_alpha, use_rslora, target_modules (a list of names or a regex),
  // layers_to_transform, rank_pattern and alpha_pattern. Any mismatch raises ernie::Error in one line naming the file
  // and the tensor or key: a missing A or B, a wrong shape, a rank of 0, an unknown or unsupported module (lm_head,
  // embeddings), DoRA, a LoRA bias, modules_to_save, a non-finite weight. `dir` may instead be a llama.cpp GGUF
  // adapter file (general.type "adapter", "<tensor>.lora_a"/".lora_b", scale adapter.lora.alpha / r).
  static std::shared_ptr<const LoraAdapter> load(const std::filesystem::path& dir, const ModelConfig& config);

  const std::filesystem::path& path() const { return path_; }
  // Null when the adapter leaves this projection alone.
  const LoraModule* module(int layer, Projection p) const {
    const LoraModule& m = layers_[layer][static_cast<int>(p)];
    return m.rank > 0 ? &m : nullptr;
  }
  bool adapts(Projection p) const { return adapted_[static_cast<int>(p)]; }  // in any layer
  int layers() const { return static_cast<int>(layers_.size()); }
  int max_rank() const { return max_rank_; }
  size_t bytes() const;
  // Unique to this load in this process: prefix-cache blocks computed under the adapter are keyed by it, so a
  // reloaded adapter never reuses an old one's blocks.
  uint64_t id() const { return id_; }

 private:
  LoraAdapter() = default;

  std::filesystem::path path_;
  std::vector<std::array<LoraModule, kProjectionCount>> layers_;
  std::array<bool, kProjectionCount> adapted_{};
  int max_rank_ = 0;
  uint64_t id_ = 0;
};

// One adapter applied with a multiplier on its own scale (--lora-scale, a request's scale).
struct LoraApplication {
  const LoraAdapter* adapter = nullptr;
  float scale = 1.0f;
};

// The adapters applied to a sequence's rows, summed in order; empty: the base model.
using LoraStack = std::span<const LoraApplication>;

// The rank forward() needs room for to run a row under this stack (Workspace's max_lora_rank).
int lora_stack_rank(LoraStack stack);
// Keys the KV blocks computed under this stack (0 for none): distinct for different adapters or scales.
uint64_t lora_cache_key(LoraStack stack);

}  // namespace ernie
