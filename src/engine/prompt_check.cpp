#include "engine/prompt_check.h"

#include "core/error.h"

namespace ernie {

std::optional<PromptProblem> find_prompt_problem(std::span<const int32_t> prompt, int64_t vocab_size,
                                                 int64_t cached_tokens, int64_t context_length) {
  using Kind = PromptProblem::Kind;
  if (prompt.empty() && cached_tokens == 0) {
    return PromptProblem{Kind::Empty, "the prompt is empty: there is nothing to continue from"};
  }
  for (const int32_t id : prompt) {
    if (id < 0 || id >= vocab_size) {
      return PromptProblem{Kind::TokenOutOfRange, "token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                                                      std::to_string(vocab_size) + ")"};
    }
  }
  const int64_t total = cached_tokens + static_cast<int64_t>(prompt.size());
  if (total >= context_length) {
    std::string message = "This model's maximum context length is " + std::to_string(context_length) +
                          " tokens; the prompt has " + std::to_string(prompt.size()) + " tokens";
    if (cached_tokens > 0) message += " after " + std::to_string(cached_tokens) + " already cached";
    return PromptProblem{Kind::NoRoom, message + ", leaving no room to generate"};
  }
  return std::nullopt;
}

void check_prompt(std::span<const int32_t> prompt, int64_t vocab_size, int64_t cached_tokens, int64_t context_length) {
  if (auto problem = find_prompt_problem(prompt, vocab_size, cached_tokens, context_length)) fail(problem->message);
}

}  // namespace ernie
