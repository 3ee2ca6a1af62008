// Activation-aware scaling (AWQ-style) for ernie quantize --awq: per-channel scales s that move the weight of an
// input's important channels into the matrices before quantization, folded so that the float model computes exactly
// what it did. A matrix W reading x becomes W·diag(s), the producer of x becomes x/s:
//   the attention's RMSNorm weight / s_attention  ->  q, k, v columns · s_attention
//   the MLP's RMSNorm weight / s_mlp              ->  gate, up columns · s_mlp
//   v_proj rows (and bias) / s_value               ->  o_proj columns · s_value of their kv head's channel
//   up_proj rows (and bias) / s_up                 ->  down_proj columns · s_up (silu(g)·u is linear in u)
// Rounding then gives the large-input channels finer steps in their blocks. (The LM head is left alone: its input's
// producer, the final norm, also feeds nothing else, but a tied embedding would be scaled with it.)
#pragma once

#include <array>
#include <span>
#include <string>
#include <vector>

#include "model/calibration.h"
#include "model/model.h"

namespace ernie {

class ActivationScaling {
 public:
  // Scales s_c = m_c^(alpha/2) (m_c: the channel's mean squared input, i.e. s = rms(x)^alpha, SmoothQuant's
  // migration strength alpha), divided by their geometric mean, for every group of every layer; alpha 0 is no
  // scaling. Raises ernie::Error if a matrix the scales are computed from has no statistics.
  static ActivationScaling from(const ModelConfig& config, const ActivationStats& stats, float alpha);

  // Applies the scaling to row `row` of the checkpoint tensor `name` (its Hugging Face name), in place; tensors it
  // does not touch are left as they are.
  void apply(const std::string& name, int64_t row, std::span<float> values) const;
  // The mean squared inputs of a matrix's columns once scaled (m_c / s_c^2): the importance to round it with.
  std::vector<float> importance(const std::string& name, const ChannelStats& stats) const;

 private:
  enum Group { kAttention, kMlp, kValue, kUp, kGroups };
  struct Layer {
    std::array<std::vector<float>, kGroups> scale;
  };
  explicit ActivationScaling(const ModelConfig& config) : config_(config), layers_(config.num_hidden_layers) {}
  // Which group's scale multiplies (columns) or divides (rows, 1-D tensors) a tensor: -1 for none.
  struct Use {
    int layer = -1;
    int column_group = -1;  // the matrix's columns are multiplied by this group's scales
    int row_group = -1;     // its rows (or the 1-D tensor's entries) are divided by this group's scales
    bool vector = false;    // a 1-D tensor (norm weight, bias)
  };
  Use use_of(const std::string& name) const;
  float column_scale(int layer, int group, int64_t column) const;

  ModelConfig config_;
  std::vector<Layer> layers_;
};

}  // namespace ernie
