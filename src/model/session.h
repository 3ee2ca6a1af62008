// One token stream on its own: a KvCache sized for one context, its Sequence and a Workspace, for the callers that
// run a single sequence (ernie run, chat, logits, accuracy, bench, tests). Every pass goes through forward().
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "model/kv_cache.h"
#include "model/model.h"

namespace ernie {

struct SessionOptions {
  int context_length = 4096;   // KV-cache capacity in tokens; capped at max_position_embeddings
  int max_batch_tokens = 128;  // rows per pass: the prompt chunk size
  // KV-cache element type; nullopt: F32 when every weight is a float type (exact), F16 with quantized weights.
  std::optional<DType> kv_dtype = std::nullopt;
  ThreadPool* pool = nullptr;  // runs the matmuls and attention; null runs everything on the calling thread
  // Adapters applied unmerged to every token (--lora); the adapters must outlive the session.
  std::vector<LoraApplication> lora = {};
};

// The KV-cache type a session or scheduler uses when none is asked for.
DType default_kv_dtype(const Model& model);

class Session {
 public:
  Session(const Model& model, const SessionOptions& options);

  // Runs `tokens` at positions position() .. position()+n-1, appending them to the KV cache, and returns the
  // logits of the last one ([vocab_size], valid until the next call). Raises ernie::Error, leaving the session
  // unchanged, if an id is outside the vocabulary or the context would overflow. Allocates nothing.
  std::span<const float> forward(std::span<const int32_t> tokens);
  // The same, writing the logits of every token into all_logits ([tokens.size(), vocab_size]).
  void forward(std::span<const int32_t> tokens, std::span<float> all_logits);

  int position() const { return sequence_.position(); }
  int context_length() const { return sequence_.max_positions(); }
  int vocab_size() const { return model_.config().vocab_size; }
  DType kv_dtype() const { return cache_.dtype(); }
  // Forgets cached tokens from position n on (n <= position()), e.g. to reuse a shared chat prefix.
  void truncate(int n) { cache_.truncate(sequence_, n); }
  void reset() { cache_.release(sequence_); }
  void set_observer(LayerObserver observer) { workspace_.observer = std::move(observer); }
  void set_activation_observer(ActivationObserver observer) { workspace_.activation_observer = std::move(observer); }
  // Adds every later pass's time per op to *profile (nullptr stops). Costs two clock reads per op.
  void set_profile(ForwardProfile* profile) { workspace_.profile = profile; }

  // Reserved bytes; the KV cache's pages become resident only as positions are filled.
  size_t kv_cache_bytes() const { return cache_.bytes(); }
  size_t scratch_bytes() const { return workspace_.bytes() + logits_.size() * sizeof(float); }

  // Raises ernie::Error if forward(tokens) would be refused (id outside the vocabulary, context overflow).
  void check_input(std::span<const int32_t> tokens) const;

 private:
  void run(std::span<const int32_t> tokens, Logits wanted, std::span<float> logits);

  const Model& model_;
  KvCache cache_;
  Sequence sequence_;
  Workspace workspace_;
  std::vector<float> logits_;  // [vocab]
  std::vector<LoraApplication> lora_;
};

}  // namespace ernie
