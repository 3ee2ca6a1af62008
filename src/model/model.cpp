#include "model/model.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "core/error.h"
#include "model/gguf_ernie.h"
#include "kernels/attention.h"
#include "kernels/ggml_blocks.h"
#include "kernels/ops.h"
#include "kernels/quant.h"

namespace ernie {

// ---- Model -------------------------------------------------------------------------------------------------------

std::unique_ptr<Model> Model::load(const std::filesystem::path& path, const LoadOptions& options) {
  std::unique_ptr<Model> model;
  if (is_gguf_file(path)) {
    auto gguf = std::make_unique<GgufFile>(GgufFile::open(path));
    model.reset(new Model(path, config_from_gguf(*gguf)));
    model->gguf_ = std::move(gguf);
    model->bind_gguf_tensors(options.dtype.value_or(DType::Q8_0), options.pool);
  } else {
    if (!std::filesystem::is_directory(path)) fail(path.string(), ": neither a checkpoint directory nor a GGUF file");
    model.reset(new Model(path, ModelConfig::load(path)));
    model->safetensors_ = SafetensorsArchive::open(path);
    model->tensors_ = CheckpointTensors::from(*model->safetensors_);
  }
  model->weights_ = bind_weights(model->config_, model->tensors_);
  model->convert_weights(options.dtype, options.pool);
  return model;
}

namespace {

// Converted matrices start on cache lines (the packed kernels' loads are then aligned).
constexpr size_t kAlignment = 64;

}  // namespace

void Model::bind_gguf_tensors(DType widen_to, ThreadPool* pool) {
  const GgufFile& file = *gguf_;
  // GGUF names back to Hugging Face ones, for the tensors the config expects; any other name is kept, so that the
  // binder reports it as unexpected.
  std::map<std::string, std::string> hf_name_of;
  for (const TensorSpec& spec : expected_tensors(config_)) hf_name_of[gguf_tensor_name(spec.name)] = spec.name;
  tensors_.source = file.path().string();
  tensors_.rename = gguf_tensor_name;

  struct Widen {
    const GgufTensor* from;
    TensorView* to;
  };
  std::vector<Widen> to_widen;
  size_t widened_bytes = 0;
  for (const GgufTensor& t : file.tensors()) {
    const auto it = hf_name_of.find(t.name);
    const std::string key = it == hf_name_of.end() ? t.name : it->second;
    const auto stored = dtype_of(t.type);
    TensorView view{t.name, stored.value_or(widen_to), t.shape(), t.data, t.nbytes, &file.path()};
    if (!stored) {
      // A matrix row is whole blocks of its GGUF type, which are multiples of 32: whole blocks of any DType too.
      view.data = nullptr;
      view.nbytes = dtype_row_bytes(widen_to, t.element_count());
      widened_bytes += view.nbytes + kAlignment;
    }
    TensorView& placed = tensors_.by_name.insert_or_assign(key, std::move(view)).first->second;
    if (!stored) to_widen.push_back({&t, &placed});
  }
  if (to_widen.empty()) return;

  widened_ = LargeBuffer::allocate(widened_bytes + kAlignment);
  uint8_t* next = widened_.data();
  for (Widen& w : to_widen) {
    next += (kAlignment - reinterpret_cast<uintptr_t>(next) % kAlignment) % kAlignment;
    w.to->data = next;
    next += w.to->nbytes;
  }
  // One task per tensor row block: widen each row to float32, store it as widen_to.
  constexpr int64_t kRowsPerTask = 256;
  std::vector<std::pair<size_t, int64_t>> tasks;  // (tensor, first row)
  for (size_t i = 0; i < to_widen.size(); ++i) {
    const int64_t rows = to_widen[i].from->element_count() / to_widen[i].from->ne[0];
    for (int64_t r = 0; r < rows; r += kRowsPerTask) tasks.emplace_back(i, r);
  }
  ThreadPool inline_pool(1);
  ThreadPool& p = pool ? *pool : inline_pool;
  p.run(static_cast<int>(tasks.size()), [&](int task) {
    const auto [i, r0] = tasks[task];
    const GgufTensor& from = *to_widen[i].from;
    const int64_t cols = from.ne[0], rows = from.element_count() / cols;
    const size_t in_row = from.nbytes / rows, out_row = dtype_row_bytes(widen_to, cols);
    std::vector<float> row(cols);
    for (int64_t r = r0; r < std::min(rows, r0 + kRowsPerTask); ++r) {
      dequantize_ggml_row(from.type, from.data + r * in_row, row.data(), cols);
      quantize_row(widen_to, row.data(), const_cast<uint8_t*>(to_widen[i].to->data) + r * out_row, cols);
    }
  });
}

namespace {

// Every weight matrix once (a tied LM head is the embedding).
template <class Fn>
void for_each_matrix(ModelWeights& w, bool tied, Fn&& fn) {
  fn(w.embed_tokens);
  if (!tied) fn(w.lm_head);
  for (LayerWeights& l : w.layers) {
    for (WeightMatrix* m : {&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.gate_proj, &l.up_proj, &l.down_proj}) fn(*m);
  }
}

// Bytes of m converted to dtype: integer types are stored packed.
size_t converted_bytes(DType dtype, const WeightMatrix& m) {
  return WeightMatrix{dtype, nullptr, m.rows, m.cols, uses_quantized_input(dtype)}.bytes();
}

}  // namespace

void Model::convert_weights(std::optional<DType> target, ThreadPool* pool) {
  struct Job {
    WeightMatrix* matrix;
    DType to;
    uint8_t* out;
  };
  std::vector<Job> jobs;
  size_t total = 0;
  for_each_matrix(weights_, config_.tie_word_embeddings, [&](WeightMatrix& m) {
    const DType to = target.value_or(m.dtype);
    if (m.dtype == to && m.packed == uses_quantized_input(to)) return;
    if (m.cols % dtype_block_elements(to) != 0)
      fail("cannot store a matrix of ", m.cols, " columns as ", dtype_name(to));
    jobs.push_back({&m, to, nullptr});
    total += converted_bytes(to, m) + kAlignment;
  });
  if (jobs.empty()) return;
  converted_ = LargeBuffer::allocate(total + kAlignment);
  uint8_t* next = converted_.data();
  for (Job& job : jobs) {
    next += (kAlignment - reinterpret_cast<uintptr_t>(next) % kAlignment) % kAlignment;
    job.out = next;
    next += converted_bytes(job.to, *job.matrix);
  }
  // Rows in chunks across the pool; each chunk widens a row to float32 and stores it in the new type, integer types
  // then packed for the matmul kernels (kRowsPerTask is a whole number of packed groups).
  constexpr int kRowsPerTask = 256;
  static_assert(kRowsPerTask % kPackedRows == 0);
  std::vector<int> first_task;
  int n_tasks = 0;
  for (const Job& job : jobs) {
    first_task.push_back(n_tasks);
    n_tasks += (job.matrix->rows + kRowsPerTask - 1) / kRowsPerTask;
  }
  ThreadPool inline_pool(1);
  ThreadPool& p = pool ? *pool : inline_pool;
  p.run(n_tasks, [&](int task) {
    const size_t j = std::upper_bound(first_task.begin(), first_task.end(), task) - first_task.begin() - 1;
    const Job& job = jobs[j];
    const WeightMatrix& m = *job.matrix;
    const int r0 = (task - first_task[j]) * kRowsPerTask, r1 = std::min(m.rows, r0 + kRowsPerTask);
    std::vector<float> row(m.cols);
    const size_t out_row_bytes = dtype_row_bytes(job.to, m.cols);
    const bool pack = uses_quantized_input(job.to);
    // Rows already of the target type (a GGUF Q8_0 or Q4_0 file) are packed straight from the map; others are
    // converted into a buffer first (uninitialised: every byte is written, and zeroing it cost as much as the packing).
    const bool same_type = m.dtype == job.to;
    std::unique_ptr<uint8_t[]> plain(pack && !same_type ? new uint8_t[out_row_bytes * (r1 - r0)] : nullptr);
    for (int r = r0; r < r1 && !same_type; ++r) {
      dequantize_row(m.dtype, m.row(r), row.data(), m.cols);
      quantize_row(job.to, row.data(), pack ? plain.get() + (r - r0) * out_row_bytes : job.out + r * out_row_bytes,
                   m.cols);
    }
    const uint8_t* rows = same_type ? m.row(r0) : plain.get();
    for (int g = r0; pack && g < r1; g += kPackedRows) {
      pack_weight_group(job.to, m.cols, rows + (g - r0) * out_row_bytes, std::min(kPackedRows, r1 - g),
                        job.out + g * out_row_bytes);
    }
    // Converted rows leave resident memory at once, so the peak stays near the converted size.
    release_mapped_range(m.row(r0), m.row_bytes() * (r1 - r0));
  });
  for (const Job& job : jobs) {
    *job.matrix = WeightMatrix{job.to, job.out, job.matrix->rows, job.matrix->cols, uses_quantized_input(job.to)};
  }
  if (config_.tie_word_embeddings) weights_.lm_head = weights_.embed_tokens;
}

int64_t Model::parameter_count() const {
  int64_t n = 0;
  for (const auto& [name, t] : tensors_.by_name) n += t.element_count();
  return n;
}

size_t Model::weight_bytes() const {
  size_t n = 0;
  ModelWeights& w = const_cast<ModelWeights&>(weights_);  // for_each_matrix only reads here
  for_each_matrix(w, config_.tie_word_embeddings, [&](WeightMatrix& m) { n += m.bytes(); });
  return n;
}

std::string Model::weight_dtype() const {
  std::set<std::string_view> names;
  ModelWeights& w = const_cast<ModelWeights&>(weights_);
  for_each_matrix(w, config_.tie_word_embeddings, [&](WeightMatrix& m) { names.insert(dtype_name(m.dtype)); });
  std::string out;
  for (auto n : names) {
    if (!out.empty()) out += '+';
    out += n;
  }
  return out;
}

bool Model::has_quantized_weights() const {
  bool any = false;
  ModelWeights& w = const_cast<ModelWeights&>(weights_);
  for_each_matrix(w, config_.tie_word_embeddings, [&](WeightMatrix& m) { any |= uses_quantized_input(m.dtype); });
  return any;
}

// ---- Session -----------------------------------------------------------------------------------------------------

Session::Session(const Model& model, const SessionOptions& options)
    : model_(model),
      config_(model.config()),
      context_length_(std::min(options.context_length, model.config().max_position_embeddings)),
      max_batch_tokens_(options.max_batch_tokens),
      kv_dtype_(options.kv_dtype.value_or(model.has_quantized_weights() ? DType::F16 : DType::F32)),
      rope_(config_.head_dim, config_.rope_theta, context_length_),
      own_pool_(options.pool ? nullptr : std::make_unique<ThreadPool>(1)),
      pool_(options.pool ? options.pool : own_pool_.get()) {
  if (context_length_ <= 0 || max_batch_tokens_ <= 0) fail("context length and batch size must be positive");
  if (kv_dtype_ != DType::F32 && kv_dtype_ != DType::F16)
    fail("the KV cache holds F32 or F16, not ", dtype_name(kv_dtype_));
  if (config_.head_dim > kMaxHeadDim) fail("head_dim ", config_.head_dim, " exceeds the supported ", kMaxHeadDim);
  const size_t B = max_batch_tokens_;
  kv_layer_bytes_ = dtype_row_bytes(kv_dtype_, config_.kv_dim()) * context_length_;
  const size_t kv_bytes = 2 * kv_layer_bytes_ * config_.num_hidden_layers;
  kv_.reset(static_cast<uint8_t*>(std::calloc(kv_bytes, 1)));
  if (!kv_) fail("cannot reserve ", kv_bytes >> 20, " MiB for the KV cache (lower --ctx)");
  x_.resize(B * config_.hidden_size);
  normed_.resize(B * config_.hidden_size);
  proj_out_.resize(B * config_.hidden_size);
  q_.resize(B * config_.q_dim());
  k_new_.resize(B * config_.kv_dim());
  v_new_.resize(B * config_.kv_dim());
  attn_out_.resize(B * config_.q_dim());
  act_.resize(B * config_.intermediate_size);
  if (model.has_quantized_weights()) {
    const int widest = std::max({config_.hidden_size, config_.q_dim(), config_.intermediate_size});
    quantized_.resize(quantized_input_bytes(max_batch_tokens_, widest));
  }
  groups_.reserve(B);
  logits_.resize(config_.vocab_size);
}

size_t Session::kv_cache_bytes() const {
  return 2 * kv_layer_bytes_ * config_.num_hidden_layers;
}

size_t Session::scratch_bytes() const {
  return (x_.size() + normed_.size() + proj_out_.size() + q_.size() + k_new_.size() + v_new_.size() + attn_out_.size() +
          act_.size() + logits_.size()) *
             sizeof(float) +
         quantized_.size();
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
    const RowGroup group{this, 0, n, position_};
    run_rows(tokens.data() + done, n, std::span(&group, 1), logits_.data(), /*all_rows=*/false);
  }
  return logits_;
}

