// Activation statistics (model/calibration.h) against a direct computation: an independent float64 forward pass over
// the fixture's weights, written here from the model card's math and itself checked against transformers' logits,
// gives every matrix's input; their sums of squares and largest magnitudes must be what the engine's observer
// recorded. Then the file: llama.cpp's imatrix layout, a round trip, and clear errors.
#include "model/calibration.h"

#include <gtest/gtest.h>

#include <cmath>

#include "io/gguf.h"
#include "kernels/quant.h"
#include "model/lora.h"
#include "model/session.h"
#include "test_support.h"

namespace ernie {
namespace {

using ernie::testing::error_of;
using ernie::testing::fixture;
using ernie::testing::read_f32;
using ernie::testing::read_json;
using ernie::testing::TempDir;

using Matrix64 = std::vector<double>;  // row-major

// A checkpoint tensor widened to float64.
Matrix64 widen(const Model& model, const std::string& name) {
  const TensorView& t = model.tensors().by_name.at(name);
  std::vector<float> f(t.element_count());
  dequantize_row(t.dtype, t.data, f.data(), t.element_count());
  return Matrix64(f.begin(), f.end());
}

// y[out] = W x + b, W [out, in].
std::vector<double> affine(const Matrix64& w, const Matrix64* b, const std::vector<double>& x) {
  const size_t in = x.size(), out = w.size() / in;
  std::vector<double> y(out);
  for (size_t o = 0; o < out; ++o) {
    double s = b ? (*b)[o] : 0.0;
    for (size_t i = 0; i < in; ++i) s += w[o * in + i] * x[i];
    y[o] = s;
  }
  return y;
}

std::vector<double> rmsnorm(const std::vector<double>& x, const Matrix64& w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double inv = 1.0 / std::sqrt(ss / x.size() + eps);
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * w[i];
  return y;
}

// Adjacent pairs (2i, 2i+1) rotate by pos * theta^(-2i/d), ERNIE's RoPE.
void rope(std::vector<double>& x, int heads, int d, int pos, double theta) {
  for (int h = 0; h < heads; ++h) {
    for (int i = 0; i < d / 2; ++i) {
      const double angle = pos * std::pow(theta, -2.0 * i / d);
      double& a = x[h * d + 2 * i];
      double& b = x[h * d + 2 * i + 1];
      const double a0 = a, b0 = b;
      a = a0 * std::cos(angle) - b0 * std::sin(angle);
      b = b0 * std::cos(angle) + a0 * std::sin(angle);
    }
  }
}

struct Expected {
  std::map<std::string, ChannelStats> inputs;  // by matrix name
  std::vector<double> logits;                  // [tokens, vocab]
};

void record(ChannelStats& s, const std::vector<double>& x) {
  if (s.sum_squares.empty()) {
    s.sum_squares.assign(x.size(), 0.0);
    s.max_abs.assign(x.size(), 0.0f);
  }
  for (size_t i = 0; i < x.size(); ++i) {
    s.sum_squares[i] += x[i] * x[i];
    s.max_abs[i] = std::max(s.max_abs[i], static_cast<float>(std::fabs(x[i])));
  }
  ++s.rows;
}

// The whole sequence through every layer in float64, recording each matrix's input.
Expected direct_forward(const Model& model, const std::vector<int32_t>& ids) {
  const ModelConfig& c = model.config();
  const int n = static_cast<int>(ids.size()), d = c.head_dim, hidden = c.hidden_size;
  const Matrix64 embed = widen(model, "model.embed_tokens.weight");
  std::vector<std::vector<double>> h(n);
  for (int t = 0; t < n; ++t) h[t].assign(embed.begin() + ids[t] * hidden, embed.begin() + (ids[t] + 1) * hidden);
  Expected e;
  const auto bias = [&](int l, Projection p, Matrix64& store) -> const Matrix64* {
    if (!c.use_bias) return nullptr;
    store = widen(model, module_name(l, p) + ".bias");
    return &store;
  };
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string prefix = "model.layers." + std::to_string(l) + ".";
    const auto w = [&](Projection p) { return widen(model, module_name(l, p) + ".weight"); };
    const auto name = [&](Projection p) { return module_name(l, p) + ".weight"; };
    const Matrix64 wq = w(Projection::kQ), wk = w(Projection::kK), wv = w(Projection::kV), wo = w(Projection::kO);
    Matrix64 bq, bk, bv, bo;
    const Matrix64 *pbq = bias(l, Projection::kQ, bq), *pbk = bias(l, Projection::kK, bk),
                   *pbv = bias(l, Projection::kV, bv), *pbo = bias(l, Projection::kO, bo);
    const Matrix64 norm1 = widen(model, prefix + "input_layernorm.weight");
    std::vector<std::vector<double>> q(n), k(n), v(n);
    for (int t = 0; t < n; ++t) {
      const auto x = rmsnorm(h[t], norm1, c.rms_norm_eps);
      for (Projection p : {Projection::kQ, Projection::kK, Projection::kV}) record(e.inputs[name(p)], x);
      q[t] = affine(wq, pbq, x);
      k[t] = affine(wk, pbk, x);
      v[t] = affine(wv, pbv, x);
      rope(q[t], c.num_attention_heads, d, t, c.rope_theta);
      rope(k[t], c.num_key_value_heads, d, t, c.rope_theta);
    }
    const int group = c.num_attention_heads / c.num_key_value_heads;
    for (int t = 0; t < n; ++t) {
      std::vector<double> attn(c.q_dim());
      for (int head = 0; head < c.num_attention_heads; ++head) {
        const int kv = head / group;
        std::vector<double> score(t + 1);
        double top = -INFINITY;
        for (int s = 0; s <= t; ++s) {
          double dot = 0;
          for (int i = 0; i < d; ++i) dot += q[t][head * d + i] * k[s][kv * d + i];
          score[s] = dot / std::sqrt(static_cast<double>(d));
          top = std::max(top, score[s]);
        }
        double total = 0;
        for (double& sc : score) total += (sc = std::exp(sc - top));
        for (int s = 0; s <= t; ++s) {
          for (int i = 0; i < d; ++i) attn[head * d + i] += score[s] / total * v[s][kv * d + i];
        }
      }
      record(e.inputs[name(Projection::kO)], attn);
      const auto o = affine(wo, pbo, attn);
      for (int i = 0; i < hidden; ++i) h[t][i] += o[i];
    }
    const Matrix64 wg = w(Projection::kGate), wu = w(Projection::kUp), wd = w(Projection::kDown);
    Matrix64 bg, bu, bd;
    const Matrix64 *pbg = bias(l, Projection::kGate, bg), *pbu = bias(l, Projection::kUp, bu),
                   *pbd = bias(l, Projection::kDown, bd);
    const Matrix64 norm2 = widen(model, prefix + "post_attention_layernorm.weight");
    for (int t = 0; t < n; ++t) {
      const auto x = rmsnorm(h[t], norm2, c.rms_norm_eps);
      record(e.inputs[name(Projection::kGate)], x);
      record(e.inputs[name(Projection::kUp)], x);
      const auto g = affine(wg, pbg, x), u = affine(wu, pbu, x);
      std::vector<double> act(g.size());
      for (size_t i = 0; i < g.size(); ++i) act[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
      record(e.inputs[name(Projection::kDown)], act);
      const auto down = affine(wd, pbd, act);
      for (int i = 0; i < hidden; ++i) h[t][i] += down[i];
    }
  }
  const std::string head = c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
  const Matrix64 lm = widen(model, head), final_norm = widen(model, "model.norm.weight");
  for (int t = 0; t < n; ++t) {
    const auto x = rmsnorm(h[t], final_norm, c.rms_norm_eps);
    record(e.inputs[head], x);
    const auto logits = affine(lm, nullptr, x);
    e.logits.insert(e.logits.end(), logits.begin(), logits.end());
  }
  return e;
}

// The engine's statistics over `ids`, run in passes of `batch` tokens with every row's logits.
ActivationStats engine_stats(const Model& model, const std::vector<int32_t>& ids, int batch) {
  ActivationStats stats(model.config());
  Session session(model, {.context_length = static_cast<int>(ids.size()), .max_batch_tokens = batch});
  session.set_activation_observer(stats.observer());
  std::vector<float> logits(ids.size() * model.config().vocab_size);
  session.forward(ids, logits);
  return stats;
}

double relative_gap(double a, double b) {
  return std::fabs(a - b) / std::max(std::fabs(b), 1e-30);
}

void expect_equal_stats(const ChannelStats& ours, const ChannelStats& ref, const std::string& name, double tolerance) {
  ASSERT_EQ(ours.rows, ref.rows) << name;
  ASSERT_EQ(ours.sum_squares.size(), ref.sum_squares.size()) << name;
  for (size_t i = 0; i < ref.sum_squares.size(); ++i) {
    ASSERT_LE(relative_gap(ours.sum_squares[i], ref.sum_squares[i]), tolerance) << name << " channel " << i;
    ASSERT_LE(relative_gap(ours.max_abs[i], ref.max_abs[i]), tolerance) << name << " channel " << i;
  }
}

class Calibration : public ::testing::TestWithParam<const char*> {};

// Every matrix's statistics equal the direct computation's (float32 engine against float64: the fixtures README
// measures logit gaps of 5e-5 on values of O(1); sums of squares of O(1) inputs share that precision, so 1e-4
// relative), with the prompt split over several passes. The direct pass is first checked against transformers.
TEST_P(Calibration, StatisticsEqualADirectComputation) {
  const std::string dir = GetParam();
  const auto model = Model::load(fixture(dir + "/model"));
  const auto golden = read_json(fixture(dir + "/ref/golden.json"));
  const auto& prompt = golden["prompts"][0];
  const std::vector<int32_t> ids = prompt["ids"].get<std::vector<int32_t>>();
  const Expected expected = direct_forward(*model, ids);

  const std::vector<float> hf =
      read_f32(fixture(dir + "/ref/" + prompt["name"].get<std::string>() + ".all_logits.f32.bin"));
  ASSERT_EQ(hf.size(), expected.logits.size());
  double diff = 0, norm = 0;
  for (size_t i = 0; i < hf.size(); ++i) {
    diff += (expected.logits[i] - hf[i]) * (expected.logits[i] - hf[i]);
    norm += static_cast<double>(hf[i]) * hf[i];
  }
  ASSERT_LE(std::sqrt(diff / norm), 1e-5) << "the direct float64 forward pass does not reproduce transformers";

  const ActivationStats stats = engine_stats(*model, ids, /*batch=*/7);
  EXPECT_EQ(stats.tokens(), static_cast<int64_t>(ids.size()));
  for (const auto& [name, ref] : expected.inputs) {
    const ChannelStats* ours = stats.of(name);
    ASSERT_NE(ours, nullptr) << name;
    expect_equal_stats(*ours, ref, name, 1e-4);
  }
  EXPECT_EQ(stats.matrices_with_stats(), static_cast<int>(expected.inputs.size()));
  const bool tied = model->config().tie_word_embeddings;
  EXPECT_EQ(stats.of("lm_head.weight") != nullptr, !tied);
  EXPECT_EQ(stats.of("model.embed_tokens.weight") != nullptr, tied);  // as the LM head only
  EXPECT_EQ(stats.of("model.norm.weight"), nullptr);
}

// tiny-ernie: tied embeddings, no biases; tiny-ernie-bias: an LM head of its own, biases.
INSTANTIATE_TEST_SUITE_P(Fixtures, Calibration, ::testing::Values("tiny-ernie", "tiny-ernie-bias"));

// The file is llama.cpp's imatrix GGUF: general.type, the three imatrix.* keys, "<GGUF name>.in_sum2" [width] and
// ".counts" [1] per matrix (plus our ".in_max"); and it reads back to the same statistics.
TEST(CalibrationFile, IsLlamaCppsImatrixLayoutAndRoundTrips) {
  const auto model = Model::load(fixture("tiny-ernie-bias/model"));
  const auto golden = read_json(fixture("tiny-ernie-bias/ref/golden.json"));
  const auto ids = golden["prompts"][0]["ids"].get<std::vector<int32_t>>();
  ActivationStats stats = engine_stats(*model, ids, 16);
  stats.provenance() = {.datasets = {"calibration.txt"}, .chunks = 1, .chunk_size = 512, .file = {}};
  TempDir dir;
  const auto path = dir.path() / "stats.gguf";
  stats.save(path);

  const GgufFile file = GgufFile::open(path);
  EXPECT_EQ(file.get_string("general.type"), "imatrix");
  EXPECT_EQ(file.get_int("imatrix.chunk_count"), 1);
  EXPECT_EQ(file.get_int("imatrix.chunk_size"), 512);
  const GgufArray* datasets = file.get_array("imatrix.datasets", GgufType::STRING);
  ASSERT_NE(datasets, nullptr);
  ASSERT_EQ(datasets->items.size(), 1u);
  const ModelConfig& c = model->config();
  const GgufTensor* down = file.find_tensor("blk.1.ffn_down.weight.in_sum2");
  ASSERT_NE(down, nullptr);
  EXPECT_EQ(down->type, GgmlType::F32);
  EXPECT_EQ(down->ne, (std::vector<int64_t>{c.intermediate_size, 1}));
  const GgufTensor* counts = file.find_tensor("output.weight.counts");
  ASSERT_NE(counts, nullptr);
  EXPECT_EQ(counts->element_count(), 1);
  float count;
  std::memcpy(&count, counts->data, sizeof count);
  EXPECT_EQ(count, static_cast<float>(ids.size()));
  EXPECT_NE(file.find_tensor("blk.0.attn_output.weight.in_max"), nullptr);

  const ActivationStats loaded = ActivationStats::load(path, c);
  EXPECT_EQ(loaded.provenance().chunks, 1u);
  EXPECT_EQ(loaded.provenance().datasets, std::vector<std::string>{"calibration.txt"});
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    for (Projection p : kProjections) {
      const std::string name = module_name(l, p) + ".weight";
      const ChannelStats* a = stats.of(name);
      const ChannelStats* b = loaded.of(name);
      ASSERT_TRUE(a && b) << name;
      EXPECT_EQ(a->rows, b->rows);
      ASSERT_EQ(a->sum_squares.size(), b->sum_squares.size());
      for (size_t i = 0; i < a->sum_squares.size(); ++i) {
        EXPECT_EQ(static_cast<float>(a->sum_squares[i]), static_cast<float>(b->sum_squares[i]));  // stored as F32
        EXPECT_EQ(a->max_abs[i], b->max_abs[i]);
      }
    }
  }
}

// A file written without the LM head and without in_max (as llama-imatrix writes it) loads; missing layers, wrong
// widths, bad counts and foreign files are errors that name the tensor.
TEST(CalibrationFile, ReadsLlamaCppFilesAndRefusesBrokenOnes) {
  const auto model = Model::load(fixture("tiny-ernie/model"));
  const ModelConfig& c = model->config();
  TempDir dir;
  // The statistics of one layer's matrix, with a hook to break it.
  const auto write = [&](const std::filesystem::path& path,
                         const std::function<void(const std::string&, int64_t&, float&)>& edit) {
    GgufWriter writer(path);
    writer.set("general.type", std::string("imatrix"));
    std::vector<std::pair<std::string, int64_t>> entries;
    for (int l = 0; l < c.num_hidden_layers; ++l) {
      for (Projection p : kProjections) {
        const std::string gguf = "blk." + std::to_string(l) + "." +
                                 std::string(p == Projection::kQ      ? "attn_q"
                                             : p == Projection::kK    ? "attn_k"
                                             : p == Projection::kV    ? "attn_v"
                                             : p == Projection::kO    ? "attn_output"
                                             : p == Projection::kGate ? "ffn_gate"
                                             : p == Projection::kUp   ? "ffn_up"
                                                                      : "ffn_down") +
                                 ".weight";
        entries.push_back({gguf, projection_shape(c, p)[1]});
      }
    }
    std::vector<float> counts;
    for (auto& [name, width] : entries) {
      float count = 10.0f;
      edit(name, width, count);
      counts.push_back(count);
      if (width < 0) continue;  // dropped
      writer.declare_tensor(name + ".in_sum2", GgmlType::F32, {1, width});
      writer.declare_tensor(name + ".counts", GgmlType::F32, {1, 1});
    }
    for (size_t i = 0; i < entries.size(); ++i) {
      if (entries[i].second < 0) continue;
      const std::vector<float> sums(entries[i].second, 2.5f);
      writer.write_tensor({reinterpret_cast<const uint8_t*>(sums.data()), sums.size() * 4});
      writer.write_tensor({reinterpret_cast<const uint8_t*>(&counts[i]), 4});
    }
    writer.finish();
  };
  const auto good = dir.path() / "good.gguf";
  write(good, [](const std::string&, int64_t&, float&) {});
  const ActivationStats stats = ActivationStats::load(good, c);
  const ChannelStats* q = stats.of("model.layers.1.self_attn.q_proj.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->rows, 10);
  EXPECT_FLOAT_EQ(q->mean_squares()[3], 0.25f);
  EXPECT_TRUE(q->max_abs.empty());
  EXPECT_EQ(stats.of("model.embed_tokens.weight"), nullptr);  // no LM head entry: plain rounding there

  const auto broken = [&](const char* file, auto edit) {
    const auto path = dir.path() / file;
    write(path, edit);
    return error_of([&] { ActivationStats::load(path, c); });
  };
  EXPECT_MENTIONS(broken("missing.gguf",
                         [](const std::string& n, int64_t& w, float&) {
                           if (n == "blk.1.ffn_up.weight") w = -1;
                         }),
                  "blk.1.ffn_up.weight.in_sum2");
  EXPECT_MENTIONS(broken("width.gguf",
                         [](const std::string& n, int64_t& w, float&) {
                           if (n == "blk.0.ffn_down.weight") w = 64;
                         }),
                  "blk.0.ffn_down.weight.in_sum2");
  EXPECT_MENTIONS(broken("count.gguf",
                         [](const std::string& n, int64_t&, float& count) {
                           if (n == "blk.0.attn_k.weight") count = 0;
                         }),
                  "blk.0.attn_k.weight.counts");
  EXPECT_MENTIONS(error_of([&] { ActivationStats::load(fixture("tiny-ernie/model/config.json"), c); }), "config.json");
}

}  // namespace
}  // namespace ernie
