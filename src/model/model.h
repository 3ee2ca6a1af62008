// ERNIE-4.5 dense decoder: a loaded checkpoint (Model, shared and read-only) and one sequence's running state
// (Session: KV cache and activations, allocated once when it is created).
#pragma once

#include <cstdint>
#include <filesystem>
#include <array>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/large_buffer.h"
#include "core/thread_pool.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "kernels/attention.h"
#include "kernels/matmul.h"
#include "kernels/rope.h"
#include "model/config.h"
#include "model/weights.h"

namespace ernie {

// How a checkpoint is brought into memory.
struct LoadOptions {
  // Convert every weight matrix (the embedding included, as llama.cpp's Q8_0 and Q4_0 files do) to this type at
  // load, Q8_0 and Q4_0 packed for the matmul kernels. nullopt keeps the stored types: float matrices used in place,
  // Q8_0 and Q4_0 ones packed (the kernels read no other layout).
  std::optional<DType> dtype = std::nullopt;
  ThreadPool* pool = nullptr;  // converts in parallel when given
};

class Model {
 public:
  // `path` is a Hugging Face checkpoint directory (config.json + safetensors) or a GGUF file (is_gguf_file decides).
  // Maps the weights and checks every tensor against the config before returning. Float weights of the types DType
  // holds are used in place from the map, Q8_0 and Q4_0 ones packed at load; a GGUF file's other block types
  // (K-quants, ...) are dequantized at load to options.dtype, else Q8_0. Any problem raises ernie::Error naming the
  // file (and tensor).
  static std::unique_ptr<Model> load(const std::filesystem::path& path, const LoadOptions& options = {});

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  // Every tensor of the checkpoint as stored (plain layout), under its Hugging Face name.
  const CheckpointTensors& tensors() const { return tensors_; }
  // The parsed GGUF file the model was loaded from (its metadata holds the tokenizer and sampling defaults too), or
  // null for a Hugging Face directory.
  const GgufFile* gguf() const { return gguf_.get(); }
  const std::filesystem::path& path() const { return path_; }  // the directory or GGUF file loaded

  int64_t parameter_count() const;     // tied embedding counted once
  size_t weight_bytes() const;         // bytes of the weights as used (after any conversion)
  std::string weight_dtype() const;    // "BF16", or e.g. "BF16+F32" when mixed (matrices only)
  bool has_quantized_weights() const;  // any Q8_0/Q4_0 matrix: matmul inputs must be quantized

 private:
  Model(std::filesystem::path path, ModelConfig config) : path_(std::move(path)), config_(std::move(config)) {}
  void bind_gguf_tensors(DType widen_to, ThreadPool* pool);
  void convert_weights(std::optional<DType> target, ThreadPool* pool);  // nullopt: pack Q8_0/Q4_0 only

  std::filesystem::path path_;
  ModelConfig config_;
  // Own the mappings the weight views point into (one of the two).
  std::optional<SafetensorsArchive> safetensors_;
  std::unique_ptr<GgufFile> gguf_;
  CheckpointTensors tensors_;
  LargeBuffer widened_;  // GGUF block types DType lacks, stored again at load
  ModelWeights weights_;
  LargeBuffer converted_;  // matrices converted (or packed) at load
};

struct SessionOptions {
  int context_length = 4096;   // KV-cache capacity in tokens; capped at max_position_embeddings
  int max_batch_tokens = 128;  // rows per matrix pass: prompt chunk size, and the most sessions decode_batch takes
  // KV-cache element type; nullopt: F32 when every weight is a float type (exact), F16 with quantized weights.
  std::optional<DType> kv_dtype = std::nullopt;
  ThreadPool* pool = nullptr;  // runs the matmuls and attention; null runs everything on the calling thread
};

// Called with the residual stream as the forward pass goes: index 0 = token embeddings, i in 1..L = after decoder
// layer i-1, L+1 = after the final RMSNorm. `rows` is [n_tokens, hidden]. For tests and debugging.
using LayerObserver = std::function<void(int index, std::span<const float> rows)>;

// Wall time per kind of operation, summed over the forward passes of a Session it is attached to (ernie bench
// --profile). Each op's time runs from the end of the previous one, so the kinds add up to the whole pass; the
// residual additions count with the projection before them.
struct ForwardProfile {
  enum Op { kEmbedding, kNormQkv, kRopeKvStore, kAttention, kOutput, kNormGateUp, kDown, kLmHead, kOpCount };
  static constexpr std::array<const char*, kOpCount> kNames = {
      "embedding", "rmsnorm+qkv_proj", "rope+kv_store", "attention", "o_proj", "rmsnorm+gate_up", "down_proj",
      "final_norm+lm_head"};
  std::array<double, kOpCount> seconds{};
  std::array<int, kOpCount> calls{};  // times each op ran: once a pass, or once a layer a pass
  int passes = 0;
};

class Session {
 public:
  Session(const Model& model, const SessionOptions& options);

