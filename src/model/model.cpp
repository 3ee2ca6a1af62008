// The forward pass of the ERNIE-4.5 dense decoder over a step's chunks.
#include "model/model.h"

#include <algorithm>

#include "core/error.h"
#include "kernels/attention.h"
#include "kernels/lora.h"
#include "kernels/ops.h"

namespace ernie {

// ---- Workspace -----------------------------------------------------------------------------------------------------

Workspace::Workspace(const Model& model, int max_tokens_, ThreadPool* pool_, int max_positions, int max_lora_rank_)
    : max_tokens(max_tokens_),
      pool(pool_),
      own_pool(pool_ ? nullptr : std::make_unique<ThreadPool>(1)),
      max_lora_rank(max_lora_rank_) {
  if (max_tokens <= 0) fail("a workspace needs room for at least one token");
  if (!pool) pool = own_pool.get();
  const ModelConfig& c = model.config();
  if (c.head_dim > kMaxHeadDim) fail("head_dim ", c.head_dim, " exceeds the supported ", kMaxHeadDim);
  const size_t B = max_tokens;
  x.resize(B * c.hidden_size);
  normed.resize(B * c.hidden_size);
  proj_out.resize(B * c.hidden_size);
  q.resize(B * c.q_dim());
  k_new.resize(B * c.kv_dim());
  v_new.resize(B * c.kv_dim());
  attn_out.resize(B * c.q_dim());
  act.resize(B * c.intermediate_size);
  if (model.has_quantized_weights()) {
    const int widest = std::max({c.hidden_size, c.q_dim(), c.intermediate_size});
    quantized.resize(quantized_input_bytes(max_tokens, widest));
  }
  rope_cos.resize(B * (c.head_dim / 2));
  rope_sin.resize(B * (c.head_dim / 2));
  // Split attention runs only while sequences x kv heads < threads: at most one sequence per thread.
  max_partitions = max_positions / kAttentionPartition + 1;
  attention_partials.resize(static_cast<size_t>(pool->size()) * max_partitions *
                            attention_partial_floats({c.num_attention_heads, c.num_key_value_heads, c.head_dim}));
  row_chunk.resize(B);
  chunk_first_row.resize(B);
  logit_rows.resize(B);
  if (max_lora_rank < 0) fail("max_lora_rank must not be negative");
  if (max_lora_rank > 0) {
    lora_shrunk.resize(B * 3 * max_lora_rank);
    gate.resize(B * c.intermediate_size);
    lora_rows.resize(B);
    lora_pieces.resize(B);
  }
}

size_t Workspace::bytes() const {
  return (x.size() + normed.size() + proj_out.size() + q.size() + k_new.size() + v_new.size() + attn_out.size() +
          act.size() + rope_cos.size() + rope_sin.size() + attention_partials.size()) *
             sizeof(float) +
         (lora_shrunk.size() + gate.size()) * sizeof(float) + quantized.size() +
         (row_chunk.size() + chunk_first_row.size() + logit_rows.size() + lora_rows.size()) * sizeof(int) +
         lora_pieces.size() * sizeof(std::pair<int, int>);
}

int64_t logit_rows(std::span<const Chunk> chunks) {
  int64_t rows = 0;
  for (const Chunk& c : chunks) {
    rows += c.logits == Logits::kAll ? static_cast<int64_t>(c.tokens.size()) : c.logits == Logits::kLast ? 1 : 0;
  }
  return rows;
}

// ---- The pass ------------------------------------------------------------------------------------------------------

namespace {

const float* bias(const Vector& b) {
  return b.empty() ? nullptr : b.data();
}

void check_step(const Model& model, const Workspace& ws, std::span<const Chunk> chunks, std::span<float> logits) {
  const int vocab = model.config().vocab_size;
  int64_t rows = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const Chunk& c = chunks[i];
    if (!c.sequence) fail("forward: a chunk without a sequence");
    if (c.tokens.empty()) fail("no input tokens");
    for (int32_t id : c.tokens) {
      if (id < 0 || id >= vocab) fail("token id ", id, " is outside the vocabulary [0, ", vocab, ")");
    }
    const int64_t end = c.sequence->position() + static_cast<int64_t>(c.tokens.size());
    if (end > c.sequence->max_positions()) {
      fail("context overflow: ", c.sequence->position(), " cached + ", c.tokens.size(),
           " new tokens exceed the context length of ", c.sequence->max_positions());
    }
    if (end > c.sequence->capacity()) fail("forward: the sequence has no KV blocks reserved for position ", end - 1);
    for (size_t j = 0; j < i; ++j) {
      if (chunks[j].sequence == c.sequence) fail("forward: a sequence appears twice in one step");
    }
    rows += static_cast<int64_t>(c.tokens.size());
    for (const LoraApplication& a : c.lora) {
      if (!a.adapter) fail("forward: a LoRA stack entry without an adapter");
      if (a.adapter->layers() != model.config().num_hidden_layers)
        fail("forward: the adapter ", a.adapter->path().string(), " is for a model of ", a.adapter->layers(),
             " layers");
    }
    if (lora_stack_rank(c.lora) > ws.max_lora_rank)
      fail("forward: adapters of total rank ", lora_stack_rank(c.lora), " exceed the workspace's max_lora_rank ",
           ws.max_lora_rank);
  }
  if (rows > ws.max_tokens || static_cast<int64_t>(chunks.size()) > ws.max_tokens)
    fail("forward: ", rows, " tokens exceed the workspace's ", ws.max_tokens);
  if (static_cast<int64_t>(logits.size()) != logit_rows(chunks) * vocab)
    fail("forward: logits must hold ", logit_rows(chunks), " x ", vocab, " floats");
}

constexpr int kAttentionRows = 16;  // queries of one chunk per attention task

int tiles_of(const Chunk& c) {
  return (static_cast<int>(c.tokens.size()) + kAttentionRows - 1) / kAttentionRows;
}

// One pass: the chunks' rows laid end to end, row r of chunk c at position c.sequence->position() + (r - first).
class Pass {
 public:
  Pass(const Model& model, KvCache& cache, Workspace& ws, std::span<const Chunk> chunks)
      : model_(model), config_(model.config()), cache_(cache), ws_(ws), chunks_(chunks) {
    for (size_t c = 0; c < chunks.size(); ++c) {
      ws.chunk_first_row[c] = rows_;
      rows_ += static_cast<int>(chunks[c].tokens.size());
    }
  }

