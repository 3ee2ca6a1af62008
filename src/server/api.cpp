#include "server/api.h"

#include <algorithm>

#include "core/error.h"
#include "core/utf8.h"
#include "engine/chat.h"
#include "engine/grammar/grammar.h"
#include "engine/grammar/json_schema.h"
#include "engine/prompt_check.h"

namespace ernie::server {
namespace {

using nlohmann::json;

[[noreturn]] void invalid(const std::string& param, const std::string& message,
                          const std::string& code = "invalid_value") {
  throw ApiError(400, code, message, param);
}

// Reads optional fields of a request object; null counts as absent, as in OpenAI's API. A field of the wrong type
// raises ApiError naming it.
class Fields {
 public:
  explicit Fields(const json& object) : object_(object) {}

  const json* get(const char* name) const {
    const auto it = object_.find(name);
    return it == object_.end() || it->is_null() ? nullptr : &*it;
  }
  std::optional<double> number(const char* name) const {
    const json* v = typed(name, &json::is_number, "a number");
    return v ? std::optional(v->get<double>()) : std::nullopt;
  }
  std::optional<int64_t> integer(const char* name) const {
    const json* v = typed(name, &json::is_number_integer, "an integer");
    if (v && v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      invalid(name, std::string("'") + name + "' is too large");
    }
    return v ? std::optional(v->get<int64_t>()) : std::nullopt;
  }
  std::optional<bool> boolean(const char* name) const {
    const json* v = typed(name, &json::is_boolean, "a boolean");
    return v ? std::optional(v->get<bool>()) : std::nullopt;
  }
  // A number within [low, high] (bounds inclusive unless `open_low`).
  std::optional<float> ranged(const char* name, double low, double high, bool open_low = false) const {
    const auto v = number(name);
    if (v && (*v < low || *v > high || (open_low && *v == low))) {
      invalid(name, std::string("'") + name + "' must lie in " + (open_low ? "(" : "[") + format(low) + ", " +
                        format(high) + "], got " + format(*v));
    }
    return v ? std::optional(static_cast<float>(*v)) : std::nullopt;
  }

  static std::string format(double v) { return json(v).dump(); }

 private:
  const json* typed(const char* name, bool (json::*is)() const noexcept, const char* expected) const {
    const json* v = get(name);
    if (v && !(v->*is)()) {
      invalid(name, std::string("'") + name + "' must be " + expected + ", not " + v->type_name(), "invalid_type");
    }
    return v;
  }

