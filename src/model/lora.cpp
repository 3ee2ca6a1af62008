// Reading PEFT LoRA adapters: adapter_config.json decides which modules are adapted and at what rank and scale,
// adapter_model.safetensors holds their A and B matrices.
#include "model/lora.h"

#include <re2/re2.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>

#include "core/error.h"
#include "io/gguf.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "kernels/ggml_blocks.h"
#include "kernels/quant.h"
#include "model/gguf_ernie.h"

namespace ernie {

std::string module_name(int layer, Projection p) {
  const bool attention = p <= Projection::kO;
  return "model.layers." + std::to_string(layer) + (attention ? ".self_attn." : ".mlp.") +
         std::string(projection_name(p));
}

std::array<int, 2> projection_shape(const ModelConfig& c, Projection p) {
  switch (p) {
    case Projection::kQ: return {c.q_dim(), c.hidden_size};
    case Projection::kK:
    case Projection::kV: return {c.kv_dim(), c.hidden_size};
    case Projection::kO: return {c.hidden_size, c.q_dim()};
    case Projection::kGate:
    case Projection::kUp: return {c.intermediate_size, c.hidden_size};
    case Projection::kDown: return {c.hidden_size, c.intermediate_size};
  }
  return {0, 0};
}

namespace {

using nlohmann::json;

// The parts of adapter_config.json that decide what is adapted and how strongly.
struct AdapterConfig {
  std::string file;
  int r = 0;
  double alpha = 8;  // PEFT's default lora_alpha
  bool rslora = false;
  // target_modules as a string: a regex the whole module name must match (Python's re.fullmatch, as PEFT does)
  std::shared_ptr<const RE2> target_regex;
  std::vector<std::string> target_names;  // as a list: names a module name equals or ends with after a dot
  std::vector<int> layers;                // layers_to_transform; empty: all
  struct Pattern {
    std::shared_ptr<const RE2> regex;  // "(.*\.)?(key)", as PEFT matches a pattern's key against module names
    json value;
  };
  std::vector<Pattern> rank_pattern, alpha_pattern;