  void run(std::span<float> logits) {
    const ModelWeights& w = model_.weights();
    const int hidden = config_.hidden_size, half = config_.head_dim / 2;
    if (ws_.profile) last_lap_ = std::chrono::steady_clock::now();
    for (size_t c = 0; c < chunks_.size(); ++c) {
      const Chunk& chunk = chunks_[c];
      for (int i = 0; i < static_cast<int>(chunk.tokens.size()); ++i) {
        const int row = ws_.chunk_first_row[c] + i;
        ws_.row_chunk[row] = static_cast<int>(c);
        read_row(ws_.x.data() + static_cast<size_t>(row) * hidden, w.embed_tokens, chunk.tokens[i]);
        model_.rope().angles(chunk.sequence->position() + i, ws_.rope_cos.data() + row * half,
                             ws_.rope_sin.data() + row * half);
      }
    }
    observe(0, ws_.x.data(), rows_);
    lap(ForwardProfile::kEmbedding);
    for (int l = 0; l < config_.num_hidden_layers; ++l) {
      attention_block(w.layers[l], l);
      mlp_block(w.layers[l], l);
      observe(l + 1, ws_.x.data(), rows_);
    }
    lm_head(logits);
    lap(ForwardProfile::kLmHead);
    if (ws_.profile) ++ws_.profile->passes;
    for (const Chunk& c : chunks_) c.sequence->set_position(c.sequence->position() + static_cast<int>(c.tokens.size()));
    ++ws_.passes;
  }

 private:
  // The input x [n, cols] of the matrices at `site` of `layer`, quantized when the matmuls need it.
  MatmulInput prepare_input(const float* x, int cols, int layer, ActivationSite site) {
    return prepare_input(x, rows_, cols, layer, site);
  }
  MatmulInput prepare_input(const float* x, int n, int cols, int layer, ActivationSite site) {
    observe_activation(layer, site, x, n, cols);
    if (ws_.quantized.empty()) return MatmulInput{x, nullptr, n, cols};
    quantize_input(x, cols, 0, n, ws_.quantized.data());
    return MatmulInput{x, ws_.quantized.data(), n, cols};
  }