  const json& object_;
};

// nlohmann's message without its "[json.exception.parse_error.101] " tag, which says nothing to a client.
std::string without_library_prefix(const json::exception& e) {
  const std::string_view message = e.what();
  const size_t end = message.starts_with("[json.exception.") ? message.find("] ") : std::string_view::npos;
  return std::string(end == std::string_view::npos ? message : message.substr(end + 2));
}

json parse_object(std::string_view body, const RequestLimits& limits) {
  if (const auto at = utf8::first_invalid(body)) {
    invalid("", "the request body is not valid UTF-8 (byte " + std::to_string(*at) + ")", "invalid_utf8");
  }
  json value = parse_json(body, limits.max_json_depth);
  if (!value.is_object()) invalid("", std::string("the request body must be a JSON object, not ") + value.type_name());
  return value;
}

// "model": the base model (or none given), or one of the LoRA adapters, which the request then runs with.
void select_model(const Fields& fields, const ApiModel& model, GenerationOptions& options) {
  const json* name = fields.get("model");
  if (!name) return;  // optional: the base model
  if (!name->is_string())
    invalid("model", std::string("'model' must be a string, not ") + name->type_name(), "invalid_type");
  const std::string wanted = name->get<std::string>();
  if (wanted == model.id) return;
  if (model.adapters) {
    if (auto entry = model.adapters->find(wanted)) {
      options.lora = std::move(entry->adapter);
      options.lora_scale = entry->scale;
      options.lora_name = wanted;
      return;
    }
  }
  std::string served = "'" + model.id + "'";
  if (model.adapters) {
    for (const auto& entry : model.adapters->list()) served += ", '" + entry.name + "'";
  }
  throw ApiError(404, "model_not_found",
                 "The model '" + wanted.substr(0, 256) + "' does not exist; this server serves " + served, "model");
}

// Fields that ask for something this server does not do are refused rather than silently ignored.
void refuse_unsupported(const Fields& fields) {
  if (const auto best_of = fields.integer("best_of"); best_of && *best_of != 1)
    invalid("best_of", "'best_of' is not supported (only 1); use 'n' for several choices");
  if (fields.boolean("echo").value_or(false)) invalid("echo", "'echo' is not supported");
  for (const char* name : {"suffix", "tools", "functions"}) {
    const json* v = fields.get(name);
    if (!v) continue;
    // Values that ask for nothing: false, 0, "", [], {}, and the default response format.
    const bool nothing = (v->is_boolean() && !v->get<bool>()) || (v->is_number() && v->get<double>() == 0) ||
                         (v->is_string() && v->get<std::string>().empty()) || (v->is_structured() && v->empty()) ||
                         (v->is_object() && v->value("type", "") == "text" && v->size() == 1);
    if (!nothing) invalid(name, std::string("'") + name + "' is not supported");
  }
}

// Sampling and length fields shared by the completion endpoints, applied over generation_config.json's defaults.
void apply_sampling(const Fields& fields, const RequestLimits& limits, GenerationOptions& o) {
  SamplingParams& s = o.sampling;
  if (const auto v = fields.ranged("temperature", 0, 2)) s.temperature = *v;
  if (const auto v = fields.ranged("top_p", 0, 1, /*open_low=*/true)) s.top_p = *v;
  if (const auto v = fields.integer("top_k")) {
    if (*v < -1) invalid("top_k", "'top_k' must be -1 or 0 (off) or positive");
    s.top_k = static_cast<int>(std::min<int64_t>(std::max<int64_t>(*v, 0), INT32_MAX));
  }
  if (const auto v = fields.ranged("min_p", 0, 1)) s.min_p = *v;
  if (const auto v = fields.ranged("presence_penalty", -2, 2)) s.presence_penalty = *v;
  if (const auto v = fields.ranged("frequency_penalty", -2, 2)) s.frequency_penalty = *v;
  if (const auto v = fields.ranged("repetition_penalty", 0, 100, /*open_low=*/true)) s.repetition_penalty = *v;
  if (const auto v = fields.integer("seed")) s.seed = static_cast<uint64_t>(*v);
  if (const auto v = fields.boolean("ignore_eos")) o.ignore_eos = *v;
  if (const auto v = fields.boolean("cache_prompt")) o.cache_prompt = *v;  // llama-server's name
  if (const json* stop = fields.get("stop")) {
    if (stop->is_string()) {
      o.stop_strings = {stop->get<std::string>()};
    } else if (stop->is_array() &&
               std::all_of(stop->begin(), stop->end(), [](const json& s) { return s.is_string(); })) {
      if (stop->size() > static_cast<size_t>(limits.max_stop_strings)) {
        invalid("stop", "'stop' has " + std::to_string(stop->size()) + " strings; the server accepts at most " +
                            std::to_string(limits.max_stop_strings));
      }
      o.stop_strings = stop->get<std::vector<std::string>>();
    } else {
      invalid("stop", "'stop' must be a string or an array of strings", "invalid_type");
    }
    for (const std::string& s : o.stop_strings) {
      if (s.size() > limits.max_stop_bytes) {
        invalid("stop", "a stop string has " + std::to_string(s.size()) + " bytes; the server accepts at most " +
                            std::to_string(limits.max_stop_bytes));
      }
    }
  }
  try {
    s.validate();
  } catch (const Error& e) {
    invalid("", e.what());
  }
}

// The prompt against the model (prompt_check.h), and max_tokens against the context: a prompt must leave room to
// generate, and an explicit max_tokens must fit beside it; without one, generation stops at the default or where the
// context ends.
void fit_context(const Fields& fields, const char* prompt_name, const char* max_tokens_name,
                 std::span<const int32_t> prompt, const ApiModel& model, GenerationOptions& o) {
  const int64_t context = model.context_length;
  if (const auto problem = find_prompt_problem(prompt, model.vocab_size, 0, context)) {
    invalid(prompt_name, problem->message,
            problem->kind == PromptProblem::Kind::NoRoom ? "context_length_exceeded" : "invalid_value");
  }
  const size_t prompt_tokens = prompt.size();
  const int64_t room = context - static_cast<int64_t>(prompt_tokens);
  const auto requested = fields.integer(max_tokens_name);
  if (!requested) {
    o.max_new_tokens = static_cast<int>(std::min<int64_t>(o.max_new_tokens, room));
    return;
  }
  if (*requested < 1) invalid(max_tokens_name, std::string("'") + max_tokens_name + "' must be at least 1");
  if (*requested > room) {
    invalid(max_tokens_name,
            "This model's maximum context length is " + std::to_string(context) + " tokens; you requested " +
                std::to_string(prompt_tokens + *requested) + " (" + std::to_string(prompt_tokens) + " in the prompt, " +
                std::to_string(*requested) + " to generate)",
            "context_length_exceeded");
  }
  o.max_new_tokens = static_cast<int>(*requested);
}

constexpr int kMaxTopLogprobs = 20;  // as OpenAI

// OpenAI's logit_bias: {"token id": bias in [-100, 100]}.
void apply_logit_bias(const Fields& fields, const ApiModel& model, GenerationOptions& o) {
  const json* bias = fields.get("logit_bias");
  if (!bias) return;
  if (!bias->is_object()) invalid("logit_bias", "'logit_bias' must be an object of token id -> bias", "invalid_type");
  for (const auto& [key, value] : bias->items()) {
    size_t used = 0;
    long long id = -1;
    try {
      id = std::stoll(key, &used);
    } catch (const std::exception&) {
    }
    if (used != key.size() || key.empty() || id < 0 || id >= model.vocab_size) {
      invalid("logit_bias", "logit_bias key '" + key + "' is not a token id of this model (0.." +
                                std::to_string(model.vocab_size - 1) + ")");
    }
    if (!value.is_number() || value.get<double>() < -100 || value.get<double>() > 100) {
      invalid("logit_bias", "logit_bias for token " + key + " must be a number in [-100, 100]");
    }
    o.logit_bias.emplace_back(static_cast<int32_t>(id), value.get<float>());
  }
}

// Completions: "logprobs": N. Chat: "logprobs": true with "top_logprobs": N.
void apply_logprobs(const Fields& fields, Endpoint endpoint, GenerationOptions& o) {
  const auto check = [](const char* name, int64_t n) {
    if (n < 0 || n > kMaxTopLogprobs) {
      invalid(name, std::string("'") + name + "' must lie in [0, " + std::to_string(kMaxTopLogprobs) + "]");
    }
    return static_cast<int>(n);
  };
  if (endpoint == Endpoint::Completions) {
    if (const auto n = fields.integer("logprobs")) o.top_logprobs = check("logprobs", *n);
    return;
  }
  const bool wanted = fields.boolean("logprobs").value_or(false);
  const auto top = fields.integer("top_logprobs");
  if (top && !wanted) invalid("top_logprobs", "'top_logprobs' needs 'logprobs': true");
  if (wanted) o.top_logprobs = top ? check("top_logprobs", *top) : 0;
}

std::shared_ptr<const Grammar> compile_grammar(const std::string& gbnf, const char* param, GrammarCache* cache) {
  try {
    return cache ? cache->compile(gbnf) : std::make_shared<const Grammar>(Grammar::parse(gbnf));
  } catch (const Error& e) {
    invalid(param, std::string("the grammar does not compile: ") + e.what(), "invalid_grammar");
  }
}

// response_format (json_object, json_schema) or llama-server's "grammar" (GBNF): the grammar output must follow.
// The schema is read again from the body in its written order, so properties come out in the order it gives them.
void apply_constraint(const Fields& fields, std::string_view body, const ApiModel& model, GenerationOptions& o) {
  const json* format = fields.get("response_format");
  const json* grammar = fields.get("grammar");
  if (format && grammar) invalid("grammar", "give 'response_format' or 'grammar', not both");
  if (grammar) {
    if (!grammar->is_string()) invalid("grammar", "'grammar' must be a string of GBNF", "invalid_type");
    if (!grammar->get<std::string>().empty())
      o.grammar = compile_grammar(grammar->get<std::string>(), "grammar", model.grammars);
    return;
  }
  if (!format) return;
  if (!format->is_object() || !format->contains("type") || !(*format)["type"].is_string()) {
    invalid("response_format", "'response_format' must be an object with a string 'type'", "invalid_type");
  }
  const std::string type = (*format)["type"].get<std::string>();
  if (type == "text") return;
  if (type == "json_object") {
    o.grammar = compile_grammar(any_json_gbnf(/*object_only=*/true), "response_format", model.grammars);
    return;
  }
  if (type != "json_schema") {
    invalid("response_format.type",
            "response_format type '" + type + "' is not supported (text, json_object, json_schema are)");
  }
  const auto ordered = nlohmann::ordered_json::parse(body, nullptr, /*allow_exceptions=*/false);
  const auto& spec = ordered["response_format"];
  if (!spec.contains("json_schema") || !spec["json_schema"].is_object()) {
    invalid("response_format.json_schema", "response_format 'json_schema' needs a 'json_schema' object",
            "missing_field");
  }
  const auto& wrapper = spec["json_schema"];
  if (!wrapper.contains("schema")) {
    invalid("response_format.json_schema.schema", "response_format.json_schema needs a 'schema'", "missing_field");
  }
  std::string gbnf;
  try {
    gbnf = json_schema_to_gbnf(wrapper["schema"]);
  } catch (const SchemaError& e) {
    const std::string param = "response_format.json_schema.schema";
    invalid(param, e.what(), e.keyword().empty() ? "invalid_schema" : "unsupported_schema_keyword");
  }
  o.grammar = compile_grammar(gbnf, "response_format", model.grammars);
}

void read_choices(const Fields& fields, GenerationCall& call) {
  const auto n = fields.integer("n");
  if (!n) return;
  if (*n < 1 || *n > kMaxChoices) invalid("n", "'n' must lie in [1, " + std::to_string(kMaxChoices) + "]");
  call.n = static_cast<int>(*n);
}

void read_stream_fields(const Fields& fields, GenerationCall& call) {
  call.stream = fields.boolean("stream").value_or(false);
  if (const json* options = fields.get("stream_options")) {
    if (!options->is_object()) invalid("stream_options", "'stream_options' must be an object", "invalid_type");
    call.include_usage = Fields(*options).boolean("include_usage").value_or(false);
  }
}

// OpenAI's prompt forms with one prompt: "text", ["text"], [1, 2, 3] or [[1, 2, 3]].
std::vector<int32_t> completion_prompt(const json* prompt, const ApiModel& model) {
  if (!prompt) invalid("prompt", "'prompt' is required", "missing_field");
  const auto ids = [](const json& array) {
    return std::all_of(array.begin(), array.end(), [](const json& v) { return v.is_number_integer(); });
  };
  if (prompt->is_string()) return model.tokenizer.encode(prompt->get<std::string>());
  if (prompt->is_array() && prompt->size() == 1 && ((*prompt)[0].is_string() || (*prompt)[0].is_array())) {
    return completion_prompt(&(*prompt)[0], model);
  }
  if (prompt->is_array() && !prompt->empty() && ids(*prompt)) {
    std::vector<int32_t> out;
    for (const json& v : *prompt) {
      const int64_t id = v.get<int64_t>();
      // Past int32 cannot be an id; the vocabulary check is fit_context's.
      if (id < 0 || id > INT32_MAX) invalid("prompt", "token id " + std::to_string(id) + " is outside the vocabulary");
      out.push_back(static_cast<int32_t>(id));
    }
    return out;
  }
  if (prompt->is_array() && prompt->size() > 1 &&
      std::all_of(prompt->begin(), prompt->end(), [](const json& v) { return v.is_string() || v.is_array(); })) {
    invalid("prompt", "only one prompt per request is supported");
  }
  invalid("prompt", "'prompt' must be a string or an array of token ids", "invalid_type");
}

// The messages as the chat template expects them: role and a string content.
json chat_messages(const json* messages, const RequestLimits& limits) {
  if (!messages) invalid("messages", "'messages' is required", "missing_field");
  if (!messages->is_array() || messages->empty()) {
    invalid("messages", "'messages' must be a non-empty array of {role, content} objects", "invalid_type");
  }
  if (messages->size() > static_cast<size_t>(limits.max_messages)) {
    invalid("messages", "'messages' has " + std::to_string(messages->size()) + " entries; the server accepts at most " +
                            std::to_string(limits.max_messages));
  }
  json out = json::array();
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) invalid(where, where + " must be an object", "invalid_type");
    const Fields fields(m);
    const json* role = fields.get("role");
    if (!role || !role->is_string()) invalid(where + ".role", where + ".role must be a string", "invalid_type");
    const std::string r = role->get<std::string>();
    if (r != "system" && r != "user" && r != "assistant") {
      invalid(where + ".role", where + ".role must be system, user or assistant, not '" + r + "'");
    }
    const json* content = fields.get("content");
    std::string text;
    if (content && content->is_string()) {
      text = content->get<std::string>();
    } else if (content && content->is_array()) {
      // Content parts: only text ones.
      for (const json& part : *content) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
            !part["text"].is_string()) {
          invalid(where + ".content", where + ".content parts must be {\"type\": \"text\", \"text\": ...}");
        }
        text += part["text"].get<std::string>();
      }
    } else if (content || r != "assistant") {
      invalid(where + ".content", where + ".content must be a string or an array of text parts", "invalid_type");
    }
    out.push_back({{"role", r}, {"content", text}});
  }
  return out;
}

