// Test adapters: writes PEFT LoRA directories with random A and B for a model config, and checkpoints with such
// adapters merged by hand (W + scale · B A in double precision, stored F32), the reference the engine's LoRA paths
// are held to. Written independently of src/model/lora.cpp: module names, ranks and scales are worked out here.
#pragma once

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "io/safetensors.h"
#include "kernels/quant.h"
#include "model/config.h"
#include "test_support.h"

namespace ernie::testing {

struct TestAdapterSpec {
  int rank = 4;
  double alpha = 8;
  bool rslora = false;
  // Projections written, by their short names; all seven by default.
  std::vector<std::string> projections = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  std::vector<int> layers = {};                  // layers written; empty: all (also written as layers_to_transform)
  std::map<std::string, int> rank_pattern = {};  // key: a module name's end ("q_proj", "layers.1.mlp.down_proj")
  std::map<std::string, double> alpha_pattern = {};
  DType dtype = DType::F32;
  uint32_t seed = 1;
  float magnitude = 0.2f;  // A and B uniform in [-magnitude, magnitude): large enough to change every logit
  nlohmann::json config_overrides = nlohmann::json::object();  // merged into adapter_config.json last
};

// One adapted module as written: A [r, in], B [out, r], and its scale.
struct WrittenModule {
  int rank = 0, in = 0, out = 0;
  double scale = 0;
  std::vector<float> a, b;
};
using WrittenAdapter =
    std::map<std::string, WrittenModule>;  // by Hugging Face weight name ("model.layers.0....weight")

inline bool name_ends_with(const std::string& module, const std::string& key) {
  return module == key ||
         (module.size() > key.size() && module.ends_with(key) && module[module.size() - key.size() - 1] == '.');
}

inline WrittenAdapter write_test_adapter(const std::filesystem::path& dir, const ModelConfig& c,
                                         const TestAdapterSpec& spec) {
  std::filesystem::create_directories(dir);
  std::mt19937 rng(spec.seed);
  std::uniform_real_distribution<float> uniform(-spec.magnitude, spec.magnitude);
  WrittenAdapter written;
  std::vector<TensorToWrite> tensors;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    if (!spec.layers.empty() && std::find(spec.layers.begin(), spec.layers.end(), l) == spec.layers.end()) continue;
    for (const std::string& p : spec.projections) {
      const bool attention = p == "q_proj" || p == "k_proj" || p == "v_proj" || p == "o_proj";
      const std::string module = "model.layers." + std::to_string(l) + (attention ? ".self_attn." : ".mlp.") + p;
      const int q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
      const std::map<std::string, std::pair<int, int>> shapes = {{"q_proj", {q, c.hidden_size}},
                                                                 {"k_proj", {kv, c.hidden_size}},
                                                                 {"v_proj", {kv, c.hidden_size}},
                                                                 {"o_proj", {c.hidden_size, q}},
                                                                 {"gate_proj", {c.intermediate_size, c.hidden_size}},
                                                                 {"up_proj", {c.intermediate_size, c.hidden_size}},
                                                                 {"down_proj", {c.hidden_size, c.intermediate_size}}};
      WrittenModule m;
      m.out = shapes.at(p).first;
      m.in = shapes.at(p).second;
      m.rank = spec.rank;
      for (const auto& [key, r] : spec.rank_pattern) {
        if (name_ends_with(module, key)) m.rank = r;
      }
      double alpha = spec.alpha;
      for (const auto& [key, a] : spec.alpha_pattern) {
        if (name_ends_with(module, key)) alpha = a;
      }
      m.scale = spec.rslora ? alpha / std::sqrt(m.rank) : alpha / m.rank;
      m.a.resize(static_cast<size_t>(m.rank) * m.in);
      m.b.resize(static_cast<size_t>(m.out) * m.rank);
      for (float& v : m.a) v = uniform(rng);
      for (float& v : m.b) v = uniform(rng);
      // What the engine reads back is the stored (rounded) value: keep that one for the hand merge.
      for (auto* values : {&m.a, &m.b}) {
        std::vector<uint8_t> bytes(dtype_row_bytes(spec.dtype, static_cast<int64_t>(values->size())));
        quantize_row(spec.dtype, values->data(), bytes.data(), static_cast<int64_t>(values->size()));
        dequantize_row(spec.dtype, bytes.data(), values->data(), static_cast<int64_t>(values->size()));
      }
      const std::string prefix = "base_model.model." + module;
      const WrittenModule& stored = written[module + ".weight"] = m;
      for (const auto& [suffix, values, shape] :
           {std::tuple{".lora_A.weight", &stored.a, std::vector<int64_t>{m.rank, m.in}},
            std::tuple{".lora_B.weight", &stored.b, std::vector<int64_t>{m.out, m.rank}}}) {
        const DType dtype = spec.dtype;
        tensors.push_back({prefix + suffix, dtype, shape, [values, dtype](uint8_t* out) {
                             quantize_row(dtype, values->data(), out, static_cast<int64_t>(values->size()));
                           }});
      }
    }
  }
  write_safetensors(dir / "adapter_model.safetensors", tensors);
  nlohmann::json config = {{"alpha_pattern", spec.alpha_pattern},
                           {"base_model_name_or_path", "test"},
                           {"bias", "none"},
                           {"fan_in_fan_out", false},
                           {"inference_mode", true},
                           {"init_lora_weights", true},
                           {"layers_to_transform", nullptr},
                           {"lora_alpha", spec.alpha},
                           {"lora_dropout", 0.0},
                           {"modules_to_save", nullptr},
                           {"peft_type", "LORA"},
                           {"r", spec.rank},
                           {"rank_pattern", spec.rank_pattern},
                           {"target_modules", spec.projections},
                           {"task_type", "CAUSAL_LM"},
                           {"use_dora", false},
                           {"use_rslora", spec.rslora}};
  if (!spec.layers.empty()) config["layers_to_transform"] = spec.layers;
  config.update(spec.config_overrides);
  write_text(dir / "adapter_config.json", config.dump(2));
  return written;
}

