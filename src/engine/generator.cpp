#include "engine/generator.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"
#include "engine/stop_strings.h"

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
  options.sampling.validate();
  if (options.max_new_tokens < 0) fail("max_new_tokens must be >= 0");
  if (prompt.empty() && session.position() == 0) fail("the prompt is empty: there is nothing to continue from");
  if (session.position() + static_cast<int64_t>(prompt.size()) >= session.context_length()) {
    fail("prompt of ", prompt.size(), " tokens (after ", session.position(), " cached) does not fit the context of ",
         session.context_length(), " tokens with room to generate");
  }

  GenerationResult result;
  result.prompt_tokens = static_cast<int>(prompt.size());
  Sampler sampler(options.sampling, session.vocab_size());
  sampler.set_prompt(prompt);
  StreamDecoder decoder(tokenizer, /*skip_special_tokens=*/true);
  StopStringMatcher stops(options.stop_strings);
  // Everything the loop appends to is sized up front, so decoding a token allocates nothing (token texts are
  // short strings, held inline).
  std::vector<float> logits;
  logits.reserve(session.vocab_size());
  result.tokens.reserve(options.max_new_tokens);
  result.text.reserve(static_cast<size_t>(std::min(options.max_new_tokens, 1 << 16)) * 16);

  const auto emit = [&](int32_t token, const std::string& text) {
    result.text += text;
    return !on_token || on_token(token, text);
  };

  auto start = std::chrono::steady_clock::now();
  auto view = session.forward(prompt);
  result.prefill_seconds = seconds_since(start);
  start = std::chrono::steady_clock::now();

  bool stop_string_found = false;
  while (static_cast<int>(result.tokens.size()) < options.max_new_tokens) {
    logits.assign(view.begin(), view.end());  // the sampler edits its input; the session's buffer stays intact
    const int32_t token = sampler.sample(logits);
    sampler.accept(token);
    result.tokens.push_back(token);

    const bool is_eos = std::find(options.eos_ids.begin(), options.eos_ids.end(), token) != options.eos_ids.end();
    if (is_eos && !options.ignore_eos) {
      result.finish_reason = FinishReason::Stop;
      break;
    }
    const auto matched = stops.push(decoder.push(token));
    stop_string_found = matched.stopped;
    const bool keep_going = emit(token, matched.text);
    if (stop_string_found || !keep_going) {
      result.finish_reason = FinishReason::Stop;
      break;
    }
    if (static_cast<int>(result.tokens.size()) >= options.max_new_tokens) break;
    if (session.position() >= session.context_length()) break;  // context full: finish as "length"
    view = session.forward(std::span<const int32_t>(&token, 1));
  }
  if (!stop_string_found) {
    // Release text held back for a partial UTF-8 character or a possible stop-string prefix.
    const auto tail = stops.push(decoder.flush());
    const std::string rest = tail.stopped ? tail.text : tail.text + stops.flush();
    if (!rest.empty()) emit(result.tokens.empty() ? -1 : result.tokens.back(), rest);
  }
  result.decode_seconds = seconds_since(start);
  return result;
}

}  // namespace ernie
