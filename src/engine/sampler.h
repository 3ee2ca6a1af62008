// Chooses the next token from a model's logits.
//
// The filters reproduce Hugging Face transformers' generate() for the same options, applied in its order:
//   repetition penalty -> presence/frequency penalties -> temperature -> top-k -> top-p -> min-p -> draw.
// Presence and frequency penalties are OpenAI's (HF has none); like OpenAI and vLLM they act on the raw
// logits, before temperature. Exact-tie rules, where HF leaves them to torch:
//   - greedy: the lowest id among equal maxima;
//   - top-k keeps every token whose logit equals the k-th largest (HF compares against the k-th value, so
//     ties at the boundary survive and more than k tokens may remain);
//   - top-p ranks equal logits by ascending id.
// Logits that are NaN are treated as -inf. If every logit is -inf the result is token 0; if any is +inf (after
// penalties), the first such token. A token whose scaled logit lies more than 87 below the best one's gets
// probability exactly 0 (float underflow, as in a float32 softmax).
//
// Randomness: std::mt19937_64 (its output is fixed by the C++ standard) with our own 53-bit uniform double,
// exactly one draw per sampled (non-greedy) token, inverted over the kept tokens in ascending id order (in
// rank order when top-k is active). exp() is our own, not libm's, and no result depends on the standard
// library's partial-sort internals, so the same seed, params and logits give the same tokens everywhere.
//
// Cost per sampled token: a few linear passes over the vocabulary (one exp each) plus a sort of the tokens
// near the top-k / top-p cut; no full sort.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace ernie {

struct SamplingParams {
  float temperature = 1.0f;         // 0 => greedy (plain argmax, ties -> lowest id); must be >= 0
  int top_k = 0;                    // 0 => disabled; must be >= 0
  float top_p = 1.0f;               // 1 => disabled; must lie in (0, 1]
  float min_p = 0.0f;               // 0 => disabled; must lie in [0, 1]
  float repetition_penalty = 1.0f;  // HF: over prompt + generated tokens, logit>0 ? l/p : l*p; must be > 0
  float presence_penalty = 0.0f;    // OpenAI: l -= presence if count>0 (generated tokens); in [-2, 2]
  float frequency_penalty = 0.0f;   // OpenAI: l -= frequency * count (generated tokens); in [-2, 2]
  uint64_t seed = 0;

  // Raises ernie::Error naming the first out-of-range field (NaN counts as out of range). Front ends call it
  // up front; the Sampler constructor calls it too, so a Sampler never holds invalid params.
  void validate() const;

  // True when sample() is a plain argmax (temperature 0).
  bool greedy() const { return temperature == 0.0f; }
};

// One sequence's sampler. Not thread-safe: give each concurrent sequence its own.
// Scratch scales with the vocabulary (about 23 bytes per entry) and is all allocated by the constructor;
// sample(), accept(), set_prompt() and reset() never allocate.
class Sampler {
 public:
  // Raises ernie::Error if params are invalid or vocab_size < 1.
  Sampler(const SamplingParams& params, int vocab_size);

  // Starts the context over with `prompt` as its only tokens: forgets any earlier prompt and generated
  // tokens (the random stream continues). Prompt tokens count for the repetition penalty only.
  // Raises ernie::Error for an id outside [0, vocab_size) (before touching any state).
  void set_prompt(std::span<const int32_t> prompt);

  // Records a generated token: it joins the repetition-penalty context and the presence/frequency counts.
  // Ids outside [0, vocab_size) are ignored (nothing in the per-token loop throws).
  void accept(int32_t token);

  // Chooses the next token from raw logits (logits.size() must equal vocab_size). Overwrites `logits` with
  // intermediate values; callers must not rely on what is left there. Does not record the token: call
  // accept() with whatever token the sequence actually continues with.
  int32_t sample(std::span<float> logits);

  // New sequence, same params: forgets the context and reseeds. Costs O(distinct tokens seen), not O(vocab).
  void reset(uint64_t seed);

  const SamplingParams& params() const { return params_; }
  int vocab_size() const { return vocab_size_; }

 private:
  // A token and its scaled logit or weight, for the few places that need tokens in rank order.
  struct Ranked {
    float value;
    int32_t id;
  };

  void apply_penalties(std::span<float> logits) const;
  void clear_context();
  double next_uniform();  // in [0, 1), 53 random bits
  int32_t sample_ranked(size_t n, double u);
  int32_t sample_all(std::span<const float> scaled, double u);
  int32_t draw(std::span<const float> weights, double u);

  SamplingParams params_;
  int vocab_size_;
  std::mt19937_64 rng_;
  // Per token id: occurrences among generated tokens (presence/frequency) and whether it is anywhere in the
  // context (repetition). seen_ lists each id with in_context_ set, so clearing touches only those.
  std::vector<int32_t> generated_count_;
  std::vector<uint8_t> in_context_;
  std::vector<int32_t> seen_;  // capacity vocab_size: each id is pushed at most once
  // sample() scratch. Tokens are binned by how far their scaled logit lies below the max, so top-k and top-p
  // only rank the one bin their cut falls in rather than the whole vocabulary.
  std::vector<float> weights_;      // per id: exp(scaled logit), 0 once filtered out
  std::vector<uint16_t> bin_of_;    // per id
  std::vector<int32_t> bin_count_;  // per bin
  std::vector<double> bin_mass_;    // per bin
  std::vector<Ranked> ranked_;      // vocab_size entries, a prefix in use
  std::vector<double> block_sum_;   // per block of weights in draw()
};

}  // namespace ernie
