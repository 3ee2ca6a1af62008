// The tokenizer rebuilt from GGUF metadata (llama.cpp's tokenizer.ggml.* keys) tokenizes, decodes and names its
// special tokens exactly as the tokenizer.model it was written from, on the transformers goldens of both fixtures;
// and the files llama.cpp's converter would write (every added token CONTROL, padding entries) read the same.
#include <gtest/gtest.h>

#include "core/error.h"
#include "io/gguf.h"
#include "test_support.h"
#include "tokenizer/spm_vocabulary.h"
#include "tokenizer/tokenizer.h"

namespace ernie {
namespace {

namespace fs = std::filesystem;
using ernie::testing::error_of;
using ernie::testing::fixture;
using ernie::testing::read_json;
using ernie::testing::TempDir;

// Writes only the tokenizer metadata, padded to `n_vocab` entries as a converter pads to the embedding's rows.
fs::path write_vocabulary_file(const fs::path& path, const SpmVocabulary& vocabulary, int n_vocab) {
  GgufWriter writer(path);
  write_gguf_vocabulary(writer, vocabulary, n_vocab);
  writer.finish();
  return path;
}

void expect_same_tokenizer(const Tokenizer& ours, const Tokenizer& reference, const std::string& checkpoint) {
  const auto golden = read_json(fixture(checkpoint + "/ref/tokenizer_golden.json"));
  for (const auto& entry : golden["strings"]) {
    const std::string text = entry["text"];
    EXPECT_EQ(ours.encode(text), reference.encode(text)) << text;
    EXPECT_EQ(ours.encode(text), entry["hf_ids"].get<std::vector<int32_t>>()) << text;
    const auto ids = entry["hf_ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(ours.decode(ids), reference.decode(ids)) << text;
    EXPECT_EQ(ours.decode(ids, true), reference.decode(ids, true)) << text;
  }
  for (const auto& entry : golden["decode_cases"]) {
    const auto ids = entry["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(ours.decode(ids), entry["hf_decoded"].get<std::string>());
  }
  EXPECT_EQ(ours.vocab_size(), reference.vocab_size());
  EXPECT_EQ(ours.bos_id(), reference.bos_id());
  EXPECT_EQ(ours.eos_id(), reference.eos_id());
  EXPECT_EQ(ours.pad_id(), reference.pad_id());
  EXPECT_EQ(ours.add_bos_token(), reference.add_bos_token());
  EXPECT_EQ(ours.chat_template(), reference.chat_template());
  EXPECT_FALSE(ours.chat_template().empty());
  EXPECT_EQ(ours.special_token_strings(), reference.special_token_strings());
  for (int32_t id = 0; id < reference.vocab_size(); ++id) {
    ASSERT_EQ(ours.is_special(id), reference.is_special(id)) << id;
  }
}

class GgufTokenizer : public ::testing::TestWithParam<std::string> {
 protected:
  fs::path model_dir() const { return fixture(GetParam() + "/model"); }
  TempDir dir_;
};

TEST_P(GgufTokenizer, MatchesTheTokenizerModelItCameFrom) {
  const Tokenizer reference = Tokenizer::load(model_dir());
  const int n_vocab = read_json(model_dir() / "config.json")["vocab_size"];
  const fs::path file = write_vocabulary_file(dir_.path() / "t.gguf", reference.vocabulary(), n_vocab);
  // The embedding has more rows than the tokenizer has pieces: the padding entries are written, then dropped.
  ASSERT_GT(n_vocab, reference.vocab_size());
  EXPECT_EQ(GgufFile::open(file).get_array("tokenizer.ggml.tokens", GgufType::STRING)->items.size(),
            static_cast<size_t>(n_vocab));
  expect_same_tokenizer(Tokenizer::load(file), reference, GetParam());
}

TEST_P(GgufTokenizer, ReadsAConverterStyleVocabulary) {
  // llama.cpp's converter marks every special added token CONTROL, the unknown token included, and overwrites
  // their scores; the unk id restores the unknown piece that sentencepiece needs.
  const Tokenizer reference = Tokenizer::load(model_dir());
  SpmVocabulary v = reference.vocabulary();
  for (size_t id = 0; id < v.types.size(); ++id) {
    if (reference.is_special(static_cast<int32_t>(id))) {
      v.types[id] = PieceType::kControl;
      v.scores[id] = -1000.0f;
    }
  }
  const fs::path file = write_vocabulary_file(dir_.path() / "c.gguf", v, reference.vocab_size());
  expect_same_tokenizer(Tokenizer::load(file), reference, GetParam());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GgufTokenizer, ::testing::Values("tiny-ernie", "tiny-ernie-bias"),
                         [](const auto& info) { return info.param == "tiny-ernie" ? "tiny" : "bias"; });

TEST(GgufTokenizerErrors, RefusesOtherTokenizerModels) {
  TempDir dir;
  GgufWriter writer(dir.path() / "gpt2.gguf");
  writer.set("tokenizer.ggml.model", std::string("gpt2"));
  writer.finish();
  const std::string message = error_of([&] { Tokenizer::load(dir.path() / "gpt2.gguf"); });
  EXPECT_MENTIONS(message, "gpt2");
  EXPECT_MENTIONS(message, "gpt2.gguf");
}

TEST(GgufTokenizerErrors, PlaceholderVocabularyLoadsAndSpellsBytes) {
  TempDir dir;
  const fs::path file = write_vocabulary_file(dir.path() / "p.gguf", placeholder_vocabulary(600), 600);
  const Tokenizer tokenizer = Tokenizer::load(file);
  EXPECT_EQ(tokenizer.vocab_size(), 600);
  EXPECT_EQ(tokenizer.bos_id(), 1);
  EXPECT_EQ(tokenizer.eos_id(), 2);
  // No merges: every byte of the text is its own byte piece (<0x00> is id 3).
  const std::string text = "hé";
  std::vector<int32_t> expected;
  for (unsigned char c : text) expected.push_back(3 + c);
  EXPECT_EQ(tokenizer.encode(text), expected);
  EXPECT_EQ(tokenizer.decode(expected), text);
}

}  // namespace
}  // namespace ernie
