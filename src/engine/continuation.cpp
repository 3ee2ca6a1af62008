#include "engine/continuation.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace ernie {

Continuation::Continuation(const Tokenizer& tokenizer, const GenerationOptions& options,
                           std::span<const int32_t> prompt, int vocab_size, const TokenTrie* trie)
    : max_new_tokens_(options.max_new_tokens),
      ignore_eos_(options.ignore_eos),
      eos_ids_(options.eos_ids),
      sampler_(options.sampling, vocab_size),
      decoder_(tokenizer, /*skip_special_tokens=*/true),
      stops_(options.stop_strings),
      logit_bias_(options.logit_bias),
      top_logprobs_(options.top_logprobs) {
  if (max_new_tokens_ < 0) fail("max_new_tokens must be >= 0");
  for (const auto& [id, bias] : logit_bias_) {
    if (id < 0 || id >= vocab_size) fail("logit_bias names token ", id, ", outside the vocabulary");
    if (!std::isfinite(bias)) fail("logit_bias for token ", id, " is not a finite number");
  }
  if (options.grammar) {
    if (!trie) fail("constrained decoding needs the vocabulary's token trie");
    matcher_.emplace(options.grammar, *trie);
    scratch_.resize(vocab_size);
  }
  if (top_logprobs_ >= 0) raw_.resize(vocab_size);
  sampler_.set_prompt(prompt);
  tokens_.reserve(max_new_tokens_);  // a decode step must not allocate
}

bool Continuation::is_eos(int32_t token) const {
  return std::find(eos_ids_.begin(), eos_ids_.end(), token) != eos_ids_.end();
}

// The sampler's pick among the tokens the grammar allows, as if the disallowed ones had been removed first. The mask
// is often not needed:
//   - greedy: when the grammar allows the unconstrained argmax, it is also the argmax of the masked logits;
//   - plain sampling (temperature and penalties only, no top-k/top-p/min-p, which look at the whole distribution): a
//     draw from the whole distribution that the grammar allows is kept, else one is drawn from the masked one. A
//     token t comes out with probability p(t) + (1 - P(allowed)) p(t) / P(allowed) = p(t) / P(allowed), exactly the
//     masked distribution. Inside a free-text string nearly every token is allowed, so the first draw nearly always
//     stands; where few are (keys, numbers), the mask is cheap.
bool Continuation::can_skip_mask() const {
  const SamplingParams& p = sampler_.params();
  return p.greedy() || (p.top_k == 0 && p.top_p == 1.0f && p.min_p == 0.0f);
}

void Continuation::prepare_mask() {
  if (matcher_ && !can_skip_mask()) matcher_->allowed_tokens();
}

int32_t Continuation::choose(std::span<float> logits) {
  if (!matcher_) return sampler_.sample(logits);
  const bool eos_allowed = matcher_->can_end() && !ignore_eos_;
  if (can_skip_mask()) {
    std::copy(logits.begin(), logits.end(), scratch_.begin());
    const int32_t token = sampler_.sample(scratch_);
    if (is_eos(token) ? eos_allowed : matcher_->allows(token)) return token;
  }
  const std::vector<uint64_t>& mask = matcher_->allowed_tokens();
  constexpr float kBanned = -std::numeric_limits<float>::infinity();
  int32_t first_kept = -1;
  for (size_t id = 0; id < logits.size(); ++id) {
    const bool allowed = (id >> 6) < mask.size() && ((mask[id >> 6] >> (id & 63)) & 1);
    const bool keep = allowed || (eos_allowed && is_eos(static_cast<int32_t>(id)));
    if (!keep) logits[id] = kBanned;
    if (keep && first_kept < 0) first_kept = static_cast<int32_t>(id);
  }
  if (first_kept < 0) fail("the grammar allows no token here: the vocabulary cannot write what it requires");
  const int32_t token = sampler_.sample(logits);
  // Only when every allowed logit is -inf or NaN does the sampler fall back to token 0, allowed or not.
  const bool kept = token < static_cast<int32_t>(mask.size() * 64) && ((mask[token >> 6] >> (token & 63)) & 1);
  return kept || (eos_allowed && is_eos(token)) ? token : first_kept;
}

void Continuation::record_logprobs(Step& step) const {
  step.logprob = static_cast<float>(raw_[step.token] - log_normalizer_);
  if (top_logprobs_ <= 0) return;
  std::vector<int32_t> ids(raw_.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  const size_t n = std::min<size_t>(top_logprobs_, ids.size());
  std::partial_sort(ids.begin(), ids.begin() + n, ids.end(),
                    [&](int32_t a, int32_t b) { return raw_[a] > raw_[b] || (raw_[a] == raw_[b] && a < b); });
  step.top.reserve(n);
  for (size_t i = 0; i < n; ++i) step.top.push_back({ids[i], static_cast<float>(raw_[ids[i]] - log_normalizer_)});
}

Continuation::Step Continuation::next(std::span<float> logits) {
  if (top_logprobs_ >= 0) {
    // log-softmax of the model's own logits, in double: logZ = max + log(sum exp(l - max)).
    std::copy(logits.begin(), logits.end(), raw_.begin());
    float top = -std::numeric_limits<float>::infinity();
    for (const float l : raw_) top = std::max(top, l);
    double sum = 0;
    for (const float l : raw_) sum += std::exp(static_cast<double>(l) - top);
    log_normalizer_ = top + std::log(sum);
  }
  for (const auto& [id, bias] : logit_bias_) logits[id] += bias;
  const int32_t token = choose(logits);
  sampler_.accept(token);
  tokens_.push_back(token);
  const bool full = static_cast<int>(tokens_.size()) >= max_new_tokens_;

  Step step{token, "", /*emit=*/false, /*done=*/true, 0.0f, {}};
  if (top_logprobs_ >= 0) record_logprobs(step);
  if (is_eos(token) && (!ignore_eos_ || matcher_)) {
    finish_reason_ = FinishReason::Stop;
    return step;
  }
  bool complete = false;
  if (matcher_) {
    matcher_->accept(token);  // allowed by construction
    complete = matcher_->must_end();
  }
  auto matched = stops_.push(decoder_.push(token));
  if (matched.stopped) stop_string_found_ = true;
  if (matched.stopped || complete) finish_reason_ = FinishReason::Stop;
  step.text = std::move(matched.text);
  step.emit = true;
  step.done = matched.stopped || complete || full;
  return step;
}

std::string Continuation::flush() {
  if (stop_string_found_) return "";
  const auto tail = stops_.push(decoder_.flush());
  return tail.stopped ? tail.text : tail.text + stops_.flush();
}

}  // namespace ernie