void Session::forward(std::span<const int32_t> tokens, std::span<float> all_logits) {
  check_input(tokens);
  if (all_logits.size() != tokens.size() * config_.vocab_size) fail("all_logits must hold tokens x vocab_size floats");
  for (size_t done = 0; done < tokens.size(); done += max_batch_tokens_) {
    const int n = static_cast<int>(std::min<size_t>(max_batch_tokens_, tokens.size() - done));
    const RowGroup group{this, 0, n, position_};
    run_rows(tokens.data() + done, n, std::span(&group, 1), all_logits.data() + done * config_.vocab_size,
             /*all_rows=*/true);
  }
}

void Session::run_rows(const int32_t* tokens, int n, std::span<const RowGroup> groups, float* logits, bool all_rows) {
  const ModelWeights& w = model_.weights();
  const int hidden = config_.hidden_size;

  if (profile_) last_lap_ = std::chrono::steady_clock::now();
  for (int t = 0; t < n; ++t) read_row(x_.data() + static_cast<size_t>(t) * hidden, w.embed_tokens, tokens[t]);
  observe(0, x_.data(), n);
  lap(ForwardProfile::kEmbedding);
  for (int l = 0; l < config_.num_hidden_layers; ++l) {
    attention_block(w.layers[l], l, n, groups);
    mlp_block(w.layers[l], n);
    observe(l + 1, x_.data(), n);
  }
  lm_head(n, groups, logits, all_rows);
  lap(ForwardProfile::kLmHead);
  if (profile_) ++profile_->passes;
  for (const RowGroup& g : groups) g.session->position_ += g.n_rows;
}

