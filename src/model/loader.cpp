// Model loading: mapping a checkpoint, binding its tensors to the model's weights, and storing matrices again at load
// (GGUF block types DType lacks; a --dtype conversion), all through one conversion routine.
#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "core/error.h"
#include "core/mapped_file.h"
#include "kernels/ggml_blocks.h"
#include "kernels/quant.h"
#include "model/gguf_ernie.h"
#include "model/model.h"

namespace ernie {
namespace {

// Converted matrices start on cache lines (the packed kernels' loads are then aligned).
constexpr size_t kAlignment = 64;

// One matrix stored again at load: rows of `in` (rows x cols in the plain layout of a DType, or of a GGUF block
// type DType lacks) written to `out` as `to`, in the packed layout of the matmul kernels when `pack` is set.
struct Conversion {
  const uint8_t* in;
  std::optional<DType> from;  // nullopt: in is of GGUF type ggml_type
  GgmlType ggml_type;
  int64_t rows, cols;
  DType to;
  bool pack;
  bool release_source;  // drop `in`'s pages as rows are converted (a file mapping, read again if touched)
  // Adapters merged into the rows (W += scale · B A) between widening and storing.
  std::vector<std::pair<const LoraModule*, float>> deltas = {};
  uint8_t* out = nullptr;  // set by convert()

  size_t in_row_bytes() const {
    if (from) return dtype_row_bytes(*from, cols);
    const GgmlTypeTraits traits = ggml_type_traits(ggml_type);
    return cols / traits.block_elements * traits.block_bytes;
  }
  size_t out_bytes() const {
    return WeightMatrix{to, nullptr, static_cast<int>(rows), static_cast<int>(cols), pack}.bytes();
  }
};

// Reserves one buffer for every conversion's output, carves it (each output on a cache line), and converts the rows
// in chunks across the pool. Each chunk widens a row to float32 and stores it in the new type, integer types then
// packed (rows already of the target type are packed straight from the map). Converted rows of a mapped file leave
// resident memory at once, so the peak stays near the converted size.
LargeBuffer convert(std::span<Conversion> jobs, ThreadPool* pool) {
  size_t total = kAlignment;
  for (const Conversion& job : jobs) total += job.out_bytes() + kAlignment;
  LargeBuffer buffer = LargeBuffer::allocate(total);
  uint8_t* next = buffer.data();
  for (Conversion& job : jobs) {
    next += (kAlignment - reinterpret_cast<uintptr_t>(next) % kAlignment) % kAlignment;
    job.out = next;
    next += job.out_bytes();
  }
  constexpr int64_t kRowsPerTask = 256;  // a whole number of packed groups
  static_assert(kRowsPerTask % kPackedRows == 0);
  std::vector<int> first_task;
  int n_tasks = 0;
  for (const Conversion& job : jobs) {
    first_task.push_back(n_tasks);
    n_tasks += static_cast<int>((job.rows + kRowsPerTask - 1) / kRowsPerTask);
  }
  ThreadPool inline_pool(1);
  ThreadPool& p = pool ? *pool : inline_pool;
  p.run(n_tasks, [&](int task) {
    const size_t j = std::upper_bound(first_task.begin(), first_task.end(), task) - first_task.begin() - 1;
    const Conversion& job = jobs[j];
    const int64_t r0 = (task - first_task[j]) * kRowsPerTask, r1 = std::min(job.rows, r0 + kRowsPerTask);
    const size_t in_row = job.in_row_bytes(), out_row = dtype_row_bytes(job.to, job.cols);
    const bool same_type = job.from == job.to && job.deltas.empty();  // only a plain matrix asked to be packed
    // Uninitialised: every byte is written, and zeroing it cost as much as the packing.
    std::unique_ptr<uint8_t[]> plain(job.pack && !same_type ? new uint8_t[out_row * (r1 - r0)] : nullptr);
    std::vector<float> row(job.cols);
    for (int64_t r = r0; r < r1 && !same_type; ++r) {
      const uint8_t* in = job.in + r * in_row;
      if (job.from) {
        dequantize_row(*job.from, in, row.data(), job.cols);
      } else {
        dequantize_ggml_row(job.ggml_type, in, row.data(), job.cols);
      }
      for (const auto& [m, scale] : job.deltas) {
        for (int k = 0; k < m->rank; ++k) {
          const float coefficient = scale * m->scale * m->b_t[static_cast<size_t>(k) * m->out + r];
          const float* a = m->a.data() + static_cast<size_t>(k) * m->in;
          for (int64_t c = 0; c < job.cols; ++c) row[c] += coefficient * a[c];
        }
      }
      quantize_row(job.to, row.data(), job.pack ? plain.get() + (r - r0) * out_row : job.out + r * out_row, job.cols);
    }
    const uint8_t* rows = same_type ? job.in + r0 * in_row : plain.get();
    for (int64_t g = r0; job.pack && g < r1; g += kPackedRows) {
      pack_weight_group(job.to, static_cast<int>(job.cols), rows + (g - r0) * out_row,
                        static_cast<int>(std::min<int64_t>(kPackedRows, r1 - g)), job.out + g * out_row);
    }
    if (job.release_source) release_mapped_range(job.in + r0 * in_row, in_row * (r1 - r0));
  });
  return buffer;
}

// Every weight matrix once (a tied LM head is the embedding).
template <class Weights, class Fn>
void for_each_matrix(Weights& w, bool tied, Fn&& fn) {
  fn(w.embed_tokens);
  if (!tied) fn(w.lm_head);
  for (auto& l : w.layers) {
    for (auto* m : {&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.gate_proj, &l.up_proj, &l.down_proj}) fn(*m);
  }
}

}  // namespace

Model::Model(std::filesystem::path path, ModelConfig config)
    : path_(std::move(path)), config_(std::move(config)), rope_(config_.head_dim, config_.rope_theta) {}

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
  std::vector<std::shared_ptr<const LoraAdapter>> adapters;
  std::vector<LoraApplication> merge;
  for (const LoadOptions::MergedAdapter& m : options.merge_lora) {
    adapters.push_back(LoraAdapter::load(m.dir, model->config_));
    merge.push_back({adapters.back().get(), m.scale});
  }
  model->convert_weights(options.dtype, merge, options.pool);
  return model;
}

