// The cost of one token mask (GrammarMatcher::allowed_tokens, uncached) on a vocabulary of ERNIE-4.5's size, in the
// grammar states structured output spends its time in. The checkpoint's own tokenizer is not in the repository, so
// the vocabulary is synthetic but shaped like it: 103,424 pieces, the 256 byte pieces, ASCII words with and without
// a leading space, CJK words of 1-4 characters, digits and punctuation runs.
//
//   build/bench_grammar [--benchmark_filter=...]
//   build/bench_grammar --write-tokenizer DIR   (the vocabulary as tokenizer files, for ernie make-random)
// Compare with the model's time per decoded token (ernie bench) to get the overhead of an uncached step.
#include <benchmark/benchmark.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "core/utf8.h"
#include "engine/grammar/grammar.h"
#include "engine/grammar/grammar_matcher.h"
#include "engine/grammar/json_schema.h"
#include "tokenizer/spm_vocabulary.h"
#include "tokenizer/tokenizer.h"

namespace ernie {

constexpr int kVocabulary = 103424;

SpmVocabulary synthetic_vocabulary() {
  SpmVocabulary v;
  std::set<std::string> seen;
  const auto add = [&](std::string piece, PieceType type) {
    if (!seen.insert(piece).second) return;
    v.tokens.push_back(std::move(piece));
    v.scores.push_back(-static_cast<float>(v.tokens.size()));
    v.types.push_back(type);
  };
  add("<unk>", PieceType::kUnknown);
  add("<s>", PieceType::kControl);
  add("</s>", PieceType::kControl);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    add(name, PieceType::kByte);
  }
  std::mt19937_64 rng(7);
  const auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<uint64_t>(n)); };
  const std::string punctuation = "\"'{}[]:,.;!?()-_/\\@#$%&*+=<>|~` \n\t";
  while (static_cast<int>(v.tokens.size()) < kVocabulary) {
    const int kind = pick(100);
    std::string piece;
    if (kind < 45) {  // ASCII word, often with the SentencePiece space mark
      if (pick(2)) piece = "\xE2\x96\x81";
      const int n = 1 + pick(9);
      for (int i = 0; i < n; ++i) piece += static_cast<char>((pick(5) ? 'a' : 'A') + pick(26));
    } else if (kind < 90) {  // CJK word
      const int n = 1 + pick(4);
      for (int i = 0; i < n; ++i) utf8::append(piece, static_cast<char32_t>(0x4E00 + pick(0x5000)));
    } else if (kind < 95) {  // digits
      const int n = 1 + pick(3);
      for (int i = 0; i < n; ++i) piece += static_cast<char>('0' + pick(10));
    } else {  // punctuation runs, as code vocabularies have
      const int n = 1 + pick(3);
      for (int i = 0; i < n; ++i) piece += punctuation[pick(static_cast<int>(punctuation.size()))];
    }
    add(piece, PieceType::kNormal);
  }
  v.special_ids = {{"unk_token", 0}, {"bos_token", 1}, {"eos_token", 2}};
  return v;
}

const Tokenizer& synthetic_tokenizer() {
  static const Tokenizer tokenizer = Tokenizer::from_vocabulary(synthetic_vocabulary(), "synthetic");
  return tokenizer;
}

const TokenTrie& trie() {
  static const TokenTrie t(synthetic_tokenizer());
  return t;
}

// The mask in the state reached after `prefix`, computed afresh each iteration (a new matcher: no cache).
void mask_after(benchmark::State& state, const std::string& gbnf, const std::string& prefix) {
  const auto grammar = std::make_shared<const Grammar>(Grammar::parse(gbnf));
  size_t allowed = 0;
  for (auto _ : state) {
    state.PauseTiming();
    GrammarMatcher m(grammar, trie());
    if (!m.accept_bytes(prefix)) state.SkipWithError("prefix not in the grammar");
    state.ResumeTiming();
    const auto& mask = m.allowed_tokens();
    state.PauseTiming();
    allowed = 0;
    for (const uint64_t w : mask) allowed += static_cast<size_t>(__builtin_popcountll(w));
    state.ResumeTiming();
  }
  state.counters["allowed_tokens"] = static_cast<double>(allowed);
  state.counters["trie_nodes"] = static_cast<double>(trie().nodes().size());
}

// Generation inside a maxLength string: every step is a new state, but the transitions the previous walk remembered
// serve the next one.
void BM_BoundedStringWarm(benchmark::State& state) {
  const auto grammar = std::make_shared<const Grammar>(Grammar::parse(json_schema_to_gbnf(nlohmann::ordered_json::parse(
      R"({"type":"object","properties":{"bio":{"type":"string","maxLength":100000}},"required":["bio"]})"))));
  GrammarMatcher m(grammar, trie());
  m.accept_bytes("{\"bio\": \"");
  for (auto _ : state) {
    state.PauseTiming();
    m.accept_bytes("x");
    state.ResumeTiming();
    benchmark::DoNotOptimize(m.allowed_tokens().data());
  }
}
BENCHMARK(BM_BoundedStringWarm)->Unit(benchmark::kMillisecond);

const std::string kObject = json_schema_to_gbnf(nlohmann::ordered_json::parse(
    R"({"type":"object","properties":{"name":{"type":"string"},"bio":{"type":"string","maxLength":200},
        "age":{"type":"integer","minimum":0,"maximum":150}},"required":["name","bio","age"]})"));

void BM_FreeString(benchmark::State& s) {
  mask_after(s, kObject, "{\"name\": \"Ann Lee");
}
void BM_BoundedString(benchmark::State& s) {
  mask_after(s, kObject, "{\"name\": \"A\", \"bio\": \"Born in");
}
void BM_ObjectStart(benchmark::State& s) {
  mask_after(s, kObject, "{");
}
void BM_Integer(benchmark::State& s) {
  mask_after(s, kObject, "{\"name\": \"A\", \"bio\": \"B\", \"age\": 4");
}
void BM_AnyJsonValue(benchmark::State& s) {
  mask_after(s, any_json_gbnf(false), "[1, {\"a\": ");
}
BENCHMARK(BM_FreeString)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_BoundedString)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ObjectStart)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Integer)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_AnyJsonValue)->Unit(benchmark::kMillisecond);

}  // namespace ernie

// `bench_grammar --write-tokenizer DIR` writes the synthetic vocabulary as a checkpoint's tokenizer files instead, so
// that `ernie make-random --tokenizer-from DIR` makes a model that structured output can be measured on end to end.
int main(int argc, char** argv) {
  if (argc == 3 && std::string_view(argv[1]) == "--write-tokenizer") {
    const std::filesystem::path dir = argv[2];
    std::filesystem::create_directories(dir);
    std::ofstream(dir / "tokenizer.model", std::ios::binary)
        << ernie::serialize_spm_model(ernie::synthetic_vocabulary());
    std::ofstream(dir / "tokenizer_config.json")
        << R"({"add_bos_token": false, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})"
        << "\n";
    return 0;
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
