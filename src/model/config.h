// The ERNIE-4.5 dense model's hyper-parameters (config.json) and sampling defaults (generation_config.json).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace ernie {

struct ModelConfig {
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int head_dim = 0;  // config's head_dim, else hidden_size / num_attention_heads
  float rms_norm_eps = 1e-5f;
  float rope_theta = 500000.0f;  // top-level "rope_theta" or "rope_parameters.rope_theta"
  int vocab_size = 0;
  int max_position_embeddings = 131072;
  bool tie_word_embeddings = true;
  bool use_bias = false;
  int32_t bos_token_id = 1;
  std::vector<int32_t> eos_token_ids = {2};  // config may give one id or a list
  int32_t pad_token_id = 0;
  std::string torch_dtype;  // informational: "bfloat16", ...

  int q_dim() const { return num_attention_heads * head_dim; }
  int kv_dim() const { return num_key_value_heads * head_dim; }

  // Reads `dir`/config.json. Unknown model_type/architectures, missing or mistyped fields, and inconsistent
  // values (e.g. heads not a multiple of kv heads, odd head_dim) raise ernie::Error naming config.json and the key.
  static ModelConfig load(const std::filesystem::path& dir);
  // The consistency checks load() makes once the fields are read (head_dim even, heads a multiple of kv heads,
  // positive epsilon and theta), for configs read from elsewhere; errors name `source`.
  void validate(const std::string& source) const;
};

// Sampling defaults a checkpoint ships in generation_config.json; absent fields stay unset so that the caller's
// own defaults apply. Flags given on the command line override these.
struct GenerationDefaults {
  std::optional<bool> do_sample;
  std::optional<float> temperature;
  std::optional<float> top_p;
  std::optional<int> top_k;
  std::optional<float> repetition_penalty;
  std::optional<int> max_new_tokens;
  std::vector<int32_t> eos_token_ids;

  // A missing file gives empty defaults; a malformed one raises ernie::Error. A GGUF file gives its
  // ernie.generation.* metadata (model/gguf_ernie.h).
  static GenerationDefaults load(const std::filesystem::path& dir);
};

}  // namespace ernie