  // rmsnorm(x) into normed, quantized in the same pass over each row when the matmuls need it.
  MatmulInput normalized_input(const Vector& norm_weight, int layer, ActivationSite site) {
    uint8_t* quantized = ws_.quantized.empty() ? nullptr : ws_.quantized.data();
    rmsnorm_quantize_input(ws_.normed.data(), quantized, ws_.x.data(), norm_weight.data(), config_.hidden_size,
                           config_.rms_norm_eps, 0, rows_);
    observe_activation(layer, site, ws_.normed.data(), rows_, config_.hidden_size);
    return MatmulInput{ws_.normed.data(), quantized, rows_, config_.hidden_size};
  }

  // x += o_proj(attention(rope(q_proj(h)), rope(k_proj(h)), v_proj(h))), h = rmsnorm(x): grouped-query heads,
  // causal, each chunk over its own sequence's cache.
  void attention_block(const LayerWeights& layer, int layer_index) {
    const int q_dim = config_.q_dim(), kv_dim = config_.kv_dim(), half = config_.head_dim / 2;
    const int heads = config_.num_attention_heads, kv_heads = config_.num_key_value_heads;
    const MatmulTask qkv[] = {{ws_.q.data(), &layer.q_proj, bias(layer.q_bias)},
                              {ws_.k_new.data(), &layer.k_proj, bias(layer.k_bias)},
                              {ws_.v_new.data(), &layer.v_proj, bias(layer.v_bias)}};
    matmul_parallel(*ws_.pool, normalized_input(layer.input_norm, layer_index, ActivationSite::kQkv), qkv);
    apply_lora(
        layer_index, ws_.normed.data(), config_.hidden_size,
        {{Projection::kQ, ws_.q.data()}, {Projection::kK, ws_.k_new.data()}, {Projection::kV, ws_.v_new.data()}});
    lap(ForwardProfile::kNormQkv);
    const AttentionShape shape{heads, kv_heads, config_.head_dim};

    // Rotate the new queries and keys by their positions; keys and values then go into their sequences' blocks.
    for (int row = 0; row < rows_; ++row) {
      const Chunk& c = chunks_[ws_.row_chunk[row]];
      const int pos = c.sequence->position() + (row - ws_.chunk_first_row[ws_.row_chunk[row]]);
      const float* cos = ws_.rope_cos.data() + row * half;
      const float* sin = ws_.rope_sin.data() + row * half;
      model_.rope().apply(ws_.q.data() + static_cast<size_t>(row) * q_dim, heads, cos, sin);
      model_.rope().apply(ws_.k_new.data() + static_cast<size_t>(row) * kv_dim, kv_heads, cos, sin);
      kv_store(cache_.view(layer_index, *c.sequence), shape, pos, ws_.k_new.data() + static_cast<size_t>(row) * kv_dim,
               ws_.v_new.data() + static_cast<size_t>(row) * kv_dim);
    }
    lap(ForwardProfile::kRopeKvStore);

    // Tasks of up to kAttentionRows queries of one chunk and every query head of one kv head: the kernel runs those
    // heads side by side in SIMD lanes and reads (widens) each cached key and value once for all of them. When that
    // leaves threads idle (a few decoding sequences), each long decoding sequence is split along its keys too
    // (attention_partition), and its partitions are merged after: the same bits, more threads on one sequence.
    const int heads_per_kv = heads / kv_heads;
    int tiles = 0;
    for (const Chunk& c : chunks_) tiles += tiles_of(c);
    const bool split = tiles * kv_heads < ws_.pool->size();
    const auto split_parts = [&](const Chunk& c) {
      const int parts = c.sequence->position() / kAttentionPartition + 1;
      return split && c.tokens.size() == 1 && parts > 1 && parts <= ws_.max_partitions ? parts : 0;
    };
    int regular = 0, split_tasks = 0;
    for (const Chunk& c : chunks_) {
      if (split_parts(c) > 0) {
        split_tasks += split_parts(c) * kv_heads;
      } else {
        regular += tiles_of(c) * kv_heads;
      }
    }
    const size_t partial_floats = attention_partial_floats(shape);
    ws_.pool->run(regular + split_tasks, [&](int task) {
      size_t c = 0;
      if (task < regular) {
        int tile = task / kv_heads;
        const int kv = task % kv_heads;
        while (split_parts(chunks_[c]) > 0 || tile >= tiles_of(chunks_[c])) {
          if (split_parts(chunks_[c]) == 0) tile -= tiles_of(chunks_[c]);
          ++c;
        }
        const Chunk& chunk = chunks_[c];
        const int row0 = tile * kAttentionRows;
        const size_t offset = static_cast<size_t>(ws_.chunk_first_row[c] + row0) * q_dim;
        attention(ws_.attn_out.data() + offset, ws_.q.data() + offset,
                  std::min(kAttentionRows, static_cast<int>(chunk.tokens.size()) - row0),
                  chunk.sequence->position() + row0, cache_.view(layer_index, *chunk.sequence), shape,
                  kv * heads_per_kv, (kv + 1) * heads_per_kv);
        return;
      }
      int index = task - regular, slot = 0;
      while (index >= split_parts(chunks_[c]) * kv_heads) {
        index -= split_parts(chunks_[c]) * kv_heads;
        if (split_parts(chunks_[c]) > 0) ++slot;
        ++c;
      }
      const int kv = index % kv_heads, partition = index / kv_heads;
      const Chunk& chunk = chunks_[c];
      attention_partition(ws_.attention_partials.data() + slot * ws_.max_partitions * partial_floats,
                          ws_.q.data() + static_cast<size_t>(ws_.chunk_first_row[c]) * q_dim,
                          chunk.sequence->position(), cache_.view(layer_index, *chunk.sequence), shape,
                          kv * heads_per_kv, (kv + 1) * heads_per_kv, partition);
    });
    int slot = 0;
    for (size_t c = 0; c < chunks_.size(); ++c) {
      if (split_parts(chunks_[c]) == 0) continue;
      attention_merge(ws_.attn_out.data() + static_cast<size_t>(ws_.chunk_first_row[c]) * q_dim,
                      ws_.attention_partials.data() + slot++ * ws_.max_partitions * partial_floats,
                      chunks_[c].sequence->position(), shape, 0, heads);
    }
    lap(ForwardProfile::kAttention);

    const MatmulTask o[] = {{ws_.proj_out.data(), &layer.o_proj, bias(layer.o_bias)}};
    matmul_parallel(*ws_.pool, prepare_input(ws_.attn_out.data(), q_dim, layer_index, ActivationSite::kAttentionOutput),
                    o);
    apply_lora(layer_index, ws_.attn_out.data(), q_dim, {{Projection::kO, ws_.proj_out.data()}});
    add_inplace(ws_.x.data(), ws_.proj_out.data(), static_cast<size_t>(rows_) * config_.hidden_size);
    lap(ForwardProfile::kOutput);
  }

