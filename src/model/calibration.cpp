#include "model/calibration.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/error.h"
#include "io/gguf.h"
#include "model/gguf_ernie.h"
#include "model/lora.h"

namespace ernie {
namespace {

// Which input each projection reads.
ActivationSite site_of(Projection p) {
  switch (p) {
    case Projection::kQ:
    case Projection::kK:
    case Projection::kV: return ActivationSite::kQkv;
    case Projection::kO: return ActivationSite::kAttentionOutput;
    case Projection::kGate:
    case Projection::kUp: return ActivationSite::kGateUp;
    case Projection::kDown: break;
  }
  return ActivationSite::kDown;
}

std::string lm_head_name(const ModelConfig& c) {
  return c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
}

template <typename T>
std::span<const uint8_t> bytes_of(const std::vector<T>& v) {
  return {reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(T)};
}

// A tensor of float32 values of the file, checked for its element count.
std::vector<float> read_floats(const GgufFile& file, const std::string& name, int64_t count, bool required) {
  const GgufTensor* t = file.find_tensor(name);
  if (!t) {
    if (required) fail(file.path().string(), ": missing tensor ", name);
    return {};
  }
  if (t->type != GgmlType::F32) fail(file.path().string(), ": tensor ", name, " is not F32");
  if (t->element_count() != count)
    fail(file.path().string(), ": tensor ", name, " has ", t->element_count(), " values, the model needs ", count);
  std::vector<float> values(count);
  std::memcpy(values.data(), t->data, count * sizeof(float));
  for (float v : values) {
    if (!std::isfinite(v) || v < 0)
      fail(file.path().string(), ": tensor ", name, " holds a negative or non-finite value");
  }
  return values;
}

}  // namespace

std::vector<float> ChannelStats::mean_squares() const {
  std::vector<float> mean(sum_squares.size(), 0.0f);
  if (rows > 0) {
    for (size_t i = 0; i < mean.size(); ++i) mean[i] = static_cast<float>(sum_squares[i] / static_cast<double>(rows));
  }
  return mean;
}

ActivationStats::ActivationStats(const ModelConfig& c) {
  const auto width_of = [&](ActivationSite site) {
    return site == ActivationSite::kAttentionOutput ? c.q_dim()
           : site == ActivationSite::kDown          ? c.intermediate_size
                                                    : c.hidden_size;
  };
  const auto add_matrix = [&](std::string name, int layer, ActivationSite site) {
    const size_t width = width_of(site);
    matrices_.push_back({std::move(name), layer, site, {std::vector<double>(width), std::vector<float>(width), 0}});
  };
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    for (Projection p : kProjections) add_matrix(module_name(l, p) + ".weight", l, site_of(p));
  }
  add_matrix(lm_head_name(c), -1, ActivationSite::kLmHead);
}

void ActivationStats::add(int layer, ActivationSite site, std::span<const float> rows, int width) {
  for (Matrix& m : matrices_) {
    if (m.layer != layer || m.site != site) continue;
    ChannelStats& s = m.stats;
    if (static_cast<size_t>(width) != s.sum_squares.size())
      fail("activation statistics: ", m.name, " reads ", s.sum_squares.size(), " channels, not ", width);
    const size_t n = rows.size() / width;
    for (size_t r = 0; r < n; ++r) {
      const float* x = rows.data() + r * width;
      for (int i = 0; i < width; ++i) {
        s.sum_squares[i] += static_cast<double>(x[i]) * x[i];
        s.max_abs[i] = std::max(s.max_abs[i], std::fabs(x[i]));
      }
    }
    s.rows += static_cast<int64_t>(n);
  }
}

ActivationObserver ActivationStats::observer() {
  return
      [this](int layer, ActivationSite site, std::span<const float> rows, int width) { add(layer, site, rows, width); };
}

const ChannelStats* ActivationStats::of(const std::string& matrix) const {
  for (const Matrix& m : matrices_) {
    if (m.name == matrix) return m.stats.rows > 0 ? &m.stats : nullptr;
  }
  return nullptr;
}