MatmulInput Session::prepare_input(const float* x, int n, int cols) {
  if (quantized_.empty()) return MatmulInput{x, nullptr, n, cols};
  quantize_input(x, cols, 0, n, quantized_.data());
  return MatmulInput{x, quantized_.data(), n, cols};
}

// rmsnorm(x) into normed_, quantized in the same pass over each row when the matmuls need it.
MatmulInput Session::normalized_input(const Vector& norm_weight, int n) {
  const int hidden = config_.hidden_size;
  uint8_t* quantized = quantized_.empty() ? nullptr : quantized_.data();
  rmsnorm_quantize_input(normed_.data(), quantized, x_.data(), norm_weight.data(), hidden, config_.rms_norm_eps, 0, n);
  return MatmulInput{normed_.data(), quantized, n, hidden};
}

KvCacheView Session::cache(int layer) {
  uint8_t* k = kv_.get() + 2 * static_cast<size_t>(layer) * kv_layer_bytes_;
  return KvCacheView{kv_dtype_, k, k + kv_layer_bytes_, config_.kv_dim()};
}

namespace {
const float* bias(const Vector& b) {
  return b.empty() ? nullptr : b.data();
}
}  // namespace

// x += o_proj(attention(rope(q_proj(h)), rope(k_proj(h)), v_proj(h))), h = rmsnorm(x): grouped-query heads, causal.
void Session::attention_block(const LayerWeights& layer, int layer_index, int n, std::span<const RowGroup> groups) {
  const int hidden = config_.hidden_size, q_dim = config_.q_dim(), kv_dim = config_.kv_dim();
  const int heads = config_.num_attention_heads;

  const MatmulTask qkv[] = {{q_.data(), &layer.q_proj, bias(layer.q_bias)},
                            {k_new_.data(), &layer.k_proj, bias(layer.k_bias)},
                            {v_new_.data(), &layer.v_proj, bias(layer.v_bias)}};
  matmul_parallel(*pool_, normalized_input(layer.input_norm, n), qkv);
  lap(ForwardProfile::kNormQkv);

  // Rotate the new queries and keys by their positions; keys and values then go into their sessions' caches.
  for (const RowGroup& g : groups) {
    const KvCacheView kv = g.session->cache(layer_index);
    for (int i = 0; i < g.n_rows; ++i) {
      const size_t row = g.first_row + i;
      const int pos = g.first_pos + i;
      g.session->rope_.apply(q_.data() + row * q_dim, heads, pos);
      g.session->rope_.apply(k_new_.data() + row * kv_dim, config_.num_key_value_heads, pos);
      quantize_row(kv.dtype, k_new_.data() + row * kv_dim, kv.k_row(pos), kv_dim);
      quantize_row(kv.dtype, v_new_.data() + row * kv_dim, kv.v_row(pos), kv_dim);
    }
  }
  lap(ForwardProfile::kRopeKvStore);
  const AttentionShape shape{heads, config_.num_key_value_heads, config_.head_dim};
  // Tasks of up to kAttentionRows queries of one group and every query head of one kv head: the kernel runs those
  // heads side by side in SIMD lanes and reads (widens) each cached key and value once for all of them.
  constexpr int kAttentionRows = 16;
  const int kv_heads = config_.num_key_value_heads, heads_per_kv = heads / kv_heads;
  const auto blocks_of = [](const RowGroup& g) { return (g.n_rows + kAttentionRows - 1) / kAttentionRows; };
  int blocks = 0;
  for (const RowGroup& g : groups) blocks += blocks_of(g);
  pool_->run(blocks * kv_heads, [&](int task) {
    int block = task / kv_heads;
    const int kv = task % kv_heads;
    const RowGroup* g = groups.data();
    while (block >= blocks_of(*g)) block -= blocks_of(*g++);
    const int row0 = block * kAttentionRows;
    const size_t offset = static_cast<size_t>(g->first_row + row0) * q_dim;
    attention(attn_out_.data() + offset, q_.data() + offset, std::min(kAttentionRows, g->n_rows - row0),
              g->first_pos + row0, g->session->cache(layer_index), shape, kv * heads_per_kv, (kv + 1) * heads_per_kv);
  });
  lap(ForwardProfile::kAttention);

  const MatmulTask o[] = {{proj_out_.data(), &layer.o_proj, bias(layer.o_bias)}};
  matmul_parallel(*pool_, prepare_input(attn_out_.data(), n, q_dim), o);
  add_inplace(x_.data(), proj_out_.data(), n * hidden);
  lap(ForwardProfile::kOutput);
}

