#include "model/config.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/gguf.h"
#include "io/json_file.h"
#include "model/gguf_ernie.h"

namespace ernie {
namespace {

using nlohmann::json;

constexpr const char* kSupportedModelType = "ernie4_5";
// The transformers-native class name, and the one the first remote-code release of the checkpoint used.
const std::vector<std::string> kSupportedArchitectures = {"Ernie4_5ForCausalLM", "Ernie4_5_ForCausalLM"};

// Typed field access that names the file and key in every error.
class Fields {
 public:
  Fields(const json& doc, std::string file) : doc_(doc), file_(std::move(file)) {}

  int required_int(const char* key) const {
    const json* v = find(key);
    if (!v) fail(file_, ": missing required field \"", key, "\"");
    return as_int(*v, key);
  }
  template <class T>
  T get_or(const char* key, T fallback) const {
    const json* v = find(key);
    if (!v || v->is_null()) return fallback;
    if constexpr (std::is_same_v<T, bool>) {
      if (!v->is_boolean()) fail(file_, ": field \"", key, "\" must be true or false");
      return v->get<bool>();
    } else if constexpr (std::is_integral_v<T>) {
      return as_int(*v, key);
    } else {
      if (!v->is_number()) fail(file_, ": field \"", key, "\" must be a number");
      return v->get<T>();
    }
  }
  template <class T>
  std::optional<T> optional(const char* key) const {
    const json* v = find(key);
    if (!v || v->is_null()) return std::nullopt;
    return get_or<T>(key, T{});
  }
  std::vector<int32_t> id_list(const char* key, std::vector<int32_t> fallback) const {
    const json* v = find(key);
    if (!v || v->is_null()) return fallback;
    if (v->is_array()) {
      std::vector<int32_t> ids;
      for (const auto& e : *v) ids.push_back(as_int(e, key));
      return ids;
    }
    return {as_int(*v, key)};
  }
  const json* find(const char* key) const {
    const auto it = doc_.find(key);
    return it == doc_.end() ? nullptr : &*it;
  }
  const std::string& file() const { return file_; }

