#include "engine/sampler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <iterator>
#include <limits>

#include "core/error.h"

namespace ernie {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Written so that NaN, which fails every comparison, is out of range.
bool in_range(float value, float lo, float hi) {
  return value >= lo && value <= hi;
}

// Bins of scaled logit (x <= 0): bin b holds -x in [b, b+1) / kBinsPerNat; the last bin also takes everything
// further down, whose weight (below e^-64 of the top token's) cannot matter.
constexpr size_t kBinsPerNat = 32;
constexpr size_t kBins = 64 * kBinsPerNat;
static_assert(kBins <= 65536, "bin ids are stored as uint16_t");

inline uint16_t bin_of(float scaled) {
  const float x = -scaled * static_cast<float>(kBinsPerNat);
  return static_cast<uint16_t>(x < static_cast<float>(kBins - 1) ? static_cast<int32_t>(x)
                                                                 : static_cast<int32_t>(kBins - 1));
}

// `value` if `keep`, else 0, as a bit mask: GCC turns the obvious select into an unpredictable branch here.
inline float keep_if(float value, bool keep) {
  return std::bit_cast<float>(std::bit_cast<uint32_t>(value) & (0u - static_cast<uint32_t>(keep)));
}

// e^x for x <= 0 (including -inf), to about 1 ulp, written out rather than taken from libm so that every
// platform computes the same weights and the loops over the vocabulary vectorise. Cody-Waite range reduction
// x = n ln2 + r, |r| <= ln2/2, then a degree-7 polynomial for e^r (Cephes' expf coefficients). Below -87 the
// result is 0; the clamp and that zeroing are bit masks because GCC will not vectorise a float select whose
// value feeds arithmetic.
inline float exp_nonpositive(float x) {
  const uint32_t in_range = 0u - static_cast<uint32_t>(x >= -87.0f);  // all ones, or 0 (also for -inf)
  const float clamped =
      std::bit_cast<float>((std::bit_cast<uint32_t>(x) & in_range) | (std::bit_cast<uint32_t>(-87.0f) & ~in_range));
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float n = (clamped * 1.44269504088896341f + kRound) - kRound;
  float r = clamped - n * 0.693359375f;  // ln2 split in two so that n * hi is exact
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const auto exponent = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  const float value = p * std::bit_cast<float>(exponent);
  return std::bit_cast<float>(std::bit_cast<uint32_t>(value) & in_range);
}

// Index of the first largest value; 0 if all are -inf. The max is found in eight independent lanes (a float
// max reduction is not vectorised without -ffast-math), then located.
size_t first_max(std::span<const float> values) {
  float lane[8];
  std::fill(std::begin(lane), std::end(lane), kNegInf);
  size_t i = 0;
  for (; i + 8 <= values.size(); i += 8) {
    for (size_t j = 0; j < 8; ++j) lane[j] = values[i + j] > lane[j] ? values[i + j] : lane[j];
  }
  float max = kNegInf;
  for (const float v : lane) max = v > max ? v : max;
  for (; i < values.size(); ++i) max = values[i] > max ? values[i] : max;
  size_t at = 0;
  while (at < values.size() && values[at] != max) ++at;
  return at < values.size() ? at : 0;
}

constexpr size_t kDrawBlock = 64;

// Rank order: larger value first, then lower id. Strict and total over distinct ids, so a sort by it has one
// result on every standard library.
constexpr auto ranks_before = [](const auto& a, const auto& b) {
  return a.value > b.value || (a.value == b.value && a.id < b.id);
};

}  // namespace

void SamplingParams::validate() const {
  if (!(std::isfinite(temperature) && temperature >= 0.0f)) {
    fail("sampling: temperature must be a finite number >= 0 (0 = greedy), got ", temperature);
  }
  if (top_k < 0) fail("sampling: top_k must be >= 0 (0 = disabled), got ", top_k);
  if (!(top_p > 0.0f && top_p <= 1.0f)) fail("sampling: top_p must lie in (0, 1] (1 = disabled), got ", top_p);
  if (!in_range(min_p, 0.0f, 1.0f)) fail("sampling: min_p must lie in [0, 1] (0 = disabled), got ", min_p);
  if (!(std::isfinite(repetition_penalty) && repetition_penalty > 0.0f)) {
    fail("sampling: repetition_penalty must be a finite number > 0 (1 = disabled), got ", repetition_penalty);
  }
  // OpenAI's accepted range; beyond it the penalty swamps the logits and output degenerates.
  if (!in_range(presence_penalty, -2.0f, 2.0f)) {
    fail("sampling: presence_penalty must lie in [-2, 2], got ", presence_penalty);
  }
  if (!in_range(frequency_penalty, -2.0f, 2.0f)) {
    fail("sampling: frequency_penalty must lie in [-2, 2], got ", frequency_penalty);
  }
}