// x += down_proj(silu(gate_proj(h)) * up_proj(h)), h = rmsnorm(x).
void Session::mlp_block(const LayerWeights& layer, int n) {
  const int hidden = config_.hidden_size;
  const MatmulTask gate_up[] = {
      {act_.data(), &layer.gate_proj, bias(layer.gate_bias), &layer.up_proj, bias(layer.up_bias)}};
  matmul_parallel(*pool_, normalized_input(layer.post_attention_norm, n), gate_up);
  lap(ForwardProfile::kNormGateUp);
  const MatmulTask down[] = {{proj_out_.data(), &layer.down_proj, bias(layer.down_bias)}};
  matmul_parallel(*pool_, prepare_input(act_.data(), n, config_.intermediate_size), down);
  add_inplace(x_.data(), proj_out_.data(), n * hidden);
  lap(ForwardProfile::kDown);
}

// Only the rows whose logits are wanted go through the final norm and the LM head (the head is ~29 % of the 0.3B
// model's weights): every row, or each group's last row gathered into consecutive rows.
void Session::lm_head(int n, std::span<const RowGroup> groups, float* logits, bool all_rows) {
  const ModelWeights& w = model_.weights();
  const int hidden = config_.hidden_size;
  int rows = n;
  if (all_rows || observer_) {
    rmsnorm(normed_.data(), x_.data(), w.final_norm.data(), n, hidden, config_.rms_norm_eps);
    observe(config_.num_hidden_layers + 1, normed_.data(), n);
  }
  if (!all_rows) {
    rows = static_cast<int>(groups.size());
    for (int i = 0; i < rows; ++i) {
      const size_t last = groups[i].first_row + groups[i].n_rows - 1;
      rmsnorm(normed_.data() + static_cast<size_t>(i) * hidden, x_.data() + last * hidden, w.final_norm.data(), 1,
              hidden, config_.rms_norm_eps);
    }
  }
  const MatmulTask head[] = {{logits, &w.lm_head, nullptr}};
  matmul_parallel(*pool_, prepare_input(normed_.data(), rows, hidden), head);
}

