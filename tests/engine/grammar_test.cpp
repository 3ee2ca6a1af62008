// Constrained decoding: GBNF parsing, the matcher's language, the token mask against a token-by-token check, the
// JSON-Schema compiler's language on hand-picked instances, and generation on the fixture model (random weights, so
// only the constraint can make its output valid).
#include "engine/grammar/grammar.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "engine/continuation.h"
#include "engine/generator.h"
#include "engine/grammar/grammar_matcher.h"
#include "engine/grammar/json_schema.h"
#include "test_support.h"

namespace ernie {
namespace {

using ernie::testing::fixture;
using Json = nlohmann::ordered_json;

class GrammarTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tokenizer_ = new Tokenizer(Tokenizer::load(fixture("tiny-ernie/model")));
    trie_ = new TokenTrie(*tokenizer_);
  }
  static void TearDownTestSuite() {
    delete trie_;
    delete tokenizer_;
  }
  // Whether `text` is a complete sentence of the grammar.
  static bool matches(const std::string& gbnf, std::string_view text) {
    GrammarMatcher m(std::make_shared<const Grammar>(Grammar::parse(gbnf)), *trie_);
    return m.accept_bytes(text) && m.can_end();
  }
  static bool schema_matches(const char* schema, std::string_view text) {
    return matches(json_schema_to_gbnf(Json::parse(schema)), text);
  }
  static Tokenizer* tokenizer_;
  static TokenTrie* trie_;
};
Tokenizer* GrammarTest::tokenizer_ = nullptr;
TokenTrie* GrammarTest::trie_ = nullptr;