 private:
  int as_int(const json& v, const char* key) const {
    if (!v.is_number_integer() || v.get<int64_t>() < INT32_MIN || v.get<int64_t>() > INT32_MAX) {
      fail(file_, ": field \"", key, "\" must be an integer");
    }
    return v.get<int>();
  }
  const json& doc_;
  std::string file_;
};

}  // namespace

ModelConfig ModelConfig::load(const std::filesystem::path& dir) {
  const auto path = dir / "config.json";
  const json doc = read_json_object(path);
  const Fields f(doc, path.string());

  const json* model_type = f.find("model_type");
  if (!model_type || !model_type->is_string() || model_type->get<std::string>() != kSupportedModelType) {
    fail(path.string(), ": unsupported model_type ", model_type ? model_type->dump() : "(missing)", "; supported: \"",
         kSupportedModelType, "\" (Ernie4_5ForCausalLM, the ERNIE-4.5 dense models)");
  }
  if (const json* arch = f.find("architectures"); arch && !arch->is_null()) {
    const bool ok = arch->is_array() && std::any_of(arch->begin(), arch->end(), [](const json& a) {
                      return a.is_string() && std::find(kSupportedArchitectures.begin(), kSupportedArchitectures.end(),
                                                        a.get<std::string>()) != kSupportedArchitectures.end();
                    });
    if (!ok) fail(path.string(), ": unsupported architectures ", arch->dump(), "; supported: Ernie4_5ForCausalLM");
  }

  ModelConfig c;
  c.hidden_size = f.required_int("hidden_size");
  c.intermediate_size = f.required_int("intermediate_size");
  c.num_hidden_layers = f.required_int("num_hidden_layers");
  c.num_attention_heads = f.required_int("num_attention_heads");
  c.num_key_value_heads = f.get_or<int>("num_key_value_heads", c.num_attention_heads);
  c.vocab_size = f.required_int("vocab_size");
  c.rms_norm_eps = f.get_or<float>("rms_norm_eps", c.rms_norm_eps);
  c.max_position_embeddings = f.get_or<int>("max_position_embeddings", c.max_position_embeddings);
  c.tie_word_embeddings = f.get_or<bool>("tie_word_embeddings", c.tie_word_embeddings);
  c.use_bias = f.get_or<bool>("use_bias", c.use_bias);
  c.bos_token_id = f.get_or<int>("bos_token_id", c.bos_token_id);
  c.eos_token_ids = f.id_list("eos_token_id", c.eos_token_ids);
  c.pad_token_id = f.get_or<int>("pad_token_id", c.pad_token_id);

  const std::string hidden_act =
      f.find("hidden_act") && f.find("hidden_act")->is_string() ? f.find("hidden_act")->get<std::string>() : "silu";
  if (hidden_act != "silu") fail(path.string(), ": unsupported hidden_act \"", hidden_act, "\" (supported: silu)");

  if (const json* rope = f.find("rope_parameters"); rope && rope->is_object()) {
    const Fields rf(*rope, path.string() + " rope_parameters");
    c.rope_theta = rf.get_or<float>("rope_theta", c.rope_theta);
    if (const json* type = rf.find("rope_type"); type && type->is_string() && type->get<std::string>() != "default") {
      fail(path.string(), ": unsupported rope_type \"", type->get<std::string>(), "\" (supported: default)");
    }
  }
  c.rope_theta = f.get_or<float>("rope_theta", c.rope_theta);
  for (const char* key : {"torch_dtype", "dtype"}) {
    if (const json* v = f.find(key); v && v->is_string()) c.torch_dtype = v->get<std::string>();
  }

  for (auto [key, value] : {std::pair{"hidden_size", c.hidden_size},
                            {"intermediate_size", c.intermediate_size},
                            {"num_hidden_layers", c.num_hidden_layers},
                            {"num_attention_heads", c.num_attention_heads},
                            {"num_key_value_heads", c.num_key_value_heads},
                            {"vocab_size", c.vocab_size},
                            {"max_position_embeddings", c.max_position_embeddings}}) {
    if (value <= 0) fail(path.string(), ": field \"", key, "\" must be positive, got ", value);
  }
  if (const json* hd = f.find("head_dim"); hd && !hd->is_null()) {
    c.head_dim = f.required_int("head_dim");
  } else {
    if (c.hidden_size % c.num_attention_heads != 0) {
      fail(path.string(), ": no \"head_dim\" and hidden_size is not a multiple of num_attention_heads");
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  c.validate(path.string());
  return c;
}

void ModelConfig::validate(const std::string& source) const {
  if (head_dim <= 0 || head_dim % 2 != 0) fail(source, ": head_dim must be positive and even (RoPE pairs)");
  if (num_attention_heads % num_key_value_heads != 0) {
    fail(source, ": num_attention_heads (", num_attention_heads, ") is not a multiple of num_key_value_heads (",
         num_key_value_heads, ")");
  }
  if (!(rms_norm_eps > 0) || !(rope_theta > 0)) fail(source, ": rms_norm_eps and rope_theta must be > 0");
}

GenerationDefaults GenerationDefaults::load(const std::filesystem::path& dir) {
  if (is_gguf_file(dir)) return generation_defaults_from_gguf(GgufFile::open(dir));
  GenerationDefaults g;
  const auto path = dir / "generation_config.json";
  if (!std::filesystem::exists(path)) return g;
  const json doc = read_json_object(path);
  const Fields f(doc, path.string());
  g.do_sample = f.optional<bool>("do_sample");
  g.temperature = f.optional<float>("temperature");
  g.top_p = f.optional<float>("top_p");
  g.top_k = f.optional<int>("top_k");
  g.repetition_penalty = f.optional<float>("repetition_penalty");
  g.max_new_tokens = f.optional<int>("max_new_tokens");
  g.eos_token_ids = f.id_list("eos_token_id", {});
  return g;
}

}  // namespace ernie
