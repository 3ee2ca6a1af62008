#include "model/weights.h"

#include <set>

#include "core/error.h"

namespace ernie {

std::string_view projection_name(Projection p) {
  static constexpr std::array<std::string_view, kProjectionCount> kNames = {
      "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  return kNames[static_cast<int>(p)];
}

namespace {

std::string layer_prefix(int l) {
  return "model.layers." + std::to_string(l) + ".";
}

// A Linear layer of a decoder block: its name in the checkpoint, shape, and where LayerWeights keeps it.
struct Projection {
  const char* name;  // e.g. "self_attn.q_proj"
  int64_t out, in;
  WeightMatrix LayerWeights::*weight;
  Vector LayerWeights::*bias;
};

std::vector<Projection> layer_projections(const ModelConfig& c) {
  using L = LayerWeights;
  return {{"self_attn.q_proj", c.q_dim(), c.hidden_size, &L::q_proj, &L::q_bias},
          {"self_attn.k_proj", c.kv_dim(), c.hidden_size, &L::k_proj, &L::k_bias},
          {"self_attn.v_proj", c.kv_dim(), c.hidden_size, &L::v_proj, &L::v_bias},
          {"self_attn.o_proj", c.hidden_size, c.q_dim(), &L::o_proj, &L::o_bias},
          {"mlp.gate_proj", c.intermediate_size, c.hidden_size, &L::gate_proj, &L::gate_bias},
          {"mlp.up_proj", c.intermediate_size, c.hidden_size, &L::up_proj, &L::up_bias},
          {"mlp.down_proj", c.hidden_size, c.intermediate_size, &L::down_proj, &L::down_bias}};
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

class Binder {
 public:
  explicit Binder(const CheckpointTensors& tensors) : tensors_(tensors) {}

  const TensorView& get(const std::string& name) const {
    const auto it = tensors_.by_name.find(name);
    if (it == tensors_.by_name.end()) fail(tensors_.source, ": missing tensor ", describe(name));
    return it->second;
  }
  // The checkpoint's own name of a tensor too, when it differs (GGUF's "blk.0.attn_q.weight").
  std::string describe(const std::string& name) const {
    const auto it = tensors_.by_name.find(name);
    const std::string stored = it != tensors_.by_name.end() ? it->second.name : tensors_.stored_name(name);
    return stored == name ? name : stored + " (" + name + ")";
  }
  WeightMatrix matrix(const std::string& name) const {
    const TensorView& t = get(name);
    return WeightMatrix{t.dtype, t.data, static_cast<int>(t.shape[0]), static_cast<int>(t.shape[1])};
  }
  Vector vector(const std::string& name) const {
    const TensorView& t = get(name);
    Vector out(static_cast<size_t>(t.shape[0]));
    read_row(out.data(), WeightMatrix{t.dtype, t.data, 1, static_cast<int>(t.shape[0])}, 0);
    return out;
  }

 private:
  const CheckpointTensors& tensors_;
};

}  // namespace

std::vector<TensorSpec> expected_tensors(const ModelConfig& c) {
  std::vector<TensorSpec> specs;
  const int64_t hidden = c.hidden_size;
  specs.push_back({"model.embed_tokens.weight", {c.vocab_size, hidden}});
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = layer_prefix(l);
    specs.push_back({p + "input_layernorm.weight", {hidden}});
    specs.push_back({p + "post_attention_layernorm.weight", {hidden}});
    for (const auto& proj : layer_projections(c)) {
      specs.push_back({p + proj.name + ".weight", {proj.out, proj.in}});
      if (c.use_bias) specs.push_back({p + proj.name + ".bias", {proj.out}});
    }
  }
  specs.push_back({"model.norm.weight", {hidden}});
  if (!c.tie_word_embeddings) specs.push_back({"lm_head.weight", {c.vocab_size, hidden}});
  return specs;
}

CheckpointTensors CheckpointTensors::from(const SafetensorsArchive& archive) {
  CheckpointTensors tensors{archive.tensors(), {}, nullptr};
  const auto files = archive.files();
  tensors.source = files.size() == 1 ? files[0].string()
                   : files.empty()   ? "checkpoint"
                                   : files[0].parent_path().string() + " (" + std::to_string(files.size()) + " shards)";
  return tensors;
}

std::string CheckpointTensors::stored_name(const std::string& name) const {
  return rename ? rename(name) : name;
}

ModelWeights bind_weights(const ModelConfig& c, const CheckpointTensors& tensors) {
  const Binder b(tensors);
  std::set<std::string> expected_names;
  for (const auto& spec : expected_tensors(c)) {
    const TensorView& t = b.get(spec.name);
    if (t.shape != spec.shape) {
      fail(t.file->string(), ": tensor ", b.describe(spec.name), " has shape ", t.shape_string(),
           " but the config implies ", shape_text(spec.shape));
    }
    expected_names.insert(spec.name);
  }
  for (const auto& [name, t] : tensors.by_name) {
    if (!expected_names.count(name)) {
      fail(t.file->string(), ": unexpected tensor ", b.describe(name), " ", t.shape_string(),
           c.tie_word_embeddings && name == "lm_head.weight" ? " (config.json says tie_word_embeddings: true)" : "",
           !c.use_bias && name.ends_with(".bias") ? " (config.json says use_bias: false)" : "");
    }
  }

  ModelWeights w;
  w.embed_tokens = b.matrix("model.embed_tokens.weight");
  w.final_norm = b.vector("model.norm.weight");
  w.lm_head = c.tie_word_embeddings ? w.embed_tokens : b.matrix("lm_head.weight");
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = layer_prefix(l);
    LayerWeights& lw = w.layers.emplace_back();
    lw.input_norm = b.vector(p + "input_layernorm.weight");
    lw.post_attention_norm = b.vector(p + "post_attention_layernorm.weight");
    for (const auto& proj : layer_projections(c)) {
      lw.*proj.weight = b.matrix(p + proj.name + ".weight");
      if (c.use_bias) lw.*proj.bias = b.vector(p + proj.name + ".bias");
    }
  }
  return w;
}

}  // namespace ernie