std::vector<int32_t> chat_prompt(const json& messages, const ApiModel& model) {
  if (!model.chat_template) invalid("messages", "this checkpoint has no chat template; use /v1/completions");
  try {
    return model.tokenizer.encode(render_chat(*model.chat_template, model.tokenizer, messages, true));
  } catch (const Error& e) {
    invalid("messages", std::string("the chat template refused the messages: ") + e.what());
  }
}

GenerationOptions chat_options(const ApiModel& model) {
  GenerationOptions o = model.defaults;
  add_chat_end_ids(model.tokenizer, o.eos_ids);
  return o;
}

const char* object_name(Endpoint endpoint, bool chunk) {
  if (endpoint == Endpoint::ChatCompletions) return chunk ? "chat.completion.chunk" : "chat.completion";
  return "text_completion";
}

// The prompt once, as OpenAI counts it, and every choice's completion.
json usage(std::span<const RequestSummary> choices) {
  int completion = 0;
  for (const RequestSummary& s : choices) completion += s.completion_tokens;
  const int prompt = choices.empty() ? 0 : choices.front().prompt_tokens;
  return {{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion}};
}

json chunk_envelope(const ResponseInfo& info, json choices) {
  return {{"id", info.id},
          {"object", object_name(info.endpoint, true)},
          {"created", info.created},
          {"model", info.model},
          {"choices", std::move(choices)}};
}

}  // namespace