  bool targets(const std::string& module) const {
    if (target_regex) return RE2::FullMatch(module, *target_regex);
    for (const std::string& t : target_names) {
      if (module == t ||
          (module.size() > t.size() && module.ends_with(t) && module[module.size() - t.size() - 1] == '.'))
        return true;
    }
    return false;
  }
  bool in_layers(int layer) const {
    return layers.empty() || std::find(layers.begin(), layers.end(), layer) != layers.end();
  }
  // A pattern's value for this module, as PEFT looks it up: the first key that matches the end of the name.
  static const json* pattern_value(const std::vector<Pattern>& patterns, const std::string& module) {
    for (const Pattern& p : patterns) {
      if (RE2::FullMatch(module, *p.regex)) return &p.value;
    }
    return nullptr;
  }
  int rank_of(const std::string& module) const {
    const json* v = pattern_value(rank_pattern, module);
    if (!v) return r;
    if (!v->is_number_integer() || v->get<int64_t>() <= 0)
      fail(file, ": rank_pattern gives ", module, " the rank ", v->dump(), " (a positive integer is needed)");
    return v->get<int>();
  }
  double alpha_of(const std::string& module) const {
    const json* v = pattern_value(alpha_pattern, module);
    if (!v) return alpha;
    if (!v->is_number()) fail(file, ": alpha_pattern gives ", module, " the value ", v->dump());
    return v->get<double>();
  }
};

// RE2 rather than std::regex: a pattern from a file runs in linear time with bounded memory and nesting, so a
// hostile one is an error rather than a stack overflow or a stall. Its syntax is Python's for everything PEFT
// configs use; lookarounds and backreferences, which RE2 lacks, are refused by name.
std::shared_ptr<const RE2> compile_pattern(const std::string& pattern, const std::string& file,
                                           const std::string& what) {
  RE2::Options options;
  options.set_log_errors(false);
  auto regex = std::make_shared<const RE2>(pattern, options);
  if (!regex->ok())
    fail(file, ": ", what, " \"", pattern, "\" is not a usable regular expression (", regex->error(), ")");
  return regex;
}

AdapterConfig read_adapter_config(const std::filesystem::path& path) {
  const json doc = read_json_object(path);
  AdapterConfig c;
  c.file = path.string();
  const auto field = [&](const char* key) -> const json* {
    const auto it = doc.find(key);
    return it == doc.end() || it->is_null() ? nullptr : &*it;
  };
  const json* type = field("peft_type");
  if (!type || !type->is_string() || type->get<std::string>() != "LORA")
    fail(c.file, ": peft_type must be \"LORA\" (found ", type ? type->dump() : "none", ")");
  const json* r = field("r");
  if (!r || !r->is_number_integer()) fail(c.file, ": r (the rank) must be an integer");
  if (r->get<int64_t>() <= 0 || r->get<int64_t>() > 65536) fail(c.file, ": r = ", r->dump(), " is not a usable rank");
  c.r = r->get<int>();
  if (const json* a = field("lora_alpha")) {
    if (!a->is_number()) fail(c.file, ": lora_alpha must be a number");
    c.alpha = a->get<double>();
  }
  if (const json* v = field("use_rslora")) c.rslora = v->is_boolean() && v->get<bool>();
  if (const json* v = field("use_dora"); v && v->is_boolean() && v->get<bool>())
    fail(c.file, ": use_dora is true: DoRA adapters are not supported (only plain LoRA)");
  if (const json* v = field("bias"); v && !(v->is_string() && v->get<std::string>() == "none"))
    fail(c.file, ": bias ", v->dump(), " is not supported (only \"none\": the adapter may not train biases)");
  if (const json* v = field("modules_to_save"); v && !(v->is_array() && v->empty()))
    fail(c.file, ": modules_to_save ", v->dump(), " is not supported (whole replaced modules; only LoRA matrices)");
  // fan_in_fan_out describes base layers stored [in, out] (GPT-2's Conv1D). ERNIE's projections are nn.Linear, for
  // which PEFT itself resets the flag: A and B have the same layout either way, so it changes nothing here.
  const json* targets = field("target_modules");
  if (!targets) fail(c.file, ": target_modules is missing");
  if (targets->is_string()) {
    const std::string t = targets->get<std::string>();
    c.target_regex =
        compile_pattern(t == "all-linear" ? ".*\\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)" : t,
                        c.file, "target_modules");
  } else if (targets->is_array()) {
    for (const json& t : *targets) {
      if (!t.is_string()) fail(c.file, ": target_modules must list module names");
      c.target_names.push_back(t.get<std::string>());
    }
  } else {
    fail(c.file, ": target_modules must be a list of names or a regular expression");
  }
  if (const json* v = field("layers_to_transform")) {
    if (v->is_number_integer()) {
      c.layers.push_back(v->get<int>());
    } else if (v->is_array()) {
      for (const json& l : *v) {
        if (!l.is_number_integer()) fail(c.file, ": layers_to_transform must hold layer numbers");
        c.layers.push_back(l.get<int>());
      }
    } else {
      fail(c.file, ": layers_to_transform must be a layer number or a list of them");
    }
  }
  for (const auto& [key, list] : {std::pair{"rank_pattern", &c.rank_pattern}, {"alpha_pattern", &c.alpha_pattern}}) {
    const json* v = field(key);
    if (!v) continue;
    if (!v->is_object()) fail(c.file, ": ", key, " must be an object");
    for (const auto& [pattern, value] : v->items()) {
      list->push_back({compile_pattern("(.*\\.)?(" + pattern + ")", c.file, std::string(key) + " key"), value});
    }
  }
  return c;
}

// A tensor name of PEFT's saved form, base_model.model.<module>.lora_A.weight (an adapter name such as
// ".default" may stand before ".weight"), taken apart.
struct TensorName {
  int layer = -1;
  std::optional<Projection> projection;
  char matrix = 0;  // 'A' or 'B'
};

TensorName parse_tensor_name(const std::string& name, const std::string& file) {
  static const RE2 kLayerModule(
      R"((?:base_model\.model\.)?model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_(A|B)(?:\.\w+)?\.weight)");
  std::string index, block, projection, matrix;
  if (name.find("lora_magnitude_vector") != std::string::npos)
    fail(file, ": tensor ", name, " is a DoRA magnitude: DoRA adapters are not supported");
  if (name.find("lora_embedding_") != std::string::npos || name.find("embed_tokens") != std::string::npos ||
      name.find("lm_head") != std::string::npos)
    fail(file, ": tensor ", name,
         " adapts the embedding or the LM head, which is not supported (only the seven "
         "projections of each layer)");
  if (name.ends_with(".bias")) fail(file, ": tensor ", name, " is a LoRA bias, which is not supported");
  if (!RE2::FullMatch(name, kLayerModule, &index, &block, &projection, &matrix))
    fail(file, ": tensor ", name,
         " is not a LoRA matrix of a known module (expected "
         "base_model.model.model.layers.N.self_attn|mlp.<projection>.lora_A|lora_B.weight)");
  TensorName t;
  t.layer = std::stoi(index.substr(0, 9));
  t.matrix = matrix[0];
  for (Projection p : kProjections) {
    if (projection == projection_name(p) && (p <= Projection::kO) == (block == "self_attn")) t.projection = p;
  }
  if (!t.projection) fail(file, ": tensor ", name, " names an unknown module ", block, ".", projection);
  return t;
}

std::atomic<uint64_t> next_adapter_id{1};

using Modules = std::vector<std::array<LoraModule, kProjectionCount>>;

// Sets one module from its A [rank, in] and B [out, rank], which read_a and read_b widen into float32.
void fill_module(LoraModule& m, int rank, int in, int out, double scale, const std::function<void(float*)>& read_a,
                 const std::function<void(float*)>& read_b, const std::string& file, const std::string& module) {
  m.rank = rank;
  m.in = in;
  m.out = out;
  m.scale = static_cast<float>(scale);
  if (!std::isfinite(m.scale)) fail(file, ": ", module, " has a non-finite scale");
  m.a.resize(static_cast<size_t>(rank) * in);
  read_a(m.a.data());
  std::vector<float> b_rows(static_cast<size_t>(out) * rank);
  read_b(b_rows.data());
  m.b_t.resize(b_rows.size());
  for (int j = 0; j < out; ++j) {
    for (int k = 0; k < rank; ++k) m.b_t[static_cast<size_t>(k) * out + j] = b_rows[static_cast<size_t>(j) * rank + k];
  }
  for (const auto* values : {&m.a, &m.b_t}) {
    for (float x : *values) {
      if (!std::isfinite(x)) fail(file, ": ", module, " holds a non-finite weight");
    }
  }
}

std::string shape_text(int64_t rows, int64_t cols) {
  std::string text = "[";  // appended piece by piece: GCC 12 misreads "[" + std::string (a -Wrestrict false alarm)
  text += std::to_string(rows);
  text += ", ";
  text += std::to_string(cols);
  return text + "]";
}

Modules read_peft_adapter(const std::filesystem::path& dir, const ModelConfig& config) {
  if (!std::filesystem::is_directory(dir))
    fail(dir.string(),
         ": not a LoRA adapter (a PEFT directory with adapter_config.json and "
         "adapter_model.safetensors, or a llama.cpp GGUF adapter)");
  const AdapterConfig ac = read_adapter_config(dir / "adapter_config.json");
  const std::filesystem::path weights = dir / "adapter_model.safetensors";
  if (!std::filesystem::exists(weights)) {
    if (std::filesystem::exists(dir / "adapter_model.bin"))
      fail((dir / "adapter_model.bin").string(),
           ": PyTorch pickles are not read; save the adapter with "
           "safe_serialization=True (adapter_model.safetensors)");
    fail(weights.string(), ": missing");
  }
  const SafetensorsArchive archive = SafetensorsArchive::open(weights);
  const std::string file = weights.string();

  Modules modules(config.num_hidden_layers);
  std::map<std::pair<int, int>, std::array<const TensorView*, 2>> found;  // (layer, projection) -> {A, B}
  for (const auto& [name, view] : archive.tensors()) {
    const TensorName t = parse_tensor_name(name, file);
    if (t.layer >= config.num_hidden_layers)
      fail(file, ": tensor ", name, " is for layer ", t.layer, ", but the model has ", config.num_hidden_layers);
    const std::string module = module_name(t.layer, *t.projection);
    if (!ac.targets(module) || !ac.in_layers(t.layer))
      fail(file, ": tensor ", name, " is for ", module, ", which adapter_config.json does not target");
    const TensorView*& slot = found[{t.layer, static_cast<int>(*t.projection)}][t.matrix == 'B'];
    if (slot) fail(file, ": tensor ", name, " appears twice (as ", slot->name, ")");
    slot = &view;
  }
  for (int layer = 0; layer < config.num_hidden_layers; ++layer) {
    for (Projection p : kProjections) {
      const std::string module = module_name(layer, p);
      const auto it = found.find({layer, static_cast<int>(p)});
      if (it == found.end()) {
        if (ac.targets(module) && ac.in_layers(layer))
          fail(file, ": ", module, " is targeted by adapter_config.json but has no lora_A/lora_B tensors");
        continue;
      }
      const auto [a, b] = it->second;
      if (!a || !b) fail(file, ": ", module, " has lora_", a ? "A" : "B", " but no lora_", a ? "B" : "A");
      const int rank = ac.rank_of(module);
      const auto [out, in] = projection_shape(config, p);
      const std::vector<int64_t> a_shape = {rank, in}, b_shape = {out, rank};
      if (a->shape != a_shape || b->shape != b_shape) {
        const TensorView* bad = a->shape != a_shape ? a : b;
        fail(file, ": tensor ", bad->name, " has shape ", bad->shape_string(), ", expected ",
             bad == a ? shape_text(rank, in) : shape_text(out, rank), " (rank ", rank, " for a ", out, "x", in, " ",
             projection_name(p), ")");
      }
      for (const TensorView* v : {a, b}) {
        if (v->dtype != DType::F32 && v->dtype != DType::BF16 && v->dtype != DType::F16)
          fail(file, ": tensor ", v->name, " is ", dtype_name(v->dtype), " (adapters must be F32, BF16 or F16)");
      }
      const double alpha = ac.alpha_of(module);
      fill_module(
          modules[layer][static_cast<int>(p)], rank, in, out,
          ac.rslora ? alpha / std::sqrt(static_cast<double>(rank)) : alpha / rank,
          [a](float* out) { dequantize_row(a->dtype, a->data, out, a->element_count()); },
          [b](float* out) { dequantize_row(b->dtype, b->data, out, b->element_count()); }, file, module);
    }
  }
  return modules;
}

// llama.cpp's adapter files (convert_lora_to_gguf.py): general.type "adapter", adapter.type "lora",
// adapter.lora.alpha, and for each adapted matrix "<its GGUF name>.lora_a" (A, ne [in, r]) and ".lora_b" (B,
// ne [r, out]). llama.cpp scales by alpha / r, or by 1 when alpha is 0.
Modules read_gguf_adapter(const std::filesystem::path& path, const ModelConfig& config) {
  const GgufFile file = GgufFile::open(path);
  const std::string name = path.string();
  if (file.get_string("general.type").value_or("") != "adapter" ||
      file.get_string("adapter.type").value_or("") != "lora")
    fail(name,
         ": a GGUF file, but not a LoRA adapter (general.type \"adapter\", adapter.type \"lora\"); a model "
         "goes to --model");
  if (const auto arch = file.get_string("general.architecture"); arch && *arch != kGgufArchitecture)
    fail(name, ": an adapter for architecture \"", *arch, "\", not ", kGgufArchitecture);
  const double alpha = file.get_float("adapter.lora.alpha").value_or(0.0);
  std::map<std::string, const GgufTensor*> tensors;
  for (const GgufTensor& t : file.tensors()) tensors[t.name] = &t;
  Modules modules(config.num_hidden_layers);
  for (int layer = 0; layer < config.num_hidden_layers; ++layer) {
    for (Projection p : kProjections) {
      const std::string base = gguf_tensor_name(module_name(layer, p) + ".weight");
      const auto a = tensors.find(base + ".lora_a"), b = tensors.find(base + ".lora_b");
      if (a == tensors.end() && b == tensors.end()) continue;
      if (a == tensors.end() || b == tensors.end())
        fail(name, ": ", base, " has lora_", a == tensors.end() ? "b" : "a", " but no lora_",
             a == tensors.end() ? "a" : "b");
      const GgufTensor& ta = *a->second;
      const GgufTensor& tb = *b->second;
      const auto [out, in] = projection_shape(config, p);
      const int64_t rank = ta.ne.size() == 2 ? ta.ne[1] : -1;
      if (ta.ne.size() != 2 || ta.ne[0] != in || rank <= 0 || rank > 65536)
        fail(name, ": tensor ", ta.name, " has ne ",
             shape_text(ta.ne.empty() ? 0 : ta.ne[0], ta.ne.size() > 1 ? ta.ne[1] : 0), ", expected [", in, ", rank]");
      if (tb.ne.size() != 2 || tb.ne[0] != rank || tb.ne[1] != out)
        fail(name, ": tensor ", tb.name, " has ne ",
             shape_text(tb.ne.empty() ? 0 : tb.ne[0], tb.ne.size() > 1 ? tb.ne[1] : 0), ", expected ",
             shape_text(rank, out));
      tensors.erase(a);
      tensors.erase(b);
      fill_module(
          modules[layer][static_cast<int>(p)], static_cast<int>(rank), in, out, alpha != 0 ? alpha / rank : 1.0,
          [&ta](float* values) { dequantize_ggml_row(ta.type, ta.data, values, ta.element_count()); },
          [&tb](float* values) { dequantize_ggml_row(tb.type, tb.data, values, tb.element_count()); }, name,
          module_name(layer, p));
    }
  }
  if (!tensors.empty())
    fail(name, ": tensor ", tensors.begin()->first, " is not a LoRA matrix of a projection of this model");
  return modules;
}

}  // namespace

std::shared_ptr<const LoraAdapter> LoraAdapter::load(const std::filesystem::path& path, const ModelConfig& config) {
  std::shared_ptr<LoraAdapter> adapter(new LoraAdapter());
  adapter->path_ = path;
  adapter->layers_ = std::filesystem::is_regular_file(path) && is_gguf_file(path) ? read_gguf_adapter(path, config)
                                                                                  : read_peft_adapter(path, config);
  for (const auto& layer : adapter->layers_) {
    for (Projection p : kProjections) {
      const LoraModule& m = layer[static_cast<int>(p)];
      if (m.rank == 0) continue;
      adapter->adapted_[static_cast<int>(p)] = true;
      adapter->max_rank_ = std::max(adapter->max_rank_, m.rank);
    }
  }
  if (adapter->max_rank_ == 0) fail(path.string(), ": no LoRA matrices for any module of this model");
  adapter->id_ = next_adapter_id++;
  return adapter;
}

size_t LoraAdapter::bytes() const {
  size_t n = 0;
  for (const auto& layer : layers_) {
    for (const LoraModule& m : layer) n += (m.a.size() + m.b_t.size()) * sizeof(float);
  }
  return n;
}

int lora_stack_rank(LoraStack stack) {
  int rank = 0;
  for (const LoraApplication& a : stack) rank += a.adapter->max_rank();
  return rank;
}

uint64_t lora_cache_key(LoraStack stack) {
  uint64_t key = 0;
  for (const LoraApplication& a : stack) {
    uint32_t scale_bits;
    std::memcpy(&scale_bits, &a.scale, sizeof scale_bits);
    // splitmix64 over (previous key, id, scale): distinct stacks give distinct keys but for 2^-64 collisions.
    uint64_t z = key ^ (a.adapter->id() * 0x9e3779b97f4a7c15ull) ^ (static_cast<uint64_t>(scale_bits) << 17);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    key = (z ^ (z >> 31)) | 1;  // never 0, the base model's key
  }
  return key;
}

}  // namespace ernie
