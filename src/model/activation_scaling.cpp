#include "model/activation_scaling.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <string_view>

#include "core/error.h"
#include "model/lora.h"

namespace ernie {
namespace {

constexpr int kAlphaSteps = 8;        // alpha in {0, 1/8, ..., 1}
constexpr int64_t kSampleRows = 128;  // rows of each matrix the choice is measured on

// Per channel: m^(alpha/2), divided by the geometric mean. Channels that saw no input keep the others' floor.
std::vector<float> scales_for(const std::vector<float>& mean_squares, float alpha) {
  const float top = *std::max_element(mean_squares.begin(), mean_squares.end());
  std::vector<float> s(mean_squares.size(), 1.0f);
  if (!(top > 0.0f) || alpha == 0.0f) return s;
  const double floor = 1e-12 * top;
  double mean_log = 0;
  for (float m : mean_squares) mean_log += std::log(std::max<double>(m, floor));
  mean_log /= static_cast<double>(mean_squares.size());
  for (size_t c = 0; c < s.size(); ++c) {
    s[c] = static_cast<float>(std::exp(0.5 * alpha * (std::log(std::max<double>(mean_squares[c], floor)) - mean_log)));
  }
  return s;
}

}  // namespace

ActivationScaling::Use ActivationScaling::use_of(const std::string& name) const {
  // "model.layers.<L>.[self_attn.|mlp.]<module>.<weight|bias>"
  Use use;
  constexpr std::string_view kPrefix = "model.layers.";
  if (!name.starts_with(kPrefix)) return use;
  const size_t dot = name.find('.', kPrefix.size());
  if (dot == std::string::npos || dot == kPrefix.size()) return use;
  int layer = 0;
  for (size_t i = kPrefix.size(); i < dot; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(name[i])) || layer > 1000000) return use;
    layer = layer * 10 + (name[i] - '0');
  }
  if (layer >= static_cast<int>(layers_.size())) return use;
  const size_t kind = name.rfind('.');
  const bool bias = name.compare(kind, std::string::npos, ".bias") == 0;
  if (!bias && name.compare(kind, std::string::npos, ".weight") != 0) return use;
  const std::string path = name.substr(dot + 1, kind - dot - 1);
  const std::string module = path.substr(path.rfind('.') == std::string::npos ? 0 : path.rfind('.') + 1);
  use.layer = layer;
  use.vector = bias;
  if (module == "input_layernorm") {
    use.row_group = kAttention;
    use.vector = true;
  } else if (module == "post_attention_layernorm") {
    use.row_group = kMlp;
    use.vector = true;
  } else if (module == "q_proj" || module == "k_proj") {
    if (!bias) use.column_group = kAttention;
  } else if (module == "v_proj") {
    if (!bias) use.column_group = kAttention;
    use.row_group = kValue;
  } else if (module == "o_proj") {
    if (!bias) use.column_group = kValue;
  } else if (module == "gate_proj") {
    if (!bias) use.column_group = kMlp;
  } else if (module == "up_proj") {
    if (!bias) use.column_group = kMlp;
    use.row_group = kUp;
  } else if (module == "down_proj") {
    if (!bias) use.column_group = kUp;
  } else {
    use.layer = -1;
  }
  return use;
}

// o_proj's column (query head h, dim d) reads the value channel (h's kv head, d): one scale per kv channel.
float ActivationScaling::column_scale(int layer, int group, int64_t column) const {
  const std::vector<float>& s = layers_[layer].scale[group];
  if (group != kValue) return s[column];
  const int d = config_.head_dim, per_kv = config_.num_attention_heads / config_.num_key_value_heads;
  return s[(column / d) / per_kv * d + column % d];
}

void ActivationScaling::apply(const std::string& name, int64_t row, std::span<float> values) const {
  const Use use = use_of(name);
  if (use.layer < 0) return;
  if (use.column_group >= 0) {
    for (size_t c = 0; c < values.size(); ++c) values[c] *= column_scale(use.layer, use.column_group, c);
  }
  if (use.row_group >= 0) {
    const std::vector<float>& s = layers_[use.layer].scale[use.row_group];
    if (use.vector) {
      for (size_t i = 0; i < values.size(); ++i) values[i] /= s[i];
    } else {
      for (float& v : values) v /= s[row];
    }
  }
}

std::vector<float> ActivationScaling::importance(const std::string& name, const ChannelStats& stats) const {
  std::vector<float> m = stats.mean_squares();
  const Use use = use_of(name);
  if (use.layer < 0 || use.column_group < 0) return m;
  for (size_t c = 0; c < m.size(); ++c) {
    const float s = column_scale(use.layer, use.column_group, c);
    m[c] /= s * s;
  }
  return m;
}

namespace {

// The mean squared inputs each group's scales are computed from: the first matrix that reads them, and for the
// value group the average over the query heads that share each kv channel.
std::vector<float> group_mean_squares(const ModelConfig& c, const ActivationStats& stats, int layer, int group) {
  const Projection reader[] = {Projection::kQ, Projection::kGate, Projection::kO, Projection::kDown};
  const std::string name = module_name(layer, reader[group]) + ".weight";
  const ChannelStats* s = stats.of(name);
  if (!s) fail("activation scaling: no statistics for ", name);
  std::vector<float> m = s->mean_squares();
  if (reader[group] != Projection::kO) return m;
  const int d = c.head_dim, per_kv = c.num_attention_heads / c.num_key_value_heads;
  std::vector<float> kv(c.kv_dim(), 0.0f);
  for (size_t col = 0; col < m.size(); ++col) kv[(col / d) / per_kv * d + col % d] += m[col] / per_kv;
  return kv;
}

}  // namespace

ActivationScaling ActivationScaling::from(const ModelConfig& config, const ActivationStats& stats, float alpha) {
  ActivationScaling scaling(config);
  for (int l = 0; l < config.num_hidden_layers; ++l) {
    for (int g = 0; g < kGroups; ++g) {
      scaling.layers_[l].scale[g] = scales_for(group_mean_squares(config, stats, l, g), alpha);
    }
  }
  return scaling;
}

}  // namespace ernie