int64_t ActivationStats::tokens() const {
  return matrices_.empty() ? 0 : matrices_.front().stats.rows;
}

int ActivationStats::matrices_with_stats() const {
  return static_cast<int>(
      std::count_if(matrices_.begin(), matrices_.end(), [](const Matrix& m) { return m.stats.rows > 0; }));
}

void ActivationStats::save(const std::filesystem::path& path) const {
  const Provenance& provenance = provenance_;
  GgufWriter writer(path);
  writer.set("general.type", std::string("imatrix"));
  GgufArray datasets{GgufType::STRING, {}};
  for (const auto& d : provenance.datasets) datasets.items.emplace_back(d);
  writer.set("imatrix.datasets", datasets);
  writer.set("imatrix.chunk_count", provenance.chunks);
  writer.set("imatrix.chunk_size", provenance.chunk_size);
  // llama-imatrix writes its tensors sorted by name: so do we, so that the two files of one run compare easily.
  std::vector<const Matrix*> sorted;
  for (const Matrix& m : matrices_) sorted.push_back(&m);
  std::sort(sorted.begin(), sorted.end(),
            [](const Matrix* a, const Matrix* b) { return gguf_tensor_name(a->name) < gguf_tensor_name(b->name); });
  for (const Matrix* m : sorted) {
    const std::string name = gguf_tensor_name(m->name);
    const auto width = static_cast<int64_t>(m->stats.sum_squares.size());
    writer.declare_tensor(name + ".in_sum2", GgmlType::F32, {1, width});
    writer.declare_tensor(name + ".counts", GgmlType::F32, {1, 1});
    writer.declare_tensor(name + ".in_max", GgmlType::F32, {1, width});
  }
  for (const Matrix* m : sorted) {
    const std::vector<float> sums(m->stats.sum_squares.begin(), m->stats.sum_squares.end());
    const std::vector<float> count = {static_cast<float>(m->stats.rows)};
    writer.write_tensor(bytes_of(sums));
    writer.write_tensor(bytes_of(count));
    writer.write_tensor(bytes_of(m->stats.max_abs));
  }
  writer.finish();
}

ActivationStats ActivationStats::load(const std::filesystem::path& path, const ModelConfig& config) {
  const GgufFile file = GgufFile::open(path);
  if (file.get_string("general.type").value_or("imatrix") != "imatrix")
    fail(path.string(), ": not an importance matrix (general.type is ", *file.get_string("general.type"), ")");
  ActivationStats stats(config);
  stats.provenance_.file = path.string();
  if (const GgufArray* datasets = file.get_array("imatrix.datasets", GgufType::STRING)) {
    for (const GgufValue& d : datasets->items) stats.provenance_.datasets.push_back(std::get<std::string>(d));
  }
  const auto count = [&](const char* key) {
    return static_cast<uint32_t>(std::clamp<int64_t>(file.get_int(key).value_or(0), 0, UINT32_MAX));
  };
  stats.provenance_.chunks = count("imatrix.chunk_count");
  stats.provenance_.chunk_size = count("imatrix.chunk_size");
  for (Matrix& m : stats.matrices_) {
    const std::string name = gguf_tensor_name(m.name);
    const auto width = static_cast<int64_t>(m.stats.sum_squares.size());
    // llama-imatrix records the output matrix only when asked (--process-output), and never a tied one.
    const bool required = m.site != ActivationSite::kLmHead;
    const std::vector<float> sums = read_floats(file, name + ".in_sum2", width, required);
    const std::vector<float> count = read_floats(file, name + ".counts", 1, required);
    if (sums.empty() || count.empty()) continue;
    if (count[0] < 1 || count[0] != std::floor(count[0]))
      fail(path.string(), ": tensor ", name, ".counts is not a positive whole number");
    m.stats.sum_squares.assign(sums.begin(), sums.end());
    m.stats.rows = static_cast<int64_t>(count[0]);
    m.stats.max_abs = read_floats(file, name + ".in_max", width, false);
  }
  return stats;
}

}  // namespace ernie