std::string error_of(const std::string& gbnf) {
  try {
    Grammar::parse(gbnf);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Gbnf, RefusesBadGrammarsWithTheirLine) {
  EXPECT_NE(error_of("root ::= x\n").find("rule 'x' is used but not defined"), std::string::npos);
  EXPECT_NE(error_of("a ::= \"x\"\n").find("no 'root' rule"), std::string::npos);
  EXPECT_NE(error_of("root ::= \"a\"\nroot ::= \"b\"\n").find("line 2"), std::string::npos);
  EXPECT_NE(error_of("root ::= \"abc\n").find("unterminated literal"), std::string::npos);
  EXPECT_NE(error_of("root ::= [b-a]\n").find("line 1, column 14: character range out of order"), std::string::npos);
  EXPECT_NE(error_of("root ::= \"a\"\nx ::= [b").find("unterminated character class"), std::string::npos);
  EXPECT_NE(error_of("root ::= \"a\"{3,2}\n").find("n < m"), std::string::npos);
  EXPECT_NE(error_of("root ::= \"a\"{200000}\n").find("repetition count"), std::string::npos);
  // Left recursion, direct and through a rule that can match nothing.
  EXPECT_NE(error_of("root ::= root \"a\" | \"b\"\n").find("left-recursive"), std::string::npos);
  EXPECT_NE(error_of("root ::= x root \"b\" | \"c\"\nx ::= \"a\"?\n").find("left-recursive"), std::string::npos);
  EXPECT_NE(error_of("root ::= (\"a\"?)*\n").find("left-recursive"), std::string::npos);
  EXPECT_EQ(error_of("root ::= \"a\" root | \"b\"  # right recursion is fine\n"), "");
}

TEST(GrammarCache, SameTextSameGrammar) {
  GrammarCache cache(2);
  const auto a = cache.compile("root ::= \"a\"\n");
  EXPECT_EQ(cache.compile("root ::= \"a\"\n"), a);
  const auto b = cache.compile("root ::= \"b\"\n");
  EXPECT_NE(b, a);
  cache.compile("root ::= \"c\"\n");  // evicts the least recently used: "a" (b was compiled after it)
  EXPECT_EQ(cache.compile("root ::= \"c\"\n"), cache.compile("root ::= \"c\"\n"));
  EXPECT_NE(cache.compile("root ::= \"a\"\n"), a);
  EXPECT_THROW(cache.compile("root ::= x\n"), Error);
}

TEST_F(GrammarTest, MatchesItsLanguageOverBytes) {
  const std::string g = "root ::= \"ab\" [0-9]{1,3} ( \"-\" | [x-z]+ )?\n";
  for (const char* yes : {"ab1", "ab123", "ab12-", "ab9xyzzy"}) EXPECT_TRUE(matches(g, yes)) << yes;
  for (const char* no : {"", "ab", "ab1234", "ab1-x", "ab1w", "b1"}) EXPECT_FALSE(matches(g, no)) << no;
  // Alternatives continued on the next line, groups over lines, comments.
  const std::string multi = "root ::= \"a\" # first\n  | ( \"b\"\n \"c\" )\n";
  EXPECT_TRUE(matches(multi, "a"));
  EXPECT_TRUE(matches(multi, "bc"));
  EXPECT_FALSE(matches(multi, "b"));
}

TEST_F(GrammarTest, ClassesAreCodePointsAndAlwaysValidUtf8) {
  const std::string g = "root ::= [^a]{2}\n";
  EXPECT_TRUE(matches(g, "bc"));
  EXPECT_TRUE(matches(g, "\xC3\xA9\xF0\x9F\x98\x80"));  // é, 😀: two characters
  EXPECT_FALSE(matches(g, "ab"));
  EXPECT_FALSE(matches(g, "\xC3\xA9"));  // one character
  EXPECT_FALSE(matches(g,
                       "\xC3\x28"
                       "b"));  // an invalid sequence
  EXPECT_FALSE(matches(g,
                       "\xED\xA0\x80"
                       "b"));  // an encoded surrogate
  EXPECT_FALSE(matches(g,
                       "\xE0\x80\xAF"
                       "b"));                                             // an overlong form
  EXPECT_TRUE(matches("root ::= [\\u00e9-\\u4e2d]\n", "\xE4\xB8\xAD"));   // 中, the range's top
  EXPECT_FALSE(matches("root ::= [\\u00e9-\\u4e2d]\n", "\xE4\xB8\xAE"));  // one past it
  EXPECT_TRUE(matches("root ::= \"\\x41\\u00e9\"\n", "A\xC3\xA9"));
}

// The mask from the trie walk must equal asking the grammar about every token alone, in every state a random
// generation passes through. The matchers share one grammar, so later seeds also take masks the earlier ones left in
// its shared cache.
TEST_F(GrammarTest, MaskEqualsTheTokenByTokenCheck) {
  auto grammar = std::make_shared<const Grammar>(Grammar::parse(any_json_gbnf(false)));
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    // Seeds 5 and 6 bound the state table so tightly that walks finish without it.
    GrammarMatcher m(grammar, *trie_, seed <= 4 ? 32768 : 2);
    std::mt19937_64 rng(seed);
    for (int step = 0; step < 40 && !m.must_end(); ++step) {
      const std::vector<uint64_t> mask = m.allowed_tokens();
      std::vector<int32_t> allowed;
      for (int32_t t = 0; t < trie_->vocab_size(); ++t) {
        const bool bit = (mask[t >> 6] >> (t & 63)) & 1;
        ASSERT_EQ(bit, m.allows(t)) << "seed " << seed << " step " << step << " token " << t;
        if (bit) allowed.push_back(t);
      }
      ASSERT_FALSE(allowed.empty());
      ASSERT_TRUE(m.accept(allowed[rng() % allowed.size()]));
      EXPECT_EQ(m.allowed_tokens(), m.allowed_tokens());  // the cached mask is the same
    }
  }
}

TEST_F(GrammarTest, SchemaIntegersHonourTheirBounds) {
  const char* schemas[] = {R"({"type":"integer","minimum":-17,"maximum":123})",
                           R"({"type":"integer","exclusiveMinimum":5})", R"({"type":"integer","maximum":-3})",
                           R"({"type":"integer","minimum":100,"maximum":100})",
                           R"({"type":"integer","minimum":0,"exclusiveMaximum":1000})"};
  const auto within = [](int which, long v) {
    switch (which) {
      case 0: return v >= -17 && v <= 123;
      case 1: return v > 5;
      case 2: return v <= -3;
      case 3: return v == 100;
      default: return v >= 0 && v < 1000;
    }
  };
  for (int which = 0; which < 5; ++which) {
    const std::string gbnf = json_schema_to_gbnf(Json::parse(schemas[which]));
    for (long v = -1200; v <= 1200; ++v) {
      ASSERT_EQ(matches(gbnf, std::to_string(v)), within(which, v)) << schemas[which] << " " << v;
    }
    EXPECT_FALSE(matches(gbnf, "007"));
  }
}

