// The generation loop: prefill a prompt, then sample and decode one token at a time, streaming text through a
// callback. Front ends (CLI, server) build a request and consume the callback; they never touch the model.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/sampler.h"
#include "model/config.h"
#include "model/session.h"
#include "tokenizer/tokenizer.h"

namespace ernie {

class Grammar;

struct GenerationOptions {
  int max_new_tokens = 256;
  bool ignore_eos = false;                // keep going past end-of-sequence ids (fixed-length runs)
  std::vector<int32_t> eos_ids;           // ids that end generation
  std::vector<std::string> stop_strings;  // text that ends generation; never printed
  bool cache_prompt = true;               // the scheduler may reuse a cached prefix of the prompt
  SamplingParams sampling;
  // Constrained decoding (grammar/grammar.h): only tokens the grammar allows are sampled, the filters and the draw
  // acting on the allowed ones alone; end-of-sequence is allowed once the text is complete, and generation ends
  // (finish "stop") when the grammar can take nothing more.
  std::shared_ptr<const Grammar> grammar;
  // Added to the model's logits before anything else (OpenAI's logit_bias): -100 all but bans a token.
  std::vector<std::pair<int32_t, float>> logit_bias;
  // < 0: none. Otherwise each generated token carries its log-probability and the `top_logprobs` most likely
  // tokens with theirs: log-softmax of the model's logits, before bias, penalties, temperature or any filter.
  int top_logprobs = -1;
  // A LoRA adapter for this request alone, times lora_scale (the scheduler batches requests for different adapters
  // in one pass; a Session runs the adapters it was made with instead). The request holds it until it ends, so an
  // adapter unloaded meanwhile is freed only then. lora_name names it in metrics.
  std::shared_ptr<const LoraAdapter> lora;
  float lora_scale = 1.0f;
  std::string lora_name;
};

// Sampling defaults from generation_config.json, as transformers applies them: do_sample false means greedy,
// otherwise its temperature/top_p/top_k/repetition_penalty. End-of-sequence ids come from generation_config.json,
// else config.json.
GenerationOptions default_generation_options(const ModelConfig& config, const GenerationDefaults& defaults);

enum class FinishReason { Stop, Length };
std::string_view finish_reason_name(FinishReason reason);  // "stop" / "length", as OpenAI names them

struct GenerationResult {
  std::vector<int32_t> tokens;  // generated ids, including a final end-of-sequence id if one was produced
  std::string text;             // their text, special tokens skipped, cut before any stop string
  FinishReason finish_reason = FinishReason::Length;
  int prompt_tokens = 0;
  double prefill_seconds = 0;  // prompt pass up to the first token's logits
  double decode_seconds = 0;   // every later step
};

// Receives each generated token and the text that became final with it (possibly empty: a partial UTF-8 character
// or a possible stop-string prefix is held back). Return false to stop generating (cancellation).
using TokenCallback = std::function<bool(int32_t token, std::string_view text)>;

// Runs `prompt` (appended at session.position(), so a chat can reuse its cached prefix) and generates.
// Stops at an end-of-sequence id (unless ignore_eos), a stop string, max_new_tokens, a full context, or when
// on_token returns false. Raises ernie::Error before doing any work if the prompt does not fit the context.
GenerationResult generate(Session& session, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                          const GenerationOptions& options, const TokenCallback& on_token = {});

}  // namespace ernie
