#include "engine/continuation.h"

#include <algorithm>

#include "core/error.h"

namespace ernie {

Continuation::Continuation(const Tokenizer& tokenizer, const GenerationOptions& options,
                           std::span<const int32_t> prompt, int vocab_size)
    : max_new_tokens_(options.max_new_tokens),
      ignore_eos_(options.ignore_eos),
      eos_ids_(options.eos_ids),
      sampler_(options.sampling, vocab_size),
      decoder_(tokenizer, /*skip_special_tokens=*/true),
      stops_(options.stop_strings) {
  if (max_new_tokens_ < 0) fail("max_new_tokens must be >= 0");
  sampler_.set_prompt(prompt);
  tokens_.reserve(max_new_tokens_);  // a decode step must not allocate
}

Continuation::Step Continuation::next(std::span<float> logits) {
  const int32_t token = sampler_.sample(logits);
  sampler_.accept(token);
  tokens_.push_back(token);
  const bool full = static_cast<int>(tokens_.size()) >= max_new_tokens_;

  const bool is_eos = std::find(eos_ids_.begin(), eos_ids_.end(), token) != eos_ids_.end();
  if (is_eos && !ignore_eos_) {
    finish_reason_ = FinishReason::Stop;
    return {token, "", /*emit=*/false, /*done=*/true};
  }
  auto matched = stops_.push(decoder_.push(token));
  if (matched.stopped) {
    stop_string_found_ = true;
    finish_reason_ = FinishReason::Stop;
  }
  return {token, std::move(matched.text), /*emit=*/true, /*done=*/matched.stopped || full};
}

std::string Continuation::flush() {
  if (stop_string_found_) return "";
  const auto tail = stops_.push(decoder_.flush());
  return tail.stopped ? tail.text : tail.text + stops_.flush();
}

}  // namespace ernie