TEST_F(GrammarTest, SchemaStringsFormatsAndPatterns) {
  EXPECT_TRUE(schema_matches(R"({"type":"string","maxLength":3})", "\"\xC3\xA9\\\"\xF0\x9F\x98\x80\""));
  EXPECT_FALSE(schema_matches(R"({"type":"string","maxLength":3})", "\"abcd\""));
  EXPECT_FALSE(schema_matches(R"({"type":"string","minLength":2})", "\"a\""));
  EXPECT_FALSE(schema_matches(R"({"type":"string"})", "\"a\nb\""));     // raw control character
  EXPECT_FALSE(schema_matches(R"({"type":"string"})", "\"\\ud800\""));  // lone surrogate escape
  EXPECT_TRUE(schema_matches(R"({"type":"string"})", "\"\\u00e9\\n\""));
  const char* date = R"({"type":"string","format":"date"})";
  EXPECT_TRUE(schema_matches(date, "\"2024-02-28\""));
  EXPECT_TRUE(schema_matches(date, "\"1999-12-31\""));
  EXPECT_FALSE(schema_matches(date, "\"2024-02-30\""));
  EXPECT_FALSE(schema_matches(date, "\"2024-04-31\""));
  EXPECT_FALSE(schema_matches(date, "\"2024-13-01\""));
  EXPECT_TRUE(schema_matches(R"({"format":"time"})", "\"23:59:07.5+05:30\""));
  EXPECT_FALSE(schema_matches(R"({"format":"time"})", "\"24:00:00Z\""));
  EXPECT_TRUE(schema_matches(R"({"format":"uuid"})", "\"123e4567-e89b-12d3-a456-426614174000\""));
  EXPECT_TRUE(schema_matches(R"({"format":"email"})", "\"ann.lee@mail.example.org\""));
  EXPECT_FALSE(schema_matches(R"({"format":"email"})", "\"ann@\""));
  const char* code = R"({"type":"string","pattern":"^[A-Z]{2}-\\d{3}(x|yz)?$"})";
  EXPECT_TRUE(schema_matches(code, "\"AB-123\""));
  EXPECT_TRUE(schema_matches(code, "\"AB-123yz\""));
  EXPECT_FALSE(schema_matches(code, "\"AB-12\""));
  EXPECT_FALSE(schema_matches(code, "\"ab-123\""));
  // A quote in the pattern's language is written escaped inside the JSON string.
  EXPECT_TRUE(schema_matches(R"({"pattern":"a\"b\\\\c"})", R"("a\"b\\c")"));
  EXPECT_FALSE(schema_matches(R"({"pattern":"a\"b"})", "\"a\"b\""));
}