json ApiError::body() const {
  return {{"error",
           {{"message", what()},
            {"type", status_ >= 500 ? "server_error" : "invalid_request_error"},
            {"param", param_.empty() ? json(nullptr) : json(param_)},
            {"code", code_}}}};
}

json parse_json(std::string_view text, int max_depth, const std::string& what) {
  // The callback sees every value start with its depth before the parser descends, so a bomb of nested brackets
  // stops at the limit with nothing deeper ever allocated.
  const json::parser_callback_t bound_depth = [&](int depth, json::parse_event_t event, json&) {
    const bool opens = event == json::parse_event_t::object_start || event == json::parse_event_t::array_start;
    if (opens && depth >= max_depth) {
      invalid("", what + " nests arrays and objects deeper than " + std::to_string(max_depth) + " levels",
              "json_too_deep");
    }
    return true;
  };
  try {
    return json::parse(text, bound_depth);
  } catch (const json::parse_error& e) {
    invalid("", what + " is not valid JSON: " + without_library_prefix(e), "invalid_json");
  } catch (const json::out_of_range& e) {
    // nlohmann's number overflow (e.g. 1e999): not a number this API can take.
    invalid("", what + " holds a number out of range: " + without_library_prefix(e), "invalid_json");
  }
}

std::string model_name(const GenerationCall& call, const ApiModel& model) {
  return call.options.lora ? call.options.lora_name : model.id;
}

