// Fuzzes the HTTP API's request decoding (server/api.h) with the demo model's tokenizer and chat template. The first
// byte picks the endpoint: 0 /v1/completions, 1 /v1/chat/completions, 2 /predict. For /predict the input up to the
// next NUL is the query string (name=value pairs split at '&' and the first '=', already decoded, as the HTTP layer
// hands them over), the rest the body; for the others everything after the first byte is the body. Each request
// must give a GenerationCall that fits the context, or raise ApiError; any other exception is a finding. A call with a
// grammar (response_format, "grammar") is then walked for a few tokens: its mask must agree with the token-by-token
// check (on a sample of the vocabulary), hold a token unless the grammar is complete, and the allowed token picked
// must be accepted.
#include <exception>
#include <optional>

#include "core/error.h"
#include "engine/grammar/grammar_matcher.h"
#include "fuzz_support.h"
#include "model/config.h"
#include "server/api.h"

namespace {

struct Served {
  ernie::Tokenizer tokenizer = ernie::Tokenizer::load(ERNIE_DEMO_MODEL_DIR);
  int vocab_size = ernie::ModelConfig::load(ERNIE_DEMO_MODEL_DIR).vocab_size;
  ernie::ChatTemplate chat_template = ernie::ChatTemplate::parse(tokenizer.chat_template());
  ernie::TokenTrie trie{tokenizer};
  ernie::GenerationOptions defaults = ernie::default_generation_options(
      ernie::ModelConfig::load(ERNIE_DEMO_MODEL_DIR), ernie::GenerationDefaults::load(ERNIE_DEMO_MODEL_DIR));
};

const Served& served() {
  static const Served s;
  return s;
}

std::vector<std::pair<std::string, std::string>> split_query(std::string_view query) {
  std::vector<std::pair<std::string, std::string>> pairs;
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query.remove_prefix(amp == std::string_view::npos ? query.size() : amp + 1);
    const size_t eq = pair.find('=');
    if (eq == std::string_view::npos) {
      pairs.emplace_back(pair, "");
    } else {
      pairs.emplace_back(pair.substr(0, eq), pair.substr(eq + 1));
    }
  }
  return pairs;
}

// A few steps of constrained decoding, each token picked by the seed among the allowed ones.
void walk_grammar(const std::shared_ptr<const ernie::Grammar>& grammar, const ernie::TokenTrie& trie, uint64_t seed) {
  ernie::GrammarMatcher matcher(grammar, trie);
  for (int step = 0; step < 6 && !matcher.must_end(); ++step) {
    const std::vector<uint64_t> mask = matcher.allowed_tokens();
    std::vector<int32_t> allowed;
    for (int32_t t = 0; t < trie.vocab_size(); ++t) {
      const bool bit = (mask[t >> 6] >> (t & 63)) & 1;
      if (bit) allowed.push_back(t);
      // A sample checked token by token: every 97th id, and the first 64 allowed ones (a class like [a-z一-龥]
      // allows thousands, each a walk of its own).
      if ((t % 97 == static_cast<int32_t>(seed % 97) || (bit && allowed.size() <= 64)) && bit != matcher.allows(t)) {
        ernie::fuzz::violation("the mask and the token-by-token check disagree");
      }
    }
    if (allowed.empty()) return;  // complete, or a grammar the vocabulary cannot write (the engine reports that)
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    if (!matcher.accept(allowed[(seed >> 33) % allowed.size()])) ernie::fuzz::violation("an allowed token was refused");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ernie;
  using namespace ernie::server;
  const Served& s = served();
  constexpr int kContext = 512;
  const ApiModel model{.tokenizer = s.tokenizer,
                       .chat_template = &s.chat_template,
                       .defaults = s.defaults,
                       .id = "demo",
                       .context_length = kContext,
                       .vocab_size = s.vocab_size};
  fuzz::Input in(data, size);
  // A first byte of 0xF0 and above picks a tokenizer route (/tokenize, /detokenize); below, a generation route as
  // before, so the corpus's older seeds keep meaning what they meant.
  const uint8_t selector = in.byte();
  if (selector >= 0xF0) {
    try {
      const nlohmann::json answer = selector & 1 ? detokenize_body(in.rest(), model) : tokenize_body(in.rest(), model);
      (void)dump(answer);
      if (!(selector & 1)) {
        for (const auto& token : answer["tokens"]) {
          const auto id = token.is_object() ? token["id"].get<int64_t>() : token.get<int64_t>();
          if (id < 0 || id >= s.tokenizer.vocab_size()) fuzz::violation("/tokenize gave an id outside the vocabulary");
        }
      }
    } catch (const ApiError& e) {
      if (e.status() != 400) fuzz::violation("a tokenizer route answered other than 400", e.what());
      (void)dump(e.body());
    } catch (const std::exception& e) {
      fuzz::violation("exception other than ApiError", e.what());
    }
    return 0;
  }
  const uint8_t endpoint = selector % 3;
  try {
    GenerationCall call;
    if (endpoint == 0) {
      call = parse_completion(in.rest(), model);
    } else if (endpoint == 1) {
      call = parse_chat_completion(in.rest(), model);
    } else {
      const auto query = split_query(in.until_nul());
      call = parse_predict(in.rest(), query, model);
    }
    if (call.prompt.empty() && endpoint != 0) fuzz::violation("a chat request gave an empty prompt");
    if (static_cast<int64_t>(call.prompt.size()) + call.options.max_new_tokens > kContext ||
        call.options.max_new_tokens < 0) {
      fuzz::violation("the call does not fit the context");
    }
    for (int32_t id : call.prompt) {
      if (id < 0) fuzz::violation("negative prompt id");
    }
    if (call.options.grammar) walk_grammar(call.options.grammar, s.trie, size);
  } catch (const ApiError& e) {
    // Must carry a usable HTTP status and serialize.
    if (e.status() < 400 || e.status() > 599) fuzz::violation("ApiError with a non-error status", e.what());
    (void)dump(e.body());
  } catch (const std::exception& e) {
    fuzz::violation("exception other than ApiError", e.what());
  }
  return 0;
}