TEST_F(GrammarTest, SchemaObjectsArraysAndCombinators) {
  const char* person = R"({"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},
      "nick":{"type":["string","null"]}},"required":["name"],"additionalProperties":false})";
  EXPECT_TRUE(schema_matches(person, R"({"name":"a"})"));
  EXPECT_TRUE(schema_matches(person, R"({"name":"a","age":3,"nick":null})"));
  EXPECT_TRUE(schema_matches(person, "{\n  \"name\": \"a\",\n  \"nick\": \"b\"\n}"));
  EXPECT_FALSE(schema_matches(person, R"({"age":3})"));           // required missing
  EXPECT_FALSE(schema_matches(person, R"({"name":"a",})"));       // trailing comma
  EXPECT_FALSE(schema_matches(person, R"({"name":"a","x":1})"));  // undeclared
  const char* list = R"({"type":"array","items":{"enum":["r","g",1.5,null]},"minItems":1,"maxItems":2})";
  EXPECT_TRUE(schema_matches(list, R"(["r"])"));
  EXPECT_TRUE(schema_matches(list, R"([1.5, null])"));
  EXPECT_FALSE(schema_matches(list, "[]"));
  EXPECT_FALSE(schema_matches(list, R"(["r","g","r"])"));
  EXPECT_FALSE(schema_matches(list, R"(["b"])"));
  const char* tree = R"({"$defs":{"node":{"type":"object","properties":{"v":{"const":7},
      "kids":{"type":"array","items":{"$ref":"#/$defs/node"}}},"required":["v"]}},"$ref":"#/$defs/node"})";
  EXPECT_TRUE(schema_matches(tree, R"({"v":7,"kids":[{"v":7},{"v":7,"kids":[]}]})"));
  EXPECT_FALSE(schema_matches(tree, R"({"v":7,"kids":[{"v":8}]})"));
  const char* either = R"({"anyOf":[{"type":"boolean"},{"type":"string","maxLength":1}]})";
  EXPECT_TRUE(schema_matches(either, "true"));
  EXPECT_TRUE(schema_matches(either, "\"x\""));
  EXPECT_FALSE(schema_matches(either, "\"xy\""));
  EXPECT_TRUE(schema_matches("{}", R"([{"a":[1,-2.5e3,"x",true,null]}])"));
  EXPECT_TRUE(schema_matches(R"({"type":"number"})", "-0.25E+12"));
  EXPECT_FALSE(schema_matches(R"({"type":"number"})", "01"));
}

