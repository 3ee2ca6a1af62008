// The demo model was trained, not merely initialised: on entries of its corpus that it never saw (the fortunes and
// poems of models/demo/heldout.txt, held out by tools/train_demo/corpus.py, tokenizer training included), our
// tokenizer and forward pass give a perplexity far below that of a uniform guess over the vocabulary, and below
// the context-free unigram baseline of the training text, and they agree with PyTorch's own measurement.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <sstream>

#include "model/model.h"
#include "test_support.h"
#include "tokenizer/tokenizer.h"

namespace ernie {
namespace {

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

TEST(DemoPerplexity, HeldOutTextIsFarMoreLikelyThanUniformOrUnigram) {
  const auto model = Model::load(demo_model_dir());
  const auto tokenizer = Tokenizer::load(demo_model_dir());
  const auto reference = read_json(demo_model_dir() / "reference" / "golden.json")["heldout"];
  const auto training = read_json(demo_model_dir() / "training_log.json");
  const int vocab = model->config().vocab_size;

  // Each entry is scored as a document of its own, as in training: <s> text </s>, every token after <s> predicted.
  double nll = 0;
  int64_t predicted = 0;
  const auto entries = read_fortunes(demo_model_dir() / reference["file"].get<std::string>());
  ASSERT_EQ(entries.size(), reference["entries"].get<size_t>());
  for (const auto& entry : entries) {
    std::vector<int32_t> ids = tokenizer.encode(entry, /*add_bos=*/true);
    ids.push_back(tokenizer.eos_id());
    ASSERT_EQ(ids.front(), tokenizer.bos_id());
    Session session(*model, {.context_length = static_cast<int>(ids.size())});
    std::vector<float> logits((ids.size() - 1) * vocab);
    session.forward(std::span<const int32_t>(ids.data(), ids.size() - 1), logits);
    for (size_t t = 0; t + 1 < ids.size(); ++t) {
      const float* row = logits.data() + t * vocab;
      const float top = *std::max_element(row, row + vocab);
      double sum = 0;
      for (int v = 0; v < vocab; ++v) sum += std::exp(double(row[v]) - top);
      nll += top + std::log(sum) - row[ids[t + 1]];
    }
    predicted += static_cast<int64_t>(ids.size()) - 1;
  }
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

}  // namespace
}  // namespace ernie
