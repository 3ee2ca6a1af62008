#include "engine/generator.h"

#include <algorithm>
#include <chrono>
#include <memory>

#include "core/error.h"
#include "engine/continuation.h"
#include "engine/prompt_check.h"

namespace ernie {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

GenerationOptions default_generation_options(const ModelConfig& config, const GenerationDefaults& defaults) {
  GenerationOptions options;
  if (defaults.max_new_tokens) options.max_new_tokens = *defaults.max_new_tokens;
  options.eos_ids = defaults.eos_token_ids.empty() ? config.eos_token_ids : defaults.eos_token_ids;
  SamplingParams& s = options.sampling;
  // transformers samples only when do_sample is true; without it, generate() is greedy.
  if (defaults.do_sample.value_or(false)) {
    s.temperature = defaults.temperature.value_or(1.0f);
    s.top_p = defaults.top_p.value_or(1.0f);
    s.top_k = defaults.top_k.value_or(0);
  } else {
    s.temperature = 0.0f;
  }
  s.repetition_penalty = defaults.repetition_penalty.value_or(1.0f);
  return options;
}

std::string_view finish_reason_name(FinishReason reason) {
  return reason == FinishReason::Stop ? "stop" : "length";
}

GenerationResult generate(Session& session, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                          const GenerationOptions& options, const TokenCallback& on_token) {
  check_prompt(prompt, session.vocab_size(), session.position(), session.context_length());
  const std::unique_ptr<TokenTrie> trie = options.grammar ? std::make_unique<TokenTrie>(tokenizer) : nullptr;
  Continuation continuation(tokenizer, options, prompt, session.vocab_size(), trie.get());

  GenerationResult result;
  result.prompt_tokens = static_cast<int>(prompt.size());
  // Everything the loop appends to is sized up front, so decoding a token allocates nothing (token texts are
  // short strings, held inline).
  std::vector<float> logits;
  logits.reserve(session.vocab_size());
  result.text.reserve(static_cast<size_t>(std::min(options.max_new_tokens, 1 << 16)) * 16);
  const auto emit = [&](int32_t token, const std::string& text) {
    result.text += text;
    return !on_token || on_token(token, text);
  };

  auto start = std::chrono::steady_clock::now();
  auto view = session.forward(prompt);
  result.prefill_seconds = seconds_since(start);
  start = std::chrono::steady_clock::now();

  for (int n = 0; n < options.max_new_tokens; ++n) {
    logits.assign(view.begin(), view.end());  // the sampler edits its input; the session's buffer stays intact
    const auto step = continuation.next(logits);
    if (step.emit && !emit(step.token, step.text)) {
      continuation.stop(FinishReason::Stop);
      break;
    }
    if (step.done) break;
    if (session.position() >= session.context_length()) break;  // context full: finish as "length"
    view = session.forward(std::span<const int32_t>(&step.token, 1));
  }
  result.tokens = continuation.tokens();
  result.finish_reason = continuation.finish_reason();
  const std::string rest = continuation.flush();
  if (!rest.empty()) emit(result.tokens.empty() ? -1 : result.tokens.back(), rest);
  result.decode_seconds = seconds_since(start);
  return result;
}

}  // namespace ernie
