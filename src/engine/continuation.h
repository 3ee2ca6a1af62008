// One sequence's generated part, a token at a time: sampling, the end conditions (end-of-sequence id, stop string,
// max_new_tokens) and the text that becomes final with each token. generate() and the Scheduler both drive their
// sequences through it, so a request ends the same way and streams the same text whichever of them runs it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/generator.h"
#include "engine/grammar/grammar_matcher.h"
#include "engine/sampler.h"
#include "engine/stop_strings.h"
#include "tokenizer/tokenizer.h"

namespace ernie {

struct TokenLogprob {
  int32_t token;
  float logprob;
};

class Continuation {
 public:
  // `prompt` seeds the repetition penalty. Raises ernie::Error for invalid sampling params or max_new_tokens < 0,
  // or for a grammar without `trie` (the vocabulary's, built once per tokenizer). Keeps its own copy of the options;
  // the tokenizer and trie must outlive the continuation. Allocates the sampler's scratch (about 23 bytes per vocab
  // entry), and with a grammar or logprobs one more float per entry.
  Continuation(const Tokenizer& tokenizer, const GenerationOptions& options, std::span<const int32_t> prompt,
               int vocab_size, const TokenTrie* trie = nullptr);

  struct Step {
    int32_t token;
    std::string text;   // text made final by this token: may be empty (held back), never includes a stop string
    bool emit;          // false for an end-of-sequence id, which is recorded but not shown
    bool done;          // generation ends here: end-of-sequence id, stop string, max_new_tokens, or the grammar
    float logprob = 0;  // with top_logprobs >= 0: the token's log-probability
    std::vector<TokenLogprob> top;  // and the top_logprobs most likely tokens, most likely first
  };
  // Chooses the next token from `logits` ([vocab_size], overwritten) and records it. Must not be called once a
  // step was done or after stop(). Raises ernie::Error if a grammar allows no token at all (a grammar that needs
  // bytes this vocabulary cannot write).
  Step next(std::span<float> logits);

  // With a grammar and a sampler that always needs the full mask (top-k, top-p, min-p), computes it now, so that a
  // batch's masks can be computed on several threads before next() samples each sequence. Safe to run concurrently
  // for different continuations; next() then finds the mask cached.
  void prepare_mask();

  // Ends generation early for the caller's own reason (a full context stays "length"; cancellation is "stop").
  void stop(FinishReason reason) { finish_reason_ = reason; }

  // End of generation: the text still held back (a partial UTF-8 character or a possible stop-string prefix),
  // or "" when a stop string ended it.
  std::string flush();

  const std::vector<int32_t>& tokens() const { return tokens_; }  // including a final end-of-sequence id
  FinishReason finish_reason() const { return finish_reason_; }

 private:
  int max_new_tokens_;
  bool ignore_eos_;
  std::vector<int32_t> eos_ids_;
  Sampler sampler_;
  StreamDecoder decoder_;
  StopStringMatcher stops_;
  std::vector<int32_t> tokens_;
  FinishReason finish_reason_ = FinishReason::Length;
  bool stop_string_found_ = false;

  int32_t choose(std::span<float> logits);
  bool can_skip_mask() const;  // the sampler may find its token without the mask
  void record_logprobs(Step& step) const;
  bool is_eos(int32_t token) const;

  std::vector<std::pair<int32_t, float>> logit_bias_;
  int top_logprobs_;
  std::optional<GrammarMatcher> matcher_;
  std::vector<float> raw_;      // the model's logits, kept for logprobs
  std::vector<float> scratch_;  // a greedy pick tried before masking
  double log_normalizer_ = 0;   // of raw_
};

}  // namespace ernie
