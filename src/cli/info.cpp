// ernie info: what a checkpoint is and what it costs in memory.
#include <cstdio>
#include <filesystem>

#include "cli/common.h"

namespace ernie::cli {
namespace {

double mib(double bytes) {
  return bytes / 1048576.0;
}

void info(ModelOptions o) {
  o.dir = checkpoint_dir(o.dir).string();
  LoadedModel loaded =
      load_model(o, /*with_tokenizer=*/has_tokenizer(o.dir));
  const Model& model = *loaded.model;
  const ModelConfig& c = model.config();
  const Session session(model, session_options(o, loaded));
  std::printf("architecture     Ernie4_5ForCausalLM (model_type ernie4_5, dense)\n");
  std::printf("layers           %d\n", c.num_hidden_layers);
  std::printf("hidden size      %d (intermediate %d, SwiGLU)\n", c.hidden_size, c.intermediate_size);
  std::printf("attention        %d query heads, %d kv heads, head_dim %d\n", c.num_attention_heads,
              c.num_key_value_heads, c.head_dim);
  std::printf("vocabulary       %d\n", c.vocab_size);
  std::printf("rope             interleaved, theta %g; rms_norm_eps %g\n", c.rope_theta, c.rms_norm_eps);
  std::printf("embeddings       %s; biases: %s\n", c.tie_word_embeddings ? "tied to the LM head" : "separate LM head",
              c.use_bias ? "yes" : "no");
  std::printf("max positions    %d\n", c.max_position_embeddings);
  std::printf("parameters       %lld (%.1f M)\n", static_cast<long long>(model.parameter_count()),
              model.parameter_count() / 1e6);
  std::printf("weights          %s, %.1f MiB\n", model.weight_dtype().c_str(), mib(model.weight_bytes()));
  std::printf("KV cache         %.1f MiB for %d tokens (%s; resident as filled)\n", mib(session.kv_cache_bytes()),
              session.context_length(), std::string(dtype_name(session.kv_dtype())).c_str());
  std::printf("scratch          %.1f MiB\n", mib(session.scratch_bytes()));
  if (loaded.tokenizer) {
    std::printf("tokenizer        %d pieces; bos %d, eos %d; chat template: %s\n", loaded.tokenizer->vocab_size(),
                loaded.tokenizer->bos_id(), loaded.tokenizer->eos_id(),
                loaded.tokenizer->chat_template().empty() ? "none" : "yes");
  }
}

}  // namespace

void register_info(CLI::App& app) {
  auto options = std::make_shared<ModelOptions>();
  CLI::App* cmd = app.add_subcommand("info", "Describe a checkpoint: architecture, parameters, memory");
  add_model_options(*cmd, *options);
  cmd->callback([options] { info(*options); });
}

}  // namespace ernie::cli