TEST(JsonSchema, RefusesWhatItCannotGuaranteeNamingTheKeyword) {
  const auto keyword_of = [](const char* schema) {
    try {
      json_schema_to_gbnf(Json::parse(schema));
    } catch (const SchemaError& e) {
      return e.keyword();
    }
    return std::string("(accepted)");
  };
  EXPECT_EQ(keyword_of(R"({"type":"array","uniqueItems":true})"), "uniqueItems");
  EXPECT_EQ(keyword_of(R"({"properties":{"a":{"type":"string","contentEncoding":"base64"}}})"), "contentEncoding");
  EXPECT_EQ(keyword_of(R"({"type":"number","minimum":0})"), "minimum");
  EXPECT_EQ(keyword_of(R"({"type":"string","format":"ipv4"})"), "format");
  EXPECT_EQ(keyword_of(R"({"type":"string","pattern":"(a)\\1"})"), "pattern");
  EXPECT_EQ(keyword_of(R"j({"type":"string","pattern":"a(?=b)"})j"), "pattern");
  EXPECT_EQ(keyword_of(R"({"allOf":[{"type":"string"},{"maxLength":2}]})"), "allOf");
  EXPECT_EQ(keyword_of(R"({"$ref":"#/$defs/missing"})"), "$ref");
  EXPECT_EQ(keyword_of(R"({"$ref":"http://example.com/s.json"})"), "$ref");
  EXPECT_EQ(keyword_of(R"({"type":"objekt"})"), "type");
  EXPECT_EQ(keyword_of(R"({"title":"t","description":"d","type":"null"})"), "(accepted)");
}

// Plain sampling tries an unconstrained draw first and keeps it when allowed; the tokens must still come out with the
// masked distribution's probabilities, p(t) / P(allowed). Checked on fixed logits where about half the mass is
// allowed, so both paths run, against the exact masked softmax.
TEST_F(GrammarTest, DrawsFollowTheMaskedDistribution) {
  auto grammar = std::make_shared<const Grammar>(Grammar::parse("root ::= [a-e] [a-z]*\n"));
  GrammarMatcher probe(grammar, *trie_);
  const auto mask = probe.allowed_tokens();
  const int vocab = trie_->vocab_size();
  std::mt19937_64 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> logits(vocab);
  std::vector<int32_t> allowed;
  for (int32_t t = 0; t < vocab; ++t) {
    logits[t] = normal(rng);
    if ((mask[t >> 6] >> (t & 63)) & 1) allowed.push_back(t);
  }
  ASSERT_GE(allowed.size(), 5u);
  // Raise a few allowed tokens so that P(allowed) is about one half and the frequencies are measurable.
  double rest = 0;
  for (int32_t t = 0; t < vocab; ++t) rest += std::exp(logits[t]);
  for (size_t i = 0; i < 5; ++i) logits[allowed[i]] = std::log(rest / 5 * (i + 1) / 3.0);
  double allowed_mass = 0;
  for (const int32_t t : allowed) allowed_mass += std::exp(logits[t]);
  std::map<int32_t, int> counts;
  const int draws = 20000;
  for (int seed = 0; seed < draws; ++seed) {
    GenerationOptions o;
    o.grammar = grammar;
    o.max_new_tokens = 1;
    o.sampling.seed = static_cast<uint64_t>(seed);
    Continuation c(*tokenizer_, o, {}, vocab, trie_);
    std::vector<float> copy = logits;
    ++counts[c.next(copy).token];
  }
  for (const auto& [token, n] : counts) {
    ASSERT_TRUE((mask[token >> 6] >> (token & 63)) & 1) << "token " << token << " is not allowed";
  }
  for (size_t i = 0; i < 5; ++i) {
    const double p = std::exp(logits[allowed[i]]) / allowed_mass;
    const double sigma = std::sqrt(p * (1 - p) / draws);
    EXPECT_NEAR(counts[allowed[i]] / static_cast<double>(draws), p, 4.5 * sigma) << "token " << allowed[i];
  }
}

// Hostile sizes end in errors or bounded work, never in a stack overflow: deep groups, deep patterns, objects of
// two thousand properties, chains of thousands of rules that each start with the next.
TEST_F(GrammarTest, HostileSizesAreBounded) {
  EXPECT_NE(error_of("root ::= " + std::string(5000, '(') + "\"a\"" + std::string(5000, ')') + "\n").find("nest"),
            std::string::npos);
  const auto keyword_of = [](const std::string& schema) {
    try {
      json_schema_to_gbnf(Json::parse(schema));
    } catch (const SchemaError& e) {
      return e.keyword();
    }
    return std::string("(accepted)");
  };
  EXPECT_EQ(keyword_of(R"({"pattern":")" + std::string(5000, '(') + "a" + std::string(5000, ')') + "\"}"), "pattern");
  std::string defs = R"({"$defs":{)";
  for (int i = 0; i < 1000; ++i) {
    defs += "\"d";
    defs += std::to_string(i);
    defs += R"(":{"$ref":"#/$defs/d)";
    defs += std::to_string(i + 1);
    defs += "\"},";
  }
  defs += R"("d1000":{"type":"null"}},"$ref":"#/$defs/d0"})";
  EXPECT_EQ(keyword_of(defs), "$ref");
  Json wide = {{"type", "object"}, {"properties", Json::object()}};
  for (int i = 0; i < 2000; ++i) {
    std::string name = "p";
    name += std::to_string(i);
    wide["properties"][name] = {{"type", "integer"}};
  }
  const std::string gbnf = json_schema_to_gbnf(wide);
  EXPECT_TRUE(matches(gbnf, R"({"p0":1,"p1999":2})"));
  EXPECT_FALSE(matches(gbnf, R"({"p1999":2,"p0":1})"));  // the schema's order
  std::string chain;
  for (int i = 0; i < 3000; ++i) {
    chain += "r";
    chain += std::to_string(i);
    chain += " ::= r";
    chain += std::to_string(i + 1);
    chain += " | \"x\"\n";
  }
  chain += "r3000 ::= \"y\"\nroot ::= r0\n";
  EXPECT_TRUE(matches(chain, "x"));  // the fork chain is cut, the short parses remain
}

// An alternative written twice is laid out once: the request fuzzer's `("," |||...| item)` made the matcher follow
// every copy.
TEST_F(GrammarTest, DuplicateAlternativesAreLaidOutOnce) {
  const std::string gbnf = "root ::= \"a\" | \"a\" | x | | \"b\" | x\nx ::= \"c\"\n";
  const Grammar g = Grammar::parse(gbnf);
  EXPECT_EQ(g.alternatives(g.root()).size(), 4u);  // "a", x, empty, "b"
  for (const char* text : {"a", "b", "c"}) EXPECT_TRUE(matches(gbnf, text)) << text;
  EXPECT_FALSE(matches(gbnf, "d"));
  EXPECT_FALSE(matches(gbnf, "aa"));
}

// Distinct nullable alternatives inside a repetition reach the same stack by exponentially many paths (40 optional
// letters nested 8 deep: 40^8 of them), found by the request fuzzer. Each distinct stack is expanded once, so the
// mask, the token-by-token check and the language all come out in bounded work.
TEST_F(GrammarTest, NullableAlternativesDoNotMultiplyTheWork) {
  std::string optional_letters;
  for (int i = 0; i < 40; ++i)
    optional_letters += std::string(i ? " | " : "") + "\"" + char(i < 26 ? 'a' + i : 'A' + i - 26) + "\"?";
  const std::string gbnf = "root ::= item (\",\" | " + optional_letters +
                           " | item){0,8}\nitem ::= [a-z\\u4e00-\\u9fff]+ | \"\\\"\" [0-9]{2}\n";
  EXPECT_TRUE(matches(gbnf, "ab,cd"));
  EXPECT_TRUE(matches(gbnf, "ab\"12cd,ef"));
  EXPECT_FALSE(matches(gbnf, "ab,,,,,,,,,cd"));  // at most eight repetitions
  EXPECT_FALSE(matches(gbnf, ",ab"));
  GrammarMatcher m(std::make_shared<const Grammar>(Grammar::parse(gbnf)), *trie_);
  ASSERT_TRUE(m.accept_bytes("ab"));
  const std::vector<uint64_t>& mask = m.allowed_tokens();
  for (int32_t t = 0; t < trie_->vocab_size(); ++t) {
    EXPECT_EQ(((mask[t >> 6] >> (t & 63)) & 1) != 0, m.allows(t)) << "token " << t;
  }
}

// On random weights only the grammar makes the output valid: every answer that ends by "stop" parses and has the
// schema's shape, for greedy and sampled decoding alike.
TEST_F(GrammarTest, GenerationFollowsTheSchemaOnTheFixtureModel) {
  const auto model = Model::load(fixture("tiny-ernie/model"));
  const char* schema = R"({"type":"object","properties":{"id":{"type":"integer","minimum":1,"maximum":99},
      "ok":{"type":"boolean"},"tag":{"enum":["x","y"]}},"required":["id","ok","tag"],"additionalProperties":false})";
  auto grammar = std::make_shared<const Grammar>(Grammar::parse(json_schema_to_gbnf(Json::parse(schema))));
  const std::vector<int32_t> prompt = tokenizer_->encode("Answer in JSON:");
  int stopped = 0;
  for (uint64_t seed = 0; seed < 12; ++seed) {
    GenerationOptions o;
    o.max_new_tokens = 60;
    o.grammar = grammar;
    o.sampling.temperature = seed % 3 == 0 ? 0.0f : 1.0f;
    o.sampling.top_p = seed % 2 ? 0.9f : 1.0f;
    o.sampling.seed = seed;
    Session session(*model, {});
    const auto r = generate(session, *tokenizer_, prompt, o);
    if (r.finish_reason != FinishReason::Stop) continue;
    ++stopped;
    const auto value = nlohmann::json::parse(r.text);
    ASSERT_TRUE(value.is_object()) << r.text;
    EXPECT_EQ(value.size(), 3u) << r.text;
    EXPECT_TRUE(value["id"].is_number_integer() && value["id"] >= 1 && value["id"] <= 99) << r.text;
    EXPECT_TRUE(value["ok"].is_boolean()) << r.text;
    EXPECT_TRUE(value["tag"] == "x" || value["tag"] == "y") << r.text;
  }
  EXPECT_GE(stopped, 6) << "most answers should complete within 60 tokens";
}

}  // namespace
}  // namespace ernie