void Model::bind_gguf_tensors(DType widen_to, ThreadPool* pool) {
  const GgufFile& file = *gguf_;
  // GGUF names back to Hugging Face ones, for the tensors the config expects; any other name is kept, so that the
  // binder reports it as unexpected.
  std::map<std::string, std::string> hf_name_of;
  for (const TensorSpec& spec : expected_tensors(config_)) hf_name_of[gguf_tensor_name(spec.name)] = spec.name;
  tensors_.source = file.path().string();
  tensors_.rename = gguf_tensor_name;

  std::vector<Conversion> jobs;
  std::vector<TensorView*> widened;
  for (const GgufTensor& t : file.tensors()) {
    const auto it = hf_name_of.find(t.name);
    const std::string key = it == hf_name_of.end() ? t.name : it->second;
    const auto stored = dtype_of(t.type);
    TensorView view{t.name, stored.value_or(widen_to), t.shape(), t.data, t.nbytes, &file.path()};
    if (!stored) {
      // A row is whole blocks of its GGUF type, multiples of 32: whole blocks of any DType too. Stored plain, the
      // widened tensor is one more tensor of type widen_to to bind_weights (convert_weights may pack it later).
      const int64_t cols = t.ne[0], rows = t.element_count() / cols;
      view.nbytes = dtype_row_bytes(widen_to, t.element_count());
      view.data = nullptr;
      jobs.push_back(Conversion{t.data, std::nullopt, t.type, rows, cols, widen_to, /*pack=*/false,
                                /*release_source=*/true});
    }
    TensorView& placed = tensors_.by_name.insert_or_assign(key, std::move(view)).first->second;
    if (!stored) widened.push_back(&placed);
  }
  if (jobs.empty()) return;
  widened_ = convert(jobs, pool);
  for (size_t i = 0; i < jobs.size(); ++i) widened[i]->data = jobs[i].out;
}

void Model::convert_weights(std::optional<DType> target, std::span<const LoraApplication> merge, ThreadPool* pool) {
  // The adapters' modules for each matrix they change.
  std::map<const WeightMatrix*, std::vector<std::pair<const LoraModule*, float>>> deltas;
  for (const LoraApplication& a : merge) {
    if (a.adapter->layers() != config_.num_hidden_layers)
      fail(a.adapter->path().string(), ": the adapter is for a model of ", a.adapter->layers(), " layers");
    for (int l = 0; l < config_.num_hidden_layers; ++l) {
      for (Projection p : kProjections) {
        if (const LoraModule* m = a.adapter->module(l, p))
          deltas[&weights_.layers[l].projection(p)].push_back({m, a.scale});
      }
    }
  }
  std::vector<Conversion> jobs;
  std::vector<WeightMatrix*> matrices;
  for_each_matrix(weights_, config_.tie_word_embeddings, [&](WeightMatrix& m) {
    const auto merged = deltas.find(&m);
    const DType to = target.value_or(merged == deltas.end() || uses_quantized_input(m.dtype) ? m.dtype : DType::F32);
    if (merged == deltas.end() && m.dtype == to && m.packed == uses_quantized_input(to)) return;
    if (m.cols % dtype_block_elements(to) != 0)
      fail("cannot store a matrix of ", m.cols, " columns as ", dtype_name(to));
    // Widened tensors stay readable as tensors() (an export reads them): only mapped files are released.
    const auto at = reinterpret_cast<uintptr_t>(m.data), start = reinterpret_cast<uintptr_t>(widened_.data());
    const bool widened = at >= start && at < start + widened_.size();
    jobs.push_back(Conversion{m.data, m.dtype, GgmlType{}, m.rows, m.cols, to, uses_quantized_input(to), !widened});
    if (merged != deltas.end()) jobs.back().deltas = merged->second;
    matrices.push_back(&m);
  });
  if (jobs.empty()) return;
  converted_ = convert(jobs, pool);
  for (size_t i = 0; i < jobs.size(); ++i) {
    WeightMatrix& m = *matrices[i];
    m = WeightMatrix{jobs[i].to, jobs[i].out, m.rows, m.cols, jobs[i].pack};
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
  for_each_matrix(weights_, config_.tie_word_embeddings, [&](const WeightMatrix& m) { n += m.bytes(); });
  return n;
}

std::string Model::weight_dtype() const {
  std::set<std::string_view> names;
  for_each_matrix(weights_, config_.tie_word_embeddings,
                  [&](const WeightMatrix& m) { names.insert(dtype_name(m.dtype)); });
  std::string out;
  for (auto n : names) {
    if (!out.empty()) out += '+';
    out += n;
  }
  return out;
}

bool Model::has_quantized_weights() const {
  bool any = false;
  for_each_matrix(weights_, config_.tie_word_embeddings,
                  [&](const WeightMatrix& m) { any |= uses_quantized_input(m.dtype); });
  return any;
}

}  // namespace ernie