  // Runs `tokens` at positions position() .. position()+n-1, appending them to the KV cache, and returns the
  // logits of the last one ([vocab_size], valid until the next call). Raises ernie::Error, leaving the session
  // unchanged, if an id is outside the vocabulary or the context would overflow. Allocates nothing.
  std::span<const float> forward(std::span<const int32_t> tokens);
  // The same, writing the logits of every token into all_logits ([tokens.size(), vocab_size]).
  void forward(std::span<const int32_t> tokens, std::span<float> all_logits);

  int position() const { return position_; }
  int context_length() const { return context_length_; }
  int vocab_size() const { return config_.vocab_size; }
  DType kv_dtype() const { return kv_dtype_; }
  // Forgets cached tokens from position n on (n <= position()), e.g. to reuse a shared chat prefix.
  void truncate(int n);
  void reset() { position_ = 0; }
  void set_observer(LayerObserver observer) { observer_ = std::move(observer); }
  // Adds every later pass's time per op to *profile (nullptr stops). Costs two clock reads per op.
  void set_profile(ForwardProfile* profile) { profile_ = profile; }

  // Reserved bytes; the KV cache's pages become resident only as positions are filled.
  size_t kv_cache_bytes() const;
  size_t scratch_bytes() const;

  // Raises ernie::Error if forward(tokens) would be refused (id outside the vocabulary, context overflow).
  void check_input(std::span<const int32_t> tokens) const;

 private:
  friend void decode_batch(std::span<Session* const>, std::span<const int32_t>, std::span<float>);

  // Consecutive rows of one pass that belong to one session, at positions first_pos, first_pos+1, ...
  struct RowGroup {
    Session* session;
    int first_row;
    int n_rows;
    int first_pos;
  };
  // One pass over the weights for `n` token rows split into `groups`, using this session's buffers. Writes the
  // logits of every row (all_rows) or of each group's last row, [groups or n, vocab], and advances the sessions.
  void run_rows(const int32_t* tokens, int n, std::span<const RowGroup> groups, float* logits, bool all_rows);
  void attention_block(const LayerWeights& layer, int layer_index, int n, std::span<const RowGroup> groups);
  void mlp_block(const LayerWeights& layer, int n);
  void lm_head(int n, std::span<const RowGroup> groups, float* logits, bool all_rows);
  MatmulInput prepare_input(const float* x, int n, int cols);
  MatmulInput normalized_input(const Vector& norm_weight, int n);
  KvCacheView cache(int layer);
  void observe(int index, const float* rows, int n) const;
  void lap(ForwardProfile::Op op);  // charges the time since the last lap to op, when profiling

  const Model& model_;
  const ModelConfig& config_;
  int context_length_;
  int max_batch_tokens_;
  int position_ = 0;
  DType kv_dtype_;
  RopeTable rope_;
  LayerObserver observer_;
  ForwardProfile* profile_ = nullptr;
  std::chrono::steady_clock::time_point last_lap_;
  std::unique_ptr<ThreadPool> own_pool_;  // single-threaded stand-in when no pool was given
  ThreadPool* pool_;

  // KV cache: [layers][context_length][kv_heads * head_dim] for keys, then the same for values. Zero-filled lazily
  // by the OS (calloc of a large block), so a 4096-token reservation costs memory only for positions used.
  struct FreeDeleter {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t, FreeDeleter> kv_;
  size_t kv_layer_bytes_ = 0;

  // Activations for up to max_batch_tokens rows.
  std::vector<float> x_;            // residual stream [B, hidden]
  std::vector<float> normed_;       // [B, hidden]
  std::vector<float> q_;            // [B, heads * head_dim]
  std::vector<float> k_new_;        // [B, kv_heads * head_dim]
  std::vector<float> v_new_;        // [B, kv_heads * head_dim]
  std::vector<float> attn_out_;     // [B, heads * head_dim]
  std::vector<float> proj_out_;     // [B, hidden]
  std::vector<float> act_;          // SwiGLU activations [B, intermediate]
  std::vector<uint8_t> quantized_;  // a matmul input quantized to int8 blocks [B, max width]
  std::vector<RowGroup> groups_;    // capacity B; decode_batch's groups
  std::vector<float> logits_;       // [vocab]
};

// Decodes one token for each of several independent sessions of one model (each at its own position) in a single
// pass over the weights, writing each one's logits into logits[i * vocab_size ...]: what a batching scheduler runs
// each step. Results equal forward() on each session in turn, bit for bit. Uses the first session's buffers and
// pool (at most its max_batch_tokens sessions). Checks every input first: an error leaves all sessions unchanged.
void decode_batch(std::span<Session* const> sessions, std::span<const int32_t> tokens, std::span<float> logits);

}  // namespace ernie