Sampler::Sampler(const SamplingParams& params, int vocab_size)
    : params_(params), vocab_size_(vocab_size), rng_(params.seed) {
  params_.validate();
  if (vocab_size < 1) fail("sampler: vocab_size must be >= 1, got ", vocab_size);
  const auto n = static_cast<size_t>(vocab_size);
  generated_count_.assign(n, 0);
  in_context_.assign(n, 0);
  seen_.reserve(n);
  weights_.assign(n, 0.0f);
  bin_of_.assign(n, 0);
  bin_count_.assign(kBins, 0);
  bin_mass_.assign(kBins, 0.0);
  ranked_.resize(n);
  block_sum_.assign((n + kDrawBlock - 1) / kDrawBlock, 0.0);
}

void Sampler::clear_context() {
  for (const int32_t id : seen_) {
    generated_count_[static_cast<size_t>(id)] = 0;
    in_context_[static_cast<size_t>(id)] = 0;
  }
  seen_.clear();
}

void Sampler::set_prompt(std::span<const int32_t> prompt) {
  for (const int32_t id : prompt) {
    if (id < 0 || id >= vocab_size_) fail("sampler: prompt token id ", id, " outside vocabulary of ", vocab_size_);
  }
  clear_context();
  for (const int32_t id : prompt) {
    auto& flag = in_context_[static_cast<size_t>(id)];
    if (!flag) {
      flag = 1;
      seen_.push_back(id);
    }
  }
}

void Sampler::accept(int32_t token) {
  // Prompts are checked (prompt_check.h) and sampled ids come from here, so this only catches a caller's bug.
  if (token < 0 || token >= vocab_size_) fail("Sampler::accept: token id ", token, " outside [0, ", vocab_size_, ")");
  const auto id = static_cast<size_t>(token);
  if (!in_context_[id]) {
    in_context_[id] = 1;
    seen_.push_back(token);
  }
  ++generated_count_[id];
}

void Sampler::reset(uint64_t seed) {
  clear_context();
  rng_.seed(seed);
}

double Sampler::next_uniform() {
  // The top 53 bits scaled by 2^-53: exactly representable, uniform on a grid in [0, 1), and the same
  // everywhere (std::uniform_real_distribution is not specified bit-for-bit).
  return static_cast<double>(rng_() >> 11) * 0x1.0p-53;
}

void Sampler::apply_penalties(std::span<float> logits) const {
  const float repetition = params_.repetition_penalty;
  const float presence = params_.presence_penalty;
  const float frequency = params_.frequency_penalty;
  const bool use_repetition = repetition != 1.0f;
  const bool use_counts = presence != 0.0f || frequency != 0.0f;
  if (!use_repetition && !use_counts) return;
  // Each id appears once in seen_, so the repetition penalty is applied once per token however often it
  // occurred, as HF's gather/scatter does.
  for (const int32_t token : seen_) {
    const auto id = static_cast<size_t>(token);
    float& logit = logits[id];
    if (use_repetition) logit = logit < 0.0f ? logit * repetition : logit / repetition;
    const int32_t count = generated_count_[id];
    if (use_counts && count > 0) logit -= frequency * static_cast<float>(count) + presence;
  }
}