  // x += down_proj(silu(gate_proj(h)) * up_proj(h)), h = rmsnorm(x).
  void mlp_block(const LayerWeights& layer, int layer_index) {
    if (!adapts(layer_index, Projection::kGate) && !adapts(layer_index, Projection::kUp)) {
      const MatmulTask gate_up[] = {
          {ws_.act.data(), &layer.gate_proj, bias(layer.gate_bias), &layer.up_proj, bias(layer.up_bias)}};
      matmul_parallel(*ws_.pool, normalized_input(layer.post_attention_norm, layer_index, ActivationSite::kGateUp),
                      gate_up);
    } else {
      // The adapters' deltas go into gate and up before the SwiGLU, so the fused kernel splits in two: the same
      // bits for the rows without adapters (matmul_swiglu is defined as the two matmuls, then swiglu).
      const MatmulTask gate_up[] = {{ws_.gate.data(), &layer.gate_proj, bias(layer.gate_bias)},
                                    {ws_.act.data(), &layer.up_proj, bias(layer.up_bias)}};
      matmul_parallel(*ws_.pool, normalized_input(layer.post_attention_norm, layer_index, ActivationSite::kGateUp),
                      gate_up);
      apply_lora(layer_index, ws_.normed.data(), config_.hidden_size,
                 {{Projection::kGate, ws_.gate.data()}, {Projection::kUp, ws_.act.data()}});
      const int width = config_.intermediate_size;
      ws_.pool->run(rows_, [&](int row) {
        float* act = ws_.act.data() + static_cast<size_t>(row) * width;
        swiglu(act, ws_.gate.data() + static_cast<size_t>(row) * width, act, width);
      });
    }
    lap(ForwardProfile::kNormGateUp);
    const MatmulTask down[] = {{ws_.proj_out.data(), &layer.down_proj, bias(layer.down_bias)}};
    matmul_parallel(*ws_.pool,
                    prepare_input(ws_.act.data(), config_.intermediate_size, layer_index, ActivationSite::kDown), down);
    apply_lora(layer_index, ws_.act.data(), config_.intermediate_size, {{Projection::kDown, ws_.proj_out.data()}});
    add_inplace(ws_.x.data(), ws_.proj_out.data(), static_cast<size_t>(rows_) * config_.hidden_size);
    lap(ForwardProfile::kDown);
  }