GenerationCall parse_completion(std::string_view body, const ApiModel& model) {
  const json request = parse_object(body, model.limits);
  const Fields fields(request);
  refuse_unsupported(fields);
  GenerationCall call{.endpoint = Endpoint::Completions, .options = model.defaults};
  select_model(fields, model, call.options);
  read_stream_fields(fields, call);
  read_choices(fields, call);
  apply_sampling(fields, model.limits, call.options);
  apply_logit_bias(fields, model, call.options);
  apply_logprobs(fields, call.endpoint, call.options);
  apply_constraint(fields, body, model, call.options);
  call.prompt = completion_prompt(fields.get("prompt"), model);
  fit_context(fields, "prompt", "max_tokens", call.prompt, model, call.options);
  return call;
}

GenerationCall parse_chat_completion(std::string_view body, const ApiModel& model) {
  const json request = parse_object(body, model.limits);
  const Fields fields(request);
  refuse_unsupported(fields);
  GenerationCall call{.endpoint = Endpoint::ChatCompletions, .options = chat_options(model)};
  select_model(fields, model, call.options);
  read_stream_fields(fields, call);
  read_choices(fields, call);
  apply_sampling(fields, model.limits, call.options);
  apply_logit_bias(fields, model, call.options);
  apply_logprobs(fields, call.endpoint, call.options);
  apply_constraint(fields, body, model, call.options);
  call.prompt = chat_prompt(chat_messages(fields.get("messages"), model.limits), model);
  const bool newer_name = fields.get("max_completion_tokens") != nullptr;
  fit_context(fields, "messages", newer_name ? "max_completion_tokens" : "max_tokens", call.prompt, model,
              call.options);
  return call;
}

