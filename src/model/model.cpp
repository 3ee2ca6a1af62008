#include "model/model.h"

#include <algorithm>
#include <set>

#include "core/error.h"
#include "kernels/attention.h"
#include "kernels/ops.h"

namespace ernie {

// ---- Model -------------------------------------------------------------------------------------------------------

Model::Model(std::filesystem::path dir, ModelConfig config, SafetensorsArchive archive)
    : dir_(std::move(dir)),
      config_(std::move(config)),
      archive_(std::move(archive)),
      weights_(bind_weights(config_, archive_)) {}

std::unique_ptr<Model> Model::load(const std::filesystem::path& dir) {
  if (!std::filesystem::is_directory(dir)) fail(dir.string(), ": not a checkpoint directory");
  ModelConfig config = ModelConfig::load(dir);
  SafetensorsArchive archive = SafetensorsArchive::open(dir);
  return std::unique_ptr<Model>(new Model(dir, std::move(config), std::move(archive)));
}

int64_t Model::parameter_count() const {
  int64_t n = 0;
  for (const auto& [name, t] : archive_.tensors()) n += t.element_count();
  return n;
}

size_t Model::weight_bytes() const {
  size_t n = 0;
  for (const auto& [name, t] : archive_.tensors()) n += t.nbytes;
  return n;
}

std::string Model::weight_dtype() const {
  std::set<std::string_view> names;
  for (const auto& [name, t] : archive_.tensors()) names.insert(dtype_name(t.dtype));
  std::string out;
  for (auto n : names) {
    if (!out.empty()) out += '+';
    out += n;
  }
  return out;
}

namespace {
// Float-weight matmul over all output rows (temporary until the session owns a thread pool).
void project(float* out, const float* x, int n, const WeightMatrix& w, const float* bias) {
  matmul(out, MatmulInput{x, nullptr, n, w.cols}, w, bias, 0, w.rows);
}
}  // namespace

// ---- Session -----------------------------------------------------------------------------------------------------

Session::Session(const Model& model, const SessionOptions& options)
    : model_(model),
      config_(model.config()),
      context_length_(std::min(options.context_length, model.config().max_position_embeddings)),
      max_batch_tokens_(options.max_batch_tokens),
      rope_(config_.head_dim, config_.rope_theta, context_length_) {
  if (context_length_ <= 0 || max_batch_tokens_ <= 0) fail("context length and batch size must be positive");
  const size_t B = max_batch_tokens_;
  const size_t kv = static_cast<size_t>(config_.num_hidden_layers) * context_length_ * config_.kv_dim();
  k_cache_.resize(kv);
  v_cache_.resize(kv);
  x_.resize(B * config_.hidden_size);
  normed_.resize(B * config_.hidden_size);
  proj_out_.resize(B * config_.hidden_size);
  q_.resize(B * config_.q_dim());
  attn_out_.resize(B * config_.q_dim());
  gate_.resize(B * config_.intermediate_size);
  up_.resize(B * config_.intermediate_size);
  logits_.resize(config_.vocab_size);
}

size_t Session::kv_cache_bytes() const {
  return (k_cache_.size() + v_cache_.size()) * sizeof(float);
}

size_t Session::scratch_bytes() const {
  return (x_.size() + normed_.size() + proj_out_.size() + q_.size() + attn_out_.size() + gate_.size() + up_.size() +
          logits_.size()) *
         sizeof(float);
}

void Session::truncate(int n) {
  if (n < 0 || n > position_) fail("cannot truncate a session of ", position_, " tokens to ", n);
  position_ = n;
}

void Session::check_input(std::span<const int32_t> tokens) const {
  if (tokens.empty()) fail("no input tokens");
  for (int32_t id : tokens) {
    if (id < 0 || id >= config_.vocab_size)
      fail("token id ", id, " is outside the vocabulary [0, ", config_.vocab_size, ")");
  }
  if (position_ + static_cast<int64_t>(tokens.size()) > context_length_) {
    fail("context overflow: ", position_, " cached + ", tokens.size(), " new tokens exceed the context length of ",
         context_length_, " (raise --ctx, up to ", config_.max_position_embeddings, ")");
  }
}

std::span<const float> Session::forward(std::span<const int32_t> tokens) {
  check_input(tokens);
  for (size_t done = 0; done < tokens.size(); done += max_batch_tokens_) {
    const int n = static_cast<int>(std::min<size_t>(max_batch_tokens_, tokens.size() - done));
    run_chunk(tokens.data() + done, n, logits_.data(), /*all_logits=*/false);
  }
  return logits_;
}

void Session::forward(std::span<const int32_t> tokens, std::span<float> all_logits) {
  check_input(tokens);
  if (all_logits.size() != tokens.size() * config_.vocab_size) fail("all_logits must hold tokens x vocab_size floats");
  for (size_t done = 0; done < tokens.size(); done += max_batch_tokens_) {
    const int n = static_cast<int>(std::min<size_t>(max_batch_tokens_, tokens.size() - done));
    run_chunk(tokens.data() + done, n, all_logits.data() + done * config_.vocab_size, /*all_logits=*/true);
  }
}

// One matrix pass over n <= max_batch_tokens tokens at positions position_ .. position_+n-1.
void Session::run_chunk(const int32_t* tokens, int n, float* logits, bool all_logits) {
  const ModelWeights& w = model_.weights();
  const int hidden = config_.hidden_size;

  for (int t = 0; t < n; ++t) read_row(x_.data() + static_cast<size_t>(t) * hidden, w.embed_tokens, tokens[t]);
  observe(0, x_.data(), n);

  for (int l = 0; l < config_.num_hidden_layers; ++l) {
    attention_block(w.layers[l], l, n);
    mlp_block(w.layers[l], n);
    observe(l + 1, x_.data(), n);
  }

  // Only the rows whose logits are wanted go through the final norm and the LM head (the head is ~29 % of the
  // 0.3B model's weights).
  const int first = all_logits || observer_ ? 0 : n - 1;
  rmsnorm(normed_.data() + static_cast<size_t>(first) * hidden, x_.data() + static_cast<size_t>(first) * hidden,
          w.final_norm.data(), n - first, hidden, config_.rms_norm_eps);
  observe(config_.num_hidden_layers + 1, normed_.data(), n);
  if (all_logits) {
    project(logits, normed_.data(), n, w.lm_head, nullptr);
  } else {
    project(logits, normed_.data() + static_cast<size_t>(n - 1) * hidden, 1, w.lm_head, nullptr);
  }
  position_ += n;
}

// x += o_proj(attention(rope(q_proj(h)), rope(k_proj(h)), v_proj(h))), h = rmsnorm(x): grouped-query heads, causal.
void Session::attention_block(const LayerWeights& layer, int layer_index, int n) {
  const int hidden = config_.hidden_size;
  const int kv_dim = config_.kv_dim();
  const auto bias = [](const Vector& b) { return b.empty() ? nullptr : b.data(); };

  rmsnorm(normed_.data(), x_.data(), layer.input_norm.data(), n, hidden, config_.rms_norm_eps);
  // Keys and values of the new tokens go straight into their cache rows.
  float* k_new = k_cache(layer_index) + static_cast<size_t>(position_) * kv_dim;
  float* v_new = v_cache(layer_index) + static_cast<size_t>(position_) * kv_dim;
  project(q_.data(), normed_.data(), n, layer.q_proj, bias(layer.q_bias));
  project(k_new, normed_.data(), n, layer.k_proj, bias(layer.k_bias));
  project(v_new, normed_.data(), n, layer.v_proj, bias(layer.v_bias));
  for (int t = 0; t < n; ++t) {
    rope_.apply(q_.data() + static_cast<size_t>(t) * config_.q_dim(), config_.num_attention_heads, position_ + t);
    rope_.apply(k_new + static_cast<size_t>(t) * kv_dim, config_.num_key_value_heads, position_ + t);
  }
  const KvCacheView cache{DType::F32, reinterpret_cast<uint8_t*>(k_cache(layer_index)),
                          reinterpret_cast<uint8_t*>(v_cache(layer_index)), kv_dim};
  attention(attn_out_.data(), q_.data(), n, position_, cache,
            AttentionShape{config_.num_attention_heads, config_.num_key_value_heads, config_.head_dim}, 0,
            config_.num_attention_heads);
  project(proj_out_.data(), attn_out_.data(), n, layer.o_proj, bias(layer.o_bias));
  add_inplace(x_.data(), proj_out_.data(), n * hidden);
}

// x += down_proj(silu(gate_proj(h)) * up_proj(h)), h = rmsnorm(x).
void Session::mlp_block(const LayerWeights& layer, int n) {
  const int hidden = config_.hidden_size;
  const auto bias = [](const Vector& b) { return b.empty() ? nullptr : b.data(); };

  rmsnorm(normed_.data(), x_.data(), layer.post_attention_norm.data(), n, hidden, config_.rms_norm_eps);
  project(gate_.data(), normed_.data(), n, layer.gate_proj, bias(layer.gate_bias));
  project(up_.data(), normed_.data(), n, layer.up_proj, bias(layer.up_bias));
  swiglu(gate_.data(), gate_.data(), up_.data(), n * config_.intermediate_size);
  project(proj_out_.data(), gate_.data(), n, layer.down_proj, bias(layer.down_bias));
  add_inplace(x_.data(), proj_out_.data(), n * hidden);
}

void Session::observe(int index, const float* rows, int n) const {
  if (observer_) observer_(index, std::span<const float>(rows, static_cast<size_t>(n) * config_.hidden_size));
}

void decode_batch(std::span<Session* const> sessions, std::span<const int32_t> tokens, std::span<float> logits) {
  if (sessions.size() != tokens.size()) fail("decode_batch: one token per session");
  if (sessions.empty()) return;
  const size_t vocab = sessions[0]->vocab_size();
  if (logits.size() != sessions.size() * vocab) fail("decode_batch: logits must hold sessions x vocab_size floats");
  for (size_t i = 0; i < sessions.size(); ++i) {
    if (static_cast<size_t>(sessions[i]->vocab_size()) != vocab) fail("decode_batch: sessions of different models");
    sessions[i]->check_input(tokens.subspan(i, 1));
  }
  for (size_t i = 0; i < sessions.size(); ++i) {
    const std::span<const float> out = sessions[i]->forward(tokens.subspan(i, 1));
    std::copy(out.begin(), out.end(), logits.begin() + i * vocab);
  }
}

}  // namespace ernie
