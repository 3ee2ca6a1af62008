// ERNIE-4.5 dense decoder. Three things change at different rates and are kept apart (docs/model-layer.md):
//   Model      the weights, config and RoPE frequencies: loaded once, read-only, shared by every thread;
//   Sequence   one token stream's state: its blocks in a KvCache and its position (kv_cache.h);
//   Workspace  the activations of one step, sized once for the largest step.
// forward() is the one entry point that runs a step over them. Session (session.h) bundles the three for a single
// stream.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <filesystem>
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
#include "model/kv_cache.h"
#include "model/lora.h"
#include "model/weights.h"

namespace ernie {

// How a checkpoint is brought into memory.
struct LoadOptions {
  // Convert every weight matrix (the embedding included, as llama.cpp's Q8_0 and Q4_0 files do) to this type at
  // load, Q8_0 and Q4_0 packed for the matmul kernels. nullopt keeps the stored types: float matrices used in place,
  // Q8_0 and Q4_0 ones packed (the kernels read no other layout).
  std::optional<DType> dtype = std::nullopt;
  ThreadPool* pool = nullptr;  // converts in parallel when given
  // Adapters folded into the weights at load (--lora-merge): W += scale · B A, computed in float32 before any
  // conversion. A merged matrix is stored as `dtype` when given, else as F32 if it was a float type (no rounding of
  // the sum) or in its own integer type if it was one (requantized, as llama.cpp's export-lora does). The adapters
  // are read during load only. Their errors name the adapter's files.
  struct MergedAdapter {
    std::filesystem::path dir;  // a PEFT adapter directory (LoraAdapter::load)
    float scale = 1.0f;
  };
  std::vector<MergedAdapter> merge_lora = {};
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
  const Rope& rope() const { return rope_; }
  const std::filesystem::path& path() const { return path_; }  // the directory or GGUF file loaded

  int64_t parameter_count() const;     // tied embedding counted once
  size_t weight_bytes() const;         // bytes of the weights as used (after any conversion)
  std::string weight_dtype() const;    // "BF16", or e.g. "BF16+F32" when mixed (matrices only)
  bool has_quantized_weights() const;  // any Q8_0/Q4_0 matrix: matmul inputs must be quantized

 private:
  Model(std::filesystem::path path, ModelConfig config);
  void bind_gguf_tensors(DType widen_to, ThreadPool* pool);
  // nullopt: pack Q8_0/Q4_0 only (and store merged matrices as LoadOptions::merge_lora says)
  void convert_weights(std::optional<DType> target, std::span<const LoraApplication> merge, ThreadPool* pool);

  std::filesystem::path path_;
  ModelConfig config_;
  // Own the mappings the weight views point into (one of the two).
  std::optional<SafetensorsArchive> safetensors_;
  std::unique_ptr<GgufFile> gguf_;
  CheckpointTensors tensors_;
  LargeBuffer widened_;  // GGUF block types DType lacks, stored again at load
  ModelWeights weights_;
  LargeBuffer converted_;  // matrices converted at load, when LoadOptions::dtype asks
  Rope rope_;
};

// Called with the residual stream as the forward pass goes: index 0 = token embeddings, i in 1..L = after decoder
// layer i-1, L+1 = after the final RMSNorm. `rows` is [n_tokens, hidden]. For tests and debugging.
using LayerObserver = std::function<void(int index, std::span<const float> rows)>;

// The inputs the weight matrices read, per layer in the order of the pass: the attention's normed input (q, k and v
// read it), the attention's output (o), the MLP's normed input (gate, up) and the SwiGLU activations (down); then the
// final norm's output (the LM head, at layer -1).
enum class ActivationSite : uint8_t { kQkv, kAttentionOutput, kGateUp, kDown, kLmHead };
// Called with every matrix input of a pass, as float rows [n, width] before any int8 quantization, on the thread
// that runs forward() (ernie calibrate). The LM head's rows are only those whose logits the step computes.
using ActivationObserver = std::function<void(int layer, ActivationSite site, std::span<const float> rows, int width)>;

// Wall time per kind of operation, summed over the forward passes of a Workspace it is attached to (ernie bench
// --profile). Each op's time runs from the end of the previous one, so the kinds add up to the whole pass; the
// residual additions count with the projection before them.
struct ForwardProfile {
  enum Op { kEmbedding, kNormQkv, kRopeKvStore, kAttention, kOutput, kNormGateUp, kDown, kLmHead, kOpCount };
  static constexpr std::array<const char*, kOpCount> kNames = {
      "embedding", "rmsnorm+qkv_proj", "rope+kv_store", "attention",
      "o_proj",    "rmsnorm+gate_up",  "down_proj",     "final_norm+lm_head"};
  std::array<double, kOpCount> seconds{};
  std::array<int, kOpCount> calls{};  // times each op ran: once a pass, or once a layer a pass
  int passes = 0;
};

// The scratch of one forward pass: activations for up to max_tokens token rows, sized once (a scheduler sizes it for
// the largest step it may run) and reused by every step, so that a step allocates nothing. Plain buffers: forward()
// owns their meaning. Also carries the pass's thread pool and its instrumentation.
struct Workspace {
  // max_positions: the longest sequence a step may hold (sizes the split-attention buffer). max_lora_rank: the
  // largest lora_stack_rank() of a chunk a step may hold (0: no adapters).
  Workspace(const Model& model, int max_tokens, ThreadPool* pool, int max_positions, int max_lora_rank = 0);
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  int max_tokens;
  ThreadPool* pool;                        // runs the matmuls and attention
  std::unique_ptr<ThreadPool> own_pool;    // single-threaded stand-in when none was given
  LayerObserver observer;                  // see LayerObserver; empty: none
  ActivationObserver activation_observer;  // see ActivationObserver; empty: none
  ForwardProfile* profile = nullptr;       // adds every pass's time per op when set
  int64_t passes = 0;                      // forward() calls that ran, for tests and step statistics