GenerationCall parse_predict(std::string_view body, const std::vector<std::pair<std::string, std::string>>& query,
                             const ApiModel& model) {
  json request = json::object();
  const bool has_body = body.find_first_not_of(" \t\r\n") != std::string_view::npos;
  if (has_body) request = parse_object(body, model.limits);
  // Query parameters fill in what the body lacks; their values read as JSON scalars ("0.5" is a number).
  for (const auto& [name, value] : query) {
    if (request.contains(name)) continue;
    if (name == "text") {
      if (const auto at = utf8::first_invalid(value)) {
        invalid("text", "the 'text' parameter is not valid UTF-8 (byte " + std::to_string(*at) + ")", "invalid_utf8");
      }
      request[name] = value;
    } else {
      // A value that is not JSON is the string itself ("?seed=abc" then fails as a string, naming the field).
      try {
        request[name] = parse_json(value, model.limits.max_json_depth, "query parameter '" + name + "'");
      } catch (const ApiError&) {
        request[name] = value;
      }
    }
  }
  const Fields fields(request);
  const json* text = fields.get("text");
  if (!text) invalid("text", "'text' is required, as a query parameter or in a JSON body", "missing_field");
  if (!text->is_string())
    invalid("text", std::string("'text' must be a string, not ") + text->type_name(), "invalid_type");

  GenerationCall call{.endpoint = Endpoint::Predict, .options = chat_options(model)};
  SamplingParams& s = call.options.sampling;
  if (const auto v = fields.ranged("temperature", 0, 2)) s.temperature = *v;
  if (const auto v = fields.ranged("top_p", 0, 1, /*open_low=*/true)) s.top_p = *v;
  if (const auto v = fields.integer("seed")) s.seed = static_cast<uint64_t>(*v);
  const json messages = json::array({{{"role", "user"}, {"content", text->get<std::string>()}}});
  call.prompt = chat_prompt(messages, model);
  fit_context(fields, "text", "max_tokens", call.prompt, model, call.options);
  return call;
}

json tokenize_body(std::string_view body, const ApiModel& model) {
  const json request = parse_object(body, model.limits);
  const Fields fields(request);
  const json* content = fields.get("content");
  if (!content) invalid("content", "'content' is required", "missing_field");
  if (!content->is_string()) {
    invalid("content", std::string("'content' must be a string, not ") + content->type_name(), "invalid_type");
  }
  const auto ids = model.tokenizer.encode(content->get<std::string>(), fields.boolean("add_special").value_or(false));
  if (!fields.boolean("with_pieces").value_or(false)) return {{"tokens", ids}};
  json tokens = json::array();
  for (const int32_t id : ids) {
    const std::string bytes = model.tokenizer.token_bytes(id);
    json piece = utf8::first_invalid(bytes) ? json(std::vector<uint8_t>(bytes.begin(), bytes.end())) : json(bytes);
    tokens.push_back({{"id", id}, {"piece", std::move(piece)}});
  }
  return {{"tokens", std::move(tokens)}};
}

json detokenize_body(std::string_view body, const ApiModel& model) {
  const json request = parse_object(body, model.limits);
  const json* tokens = Fields(request).get("tokens");
  if (!tokens) invalid("tokens", "'tokens' is required", "missing_field");
  if (!tokens->is_array()) {
    invalid("tokens", std::string("'tokens' must be an array of token ids, not ") + tokens->type_name(),
            "invalid_type");
  }
  std::vector<int32_t> ids;
  ids.reserve(tokens->size());
  for (const json& v : *tokens) {
    if (!v.is_number_integer()) invalid("tokens", "'tokens' must hold only integer token ids", "invalid_type");
    const int64_t id = v.is_number_unsigned() && v.get<uint64_t>() > INT64_MAX ? -1 : v.get<int64_t>();
    if (id < 0 || id >= model.tokenizer.vocab_size()) {
      invalid("tokens", "token id " + v.dump() + " is outside the vocabulary (0.." +
                            std::to_string(model.tokenizer.vocab_size() - 1) + ")");
    }
    ids.push_back(static_cast<int32_t>(id));
  }
  return {{"content", model.tokenizer.decode(ids)}};
}