int32_t Sampler::sample(std::span<float> logits) {
  if (logits.size() != static_cast<size_t>(vocab_size_)) {
    fail("Sampler::sample: ", logits.size(), " logits for a vocabulary of ", vocab_size_);
  }
  const size_t vocab = logits.size();

  apply_penalties(logits);
  // NaN becomes -inf so that no later comparison sees it.
  for (float& logit : logits) logit = logit == logit ? logit : kNegInf;
  // Argmax, first index on ties. Also the answer when everything is -inf (token 0) or some logit is +inf
  // (nothing else can have probability).
  const size_t best = first_max(logits);
  const float max_logit = logits[best];
  if (params_.greedy()) return static_cast<int32_t>(best);

  // Drawn before any early return so the stream advances exactly once per sampled token, whatever the
  // filters keep: changing top_k does not shift the randomness of later steps.
  const double u = next_uniform();
  if (std::isinf(max_logit)) return static_cast<int32_t>(best);

  // Temperature, with the max subtracted first so that a tiny temperature cannot overflow to +inf (softmax
  // is unchanged by the shift). Scaled logits are <= 0, the max exactly 0; -inf stays -inf.
  const float temperature = params_.temperature;
  for (float& logit : logits) logit = (logit - max_logit) / temperature;

  const auto top_k = static_cast<size_t>(params_.top_k);
  if (top_k > 0 && top_k < vocab) {
    size_t finite = 0;
    for (size_t i = 0; i < vocab; ++i) finite += logits[i] != kNegInf;
    if (top_k < finite) {
      // The k-th best token lies in the first bin where the running count reaches k; rank only up to it.
      // (-inf tokens land in the last bin; they are counted there but never gathered.)
      std::fill(bin_count_.begin(), bin_count_.end(), 0);
      for (size_t i = 0; i < vocab; ++i) bin_of_[i] = bin_of(logits[i]);
      for (size_t i = 0; i < vocab; ++i) ++bin_count_[bin_of_[i]];
      size_t cut_bin = 0;
      for (size_t count = 0; (count += static_cast<size_t>(bin_count_[cut_bin])) < top_k;) ++cut_bin;
      // Branch-free compaction: whether a token is gathered is unpredictable.
      Ranked* const ranked = ranked_.data();
      size_t gathered = 0;
      for (size_t i = 0; i < vocab; ++i) {
        ranked[gathered] = {logits[i], static_cast<int32_t>(i)};
        gathered += static_cast<size_t>(bin_of_[i] <= cut_bin) & static_cast<size_t>(logits[i] != kNegInf);
      }
      const auto begin = ranked_.begin();
      auto end = begin + static_cast<ptrdiff_t>(gathered);
      if (gathered > top_k) {
        const auto kth = begin + static_cast<ptrdiff_t>(top_k - 1);
        std::nth_element(begin, kth, end, ranks_before);
        // HF removes only logits strictly below the k-th value: ties with it stay (they all sit after it).
        const float kth_value = kth->value;
        end = std::partition(kth + 1, end, [&](const Ranked& r) { return r.value >= kth_value; });
      }
      // A sort on a strict total order has one result, so the draw order below is the same everywhere.
      std::sort(begin, end, ranks_before);
      return sample_ranked(static_cast<size_t>(end - begin), u);
    }
  }
  return sample_all(logits, u);
}

int32_t Sampler::sample_ranked(size_t n, double u) {
  // ranked_[0, n) holds scaled logits best first; turn them into weights, the top one exactly 1.
  for (size_t i = 0; i < n; ++i) ranked_[i].value = exp_nonpositive(ranked_[i].value);

  if (params_.top_p < 1.0f) {
    double total = 0.0;
    for (size_t i = 0; i < n; ++i) total += ranked_[i].value;
    const double target = static_cast<double>(params_.top_p) * total;
    double cumulative = 0.0;
    for (size_t i = 0; i < n; ++i) {
      cumulative += ranked_[i].value;
      if (cumulative >= target) {
        n = i + 1;
        break;
      }
    }
  }
  // p_i >= min_p * p_max  <=>  weight_i >= min_p. Weights are sorted, so this trims a tail.
  const double min_p = params_.min_p;
  while (n > 1 && static_cast<double>(ranked_[n - 1].value) < min_p) --n;

  double total = 0.0;
  for (size_t i = 0; i < n; ++i) total += ranked_[i].value;
  const double target = u * total;
  double cumulative = 0.0;
  for (size_t i = 0; i < n; ++i) {
    cumulative += ranked_[i].value;
    if (target < cumulative) return ranked_[i].id;
  }
  // u * total rounded up to the full sum: the last token that can be chosen.
  while (n > 1 && ranked_[n - 1].value == 0.0f) --n;
  return ranked_[n - 1].id;
}