  std::vector<float> x;            // residual stream [B, hidden]
  std::vector<float> normed;       // [B, hidden]
  std::vector<float> q;            // [B, heads * head_dim]
  std::vector<float> k_new;        // [B, kv_heads * head_dim]
  std::vector<float> v_new;        // [B, kv_heads * head_dim]
  std::vector<float> attn_out;     // [B, heads * head_dim]
  std::vector<float> proj_out;     // [B, hidden]
  std::vector<float> act;          // SwiGLU activations [B, intermediate]
  std::vector<uint8_t> quantized;  // a matmul input quantized to int8 blocks [B, max width]
  std::vector<float> rope_cos;     // the rows' RoPE angles [B, head_dim / 2]
  std::vector<float> rope_sin;
  int max_partitions = 0;                 // key partitions of the longest sequence
  std::vector<float> attention_partials;  // split attention's states [threads][max_partitions][heads][2 + head_dim]
  std::vector<int> row_chunk;             // chunk of each row [B]
  std::vector<int> chunk_first_row;       // first row of each chunk [B]
  std::vector<int> logit_rows;            // rows whose logits are computed [B]
  int max_lora_rank = 0;
  std::vector<float> lora_shrunk;  // A x of each adapted row [B][3 projections][max_lora_rank]
  std::vector<float> gate;         // gate_proj's output [B, intermediate] when adapters split the fused SwiGLU
  std::vector<int32_t> lora_rows;  // rows a LoRA pass covers, those of one adapter stack together [B]
  std::vector<std::pair<int, int>> lora_pieces;  // [first, end) in lora_rows of runs with one stack, <= 64 rows [B]

  size_t bytes() const;
};

// What forward() computes logits for, per chunk.
enum class Logits : uint8_t {
  kNone,  // none (a prompt chunk before the last: the LM head is skipped)
  kLast,  // its last token's
  kAll,   // every token's
};

// One sequence's part of a step: `tokens` run at positions position() .. position()+n-1 of `sequence`, through the
// base weights plus the adapters of `lora` (which must be the same for every step of the sequence: its cached keys
// and values were computed under them).
struct Chunk {
  Sequence* sequence;
  std::span<const int32_t> tokens;
  Logits logits = Logits::kLast;
  LoraStack lora = {};
};

// Rows of logits forward() writes for these chunks.
int64_t logit_rows(std::span<const Chunk> chunks);

// THE forward pass: one pass over the weights for every chunk of a step (prompt chunks, single decode tokens, or
// both), each writing its keys and values into its sequence's blocks of `cache` and advancing its position. Writes
// the logits asked for into `logits` ([logit_rows(chunks), vocab], in chunk order). Each row's result depends only on
// its own sequence and tokens, never on the other chunks, their order or the thread count, bit for bit.
//
// Every chunk is checked first (non-empty, ids inside the vocabulary, room in the sequence's reserved blocks, no
// sequence twice, at most workspace.max_tokens rows, adapters for this model within workspace.max_lora_rank): an
// error raises ernie::Error and changes nothing. Allocates nothing.
void forward(const Model& model, KvCache& cache, Workspace& workspace, std::span<const Chunk> chunks,
             std::span<float> logits);

}  // namespace ernie
