// How closely one model's logits follow a reference's (the same checkpoint in float32, or transformers' output),
// position by position: what `ernie accuracy` reports for each weight type and the quantization tests bound.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace ernie {

class LogitAgreement {
 public:
  // One position's logits from the reference and from the model under test (the same vocabulary).
  void add(std::span<const float> reference, std::span<const float> ours);

  int positions() const { return positions_; }
  double relative_error() const;  // ‖ours − reference‖ / ‖reference‖ over every logit of every position
  double mean_kl() const;         // mean over positions of KL(reference ‖ ours) of the softmax distributions, nats
  double top1() const;            // fraction of positions whose argmax agrees

 private:
  double squared_difference_ = 0, squared_reference_ = 0, kl_ = 0;
  int positions_ = 0, agreeing_ = 0;
  std::vector<double> log_p_reference_, log_p_ours_;  // reused between positions
};

// The perplexity of a text: exp of the mean negative log-likelihood (log-softmax in double) of each scored token.
class Perplexity {
 public:
  // The logits a model gave at one position, and the token that came next.
  void add(std::span<const float> logits, int32_t next);

  int64_t tokens() const { return tokens_; }
  double nll() const { return nll_; }  // summed, nats
  double value() const;                // exp(nll / tokens)

 private:
  double nll_ = 0;
  int64_t tokens_ = 0;
  std::vector<double> log_p_;
};

}  // namespace ernie
