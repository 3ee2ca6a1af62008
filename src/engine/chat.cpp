#include "engine/chat.h"

#include "core/error.h"

namespace ernie {

std::string render_chat(const ChatTemplate& chat_template, const Tokenizer& tokenizer, const nlohmann::json& messages,
                        bool add_generation_prompt) {
  nlohmann::json context = nlohmann::json::object();
  for (const auto& [name, text] : tokenizer.special_token_strings()) context[name] = text;
  context["messages"] = messages;
  context["add_generation_prompt"] = add_generation_prompt;
  return chat_template.render(context);
}

std::string render_chat(const Tokenizer& tokenizer, const nlohmann::json& messages, bool add_generation_prompt) {
  if (tokenizer.chat_template().empty()) fail("this checkpoint's tokenizer_config.json has no chat_template");
  return render_chat(ChatTemplate::parse(tokenizer.chat_template()), tokenizer, messages, add_generation_prompt);
}

void add_chat_end_ids(const Tokenizer& tokenizer, std::vector<int32_t>& eos_ids) {
  const auto& specials = tokenizer.special_token_strings();
  const auto sep = specials.find("sep_token");
  if (sep == specials.end()) return;
  if (const auto id = tokenizer.token_id(sep->second)) eos_ids.push_back(*id);
}

}  // namespace ernie