int32_t Sampler::sample_all(std::span<const float> scaled, double u) {
  const size_t vocab = scaled.size();
  const float min_p = params_.min_p;
  float* const weights = weights_.data();
  for (size_t i = 0; i < vocab; ++i) weights[i] = exp_nonpositive(scaled[i]);

  size_t cut_bin = kBins;  // tokens in bins after this one are dropped
  if (params_.top_p < 1.0f) {
    // Keep the best-first prefix up to and including the token whose cumulative probability first reaches
    // top_p. Bins are in rank order, so whole bins are kept or dropped by their mass; only the bin holding
    // the cut is sorted. Sums run in a fixed order (id within a bin, then bin), so the cut is reproducible.
    std::fill(bin_mass_.begin(), bin_mass_.end(), 0.0);
    for (size_t i = 0; i < vocab; ++i) bin_of_[i] = bin_of(scaled[i]);
    for (size_t i = 0; i < vocab; ++i) bin_mass_[bin_of_[i]] += weights[i];
    double total = 0.0;
    for (const double mass : bin_mass_) total += mass;
    const double target = static_cast<double>(params_.top_p) * total;
    double cumulative = 0.0;
    for (size_t bin = 0; bin < kBins; ++bin) {
      if (cumulative + bin_mass_[bin] >= target) {
        cut_bin = bin;
        break;
      }
      cumulative += bin_mass_[bin];
    }
    // Rounding can leave the sum just short of target; then nothing is cut.
    if (cut_bin < kBins) {
      Ranked* const ranked = ranked_.data();
      size_t gathered = 0;
      for (size_t i = 0; i < vocab; ++i) {
        ranked[gathered] = {weights[i], static_cast<int32_t>(i)};
        gathered += bin_of_[i] == cut_bin;
      }
      std::sort(ranked, ranked + gathered, ranks_before);
      size_t kept = gathered;
      for (size_t i = 0; i < gathered; ++i) {
        cumulative += ranked[i].value;
        if (cumulative >= target) {
          kept = i + 1;
          break;
        }
      }
      for (size_t i = kept; i < gathered; ++i) weights[static_cast<size_t>(ranked[i].id)] = 0.0f;
      const auto last_bin = static_cast<uint16_t>(cut_bin);
      for (size_t i = 0; i < vocab; ++i) weights[i] = keep_if(weights[i], bin_of_[i] <= last_bin);
    }
  }
  if (min_p > 0.0f) {
    // p_i >= min_p * p_max  <=>  weight_i >= min_p, since the max token has weight 1.
    for (size_t i = 0; i < vocab; ++i) weights[i] = keep_if(weights[i], weights[i] >= min_p);
  }
  return draw(std::span<const float>(weights, vocab), u);
}

int32_t Sampler::draw(std::span<const float> weights, double u) {
  // Inverse CDF in id order; filtered tokens weigh 0 and are never chosen. Blocks are summed first (in four
  // interleaved partial sums, to break the dependency chain) so the walk can skip whole blocks. The order of
  // every addition is fixed here, so the choice is reproducible.
  const size_t vocab = weights.size();
  const size_t blocks = (vocab + kDrawBlock - 1) / kDrawBlock;
  double total = 0.0;
  for (size_t block = 0; block < blocks; ++block) {
    const size_t begin = block * kDrawBlock;
    const size_t end = std::min(vocab, begin + kDrawBlock);
    double lane[4] = {0.0, 0.0, 0.0, 0.0};
    size_t i = begin;
    for (; i + 4 <= end; i += 4) {
      for (size_t j = 0; j < 4; ++j) lane[j] += weights[i + j];
    }
    for (; i < end; ++i) lane[0] += weights[i];
    block_sum_[block] = (lane[0] + lane[1]) + (lane[2] + lane[3]);
    total += block_sum_[block];
  }

  const double target = u * total;
  double cumulative = 0.0;
  for (size_t block = 0; block < blocks; ++block) {
    if (!(target < cumulative + block_sum_[block])) {
      cumulative += block_sum_[block];
      continue;
    }
    const size_t begin = block * kDrawBlock;
    const size_t end = std::min(vocab, begin + kDrawBlock);
    size_t last_positive = begin;
    for (size_t i = begin; i < end; ++i) {
      if (weights[i] == 0.0f) continue;
      last_positive = i;
      cumulative += weights[i];
      if (target < cumulative) return static_cast<int32_t>(i);
    }
    // The in-block running sum rounded differently from the block's total: take its last candidate.
    return static_cast<int32_t>(last_positive);
  }
  // u * total rounded up to the full sum: the last token that can be chosen.
  size_t last = vocab - 1;
  while (last > 0 && weights[last] == 0.0f) --last;
  return static_cast<int32_t>(last);
}

}  // namespace ernie
