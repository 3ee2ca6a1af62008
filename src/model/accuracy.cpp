#include "model/accuracy.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace ernie {
namespace {

void log_softmax(std::span<const float> logits, std::vector<double>& out) {
  double top = -INFINITY;
  for (float v : logits) top = std::max(top, double(v));
  double sum = 0;
  for (float v : logits) sum += std::exp(v - top);
  const double log_sum = std::log(sum);
  out.resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) out[i] = logits[i] - top - log_sum;
}

}  // namespace

void LogitAgreement::add(std::span<const float> reference, std::span<const float> ours) {
  if (reference.size() != ours.size() || reference.empty()) {
    fail("logit agreement: ", reference.size(), " reference logits against ", ours.size());
  }
  log_softmax(reference, log_p_reference_);
  log_softmax(ours, log_p_ours_);
  size_t best_reference = 0, best_ours = 0;
  for (size_t v = 0; v < reference.size(); ++v) {
    const double d = double(ours[v]) - reference[v];
    squared_difference_ += d * d;
    squared_reference_ += double(reference[v]) * reference[v];
    kl_ += std::exp(log_p_reference_[v]) * (log_p_reference_[v] - log_p_ours_[v]);
    if (reference[v] > reference[best_reference]) best_reference = v;
    if (ours[v] > ours[best_ours]) best_ours = v;
  }
  agreeing_ += best_reference == best_ours;
  ++positions_;
}

double LogitAgreement::relative_error() const {
  return std::sqrt(squared_difference_ / squared_reference_);
}

double LogitAgreement::mean_kl() const {
  return kl_ / positions_;
}

double LogitAgreement::top1() const {
  return static_cast<double>(agreeing_) / positions_;
}

void Perplexity::add(std::span<const float> logits, int32_t next) {
  if (next < 0 || static_cast<size_t>(next) >= logits.size())
    fail("perplexity: token ", next, " is outside the ", logits.size(), " logits");
  log_softmax(logits, log_p_);
  nll_ -= log_p_[next];
  ++tokens_;
}

double Perplexity::value() const {
  return std::exp(nll_ / static_cast<double>(tokens_));
}

}  // namespace ernie
