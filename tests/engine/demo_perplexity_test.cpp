// The demo model was trained, not merely initialised: on entries of its corpus that it never saw (the fortunes and
// poems of models/demo/heldout.txt, held out by tools/train_demo/corpus.py, tokenizer training included), our
// tokenizer and forward pass give a perplexity far below that of a uniform guess over the vocabulary, and below
// the context-free unigram baseline of the training text, and they agree with PyTorch's own measurement.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

#include "model/accuracy.h"
#include "model/lora.h"
#include "model/session.h"
#include "test_support.h"
#include "tokenizer/tokenizer.h"

namespace ernie {
namespace {

using ernie::testing::demo_lora_dir;
using ernie::testing::demo_model_dir;
using ernie::testing::read_json;

// Entries of a fortune-format file: separated by lines holding only '%'.
std::vector<std::string> read_fortunes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream contents;
  contents << in.rdbuf();
  std::string text = contents.str();
  while (!text.empty() && text.back() == '\n') text.pop_back();
  std::vector<std::string> entries;
  for (size_t start = 0;;) {
    const size_t end = text.find("\n%\n", start);
    entries.push_back(text.substr(start, end - start));
    if (end == std::string::npos) break;
    start = end + 3;
  }
  return entries;
}

struct Score {
  double nll = 0;  // nats, summed over the predicted tokens
  int64_t predicted = 0;
  double perplexity() const { return std::exp(nll / predicted); }
};

// Each entry is scored as a document of its own, as in training: <s> text </s>, every token after <s> predicted.
Score score_held_out(const Model& model, const Tokenizer& tokenizer, const std::vector<std::string>& entries,
                     std::optional<DType> kv_dtype = std::nullopt, std::vector<LoraApplication> lora = {}) {
  const int vocab = model.config().vocab_size;
  Score score;
  for (const auto& entry : entries) {
    std::vector<int32_t> ids = tokenizer.encode(entry, /*add_bos=*/true);
    ids.push_back(tokenizer.eos_id());
    EXPECT_EQ(ids.front(), tokenizer.bos_id());
    Session session(model, {.context_length = static_cast<int>(ids.size()), .kv_dtype = kv_dtype, .lora = lora});
    std::vector<float> logits((ids.size() - 1) * vocab);
    session.forward(std::span<const int32_t>(ids.data(), ids.size() - 1), logits);
    for (size_t t = 0; t + 1 < ids.size(); ++t) {
      const float* row = logits.data() + t * vocab;
      const float top = *std::max_element(row, row + vocab);
      double sum = 0;
      for (int v = 0; v < vocab; ++v) sum += std::exp(double(row[v]) - top);
      score.nll += top + std::log(sum) - row[ids[t + 1]];
    }
    score.predicted += static_cast<int64_t>(ids.size()) - 1;
  }
  return score;
}

std::vector<std::string> held_out_entries() {
  const auto reference = read_json(demo_model_dir() / "reference" / "golden.json")["heldout"];
  return read_fortunes(demo_model_dir() / reference["file"].get<std::string>());
}

TEST(DemoPerplexity, HeldOutTextIsFarMoreLikelyThanUniformOrUnigram) {
  const auto model = Model::load(demo_model_dir());
  const auto tokenizer = Tokenizer::load(demo_model_dir());
  const auto reference = read_json(demo_model_dir() / "reference" / "golden.json")["heldout"];
  const auto training = read_json(demo_model_dir() / "training_log.json");
  const int vocab = model->config().vocab_size;

  const auto entries = held_out_entries();
  ASSERT_EQ(entries.size(), reference["entries"].get<size_t>());
  const auto [nll, predicted] = score_held_out(*model, tokenizer, entries);
  const double perplexity = std::exp(nll / predicted);
  const double unigram = training["heldout_unigram_perplexity"].get<double>();
  std::cout << "demo model held-out perplexity " << perplexity << " over " << predicted << " tokens of "
            << entries.size() << " entries; uniform " << vocab << ", unigram baseline " << unigram << "\n";

  // Our tokenizer cut the text exactly as spm_encode did for PyTorch, and our forward pass scores it the same.
  EXPECT_EQ(predicted, reference["predicted_tokens"].get<int64_t>());
  EXPECT_NEAR(nll, reference["nll_nats"].get<double>(), 1e-4 * reference["nll_nats"].get<double>());
  // A uniform guess has perplexity = vocab. A twentieth of that leaves no doubt the model learned the text: a
  // context-free model that knows every token's training frequency (the unigram baseline) is far above it.
  EXPECT_LT(perplexity, vocab / 20.0);
  EXPECT_LT(perplexity, unigram / 4);
}

// The quatrain adapter (models/demo-quatrain-lora) does what it was trained for: on held-out quatrains that neither
// it nor, for some, the base model saw, the engine running it unmerged gives the perplexity the recipe's PyTorch
// forward measured, and that is below the base model's on the same text.
TEST(DemoPerplexity, QuatrainAdapterLowersHeldOutQuatrainPerplexity) {
  const auto model = Model::load(demo_model_dir());
  const auto tokenizer = Tokenizer::load(demo_model_dir());
  const auto adapter = LoraAdapter::load(demo_lora_dir(), model->config());
  const auto reference = read_json(demo_lora_dir() / "reference" / "golden.json")["heldout"];
  const auto entries = read_fortunes(demo_lora_dir() / reference["file"].get<std::string>());
  ASSERT_EQ(entries.size(), reference["entries"].get<size_t>());
  const Score base = score_held_out(*model, tokenizer, entries);
  const Score adapted = score_held_out(*model, tokenizer, entries, std::nullopt, {{adapter.get(), 1.0f}});
  std::cout << "held-out quatrains: perplexity " << base.perplexity() << " (demo model) -> " << adapted.perplexity()
            << " (with the adapter), " << adapted.predicted << " tokens of " << entries.size() << " entries\n";
  EXPECT_EQ(adapted.predicted, reference["predicted_tokens"].get<int64_t>());
  EXPECT_NEAR(adapted.nll, reference["nll_nats"].get<double>(), 1e-4 * reference["nll_nats"].get<double>());
  EXPECT_LT(adapted.perplexity(), base.perplexity());
}

// The accuracy cost of quantizing at load, measured where it matters: the perplexity of the trained model on text it
// never saw, against the same model with its stored BF16 weights. The seed promises less than 1.2 % loss for INT8;
// Q8_0 (8-bit weights, 8-bit dynamically quantized activations, 32-element blocks) must keep it. Q4_0, with 16 levels
// per block, is held to 3 %, the cost llama.cpp users commonly see for Q4_0 on small models. (Measured when written:
// Q8_0 -0.03 %, Q4_0 +0.13 %; the test prints them.)
TEST(DemoPerplexity, QuantizedWeightsCostLittle) {
  const auto tokenizer = Tokenizer::load(demo_model_dir());
  const auto entries = held_out_entries();
  const double stored = score_held_out(*Model::load(demo_model_dir()), tokenizer, entries).perplexity();
  for (const auto& [dtype, bound] : {std::pair{DType::F16, 0.001}, {DType::Q8_0, 0.012}, {DType::Q4_0, 0.03}}) {
    const auto model = Model::load(demo_model_dir(), LoadOptions{.dtype = dtype});
    const double perplexity = score_held_out(*model, tokenizer, entries).perplexity();
    const double loss = perplexity / stored - 1;
    std::cout << "demo model held-out perplexity, " << model->weight_dtype() << " weights: " << perplexity << " ("
              << std::showpos << 100 * loss << std::noshowpos << " % vs BF16 " << stored << ")\n";
    EXPECT_LT(std::fabs(loss), bound) << dtype_name(dtype);
  }
}

// The quantized KV cache (--kv-dtype q8_0: keys and values as int8 with one scale per 32, as llama.cpp's -ctk/-ctv
// q8_0) against the float32 cache, on the same BF16 weights. Its rounding is that of Q8_0 weights (step max|x|/127
// per block), applied to activations instead of weights, so it is held to the same promise as INT8 weights above:
// less than 1.2 % perplexity. A scale or layout bug moves this by far more (an unscaled cache is noise).
TEST(DemoPerplexity, Q8KvCacheCostsLittle) {
  const auto tokenizer = Tokenizer::load(demo_model_dir());
  const auto entries = held_out_entries();
  const auto model = Model::load(demo_model_dir());
  const double f32_kv = score_held_out(*model, tokenizer, entries, DType::F32).perplexity();
  const double q8_kv = score_held_out(*model, tokenizer, entries, DType::Q8_0).perplexity();
  const double loss = q8_kv / f32_kv - 1;
  std::cout << "demo model held-out perplexity, q8_0 KV cache: " << q8_kv << " (" << std::showpos << 100 * loss
            << std::noshowpos << " % vs an F32 cache " << f32_kv << ")\n";
  EXPECT_LT(std::fabs(loss), 0.012);
}

// Logit by logit over held-out text, the q8_0 cache moves the distribution less than Q8_0 weights do (each against
// the BF16 weights with an F32 cache): it rounds two vectors per layer and position with the same blocks that Q8_0
// weights apply to every matrix and every activation entering them.
TEST(DemoPerplexity, Q8KvCacheDriftsLessThanQ8Weights) {
  const auto tokenizer = Tokenizer::load(demo_model_dir());
  const auto stored = Model::load(demo_model_dir());
  const auto q8_weights = Model::load(demo_model_dir(), LoadOptions{.dtype = DType::Q8_0});
  const int vocab = stored->config().vocab_size;
  LogitAgreement kv_cost, weight_cost;
  for (const auto& entry : held_out_entries()) {
    const std::vector<int32_t> ids = tokenizer.encode(entry, /*add_bos=*/true);
    const auto logits = [&](const Model& model, DType kv) {
      Session session(model, {.context_length = static_cast<int>(ids.size()), .kv_dtype = kv});
      std::vector<float> out(ids.size() * vocab);
      session.forward(ids, out);
      return out;
    };
    const auto reference = logits(*stored, DType::F32), q8_kv = logits(*stored, DType::Q8_0);
    const auto q8_w = logits(*q8_weights, DType::F32);
    for (size_t t = 0; t < ids.size(); ++t) {
      const std::span<const float> ref(reference.data() + t * vocab, vocab);
      kv_cost.add(ref, std::span<const float>(q8_kv.data() + t * vocab, vocab));
      weight_cost.add(ref, std::span<const float>(q8_w.data() + t * vocab, vocab));
    }
  }
  std::cout << "demo model, against an F32 cache: q8_0 KV rel.err " << kv_cost.relative_error() << " mean KL "
            << kv_cost.mean_kl() << " top-1 " << kv_cost.top1() << "; Q8_0 weights rel.err "
            << weight_cost.relative_error() << " mean KL " << weight_cost.mean_kl() << " top-1 " << weight_cost.top1()
            << "\n";
  EXPECT_LT(kv_cost.relative_error(), weight_cost.relative_error());
  EXPECT_LT(kv_cost.mean_kl(), weight_cost.mean_kl());
  EXPECT_GE(kv_cost.top1(), weight_cost.top1());
}

}  // namespace
}  // namespace ernie