  // logits = lm_head(rmsnorm(x)) for the rows asked for, gathered into consecutive rows: the head is ~29 % of the
  // 0.3B model's weights, so prompt rows whose logits nobody reads skip it.
  void lm_head(std::span<float> logits) {
    const ModelWeights& w = model_.weights();
    const int hidden = config_.hidden_size;
    if (ws_.observer) {
      rmsnorm(ws_.normed.data(), ws_.x.data(), w.final_norm.data(), rows_, hidden, config_.rms_norm_eps);
      observe(config_.num_hidden_layers + 1, ws_.normed.data(), rows_);
    }
    int n = 0;
    for (size_t c = 0; c < chunks_.size(); ++c) {
      const int size = static_cast<int>(chunks_[c].tokens.size());
      if (chunks_[c].logits == Logits::kAll) {
        for (int i = 0; i < size; ++i) ws_.logit_rows[n++] = ws_.chunk_first_row[c] + i;
      } else if (chunks_[c].logits == Logits::kLast) {
        ws_.logit_rows[n++] = ws_.chunk_first_row[c] + size - 1;
      }
    }
    if (n == 0) return;
    for (int i = 0; i < n; ++i) {
      rmsnorm(ws_.normed.data() + static_cast<size_t>(i) * hidden,
              ws_.x.data() + static_cast<size_t>(ws_.logit_rows[i]) * hidden, w.final_norm.data(), 1, hidden,
              config_.rms_norm_eps);
    }
    const MatmulTask head[] = {{logits.data(), &w.lm_head, nullptr}};
    matmul_parallel(*ws_.pool, prepare_input(ws_.normed.data(), n, hidden, -1, ActivationSite::kLmHead), head);
  }

  // Whether a chunk of this step has an adapter for this projection of this layer.
  bool adapts(int layer, Projection p) const {
    for (const Chunk& c : chunks_) {
      for (const LoraApplication& a : c.lora) {
        if (a.adapter->module(layer, p)) return true;
      }
    }
    return false;
  }

  struct LoraTarget {
    Projection projection;
    float* out;  // [rows_, the projection's width]
  };

