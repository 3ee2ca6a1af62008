// Tokenizer against the Hugging Face goldens (transformers 5.17 ids and decoded strings), on both fixtures.
#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "test_support.h"

namespace ernie {
namespace {

namespace fs = std::filesystem;
using ernie::testing::fixture;
using ernie::testing::read_json;
using ernie::testing::TempDir;
using ernie::testing::write_text;
using nlohmann::json;

const std::string kReplacement = "\xEF\xBF\xBD";  // U+FFFD

std::vector<int32_t> ids_of(const json& value) {
  return value.get<std::vector<int32_t>>();
}

// An independent UTF-8 check for the streaming chunks (well-formed, nothing cut off at the end).
bool whole_utf8(const std::string& text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    const size_t length = lead < 0x80           ? 1
                          : (lead >> 5) == 0x6  ? 2
                          : (lead >> 4) == 0xE  ? 3
                          : (lead >> 3) == 0x1E ? 4
                                                : 0;
    if (length == 0 || i + length > text.size()) return false;
    for (size_t k = 1; k < length; ++k) {
      if ((static_cast<unsigned char>(text[i + k]) & 0xC0) != 0x80) return false;
    }
    i += length;
  }
  return true;
}

int32_t byte_id(const Tokenizer& tokenizer, const char* piece) {
  const auto id = tokenizer.token_id(piece);
  EXPECT_TRUE(id.has_value()) << piece;
  return id.value_or(-1);
}

// Streams ids through a StreamDecoder, checking that every chunk is whole UTF-8, and returns the concatenation.
std::string stream(const Tokenizer& tokenizer, const std::vector<int32_t>& ids, bool skip) {
  StreamDecoder decoder(tokenizer, skip);
  std::string text;
  for (const int32_t id : ids) {
    const std::string chunk = decoder.push(id);
    EXPECT_TRUE(whole_utf8(chunk)) << "push(" << id << ") returned a partial UTF-8 chunk";
    text += chunk;
  }
  const std::string tail = decoder.flush();
  EXPECT_TRUE(whole_utf8(tail));
  return text + tail;
}

class TokenizerGolden : public ::testing::TestWithParam<std::string> {
 protected:
  fs::path model_dir() const { return fixture(GetParam() + "/model"); }
  fs::path ref(const std::string& name) const { return fixture(GetParam() + "/ref/" + name); }
  Tokenizer load() const { return Tokenizer::load(model_dir()); }
};

TEST_P(TokenizerGolden, EncodesGoldenStringsLikeTransformers) {
  const Tokenizer tokenizer = load();
  const json golden = read_json(ref("tokenizer_golden.json"));
  ASSERT_GE(golden["strings"].size(), 20u);
  for (const auto& entry : golden["strings"]) {
    const std::string text = entry["text"];
    EXPECT_EQ(tokenizer.encode(text), ids_of(entry["hf_ids"])) << text;
    // add_special_tokens=True adds nothing: add_bos_token is false.
    EXPECT_EQ(tokenizer.encode(text), ids_of(entry["hf_ids_add_special_tokens_default"])) << text;
  }
}

// The ids whose skip_special_tokens decoding the "strings" goldens record. For the one string where
// transformers and sentencepiece tokenize differently ("<s> and </s> and <unk> as literal text"), the recorded
// hf_decoded_skip_special keeps "<s>", "</s>" and "<unk>": it can only be the decoding of sp_ids (plain
// characters), since decode_cases shows transformers skipping ids 0, 1 and 2. So that entry is checked on
// sp_ids, and its hf_ids on what decode_cases implies: the special ids vanish.
std::vector<int32_t> ids_behind_skip_golden(const json& entry) {
  return entry["hf_ids_equal_sp"].get<bool>() ? ids_of(entry["hf_ids"]) : ids_of(entry["sp_ids"]);
}

TEST_P(TokenizerGolden, DecodesGoldenStringsLikeTransformers) {
  const Tokenizer tokenizer = load();
  const json golden = read_json(ref("tokenizer_golden.json"));
  const json config = read_json(model_dir() / "tokenizer_config.json");
  int n_tokenized_differently = 0;
  for (const auto& entry : golden["strings"]) {
    const auto ids = ids_of(entry["hf_ids"]);
    EXPECT_EQ(tokenizer.decode(ids), entry["hf_decoded"].get<std::string>()) << entry["text"];
    EXPECT_EQ(tokenizer.decode(ids_behind_skip_golden(entry), true),
              entry["hf_decoded_skip_special"].get<std::string>())
        << entry["text"];
    if (entry["hf_ids_equal_sp"].get<bool>()) continue;
    ++n_tokenized_differently;
    EXPECT_EQ(tokenizer.decode(ids_of(entry["sp_ids"])), entry["hf_decoded"].get<std::string>()) << entry["text"];
    std::vector<int32_t> without_special;
    for (const int32_t id : ids) {
      const auto it = config["added_tokens_decoder"].find(std::to_string(id));
      if (it == config["added_tokens_decoder"].end() || !(*it)["special"].get<bool>()) without_special.push_back(id);
    }
    ASSERT_LT(without_special.size(), ids.size());
    EXPECT_EQ(tokenizer.decode(ids, true), tokenizer.decode(without_special)) << entry["text"];
  }
  EXPECT_EQ(n_tokenized_differently, golden["n_hf_sp_id_mismatches"].get<int>());
}

TEST_P(TokenizerGolden, DecodeCasesMatchTransformersNotSentencepiece) {
  const Tokenizer tokenizer = load();
  const json golden = read_json(ref("tokenizer_golden.json"));
  ASSERT_FALSE(golden["decode_cases"].empty());
  for (const auto& entry : golden["decode_cases"]) {
    const auto ids = ids_of(entry["ids"]);
    EXPECT_EQ(tokenizer.decode(ids), entry["hf_decoded"].get<std::string>()) << entry["pieces"];
    EXPECT_EQ(tokenizer.decode(ids, true), entry["hf_decoded_skip_special"].get<std::string>()) << entry["pieces"];
  }
}

TEST_P(TokenizerGolden, PromptIdsAreBosPlusEncoding) {
  const Tokenizer tokenizer = load();
  const json golden = read_json(ref("golden.json"));
  ASSERT_EQ(tokenizer.bos_id(), golden["bos_id"].get<int32_t>());
  ASSERT_FALSE(golden["prompts"].empty());
  for (const auto& prompt : golden["prompts"]) {
    const std::string text = prompt["text"];
    ASSERT_TRUE(prompt["hf_tokenizer_ids_equal"].get<bool>()) << prompt["name"];
    std::vector<int32_t> expected = ids_of(prompt["ids"]);
    EXPECT_EQ(tokenizer.encode(text, /*add_bos=*/true), expected) << prompt["name"];
    expected.erase(expected.begin());
    EXPECT_EQ(tokenizer.encode(text), expected) << prompt["name"];
    // Prompts hold no special-token text except special_tokens, whose markers are kept by a plain decode.
    EXPECT_EQ(tokenizer.decode(expected), text) << prompt["name"];
  }
}

TEST_P(TokenizerGolden, EveryPieceRoundTripsThroughTokenId) {
  const Tokenizer tokenizer = load();
  const json info = read_json(ref("tokenizer_model_info.json"));
  const auto& pieces = info["pieces"];
  ASSERT_EQ(tokenizer.vocab_size(), info["piece_size"].get<int>());
  ASSERT_EQ(pieces.size(), static_cast<size_t>(tokenizer.vocab_size()));
  for (size_t id = 0; id < pieces.size(); ++id) {
    const std::string piece = pieces[id][0];
    EXPECT_EQ(tokenizer.token_id(piece), std::optional<int32_t>(static_cast<int32_t>(id))) << piece;
  }
  EXPECT_FALSE(tokenizer.token_id("definitely not a piece").has_value());
  EXPECT_FALSE(tokenizer.token_id("").has_value());
}

TEST_P(TokenizerGolden, SpecialTokensComeFromTheConfigFiles) {
  const Tokenizer tokenizer = load();
  const json config = read_json(model_dir() / "config.json");
  EXPECT_EQ(tokenizer.bos_id(), config["bos_token_id"].get<int32_t>());
  EXPECT_EQ(tokenizer.eos_id(), config["eos_token_id"].get<int32_t>());
  EXPECT_EQ(tokenizer.pad_id(), config["pad_token_id"].get<int32_t>());

  const json tokenizer_config = read_json(model_dir() / "tokenizer_config.json");
  EXPECT_EQ(tokenizer.add_bos_token(), tokenizer_config["add_bos_token"].get<bool>());
  EXPECT_EQ(tokenizer.chat_template(), tokenizer_config["chat_template"].get<std::string>());
  EXPECT_EQ(tokenizer.chat_template(), read_json(ref("chat_template_golden.json"))["chat_template"].get<std::string>());
  for (const auto& [key, value] : tokenizer_config["added_tokens_decoder"].items()) {
    const int32_t id = std::stoi(key);
    EXPECT_EQ(tokenizer.is_special(id), value["special"].get<bool>()) << key;
    EXPECT_EQ(tokenizer.token_id(value["content"].get<std::string>()), std::optional<int32_t>(id));
  }
  EXPECT_FALSE(tokenizer.is_special(tokenizer.encode("Hello")[0]));
  EXPECT_FALSE(tokenizer.is_special(-1));
  EXPECT_FALSE(tokenizer.is_special(tokenizer.vocab_size()));

  const json special_map = read_json(model_dir() / "special_tokens_map.json");
  const auto& strings = tokenizer.special_token_strings();
  for (const auto& [key, value] : special_map.items()) {
    if (!value.is_string()) continue;  // additional_special_tokens is a list, not a named token
    ASSERT_TRUE(strings.contains(key)) << key;
    EXPECT_EQ(strings.at(key), value.get<std::string>()) << key;
  }
  EXPECT_EQ(strings.at("cls_token"), "<|begin_of_sentence|>");
  EXPECT_EQ(strings.at("sep_token"), "<|end_of_sentence|>");
}

TEST_P(TokenizerGolden, ChatTemplateRenderingsEncodeLikeTransformers) {
  const Tokenizer tokenizer = load();
  const json golden = read_json(ref("chat_template_golden.json"));
  ASSERT_EQ(golden["conversations"].size(), 4u);
  for (const auto& conversation : golden["conversations"]) {
    const std::string name = conversation["name"];
    const std::string text_true = conversation["text_add_generation_prompt_true"];
    const std::string text_false = conversation["text_add_generation_prompt_false"];
    EXPECT_EQ(tokenizer.encode(text_true), ids_of(conversation["sp_ids_true"])) << name;
    EXPECT_EQ(tokenizer.encode(text_true), ids_of(conversation["hf_ids_true"])) << name;
    EXPECT_EQ(tokenizer.encode(conversation["hf_apply_chat_template_true"].get<std::string>()),
              ids_of(conversation["hf_ids_true"]))
        << name;
    EXPECT_EQ(tokenizer.encode(text_false), ids_of(conversation["sp_ids_false"])) << name;
    EXPECT_EQ(tokenizer.encode(conversation["hf_apply_chat_template_false"].get<std::string>()),
              ids_of(conversation["sp_ids_false"]))
        << name;
    EXPECT_EQ(tokenizer.decode(ids_of(conversation["hf_ids_true"])), text_true) << name;
  }
}

TEST_P(TokenizerGolden, StreamingEqualsWholeDecodeOnGoldenStrings) {
  const Tokenizer tokenizer = load();
  const json golden = read_json(ref("tokenizer_golden.json"));
  for (const auto& entry : golden["strings"]) {
    const auto ids = ids_of(entry["hf_ids"]);
    EXPECT_EQ(stream(tokenizer, ids_behind_skip_golden(entry), true),
              entry["hf_decoded_skip_special"].get<std::string>())
        << entry["text"];
    EXPECT_EQ(stream(tokenizer, ids, true), tokenizer.decode(ids, true)) << entry["text"];
    EXPECT_EQ(stream(tokenizer, ids, false), entry["hf_decoded"].get<std::string>()) << entry["text"];
  }
  for (const auto& entry : golden["decode_cases"]) {
    const auto ids = ids_of(entry["ids"]);
    EXPECT_EQ(stream(tokenizer, ids, true), entry["hf_decoded_skip_special"].get<std::string>()) << entry["pieces"];
    EXPECT_EQ(stream(tokenizer, ids, false), entry["hf_decoded"].get<std::string>()) << entry["pieces"];
  }
}

// The greedy continuations of a random model are arbitrary id sequences, byte pieces in odd orders included.
TEST_P(TokenizerGolden, StreamingEqualsWholeDecodeOnGreedyOutputs) {
  const Tokenizer tokenizer = load();
  const json golden = read_json(ref("golden.json"));
  for (const auto& prompt : golden["prompts"]) {
    const auto ids = ids_of(prompt["greedy"]["all_ids"]);
    for (const bool skip : {true, false}) {
      EXPECT_EQ(stream(tokenizer, ids, skip), tokenizer.decode(ids, skip)) << prompt["name"] << " skip=" << skip;
    }
  }
}

TEST_P(TokenizerGolden, StreamingHoldsBytesUntilTheCharacterIsWhole) {
  const Tokenizer tokenizer = load();
  const int32_t e5 = byte_id(tokenizer, "<0xE5>");
  const int32_t x90 = byte_id(tokenizer, "<0x90>");
  const int32_t xa7 = byte_id(tokenizer, "<0xA7>");
  const int32_t hello = tokenizer.encode("Hello")[0];
  const std::string hello_text = tokenizer.decode(std::vector<int32_t>{hello});

  StreamDecoder decoder(tokenizer);
  EXPECT_EQ(decoder.push(e5), "");
  EXPECT_EQ(decoder.flush(), kReplacement);  // a lone <0xE5>, as transformers decodes it
  EXPECT_EQ(decoder.flush(), "");

  EXPECT_EQ(decoder.push(e5), "");
  EXPECT_EQ(decoder.push(x90), "");
  EXPECT_EQ(decoder.push(xa7), "");  // transformers decodes the whole byte run at once
  EXPECT_EQ(decoder.push(hello), "吧" + hello_text);
  EXPECT_EQ(decoder.flush(), "");

  EXPECT_EQ(decoder.push(e5), "");
  decoder.reset();
  EXPECT_EQ(decoder.push(hello), hello_text);
  EXPECT_EQ(decoder.flush(), "");
}

// transformers' ByteFallback decoder (tokenizers, decoders/byte_fallback.rs) replaces every byte of a run that
// is not valid UTF-8, and skipped special tokens are removed before that decoder runs.
TEST_P(TokenizerGolden, ByteRunsFollowTransformersByteFallback) {
  const Tokenizer tokenizer = load();
  const int32_t e5 = byte_id(tokenizer, "<0xE5>");
  const int32_t x90 = byte_id(tokenizer, "<0x90>");
  const int32_t xa7 = byte_id(tokenizer, "<0xA7>");
  const int32_t newline = byte_id(tokenizer, "<0x0A>");
  const int32_t eos = tokenizer.eos_id();

  const std::vector<int32_t> invalid_run = {newline, e5};
  EXPECT_EQ(tokenizer.decode(invalid_run), kReplacement + kReplacement);
  const std::vector<int32_t> split_by_eos = {e5, eos, x90, xa7};
  EXPECT_EQ(tokenizer.decode(split_by_eos, true), "吧");
  EXPECT_EQ(tokenizer.decode(split_by_eos, false), kReplacement + "</s>" + kReplacement + kReplacement);
  for (const bool skip : {true, false}) {
    EXPECT_EQ(stream(tokenizer, invalid_run, skip), tokenizer.decode(invalid_run, skip));
    EXPECT_EQ(stream(tokenizer, split_by_eos, skip), tokenizer.decode(split_by_eos, skip));
  }
}

TEST_P(TokenizerGolden, UnknownIdsDecodeToNothing) {
  const Tokenizer tokenizer = load();
  const json config = read_json(model_dir() / "config.json");
  const int model_vocab = config["vocab_size"].get<int>();
  ASSERT_GT(model_vocab, tokenizer.vocab_size());  // the padding rows 3000..3007
  const auto hello = tokenizer.encode("Hello, world!");
  std::vector<int32_t> with_padding_rows;
  for (const int32_t id : hello) {
    with_padding_rows.push_back(id);
    with_padding_rows.push_back(tokenizer.vocab_size() + static_cast<int32_t>(id % 8));
  }
  with_padding_rows.push_back(model_vocab - 1);
  with_padding_rows.push_back(-5);
  EXPECT_EQ(tokenizer.decode(with_padding_rows), "Hello, world!");
  EXPECT_EQ(stream(tokenizer, with_padding_rows, true), "Hello, world!");
  EXPECT_EQ(tokenizer.decode(std::vector<int32_t>{model_vocab - 1}), "");
}

TEST_P(TokenizerGolden, RandomIdsNeverBreakStreamingOrUtf8) {
  const Tokenizer tokenizer = load();
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> pick(-2, tokenizer.vocab_size() + 10);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<int32_t> ids(40);
    for (auto& id : ids) id = pick(rng);
    for (const bool skip : {true, false}) {
      const std::string whole = tokenizer.decode(ids, skip);
      EXPECT_TRUE(whole_utf8(whole));
      EXPECT_EQ(stream(tokenizer, ids, skip), whole);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TokenizerGolden, ::testing::Values("tiny-ernie", "tiny-ernie-bias"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

// --- errors ---------------------------------------------------------------------------------------------

fs::path copy_model(const TempDir& dir) {
  const fs::path source = fixture("tiny-ernie/model");
  for (const auto& entry : fs::directory_iterator(source)) {
    if (entry.path().extension() == ".safetensors") continue;
    fs::copy_file(entry.path(), dir.path() / entry.path().filename());
    fs::permissions(dir.path() / entry.path().filename(), fs::perms::owner_read | fs::perms::owner_write,
                    fs::perm_options::add);
  }
  return dir.path();
}

std::string load_error(const fs::path& dir) {
  try {
    Tokenizer::load(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(TokenizerErrors, MissingModelFileIsNamed) {
  TempDir dir;
  EXPECT_NE(load_error(dir.path()).find("tokenizer.model"), std::string::npos);
  EXPECT_NE(load_error(dir.path() / "no-such-dir").find("tokenizer.model"), std::string::npos);
}

TEST(TokenizerErrors, GarbageModelFileIsAnErrorNotACrash) {
  TempDir dir;
  const fs::path model_dir = copy_model(dir);
  std::mt19937 rng(42);
  for (const size_t size : {size_t{0}, size_t{1}, size_t{7}, size_t{4096}, size_t{40000}}) {
    std::string bytes(size, '\0');
    for (auto& b : bytes) b = static_cast<char>(rng());
    write_text(model_dir / "tokenizer.model", bytes);
    EXPECT_NE(load_error(model_dir).find("tokenizer.model"), std::string::npos) << size << " random bytes";
  }
  // A real model cut short.
  std::ifstream in(fixture("tiny-ernie/model/tokenizer.model"), std::ios::binary);
  std::string real((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  write_text(model_dir / "tokenizer.model", real.substr(0, real.size() / 2));
  EXPECT_NE(load_error(model_dir).find("tokenizer.model"), std::string::npos);
}

TEST(TokenizerErrors, MalformedJsonNamesTheFile) {
  for (const char* name : {"tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"}) {
    TempDir dir;
    const fs::path model_dir = copy_model(dir);
    write_text(model_dir / name, "{\"bos_token\": \"<s>\",,, ");
    const std::string message = load_error(model_dir);
    EXPECT_NE(message.find(name), std::string::npos) << message;
  }
}

TEST(TokenizerErrors, WrongFieldTypesNameTheFileAndField) {
  struct Case {
    const char* file;
    const char* json;
    const char* field;
  };
  const Case cases[] = {
      {"tokenizer_config.json", R"({"add_bos_token": "yes"})", "add_bos_token"},
      {"tokenizer_config.json", R"({"bos_token": 7})", "bos_token"},
      {"tokenizer_config.json", R"({"added_tokens_decoder": {"x": {"content": "<s>"}}})", "added_tokens_decoder"},
      {"tokenizer_config.json", R"({"added_tokens_decoder": {"3": {"special": true}}})", "content"},
      {"tokenizer_config.json", R"({"chat_template": 5})", "chat_template"},
      {"tokenizer_config.json", R"([1, 2])", "object"},
      {"added_tokens.json", R"({"<x>": "ten"})", "<x>"},
      {"added_tokens.json", R"({"<x>": 99999999999})", "<x>"},
      {"special_tokens_map.json", R"({"additional_special_tokens": 3})", "additional_special_tokens"},
  };
  for (const Case& c : cases) {
    TempDir dir;
    const fs::path model_dir = copy_model(dir);
    write_text(model_dir / c.file, c.json);
    const std::string message = load_error(model_dir);
    EXPECT_NE(message.find(c.file), std::string::npos) << c.json << " -> " << message;
    EXPECT_NE(message.find(c.field), std::string::npos) << c.json << " -> " << message;
  }
}

// --- checkpoints laid out differently ----------------------------------------------------------------------

TEST(TokenizerLayouts, ModelFileAloneBehavesLikeSentencepiece) {
  TempDir dir;
  fs::copy_file(fixture("tiny-ernie/model/tokenizer.model"), dir.path() / "tokenizer.model");
  const Tokenizer tokenizer = Tokenizer::load(dir.path());
  const json golden = read_json(fixture("tiny-ernie/ref/tokenizer_golden.json"));
  // Without the transformers configs nothing but the model's own user-defined symbols is split out, so the
  // ids are sentencepiece's (which differ from transformers' only on literal "<s>", "</s>", "<unk>").
  for (const auto& entry : golden["strings"]) {
    EXPECT_EQ(tokenizer.encode(entry["text"].get<std::string>()), ids_of(entry["sp_ids"])) << entry["text"];
  }
  EXPECT_EQ(tokenizer.bos_id(), 1);  // the model's own trainer_spec ids
  EXPECT_EQ(tokenizer.eos_id(), 2);
  EXPECT_EQ(tokenizer.chat_template(), "");
  EXPECT_FALSE(tokenizer.add_bos_token());
  EXPECT_TRUE(tokenizer.special_token_strings().empty());
}

TEST(TokenizerLayouts, AddedTokensJsonAndJinjaFileAreUsed) {
  TempDir dir;
  const fs::path model_dir = copy_model(dir);
  // A token past the sentencepiece pieces, as a fine-tune's added_tokens.json would hold.
  write_text(model_dir / "added_tokens.json", R"({"<tool_call>": 3000})");
  write_text(model_dir / "chat_template.jinja", "{{ messages }}");
  const Tokenizer tokenizer = Tokenizer::load(model_dir);
  EXPECT_EQ(tokenizer.vocab_size(), 3001);
  EXPECT_EQ(tokenizer.token_id("<tool_call>"), std::optional<int32_t>(3000));
  EXPECT_FALSE(tokenizer.is_special(3000));
  const auto ids = tokenizer.encode("a<tool_call>b");
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids[1], 3000);
  EXPECT_EQ(tokenizer.decode(ids, true), "a<tool_call>b");  // not special: survives skip_special_tokens
  EXPECT_EQ(tokenizer.chat_template(), "{{ messages }}");
}

// The tokenizer_config.json that baidu/ERNIE-4.5-0.3B-PT first shipped for its remote-code Ernie4_5_Tokenizer: no
// added_tokens_decoder, "additional_special_tokens": null, extra *_token keys, no add_bos_token. Its tokenizer.model
// carries the markers as user-defined pieces, so the renderings must still encode exactly as transformers did.
TEST(TokenizerLayouts, OfficialRemoteCodeTokenizerConfigLoads) {
  TempDir dir;
  const fs::path model_dir = copy_model(dir);
  fs::remove(model_dir / "special_tokens_map.json");
  const auto golden = read_json(fixture("tiny-ernie/ref/chat_template_golden.json"));
  json config = {{"bos_token", "<s>"},
                 {"eos_token", "</s>"},
                 {"pad_token", "<unk>"},
                 {"unk_token", "<unk>"},
                 {"cls_token", "<|begin_of_sentence|>"},
                 {"sep_token", "<|end_of_sentence|>"},
                 {"mask_token", "<mask:1>"},
                 {"sys_start_token", "<mask:4>"},
                 {"sys_end_token", "<mask:5>"},
                 {"header_start_token", "<mask:6>"},
                 {"header_end_token", "<mask:7>"},
                 {"additional_special_tokens", nullptr},
                 {"tokenizer_class", "Ernie4_5_Tokenizer"},
                 {"auto_map", {{"AutoTokenizer", {"tokenization_ernie4_5.Ernie4_5_Tokenizer", nullptr}}}},
                 {"chat_template", golden["chat_template"]}};
  write_text(model_dir / "tokenizer_config.json", config.dump());

  const Tokenizer tokenizer = Tokenizer::load(model_dir);
  EXPECT_FALSE(tokenizer.add_bos_token());
  EXPECT_EQ(tokenizer.bos_id(), 1);
  EXPECT_EQ(tokenizer.eos_id(), 2);
  EXPECT_EQ(tokenizer.chat_template(), golden["chat_template"].get<std::string>());
  for (const auto& conversation : golden["conversations"]) {
    EXPECT_EQ(tokenizer.encode(conversation["text_add_generation_prompt_true"].get<std::string>()),
              conversation["sp_ids_true"].get<std::vector<int32_t>>());
  }
  // Named special tokens written in the text are single ids (transformers splits on every special token).
  EXPECT_EQ(tokenizer.encode("<s>"), std::vector<int32_t>{1});
  EXPECT_EQ(tokenizer.encode("<|end_of_sentence|>"), std::vector<int32_t>{4});
  EXPECT_TRUE(tokenizer.is_special(4));
}

TEST(TokenizerLayouts, LongestAddedTokenWinsAndStripFlagsApply) {
  TempDir dir;
  const fs::path model_dir = copy_model(dir);
  json config = read_json(model_dir / "tokenizer_config.json");
  config["added_tokens_decoder"]["3000"] = {{"content", "<mask:1"}, {"special", true}};
  config["added_tokens_decoder"]["3001"] = {{"content", "[X]"}, {"special", false}, {"lstrip", true}, {"rstrip", true}};
  write_text(model_dir / "tokenizer_config.json", config.dump());
  const Tokenizer tokenizer = Tokenizer::load(model_dir);
  const auto mask1 = tokenizer.token_id("<mask:1>");
  ASSERT_TRUE(mask1.has_value());
  EXPECT_EQ(tokenizer.encode("<mask:1>"), std::vector<int32_t>{*mask1});  // longest match, not "<mask:1"
  EXPECT_EQ(tokenizer.encode("<mask:1 "), (std::vector<int32_t>{3000, tokenizer.encode(" ")[0]}));
  EXPECT_EQ(tokenizer.encode("a  [X]  b"),
            (std::vector<int32_t>{tokenizer.encode("a")[0], 3001, tokenizer.encode("b")[0]}));
}

}  // namespace
}  // namespace ernie