json logprobs_json(const ResponseInfo& info, TokenInfos tokens, size_t& offset) {
  const auto text = [&](int32_t id) { return info.tokenizer->token_bytes(id); };
  const auto bytes = [](const std::string& t) { return json(std::vector<uint8_t>(t.begin(), t.end())); };
  if (info.endpoint == Endpoint::ChatCompletions) {
    json content = json::array();
    for (const auto& t : tokens) {
      json top = json::array();
      for (const auto& alt : t.top) {
        const std::string s = text(alt.token);
        top.push_back({{"token", s}, {"logprob", alt.logprob}, {"bytes", bytes(s)}});
      }
      const std::string s = text(t.token);
      content.push_back({{"token", s}, {"logprob", t.logprob}, {"bytes", bytes(s)}, {"top_logprobs", std::move(top)}});
    }
    return {{"content", std::move(content)}};
  }
  json out = {{"tokens", json::array()},
              {"token_logprobs", json::array()},
              {"top_logprobs", json::array()},
              {"text_offset", json::array()}};
  for (const auto& t : tokens) {
    const std::string s = text(t.token);
    out["tokens"].push_back(s);
    out["token_logprobs"].push_back(t.logprob);
    json top = json::object();
    for (const auto& alt : t.top) top[text(alt.token)] = alt.logprob;
    out["top_logprobs"].push_back(std::move(top));
    out["text_offset"].push_back(offset);
    offset += s.size();
  }
  return out;
}

json completion_body(const ResponseInfo& info, std::span<const ChoiceOutput> outputs) {
  if (info.endpoint == Endpoint::Predict) return {{"text", outputs.front().text}};
  json choices = json::array();
  std::vector<RequestSummary> summaries;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const ChoiceOutput& out = outputs[i];
    size_t offset = 0;
    json choice = {{"index", i},
                   {"logprobs", info.logprobs ? logprobs_json(info, out.logprobs, offset) : json(nullptr)},
                   {"finish_reason", finish_reason_name(out.summary.finish_reason)}};
    if (info.endpoint == Endpoint::ChatCompletions) {
      choice["message"] = {{"role", "assistant"}, {"content", out.text}};
    } else {
      choice["text"] = out.text;
    }
    choices.push_back(std::move(choice));
    summaries.push_back(out.summary);
  }
  return {{"id", info.id},
          {"object", object_name(info.endpoint, false)},
          {"created", info.created},
          {"model", info.model},
          {"choices", std::move(choices)},
          {"usage", usage(summaries)}};
}

std::string stream_chunk(const ResponseInfo& info, int index, std::string_view text, const RequestSummary* finish,
                         TokenInfos logprobs, size_t* offset) {
  size_t unused = 0;
  json choice = {
      {"index", index},
      {"logprobs",
       info.logprobs && !logprobs.empty() ? logprobs_json(info, logprobs, offset ? *offset : unused) : json(nullptr)},
      {"finish_reason", finish ? json(finish_reason_name(finish->finish_reason)) : json(nullptr)}};
  if (info.endpoint == Endpoint::ChatCompletions) {
    choice["delta"] = text.empty() ? json::object() : json{{"content", text}};
  } else {
    choice["text"] = text;
  }
  return sse_event(chunk_envelope(info, json::array({std::move(choice)})));
}

std::string stream_role_chunk(const ResponseInfo& info, int index) {
  json choice = {{"index", index},
                 {"delta", {{"role", "assistant"}, {"content", ""}}},
                 {"logprobs", nullptr},
                 {"finish_reason", nullptr}};
  return sse_event(chunk_envelope(info, json::array({std::move(choice)})));
}

std::string stream_usage_chunk(const ResponseInfo& info, std::span<const RequestSummary> choices) {
  json chunk = chunk_envelope(info, json::array());
  chunk["usage"] = usage(choices);
  return sse_event(chunk);
}

std::string sse_event(const json& data) {
  return "data: " + dump(data) + "\n\n";
}

std::string dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace ernie::server