  static bool same_stack(LoraStack a, LoraStack b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](const auto& x, const auto& y) {
             return x.adapter == y.adapter && x.scale == y.scale;
           });
  }

  // out += Σ scale · B(A x) over each row's adapters, for the projections that read the input x [rows_, in]: the
  // base weights ran once for every row, and only the rows with adapters pay for their low-rank parts. The rows are
  // grouped by adapter stack (as Punica's segmented kernels do), so that each slice of A or B loaded serves every
  // row of its group. Two jobs: the A x of every group (tasks by projection and 8 ranks), then the B products (by
  // projection and 256 outputs), each row's adapters summed in its stack's order. Groups run in pieces of 64 rows.
  void apply_lora(int layer, const float* x, int in, std::initializer_list<LoraTarget> targets) {
    int n = 0, max_rank = 0, max_out = 0;
    for (int row = 0; row < rows_; ++row) {
      bool any = false;
      for (const LoraApplication& a : chunks_[ws_.row_chunk[row]].lora) {
        for (const LoraTarget& t : targets) {
          if (const LoraModule* m = a.adapter->module(layer, t.projection)) {
            any = true;
            max_rank = std::max(max_rank, m->rank);
            max_out = std::max(max_out, m->out);
          }
        }
      }
      if (any) ws_.lora_rows[n++] = row;
    }
    if (n == 0) return;
    const auto stack_of = [&](int32_t row) { return chunks_[ws_.row_chunk[row]].lora; };
    // Rows of equal stacks side by side: by the first adapter's id and the stack's size, then by row. (Different
    // stacks sharing both keys stay apart as separate runs; they still compute the same.)
    std::sort(ws_.lora_rows.begin(), ws_.lora_rows.begin() + n, [&](int32_t a, int32_t b) {
      const LoraStack sa = stack_of(a), sb = stack_of(b);
      const auto key = [](LoraStack s) { return std::pair(s.empty() ? 0 : s[0].adapter->id(), s.size()); };
      return key(sa) != key(sb) ? key(sa) < key(sb) : a < b;
    });
    constexpr int kRowsPerPiece = 64;
    int pieces = 0;
    for (int i = 0; i < n;) {
      int end = i + 1;
      while (end < n && end - i < kRowsPerPiece && same_stack(stack_of(ws_.lora_rows[end]), stack_of(ws_.lora_rows[i])))
        ++end;
      ws_.lora_pieces[pieces++] = {i, end};
      i = end;
    }
    const int n_targets = static_cast<int>(targets.size());
    const LoraTarget* target = targets.begin();
    constexpr int kRanksPerTask = 8, kOutputsPerTask = 256;
    const int rank_parts = (max_rank + kRanksPerTask - 1) / kRanksPerTask;
    const int out_parts = (max_out + kOutputsPerTask - 1) / kOutputsPerTask;
    const size_t stride = 3 * static_cast<size_t>(ws_.max_lora_rank);
    // A x of a stack's adapter i for target t lands at shrunk[row][t * max_lora_rank + (ranks of adapters before i)].
    const auto for_each_module = [&](LoraStack stack, int t, auto&& fn) {
      int offset = t * ws_.max_lora_rank;
      for (const LoraApplication& a : stack) {
        if (const LoraModule* m = a.adapter->module(layer, target[t].projection)) fn(*m, a.scale, offset);
        offset += a.adapter->max_rank();
      }
    };
    const auto piece_rows = [&](int piece) {
      const auto [first, end] = ws_.lora_pieces[piece];
      return LoraRows{ws_.lora_rows.data() + first, end - first};
    };
    ws_.pool->run(pieces * n_targets * rank_parts, [&](int task) {
      const LoraRows rows = piece_rows(task / (n_targets * rank_parts));
      const int t = task / rank_parts % n_targets, k0 = task % rank_parts * kRanksPerTask;
      for_each_module(stack_of(rows.rows[0]), t, [&](const LoraModule& m, float, int offset) {
        if (k0 < m.rank)
          lora_shrink(ws_.lora_shrunk.data() + offset, stride, x, in, rows, m.a.data(), in, k0,
                      std::min(m.rank, k0 + kRanksPerTask));
      });
    });
    ws_.pool->run(pieces * n_targets * out_parts, [&](int task) {
      const LoraRows rows = piece_rows(task / (n_targets * out_parts));
      const int t = task / out_parts % n_targets, j0 = task % out_parts * kOutputsPerTask;
      for_each_module(stack_of(rows.rows[0]), t, [&](const LoraModule& m, float scale, int offset) {
        if (j0 < m.out)
          lora_expand(target[t].out, m.out, ws_.lora_shrunk.data() + offset, stride, rows, m.b_t.data(), m.rank, m.out,
                      scale * m.scale, j0, std::min(m.out, j0 + kOutputsPerTask));
      });
    });
  }

  void lap(ForwardProfile::Op op) {
    if (!ws_.profile) return;
    const auto now = std::chrono::steady_clock::now();
    ws_.profile->seconds[op] += std::chrono::duration<double>(now - last_lap_).count();
    ++ws_.profile->calls[op];
    last_lap_ = now;
  }

  void observe_activation(int layer, ActivationSite site, const float* rows, int n, int width) const {
    if (ws_.activation_observer)
      ws_.activation_observer(layer, site, std::span<const float>(rows, static_cast<size_t>(n) * width), width);
  }

  void observe(int index, const float* rows, int n) const {
    if (ws_.observer) ws_.observer(index, std::span<const float>(rows, static_cast<size_t>(n) * config_.hidden_size));
  }

  const Model& model_;
  const ModelConfig& config_;
  KvCache& cache_;
  Workspace& ws_;
  std::span<const Chunk> chunks_;
  int rows_ = 0;
  std::chrono::steady_clock::time_point last_lap_;
};

}  // namespace

void forward(const Model& model, KvCache& cache, Workspace& workspace, std::span<const Chunk> chunks,
             std::span<float> logits) {
  check_step(model, workspace, chunks, logits);
  Pass(model, cache, workspace, chunks).run(logits);
}

}  // namespace ernie
