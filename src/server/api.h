// The JSON side of the HTTP API, without any HTTP: request bodies of /predict, /v1/completions and
// /v1/chat/completions parsed and checked into one internal form, and the OpenAI-shaped responses, stream chunks and
// errors built from the scheduler's output.
//
// Every problem with a request raises ApiError carrying the HTTP status and an OpenAI-style error object
// ({"error": {"message", "type", "param", "code"}}), whose message names the offending field.
#pragma once

#include <cstdint>
#include <ctime>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "engine/generator.h"
#include "engine/grammar/grammar.h"
#include "engine/lora_registry.h"
#include "engine/scheduler.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace ernie::server {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string code, const std::string& message, std::string param = {})
      : std::runtime_error(message), status_(status), code_(std::move(code)), param_(std::move(param)) {}
  int status() const { return status_; }
  const std::string& code() const { return code_; }
  // {"error": {"message", "type", "param", "code"}}: type "invalid_request_error" for 4xx, "server_error" for 5xx.
  nlohmann::json body() const;

 private:
  int status_;
  std::string code_;
  std::string param_;
};

enum class Endpoint { Predict, Completions, ChatCompletions };

// Bounds on what one request may ask for, beyond the body size the HTTP layer enforces. Each is a flag of
// `ernie serve`; going past one is a 400 that names the field and the limit.
struct RequestLimits {
  int max_json_depth = 64;      // nesting of arrays and objects, checked while parsing, before any DOM exists
  int max_stop_strings = 16;    // entries of "stop"
  size_t max_stop_bytes = 256;  // bytes of one stop string
  int max_messages = 1024;      // entries of "messages"
};

// What the parsers need of the served model.
struct ApiModel {
  const Tokenizer& tokenizer;
  const ChatTemplate* chat_template;  // null when the checkpoint has none: chat requests are refused
  GenerationOptions defaults;         // generation_config.json's, as default_generation_options() gives them
  std::string id;                     // the name clients pass as "model"
  int context_length;
  int vocab_size;
  RequestLimits limits = {};
  GrammarCache* grammars = nullptr;  // compiled grammars shared across requests; null: each request compiles its own
  const LoraRegistry* adapters = nullptr;  // adapters a request may name as its "model"; null: none
};

struct GenerationCall {
  Endpoint endpoint = Endpoint::Completions;
  std::vector<int32_t> prompt = {};
  GenerationOptions options = {};
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk carries the token counts
  int n = 1;                   // choices to generate, the i-th with seed + i
};

// Most choices one request may ask for (n).
inline constexpr int kMaxChoices = 16;

// The name a response gives as its "model": the adapter's when the request named one, else the base model's.
std::string model_name(const GenerationCall& call, const ApiModel& model);

// /v1/completions: "prompt" is a string or token ids (one prompt per request).
GenerationCall parse_completion(std::string_view body, const ApiModel& model);
// /v1/chat/completions: "messages" go through the chat template; the template's end-of-turn token ends the reply.
GenerationCall parse_chat_completion(std::string_view body, const ApiModel& model);
// /predict, the seed's API: the text is the `text` query parameter or the body's {"text": ...}; it is the user's turn
// of a chat, as in the model card's example. max_tokens, temperature, top_p and seed override generation_config.json,
// from the body or from query parameters of those names (the body wins where both give one).
GenerationCall parse_predict(std::string_view body, const std::vector<std::pair<std::string, std::string>>& query,
                             const ApiModel& model);

// llama-server's POST /tokenize {"content", "add_special" (bos, default false), "with_pieces" (default false)} ->
// {"tokens": [id, ...]}, or with pieces {"tokens": [{"id", "piece"}, ...]}: a piece is its text where that is valid
// UTF-8 on its own, else its bytes as an array of numbers (one byte of a multi-byte character).
nlohmann::json tokenize_body(std::string_view body, const ApiModel& model);
// POST /detokenize {"tokens": [id, ...]} -> {"content"}: the text the ids decode to, special tokens as their text.
nlohmann::json detokenize_body(std::string_view body, const ApiModel& model);

// Responses. `id` and `created` identify the request; `summary` gives the finish reason and token counts.
struct ResponseInfo {
  Endpoint endpoint;
  std::string id;
  std::time_t created;
  std::string model;
  const Tokenizer* tokenizer = nullptr;  // with logprobs: renders the tokens
  bool logprobs = false;                 // the request asked for logprobs
};
using TokenInfos = std::span<const RequestHandle::TokenInfo>;

// OpenAI's "logprobs" of a choice for these tokens. Chat: {"content": [{token, logprob, bytes, top_logprobs}]};
// completions: {tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset}, where text_offset counts bytes
// of the generated text from `offset` on (advanced past these tokens).
nlohmann::json logprobs_json(const ResponseInfo& info, TokenInfos tokens, size_t& offset);

// One choice's whole output, for a response that is not streamed.
struct ChoiceOutput {
  std::string text;
  RequestSummary summary;
  std::vector<RequestHandle::TokenInfo> logprobs;
};
// The response body; usage counts the prompt once and the completions of every choice.
nlohmann::json completion_body(const ResponseInfo& info, std::span<const ChoiceOutput> choices);
// One server-sent event ("data: {...}\n\n") carrying choice `index`'s `text`, and with `finish` its finish reason;
// with logprobs, those of the tokens since the previous chunk (`offset` as logprobs_json's).
std::string stream_chunk(const ResponseInfo& info, int index, std::string_view text,
                         const RequestSummary* finish = nullptr, TokenInfos logprobs = {}, size_t* offset = nullptr);
// The chat stream's first event for a choice, announcing the assistant's role (as OpenAI sends it).
std::string stream_role_chunk(const ResponseInfo& info, int index);
// The event with the token counts (stream_options.include_usage): empty choices, "usage" set.
std::string stream_usage_chunk(const ResponseInfo& info, std::span<const RequestSummary> choices);
std::string sse_event(const nlohmann::json& data);

// Parses `text` as JSON no deeper than `max_depth`; raises ApiError (400) for anything else: malformed JSON, numbers
// no double can hold (1e999), nesting past the limit. Nothing else escapes. `what` names the text in messages.
nlohmann::json parse_json(std::string_view text, int max_depth, const std::string& what = "the request body");

// Serializes without throwing: invalid UTF-8 (never expected here) becomes U+FFFD.
std::string dump(const nlohmann::json& value);

}  // namespace ernie::server
