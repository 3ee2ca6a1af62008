// ernie chat: an interactive multi-turn conversation in the terminal. History is kept; each turn reuses the KV
// cache for the part of the conversation the model has already read. Ctrl-D exits, /clear starts over.
#include <cstdio>
#include <iostream>

#include "cli/common.h"

namespace ernie::cli {
namespace {

struct ChatOptions {
  ModelOptions model;
  GenerationFlags generation;
  std::string system;
};

size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

void chat(const ChatOptions& o) {
  LoadedModel loaded = load_model(o.model, /*with_tokenizer=*/true);
  const Tokenizer& tokenizer = *loaded.tokenizer;
  GenerationOptions options = resolve_generation_options(o.generation, loaded);
  add_chat_end_ids(tokenizer, options.eos_ids);
  Session session(*loaded.model, session_options(o.model, loaded));

  nlohmann::json messages = nlohmann::json::array();
  if (!o.system.empty()) messages.push_back({{"role", "system"}, {"content", o.system}});
  std::vector<int32_t> cached;  // the tokens whose keys and values the session holds, in order
  std::fprintf(stderr, "ernie: chat ready (Ctrl-D to exit, /clear to start over)\n");

  std::string line;
  while (true) {
    std::fprintf(stderr, "\n> ");
    if (!std::getline(std::cin, line)) break;
    if (line == "/clear") {
      messages.erase(messages.begin() + (o.system.empty() ? 0 : 1), messages.end());
      continue;
    }
    if (line.empty()) continue;
    messages.push_back({{"role", "user"}, {"content", line}});
    const std::vector<int32_t> conversation = tokenizer.encode(render_chat(tokenizer, messages, true));

    // Feed only what the cache lacks; at least one token must go through to produce logits.
    const size_t reuse = std::min(common_prefix(cached, conversation), conversation.size() - 1);
    session.truncate(static_cast<int>(reuse));
    const std::span<const int32_t> fresh(conversation.data() + reuse, conversation.size() - reuse);
    if (session.position() + static_cast<int64_t>(fresh.size()) >= session.context_length()) {
      std::fprintf(stderr,
                   "ernie: the conversation no longer fits the context (%d tokens): history cleared, "
                   "please ask again\n",
                   session.context_length());
      messages.erase(messages.begin() + (o.system.empty() ? 0 : 1), messages.end());
      cached.clear();
      session.reset();
      continue;
    }
    const auto result = generate(session, tokenizer, fresh, options, [](int32_t, std::string_view text) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
      return true;
    });
    std::printf("\n");
    std::fflush(stdout);
    report_generation(result);

    cached = conversation;
    cached.insert(cached.end(), result.tokens.begin(), result.tokens.end());
    cached.resize(session.position());  // the last sampled token was never fed back
    messages.push_back({{"role", "assistant"}, {"content", result.text}});
  }
  std::fprintf(stderr, "\n");
}

}  // namespace

void register_chat(CLI::App& app) {
  auto options = std::make_shared<ChatOptions>();
  CLI::App* cmd = app.add_subcommand("chat", "Interactive multi-turn chat in the terminal (Ctrl-D exits)");
  add_model_options(*cmd, options->model);
  cmd->add_option("--system", options->system, "System message");
  add_generation_flags(*cmd, options->generation);
  cmd->callback([options] { chat(*options); });
}

}  // namespace ernie::cli
