// ernie run: generate a continuation of a prompt (text, chat-wrapped text, or token ids), streamed to stdout.
#include <cstdio>

#include "cli/common.h"
#include "core/error.h"
#include "tokenizer/chat_template.h"

namespace ernie::cli {
namespace {

struct RunOptions {
  ModelOptions model;
  GenerationFlags generation;
  PromptInput input;
  std::string system;
  bool chat = false;
  bool print_ids = false;
  bool add_bos = false;
};

// The prompt as token ids: given ids as they are, or text (wrapped in the chat template with --chat).
std::vector<int32_t> prompt_ids(const RunOptions& o, const Tokenizer& tokenizer) {
  if (o.input.ids) return parse_ids(*o.input.ids);
  if (!o.chat) return tokenizer.encode(*o.input.text, o.add_bos || tokenizer.add_bos_token());
  nlohmann::json messages = nlohmann::json::array();
  if (!o.system.empty()) messages.push_back({{"role", "system"}, {"content", o.system}});
  messages.push_back({{"role", "user"}, {"content", *o.input.text}});
  return tokenizer.encode(render_chat(tokenizer, messages, /*add_generation_prompt=*/true));
}

void run(const RunOptions& o) {
  LoadedModel loaded = load_model(o.model, /*with_tokenizer=*/true);
  const Tokenizer& tokenizer = *loaded.tokenizer;
  GenerationOptions options = resolve_generation_options(o.generation, loaded);
  if (o.chat) add_chat_end_ids(tokenizer, options.eos_ids);

  const std::vector<int32_t> prompt = prompt_ids(o, tokenizer);
  Session session(*loaded.model, session_options(o.model, loaded));
  const auto result = generate(session, tokenizer, prompt, options, [&](int32_t, std::string_view text) {
    if (!o.print_ids && !text.empty()) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    }
    return true;
  });
  if (o.print_ids) {
    std::printf("%s\n", ids_to_json(result.tokens).c_str());
  } else {
    std::printf("\n");
  }
  std::fflush(stdout);
  report_generation(result);
}

}  // namespace

void register_run(CLI::App& app) {
  auto options = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand("run", "Generate a continuation of a prompt, streamed to stdout");
  add_model_options(*cmd, options->model);
  add_prompt_input(*cmd, options->input);
  cmd->add_flag("--chat", options->chat, "Wrap the prompt in the model's chat template as a user turn");
  cmd->add_option("--system", options->system, "System message (with --chat)");
  cmd->add_flag("--add-bos", options->add_bos, "Prepend the BOS token to a text prompt");
  cmd->add_flag("--print-ids", options->print_ids, "Print the generated ids as one JSON array instead of text");
  add_generation_flags(*cmd, options->generation);
  cmd->callback([options] { run(*options); });
}

}  // namespace ernie::cli
