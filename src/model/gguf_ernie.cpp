#include "model/gguf_ernie.h"

#include <re2/re2.h>

#include <climits>
#include <utility>

#include "core/error.h"

namespace ernie {
namespace {

const std::string kArch = kGgufArchitecture;

// Hugging Face module path inside a decoder layer -> llama.cpp's name for it.
constexpr std::pair<const char*, const char*> kLayerNames[] = {
    {"input_layernorm", "attn_norm"}, {"post_attention_layernorm", "ffn_norm"},
    {"self_attn.q_proj", "attn_q"},   {"self_attn.k_proj", "attn_k"},
    {"self_attn.v_proj", "attn_v"},   {"self_attn.o_proj", "attn_output"},
    {"mlp.gate_proj", "ffn_gate"},    {"mlp.up_proj", "ffn_up"},
    {"mlp.down_proj", "ffn_down"},
};

class Reader {
 public:
  explicit Reader(const GgufFile& file) : file_(file) {}

  int required_int(const std::string& key) const {
    const auto v = file_.get_int(key);
    if (!v) fail(file_.path().string(), ": missing metadata \"", key, "\"");
    return checked(key, *v);
  }
  int int_or(const std::string& key, int fallback) const {
    const auto v = file_.get_int(key);
    return v ? checked(key, *v) : fallback;
  }
  float float_or(const std::string& key, float fallback) const {
    const auto v = file_.get_float(key);
    return v ? static_cast<float>(*v) : fallback;
  }

