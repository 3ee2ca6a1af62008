// The one check of a prompt against the model: not empty, every token id inside the vocabulary, and room in the
// context for the prompt (after what a session already holds) plus at least one generated token. The HTTP API, the
// generation loop and the scheduler all call it; the model below trusts what passes it and still refuses anything
// else with ernie::Error rather than reading out of bounds.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace ernie {

struct PromptProblem {
  enum class Kind { Empty, TokenOutOfRange, NoRoom };
  Kind kind;
  std::string message;  // one line, naming the id or the counts
};

std::optional<PromptProblem> find_prompt_problem(std::span<const int32_t> prompt, int64_t vocab_size,
                                                 int64_t cached_tokens, int64_t context_length);
// Raises ernie::Error with the problem's message.
void check_prompt(std::span<const int32_t> prompt, int64_t vocab_size, int64_t cached_tokens, int64_t context_length);

}  // namespace ernie
