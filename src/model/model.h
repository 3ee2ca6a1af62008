// ERNIE-4.5 dense decoder: a loaded checkpoint (Model, shared and read-only) and one sequence's running state
// (Session: KV cache and activations, allocated once when it is created).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "kernels/rope.h"
#include "model/config.h"
#include "model/weights.h"

namespace ernie {

class Model {
 public:
  // Reads config.json, maps the safetensors file(s) and checks every tensor against the config before returning.
  // Any problem raises ernie::Error naming the file (and tensor).
  static std::unique_ptr<Model> load(const std::filesystem::path& dir);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  const std::filesystem::path& dir() const { return dir_; }

  int64_t parameter_count() const;   // tied embedding counted once
  size_t weight_bytes() const;       // bytes of all weight tensors as stored
  std::string weight_dtype() const;  // "BF16", or e.g. "BF16+F32" when mixed

 private:
  Model(std::filesystem::path dir, ModelConfig config, SafetensorsArchive archive);

  std::filesystem::path dir_;
  ModelConfig config_;
  SafetensorsArchive archive_;  // owns the mappings the weight views point into
  ModelWeights weights_;
};

struct SessionOptions {
  int context_length = 4096;   // KV-cache capacity in tokens; capped at max_position_embeddings
  int max_batch_tokens = 128;  // prompt tokens processed per matrix pass; longer prompts go in chunks
};

// Called with the residual stream as the forward pass goes: index 0 = token embeddings, i in 1..L = after decoder
// layer i-1, L+1 = after the final RMSNorm. `rows` is [n_tokens, hidden]. For tests and debugging.
using LayerObserver = std::function<void(int index, std::span<const float> rows)>;

class Session {
 public:
  Session(const Model& model, const SessionOptions& options);

  // Runs `tokens` at positions position() .. position()+n-1, appending them to the KV cache, and returns the
  // logits of the last one ([vocab_size], valid until the next call). Raises ernie::Error, leaving the session
  // unchanged, if an id is outside the vocabulary or the context would overflow.
  std::span<const float> forward(std::span<const int32_t> tokens);
  // The same, writing the logits of every token into all_logits ([tokens.size(), vocab_size]).
  void forward(std::span<const int32_t> tokens, std::span<float> all_logits);

  int position() const { return position_; }
  int context_length() const { return context_length_; }
  int vocab_size() const { return config_.vocab_size; }
  // Forgets cached tokens from position n on (n <= position()), e.g. to reuse a shared chat prefix.
  void truncate(int n);
  void reset() { position_ = 0; }
  void set_observer(LayerObserver observer) { observer_ = std::move(observer); }

  size_t kv_cache_bytes() const;
  size_t scratch_bytes() const;

  // Raises ernie::Error if forward(tokens) would be refused (id outside the vocabulary, context overflow).
  void check_input(std::span<const int32_t> tokens) const;

 private:
  void run_chunk(const int32_t* tokens, int n, float* logits, bool all_logits);
  void attention_block(const LayerWeights& layer, int layer_index, int n);
  void mlp_block(const LayerWeights& layer, int n);
  void observe(int index, const float* rows, int n) const;
  float* k_cache(int layer) {
    return k_cache_.data() + static_cast<size_t>(layer) * context_length_ * config_.kv_dim();
  }
  float* v_cache(int layer) {
    return v_cache_.data() + static_cast<size_t>(layer) * context_length_ * config_.kv_dim();
  }

  const Model& model_;
  const ModelConfig& config_;
  int context_length_;
  int max_batch_tokens_;
  int position_ = 0;
  RopeTable rope_;
  LayerObserver observer_;

  // KV cache: [layers, context_length, kv_heads * head_dim] each.
  std::vector<float> k_cache_, v_cache_;
  // Activations for up to max_batch_tokens rows.
  std::vector<float> x_;         // residual stream [B, hidden]
  std::vector<float> normed_;    // [B, hidden]
  std::vector<float> q_;         // [B, heads * head_dim]
  std::vector<float> attn_out_;  // [B, heads * head_dim]
  std::vector<float> proj_out_;  // [B, hidden]
  std::vector<float> gate_;      // [B, intermediate]
  std::vector<float> up_;        // [B, intermediate]
  std::vector<float> logits_;    // [vocab]
};

// Decodes one token for each of several independent sessions (each at its own position), writing each one's logits
// into logits[i * vocab_size ...]. Same results as calling forward() on each session in turn; it exists so that a
// batching scheduler can read the weights once per step for every running sequence. Checks every input before
// running any, so an error leaves all sessions unchanged.
void decode_batch(std::span<Session* const> sessions, std::span<const int32_t> tokens, std::span<float> logits);

}  // namespace ernie