 private:
  int checked(const std::string& key, int64_t v) const {
    if (v < INT_MIN || v > INT_MAX) fail(file_.path().string(), ": metadata \"", key, "\" is out of range");
    return static_cast<int>(v);
  }
  const GgufFile& file_;
};

}  // namespace

std::string gguf_tensor_name(const std::string& hf) {
  if (hf == "model.embed_tokens.weight") return "token_embd.weight";
  if (hf == "model.norm.weight") return "output_norm.weight";
  if (hf == "lm_head.weight") return "output.weight";
  static const RE2 layer(R"(model\.layers\.(\d+)\.(.+)\.(weight|bias))");
  std::string index, module, kind;
  if (!RE2::FullMatch(hf, layer, &index, &module, &kind)) return hf;
  for (const auto& [hf_module, gguf_module] : kLayerNames) {
    if (module == hf_module) return "blk." + index + "." + gguf_module + "." + kind;
  }
  return hf;
}

ModelConfig config_from_gguf(const GgufFile& file) {
  const std::string fname = file.path().string();
  const auto arch = file.get_string("general.architecture");
  if (arch != kArch) {
    fail(fname, ": unsupported general.architecture \"", arch.value_or("(missing)"), "\"; supported: \"", kArch,
         "\" (the ERNIE-4.5 dense models)");
  }
  const Reader r(file);
  const std::string p = kArch + ".";
  ModelConfig c;
  c.hidden_size = r.required_int(p + "embedding_length");
  c.intermediate_size = r.required_int(p + "feed_forward_length");
  c.num_hidden_layers = r.required_int(p + "block_count");
  c.num_attention_heads = r.required_int(p + "attention.head_count");
  c.num_key_value_heads = r.int_or(p + "attention.head_count_kv", c.num_attention_heads);
  c.max_position_embeddings = r.int_or(p + "context_length", c.max_position_embeddings);
  c.rms_norm_eps = r.float_or(p + "attention.layer_norm_rms_epsilon", c.rms_norm_eps);
  c.rope_theta = r.float_or(p + "rope.freq_base", c.rope_theta);
  if (const auto scaling = file.get_string(p + "rope.scaling.type"); scaling && *scaling != "none") {
    fail(fname, ": unsupported ", p, "rope.scaling.type \"", *scaling, "\" (supported: none)");
  }
  for (auto [key, value] : {std::pair{"embedding_length", c.hidden_size},
                            {"feed_forward_length", c.intermediate_size},
                            {"block_count", c.num_hidden_layers},
                            {"attention.head_count", c.num_attention_heads},
                            {"attention.head_count_kv", c.num_key_value_heads},
                            {"context_length", c.max_position_embeddings}}) {
    if (value <= 0) fail(fname, ": metadata \"", p, key, "\" must be positive, got ", value);
  }
  if (c.hidden_size % c.num_attention_heads != 0 && !file.find(p + "attention.key_length")) {
    fail(fname, ": no ", p, "attention.key_length and embedding_length is not a multiple of the head count");
  }
  c.head_dim = r.int_or(p + "attention.key_length", c.hidden_size / c.num_attention_heads);
  if (r.int_or(p + "attention.value_length", c.head_dim) != c.head_dim) {
    fail(fname, ": attention.value_length differs from attention.key_length (not an ERNIE-4.5 layout)");
  }

  // The vocabulary is the embedding's row count; vocab_size, when written, must agree (checked by the binder).
  const GgufTensor* embedding = file.find_tensor("token_embd.weight");
  if (!embedding || embedding->ne.size() != 2) fail(fname, ": missing 2-D tensor token_embd.weight");
  c.vocab_size = r.int_or(p + "vocab_size", static_cast<int>(embedding->ne[1]));
  c.tie_word_embeddings = file.find_tensor("output.weight") == nullptr;
  c.use_bias = file.find_tensor("blk.0.attn_q.bias") != nullptr;
  c.bos_token_id = r.int_or("tokenizer.ggml.bos_token_id", c.bos_token_id);
  c.eos_token_ids = {r.int_or("tokenizer.ggml.eos_token_id", c.eos_token_ids.front())};
  c.pad_token_id = r.int_or("tokenizer.ggml.padding_token_id", c.pad_token_id);
  c.validate(fname);
  return c;
}

GenerationDefaults generation_defaults_from_gguf(const GgufFile& file) {
  const std::string p = "ernie.generation.";
  GenerationDefaults g;
  g.do_sample = file.get_bool(p + "do_sample");
  if (const auto v = file.get_float(p + "temperature")) g.temperature = static_cast<float>(*v);
  if (const auto v = file.get_float(p + "top_p")) g.top_p = static_cast<float>(*v);
  if (const auto v = file.get_int(p + "top_k")) g.top_k = static_cast<int>(*v);
  if (const auto v = file.get_float(p + "repetition_penalty")) g.repetition_penalty = static_cast<float>(*v);
  if (const auto v = file.get_int(p + "max_new_tokens")) g.max_new_tokens = static_cast<int>(*v);
  if (const GgufArray* ids = file.get_array(p + "eos_token_ids", GgufType::I32)) {
    for (const GgufValue& id : ids->items) g.eos_token_ids.push_back(std::get<int32_t>(id));
  }
  return g;
}

void write_gguf_config(GgufWriter& w, const ModelConfig& c) {
  const std::string p = kArch + ".";
  auto u32 = [](int v) { return GgufValue(static_cast<uint32_t>(v)); };
  w.set("general.architecture", std::string(kArch));
  w.set(p + "context_length", u32(c.max_position_embeddings));
  w.set(p + "embedding_length", u32(c.hidden_size));
  w.set(p + "block_count", u32(c.num_hidden_layers));
  w.set(p + "feed_forward_length", u32(c.intermediate_size));
  w.set(p + "attention.head_count", u32(c.num_attention_heads));
  w.set(p + "attention.head_count_kv", u32(c.num_key_value_heads));
  w.set(p + "attention.key_length", u32(c.head_dim));
  w.set(p + "attention.value_length", u32(c.head_dim));
  w.set(p + "attention.layer_norm_rms_epsilon", c.rms_norm_eps);
  w.set(p + "rope.freq_base", c.rope_theta);
  w.set(p + "vocab_size", u32(c.vocab_size));
}

void write_gguf_generation_defaults(GgufWriter& w, const GenerationDefaults& g) {
  const std::string p = "ernie.generation.";
  if (g.do_sample) w.set(p + "do_sample", *g.do_sample);
  if (g.temperature) w.set(p + "temperature", *g.temperature);
  if (g.top_p) w.set(p + "top_p", *g.top_p);
  if (g.top_k) w.set(p + "top_k", static_cast<int32_t>(*g.top_k));
  if (g.repetition_penalty) w.set(p + "repetition_penalty", *g.repetition_penalty);
  if (g.max_new_tokens) w.set(p + "max_new_tokens", static_cast<int32_t>(*g.max_new_tokens));
  if (!g.eos_token_ids.empty()) {
    GgufArray ids{GgufType::I32, {}};
    for (int32_t id : g.eos_token_ids) ids.items.emplace_back(id);
    w.set(p + "eos_token_ids", std::move(ids));
  }
}

}  // namespace ernie
