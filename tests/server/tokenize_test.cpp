// llama-server's tokenizer routes and /props over real HTTP, against transformers: /tokenize gives the ids
// transformers gives for the fixture tokenizer's tricky strings, /detokenize its decoded text, and pieces name each
// id's bytes (byte-fallback pieces of a multi-byte character as byte arrays).
#include <gtest/gtest.h>

#include "test_server.h"

namespace ernie {
namespace {

using ernie::testing::fixture;
using ernie::testing::json;
using ernie::testing::read_json;
using ernie::testing::Reply;
using ernie::testing::TestServer;

json golden_strings() {
  return read_json(fixture("tiny-ernie/ref/tokenizer_golden.json"))["strings"];
}

TEST(Tokenize, IdsAndTextAreTransformers) {
  TestServer s;
  for (const json& g : golden_strings()) {
    SCOPED_TRACE(g["text"].dump());
    Reply r = s.post("/tokenize", json{{"content", g["text"]}});
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.body_json(), json({{"tokens", g["hf_ids"]}}));
    r = s.post("/detokenize", json{{"tokens", g["hf_ids"]}});
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.body_json(), json({{"content", g["hf_decoded"]}}));
  }
}

TEST(Tokenize, AddSpecialPrependsBos) {
  TestServer s;
  const json plain = s.post("/tokenize", json{{"content", "hello"}}).body_json()["tokens"];
  const json with_bos = s.post("/tokenize", json{{"content", "hello"}, {"add_special", true}}).body_json()["tokens"];
  ASSERT_EQ(with_bos.size(), plain.size() + 1);
  EXPECT_EQ(with_bos[0], 1);  // the fixture's <s>
  EXPECT_EQ(json(std::vector<json>(with_bos.begin() + 1, with_bos.end())), plain);
}

TEST(Tokenize, PiecesAreTextOrTheBytesOfAByteFallbackPiece) {
  TestServer s;
  for (const json& g : golden_strings()) {
    if (!g["hf_ids_equal_sp"].get<bool>()) continue;  // sp_pieces describe the sentencepiece ids
    SCOPED_TRACE(g["text"].dump());
    const Reply r = s.post("/tokenize", json{{"content", g["text"]}, {"with_pieces", true}});
    ASSERT_EQ(r.status, 200) << r.body;
    const json tokens = r.body_json()["tokens"];
    ASSERT_EQ(tokens.size(), g["sp_pieces"].size());
    for (size_t i = 0; i < tokens.size(); ++i) {
      EXPECT_EQ(tokens[i]["id"], g["hf_ids"][i]);
      std::string piece = g["sp_pieces"][i];
      if (piece.size() == 6 && piece.starts_with("<0x")) {
        const int byte = std::stoi(piece.substr(3, 2), nullptr, 16);
        // A byte below 0x80 is a character on its own; one of a multi-byte character is no text alone.
        EXPECT_EQ(tokens[i]["piece"], byte < 0x80 ? json(std::string(1, static_cast<char>(byte))) : json({byte}));
        continue;
      }
      // sentencepiece's word-boundary mark is a space in text.
      std::string text;
      for (size_t at = 0; at < piece.size();) {
        if (piece.compare(at, 3, "\u2581") == 0) {
          text += ' ';
          at += 3;
        } else {
          text += piece[at++];
        }
      }
      EXPECT_EQ(tokens[i]["piece"], text);
    }
  }
}

TEST(Tokenize, BadRequestsNameTheField) {
  TestServer s;
  const auto expect_400 = [&](const std::string& path, const json& body, const std::string& code) {
    SCOPED_TRACE(path + " " + body.dump());
    const Reply r = s.post(path, body);
    EXPECT_EQ(r.status, 400);
    EXPECT_EQ(r.body_json()["error"]["code"], code);
  };
  expect_400("/tokenize", json::object(), "missing_field");
  expect_400("/tokenize", json{{"content", 5}}, "invalid_type");
  expect_400("/tokenize", json{{"content", "x"}, {"add_special", "yes"}}, "invalid_type");
  expect_400("/detokenize", json::object(), "missing_field");
  expect_400("/detokenize", json{{"tokens", "1 2"}}, "invalid_type");
  expect_400("/detokenize", json{{"tokens", {1, 2.5}}}, "invalid_type");
  expect_400("/detokenize", json{{"tokens", {1, -1}}}, "invalid_value");
  expect_400("/detokenize", json{{"tokens", {1, 3000}}}, "invalid_value");  // the fixture has 3000 pieces
  expect_400("/detokenize", json{{"tokens", {uint64_t{18446744073709551615u}}}}, "invalid_value");
  EXPECT_EQ(s.post("/tokenize", std::string("{\"content\": \"\xff\"}")).status, 400);  // not UTF-8
  EXPECT_EQ(s.get("/tokenize").status, 405);
  EXPECT_EQ(s.post("/detokenize", json{{"tokens", json::array()}}).body_json(), json({{"content", ""}}));
}

TEST(Tokenize, WaitForTheModelAndTheApiKey) {
  auto options = ernie::testing::test_options();
  options.api_key = "sesame";
  TestServer s(options, /*serve=*/false);
  const httplib::Headers key = {{"Authorization", "Bearer sesame"}};
  for (const std::string path : {"/tokenize", "/detokenize"}) {
    EXPECT_EQ(s.post(path, json{{"content", "hi"}}).status, 401);
    const Reply r = s.post(path, json{{"content", "hi"}, {"tokens", {1}}}, key);
    EXPECT_EQ(r.status, 503);
    EXPECT_EQ(r.header("Retry-After"), "1");
  }
  EXPECT_EQ(s.get("/props", key).status, 503);
  s.serve_model();
  EXPECT_EQ(s.post("/tokenize", json{{"content", "hi"}}, key).status, 200);
  EXPECT_EQ(s.get("/props").status, 401);
}

TEST(Props, ContextSlotsTemplateAndDefaults) {
  TestServer s;
  const Reply r = s.get("/props");
  ASSERT_EQ(r.status, 200);
  const json props = r.body_json();
  EXPECT_EQ(props["model"], "tiny-ernie");
  EXPECT_EQ(props["n_ctx"], 256);
  EXPECT_EQ(props["total_slots"], ernie::testing::test_options().scheduler.max_running);
  EXPECT_EQ(props["vocab_size"], 3000);
  EXPECT_EQ(props["bos_token"], "<s>");
  EXPECT_EQ(props["eos_token"], "</s>");
  const json config = read_json(fixture("tiny-ernie/model/tokenizer_config.json"));
  EXPECT_EQ(props["chat_template"], config["chat_template"]);
  EXPECT_EQ(props["default_generation_settings"]["n_ctx"], 256);
  EXPECT_TRUE(props["default_generation_settings"]["params"].contains("temperature"));
  EXPECT_TRUE(props["build_info"].get<std::string>().starts_with("ernie-edge "));
}

}  // namespace
}  // namespace ernie
