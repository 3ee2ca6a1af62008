// The demo model's tokenizer (spm_train output plus ERNIE's tokenizer_config.json): it has ERNIE's special tokens at
// ERNIE's ids, and our tokenizer cuts the golden prompts exactly as spm_encode did when PyTorch made the references.
#include <gtest/gtest.h>

#include <algorithm>

#include "test_support.h"
#include "tokenizer/tokenizer.h"

namespace ernie {
namespace {

using ernie::testing::demo_model_dir;
using ernie::testing::read_json;

TEST(DemoTokenizer, SpecialTokensHaveTheIdsOfTokenizerConfig) {
  const auto tokenizer = Tokenizer::load(demo_model_dir());
  const auto config = read_json(demo_model_dir() / "tokenizer_config.json");
  for (const auto& [id, token] : config["added_tokens_decoder"].items()) {
    const auto content = token["content"].get<std::string>();
    SCOPED_TRACE(content);
    EXPECT_EQ(tokenizer.token_id(content), std::stoi(id));
    EXPECT_TRUE(tokenizer.is_special(std::stoi(id)));
  }
  EXPECT_EQ(tokenizer.bos_id(), 1);
  EXPECT_EQ(tokenizer.eos_id(), 2);
  EXPECT_FALSE(tokenizer.add_bos_token());
  EXPECT_EQ(tokenizer.special_token_strings().at("sep_token"), "<|end_of_sentence|>");
  EXPECT_NE(tokenizer.chat_template().find("Assistant: "), std::string::npos);
}

TEST(DemoTokenizer, GoldenPromptsEncodeAsSpmEncodeDid) {
  const auto tokenizer = Tokenizer::load(demo_model_dir());
  const auto golden = read_json(demo_model_dir() / "reference" / "golden.json");
  for (const auto& prompt : golden["prompts"]) {
    SCOPED_TRACE(prompt["name"].get<std::string>());
    const auto text = prompt["text"].get<std::string>();
    EXPECT_EQ(tokenizer.encode(text, prompt["add_bos"].get<bool>()), prompt["ids"].get<std::vector<int32_t>>());
  }
}

TEST(DemoTokenizer, AnyTextEncodesThroughByteFallback) {
  const auto tokenizer = Tokenizer::load(demo_model_dir());
  for (const std::string text :
       {"Hello, world!", "床前明月光，疑是地上霜。", "emoji 🙂 and Ελληνικά\n\ttabs"}) {
    SCOPED_TRACE(text);
    const auto ids = tokenizer.encode(text, false);
    EXPECT_EQ(std::count(ids.begin(), ids.end(), 0), 0) << "no <unk>";
    EXPECT_EQ(tokenizer.decode(ids), text);
  }
}

}  // namespace
}  // namespace ernie