void Session::lap(ForwardProfile::Op op) {
  if (!profile_) return;
  const auto now = std::chrono::steady_clock::now();
  profile_->seconds[op] += std::chrono::duration<double>(now - last_lap_).count();
  ++profile_->calls[op];
  last_lap_ = now;
}

void Session::observe(int index, const float* rows, int n) const {
  if (observer_) observer_(index, std::span<const float>(rows, static_cast<size_t>(n) * config_.hidden_size));
}

void decode_batch(std::span<Session* const> sessions, std::span<const int32_t> tokens, std::span<float> logits) {
  if (sessions.size() != tokens.size()) fail("decode_batch: one token per session");
  if (sessions.empty()) return;
  Session& lead = *sessions[0];
  const size_t vocab = lead.vocab_size();
  if (logits.size() != sessions.size() * vocab) fail("decode_batch: logits must hold sessions x vocab_size floats");
  if (sessions.size() > static_cast<size_t>(lead.max_batch_tokens_)) {
    fail("decode_batch: ", sessions.size(), " sessions exceed the first one's max_batch_tokens of ",
         lead.max_batch_tokens_);
  }
  for (size_t i = 0; i < sessions.size(); ++i) {
    if (&sessions[i]->model_ != &lead.model_) fail("decode_batch: sessions of different models");
    if (sessions[i]->kv_dtype_ != lead.kv_dtype_) fail("decode_batch: sessions with different KV-cache types");
    for (size_t j = 0; j < i; ++j) {
      if (sessions[j] == sessions[i]) fail("decode_batch: a session appears twice");
    }
    sessions[i]->check_input(tokens.subspan(i, 1));
  }
  lead.groups_.clear();
  for (size_t i = 0; i < sessions.size(); ++i) {
    lead.groups_.push_back({sessions[i], static_cast<int>(i), 1, sessions[i]->position_});
  }
  lead.run_rows(tokens.data(), static_cast<int>(sessions.size()), lead.groups_, logits.data(), /*all_rows=*/false);
}

}  // namespace ernie
