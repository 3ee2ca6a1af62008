// The ERNIE-4.5 dense weights as typed views into the mapped checkpoint.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "io/safetensors.h"
#include "kernels/matmul.h"
#include "model/config.h"

namespace ernie {

// A 1-D parameter (norm weight, bias) widened to float32 once at load: these are tiny (0.04 % of the 0.3B model)
// and widening them keeps the per-token code free of dtype branches.
using Vector = std::vector<float>;

// The seven weight matrices of a decoder layer, by role (LoRA adapters name them so).
enum class Projection : uint8_t { kQ, kK, kV, kO, kGate, kUp, kDown };
constexpr int kProjectionCount = 7;
constexpr std::array<Projection, kProjectionCount> kProjections = {Projection::kQ,   Projection::kK,    Projection::kV,
                                                                   Projection::kO,   Projection::kGate, Projection::kUp,
                                                                   Projection::kDown};
std::string_view projection_name(Projection p);  // "q_proj", ..., "down_proj": the Hugging Face module's name

struct LayerWeights {
  Vector input_norm;                      // [hidden]
  WeightMatrix q_proj, k_proj, v_proj;    // [heads*head_dim, hidden], [kv_heads*head_dim, hidden] x2
  WeightMatrix o_proj;                    // [hidden, heads*head_dim]
  Vector q_bias, k_bias, v_bias, o_bias;  // [out] each, empty unless use_bias
  Vector post_attention_norm;             // [hidden]
  WeightMatrix gate_proj, up_proj;        // [intermediate, hidden]
  WeightMatrix down_proj;                 // [hidden, intermediate]
  Vector gate_bias, up_bias, down_bias;

  WeightMatrix& projection(Projection p) {
    WeightMatrix* all[] = {&q_proj, &k_proj, &v_proj, &o_proj, &gate_proj, &up_proj, &down_proj};
    return *all[static_cast<int>(p)];
  }
};

struct ModelWeights {
  WeightMatrix embed_tokens;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  Vector final_norm;     // [hidden]
  WeightMatrix lm_head;  // [vocab, hidden]; the embedding itself when tie_word_embeddings
};

// One entry of the checkpoint's expected contents: the Hugging Face tensor name and its shape.
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
};

// Every tensor an ERNIE-4.5 dense checkpoint with this config must hold, in a fixed order. The single list that the
// loader, the checks and (later) writers and converters share.
std::vector<TensorSpec> expected_tensors(const ModelConfig& config);

// A checkpoint's tensors under their Hugging Face names (row-major shapes), whichever file format holds them.
struct CheckpointTensors {
  std::map<std::string, TensorView> by_name;              // TensorView::name is the name in the file
  std::string source;                                     // the file or directory, for messages
  std::function<std::string(const std::string&)> rename;  // Hugging Face name -> the file's own; null: the same

  static CheckpointTensors from(const SafetensorsArchive& archive);
  std::string stored_name(const std::string& hf_name) const;
};

// Checks the tensors against the config — every expected tensor present with its shape and a supported dtype, and
// nothing unexpected — then binds the views. Raises ernie::Error naming the file and tensor on any mismatch.
ModelWeights bind_weights(const ModelConfig& config, const CheckpointTensors& tensors);

}  // namespace ernie