// The same adapter as llama.cpp's convert_lora_to_gguf.py writes it: one GGUF file, "<base tensor>.lora_a" (A) and
// ".lora_b" (B) in F32, adapter.lora.alpha. llama.cpp scales every module by alpha / its rank, so the adapter's
// modules must have been written with that scale (no rank or alpha patterns, no rsLoRA).
inline void write_test_gguf_adapter(const std::filesystem::path& file, const WrittenAdapter& adapter, double alpha) {
  const std::map<std::string, std::string> kNames = {
      {"self_attn.q_proj", "attn_q"},      {"self_attn.k_proj", "attn_k"}, {"self_attn.v_proj", "attn_v"},
      {"self_attn.o_proj", "attn_output"}, {"mlp.gate_proj", "ffn_gate"},  {"mlp.up_proj", "ffn_up"},
      {"mlp.down_proj", "ffn_down"}};
  GgufWriter writer(file);
  writer.set("general.architecture", std::string("ernie4_5"));
  writer.set("general.type", std::string("adapter"));
  writer.set("adapter.type", std::string("lora"));
  writer.set("adapter.lora.alpha", static_cast<float>(alpha));
  std::vector<const std::vector<float>*> order;
  for (const auto& [name, m] : adapter) {  // "model.layers.N.<module>.weight"
    const std::string rest = name.substr(std::string("model.layers.").size());
    const std::string layer = rest.substr(0, rest.find('.'));
    const std::string module =
        rest.substr(layer.size() + 1, rest.size() - layer.size() - 1 - std::string(".weight").size());
    const std::string base = "blk." + layer + "." + kNames.at(module) + ".weight";
    writer.declare_tensor(base + ".lora_a", GgmlType::F32, {m.rank, m.in});
    writer.declare_tensor(base + ".lora_b", GgmlType::F32, {m.out, m.rank});
    order.push_back(&m.a);
    order.push_back(&m.b);
  }
  for (const auto* values : order)
    writer.write_tensor({reinterpret_cast<const uint8_t*>(values->data()), values->size() * sizeof(float)});
  writer.finish();
}

// A copy of the checkpoint directory `base` (config.json + safetensors) in `out`, every tensor stored F32, with each
// adapter's W += scale · multiplier · B A added in double precision.
inline void write_merged_checkpoint(const std::filesystem::path& base, const std::filesystem::path& out,
                                    const std::vector<std::pair<const WrittenAdapter*, double>>& adapters) {
  std::filesystem::create_directories(out);
  std::filesystem::copy_file(base / "config.json", out / "config.json",
                             std::filesystem::copy_options::overwrite_existing);
  const SafetensorsArchive archive = SafetensorsArchive::open(base);
  std::vector<TensorToWrite> tensors;
  for (const auto& [name, view] : archive.tensors()) {
    tensors.push_back({name, DType::F32, view.shape, [&view, &adapters, name = name](uint8_t* bytes) {
                         const int64_t n = view.element_count();
                         std::vector<float> w(n);
                         dequantize_row(view.dtype, view.data, w.data(), n);
                         for (const auto& [adapter, multiplier] : adapters) {
                           const auto it = adapter->find(name);
                           if (it == adapter->end()) continue;
                           const WrittenModule& m = it->second;
                           for (int i = 0; i < m.out; ++i) {
                             for (int j = 0; j < m.in; ++j) {
                               double delta = 0;
                               for (int k = 0; k < m.rank; ++k)
                                 delta += static_cast<double>(m.b[static_cast<size_t>(i) * m.rank + k]) *
                                          m.a[static_cast<size_t>(k) * m.in + j];
                               w[static_cast<size_t>(i) * m.in + j] = static_cast<float>(
                                   w[static_cast<size_t>(i) * m.in + j] + multiplier * m.scale * delta);
                             }
                           }
                         }
                         std::memcpy(bytes, w.data(), w.size() * sizeof(float));
                       }});
  }
  write_safetensors(out / "model.safetensors", tensors);
}

}  // namespace ernie::testing
