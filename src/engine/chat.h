// Conversations through the checkpoint's chat template, rendered as transformers' apply_chat_template renders them.
// Shared by the CLI (`run --chat`, `chat`) and the server's /v1/chat/completions.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace ernie {

// The conversation rendered by `chat_template` with the variables transformers passes it: the tokenizer's named
// special tokens, `messages` and `add_generation_prompt`. Raises ernie::Error from the template.
std::string render_chat(const ChatTemplate& chat_template, const Tokenizer& tokenizer, const nlohmann::json& messages,
                        bool add_generation_prompt);
// The same with the checkpoint's own template, parsed on each call; raises ernie::Error if it has none.
std::string render_chat(const Tokenizer& tokenizer, const nlohmann::json& messages, bool add_generation_prompt);

// Adds the template's end-of-turn token (sep_token, "<|end_of_sentence|>" for ERNIE) to the ids that end a reply.
void add_chat_end_ids(const Tokenizer& tokenizer, std::vector<int32_t>& eos_ids);

}  // namespace ernie
