#include "model/session.h"

#include <algorithm>

#include "core/error.h"

namespace ernie {
namespace {

int capped_context(const Model& model, int context_length) {
  if (context_length <= 0) fail("context length must be positive");
  return std::min(context_length, model.config().max_position_embeddings);
}

}  // namespace

DType default_kv_dtype(const Model& model) {
  return model.has_quantized_weights() ? DType::F16 : DType::F32;
}

Session::Session(const Model& model, const SessionOptions& options)
    : model_(model),
      cache_(model.config(),
             KvCacheOptions{.blocks = KvCache::blocks_for(capped_context(model, options.context_length)),
                            .dtype = options.kv_dtype.value_or(default_kv_dtype(model)),
                            .prefix_reuse = false}),
      sequence_(capped_context(model, options.context_length)),
      workspace_(model,
                 options.max_batch_tokens > 0 ? options.max_batch_tokens : (fail("batch size must be positive"), 1),
                 options.pool, capped_context(model, options.context_length), lora_stack_rank(options.lora)),
      logits_(model.config().vocab_size),
      lora_(options.lora) {}

void Session::check_input(std::span<const int32_t> tokens) const {
  if (tokens.empty()) fail("no input tokens");
  const int vocab = vocab_size();
  for (int32_t id : tokens) {
    if (id < 0 || id >= vocab) fail("token id ", id, " is outside the vocabulary [0, ", vocab, ")");
  }
  if (position() + static_cast<int64_t>(tokens.size()) > context_length()) {
    fail("context overflow: ", position(), " cached + ", tokens.size(), " new tokens exceed the context length of ",
         context_length(), " (raise --ctx, up to ", model_.config().max_position_embeddings, ")");
  }
}

// The tokens in chunks of at most max_tokens rows, one pass each; only the wanted rows' logits are computed.
void Session::run(std::span<const int32_t> tokens, Logits wanted, std::span<float> logits) {
  check_input(tokens);
  // The session's pool holds a whole context, so this only fails if the context check above did.
  if (!cache_.reserve(sequence_, position() + static_cast<int>(tokens.size())))
    fail("the session's KV cache has no room for ", tokens.size(), " more tokens");
  const size_t vocab = vocab_size();
  for (size_t done = 0; done < tokens.size(); done += workspace_.max_tokens) {
    const size_t n = std::min<size_t>(workspace_.max_tokens, tokens.size() - done);
    const bool last = done + n == tokens.size();
    const Chunk chunk{&sequence_, tokens.subspan(done, n),
                      wanted == Logits::kAll ? Logits::kAll
                      : last                 ? wanted
                                             : Logits::kNone,
                      lora_};
    const std::span<float> out = wanted == Logits::kAll ? logits.subspan(done * vocab, n * vocab)
                                 : last                 ? logits
                                                        : std::span<float>();
    ernie::forward(model_, cache_, workspace_, std::span(&chunk, 1), out);
  }
}

std::span<const float> Session::forward(std::span<const int32_t> tokens) {
  run(tokens, Logits::kLast, logits_);
  return logits_;
}

void Session::forward(std::span<const int32_t> tokens, std::span<float> all_logits) {
  if (all_logits.size() != tokens.size() * static_cast<size_t>(vocab_size()))
    fail("all_logits must hold tokens x vocab_size floats");
  run(tokens, Logits::kAll, all_logits);
}

}  // namespace ernie
