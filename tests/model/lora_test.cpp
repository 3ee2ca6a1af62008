// LoRA adapters against the same weights merged by hand (tests/lora_support.h): applied per token and folded in at
// load, alone and stacked, with PEFT's rank and scale rules; on quantized base weights; batched beside other
// adapters; and every malformed adapter refused with an error that names the problem.
#include "model/lora.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "lora_support.h"
#include "model/session.h"
#include "test_support.h"

namespace ernie {
namespace {

using testing::error_of;
using testing::fixture;
using testing::relative_error;
using testing::TempDir;
using testing::TestAdapterSpec;
using testing::write_merged_checkpoint;
using testing::write_test_adapter;
using testing::WrittenAdapter;

const std::vector<int32_t> kPrompt = {5, 17, 300, 42, 7, 7, 900, 12, 1000, 3, 64, 511, 77, 2, 901, 33, 18, 250};

std::vector<float> all_logits(const Model& model, std::vector<LoraApplication> lora = {}) {
  Session session(model, SessionOptions{.context_length = 64, .kv_dtype = DType::F32, .lora = std::move(lora)});
  std::vector<float> logits(kPrompt.size() * model.config().vocab_size);
  session.forward(kPrompt, logits);
  return logits;
}

std::vector<int32_t> greedy(const Model& model, std::vector<LoraApplication> lora, int n) {
  Session session(model, SessionOptions{.context_length = 64, .kv_dtype = DType::F32, .lora = std::move(lora)});
  std::vector<int32_t> out;
  auto logits = session.forward(kPrompt);
  for (int i = 0; i < n; ++i) {
    const int32_t next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    out.push_back(next);
    logits = session.forward(std::span(&next, 1));
  }
  return out;
}

class LoraAgainstMergedByHand : public ::testing::Test {
 protected:
  const std::filesystem::path base = fixture("tiny-ernie-bias/model");
  std::unique_ptr<Model> model = Model::load(base);
  TempDir dir;
};

// PEFT's rule y = W x + (alpha / r) · B(A x) on all seven projections, per token and merged at load.
TEST_F(LoraAgainstMergedByHand, AllSevenProjectionsPerTokenAndMerged) {
  const WrittenAdapter written = write_test_adapter(dir.path() / "a", model->config(), TestAdapterSpec{});
  write_merged_checkpoint(base, dir.path() / "merged", {{&written, 1.0}});
  const auto merged = Model::load(dir.path() / "merged");
  const auto adapter = LoraAdapter::load(dir.path() / "a", model->config());
  const auto reference = all_logits(*merged);
  // The adapter is large enough that skipping it, or any one projection's delta, shows.
  ASSERT_GT(relative_error(all_logits(*model), reference), 0.05);

  EXPECT_LE(relative_error(all_logits(*model, {{adapter.get(), 1.0f}}), reference), 1e-5);
  EXPECT_EQ(greedy(*model, {{adapter.get(), 1.0f}}, 12), greedy(*merged, {}, 12));

  const auto folded = Model::load(base, LoadOptions{.merge_lora = {{dir.path() / "a", 1.0f}}});
  EXPECT_EQ(folded->weight_dtype(), "BF16+F32");  // merged matrices keep float32, the others their stored type
  EXPECT_LE(relative_error(all_logits(*folded), reference), 1e-5);
}

// llama.cpp's GGUF adapter format holds the same adapter: the same logits as the PEFT directory, bit for bit.
TEST_F(LoraAgainstMergedByHand, GgufAdapterEqualsPeftDirectory) {
  const WrittenAdapter written = write_test_adapter(dir.path() / "a", model->config(), TestAdapterSpec{.alpha = 8});
  testing::write_test_gguf_adapter(dir.path() / "a.gguf", written, 8);
  const auto peft = LoraAdapter::load(dir.path() / "a", model->config());
  const auto gguf = LoraAdapter::load(dir.path() / "a.gguf", model->config());
  EXPECT_EQ(all_logits(*model, {{gguf.get(), 1.0f}}), all_logits(*model, {{peft.get(), 1.0f}}));
}

// Each projection alone, so that a delta added to the wrong output (or before the bias, the RoPE or the SwiGLU)
// cannot hide behind the others.
TEST_F(LoraAgainstMergedByHand, EachProjectionAlone) {
  for (const char* p : {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}) {
    SCOPED_TRACE(p);
    const auto path = dir.path() / p;
    const WrittenAdapter written = write_test_adapter(path, model->config(), TestAdapterSpec{.projections = {p}});
    write_merged_checkpoint(base, path / "merged", {{&written, 1.0}});
    const auto adapter = LoraAdapter::load(path, model->config());
    const auto reference = all_logits(*Model::load(path / "merged"));
    EXPECT_GT(relative_error(all_logits(*model), reference), 1e-3);
    EXPECT_LE(relative_error(all_logits(*model, {{adapter.get(), 1.0f}}), reference), 1e-5);
  }
}

// rsLoRA's alpha / sqrt(r), rank_pattern and alpha_pattern, layers_to_transform, a regex target, BF16 and F16
// tensors, a scale multiplier, and two adapters stacked.
TEST_F(LoraAgainstMergedByHand, PeftRulesScalesAndStacks) {
  const ModelConfig& c = model->config();
  const WrittenAdapter first =
      write_test_adapter(dir.path() / "first", c,
                         TestAdapterSpec{.rank = 6,
                                         .alpha = 12,
                                         .rslora = true,
                                         .rank_pattern = {{"q_proj", 2}, {"layers.1.mlp.down_proj", 3}},
                                         .alpha_pattern = {{"v_proj", 5.0}},
                                         .dtype = DType::BF16,
                                         .seed = 2});
  const WrittenAdapter second =
      write_test_adapter(dir.path() / "second", c,
                         TestAdapterSpec{.rank = 3,
                                         .alpha = 3,
                                         .projections = {"k_proj", "o_proj", "up_proj"},
                                         .layers = {1},
                                         .dtype = DType::F16,
                                         .seed = 3,
                                         .config_overrides = {{"target_modules", ".*\\.(k_proj|o_proj|up_proj)"}}});
  const auto a = LoraAdapter::load(dir.path() / "first", c);
  const auto b = LoraAdapter::load(dir.path() / "second", c);
  EXPECT_EQ(a->module(0, Projection::kQ)->rank, 2);
  EXPECT_EQ(a->module(1, Projection::kDown)->rank, 3);
  EXPECT_EQ(a->module(0, Projection::kDown)->rank, 6);
  EXPECT_EQ(b->module(0, Projection::kK), nullptr);
  write_merged_checkpoint(base, dir.path() / "merged", {{&first, 0.5}, {&second, -1.5}});
  const auto reference = all_logits(*Model::load(dir.path() / "merged"));
  EXPECT_LE(relative_error(all_logits(*model, {{a.get(), 0.5f}, {b.get(), -1.5f}}), reference), 1e-5);
  const auto folded =
      Model::load(base, LoadOptions{.merge_lora = {{dir.path() / "first", 0.5f}, {dir.path() / "second", -1.5f}}});
  EXPECT_LE(relative_error(all_logits(*folded), reference), 1e-5);
}

// A float adapter over int8 or int4 base weights costs no more than the quantization does: its error against the
// float32 merged reference stays within that of the quantized base against the float32 base (plus rounding room).
TEST_F(LoraAgainstMergedByHand, QuantizedBaseKeepsItsBounds) {
  const WrittenAdapter written = write_test_adapter(dir.path() / "a", model->config(), TestAdapterSpec{});
  write_merged_checkpoint(base, dir.path() / "merged", {{&written, 1.0}});
  const auto reference = all_logits(*Model::load(dir.path() / "merged"));
  const auto base_f32 = all_logits(*model);
  for (DType dtype : {DType::Q8_0, DType::Q4_0}) {
    SCOPED_TRACE(dtype_name(dtype));
    const auto quantized = Model::load(base, LoadOptions{.dtype = dtype});
    const auto adapter = LoraAdapter::load(dir.path() / "a", quantized->config());
    const double base_error = relative_error(all_logits(*quantized), base_f32);
    const double lora_error = relative_error(all_logits(*quantized, {{adapter.get(), 1.0f}}), reference);
    EXPECT_LE(lora_error, 1.25 * base_error + 1e-3) << "quantized base alone: " << base_error;
    // Merged then quantized (--lora-merge --dtype): the same bound.
    const auto folded = Model::load(base, LoadOptions{.dtype = dtype, .merge_lora = {{dir.path() / "a", 1.0f}}});
    EXPECT_LE(relative_error(all_logits(*folded), reference), 1.25 * base_error + 1e-3);
  }
}

// One step holding rows of the base model, of each of two adapters and of both stacked gives every row what it
// computes alone, bit for bit (a row without adapters included, though the step splits the fused SwiGLU for the
// others).
TEST_F(LoraAgainstMergedByHand, MixedAdapterStepMatchesEachAlone) {
  const ModelConfig& c = model->config();
  write_test_adapter(dir.path() / "a", c, TestAdapterSpec{.seed = 4});
  write_test_adapter(dir.path() / "b", c,
                     TestAdapterSpec{.rank = 2, .projections = {"gate_proj", "q_proj"}, .seed = 5});
  const auto a = LoraAdapter::load(dir.path() / "a", c), b = LoraAdapter::load(dir.path() / "b", c);
  const std::vector<LoraApplication> only_a = {{a.get(), 1.0f}}, only_b = {{b.get(), 0.7f}},
                                     both = {{a.get(), 1.0f}, {b.get(), 0.7f}};
  const std::vector<LoraStack> stacks = {{}, only_a, only_b, both};
  const int vocab = c.vocab_size;
  std::vector<std::vector<float>> alone;
  for (const LoraStack& s : stacks) {
    Session session(*model, SessionOptions{.context_length = 64,
                                           .kv_dtype = DType::F32,
                                           .lora = std::vector<LoraApplication>(s.begin(), s.end())});
    const auto logits = session.forward(kPrompt);
    alone.emplace_back(logits.begin(), logits.end());
  }
  KvCache cache(c, KvCacheOptions{.blocks = 16, .dtype = DType::F32});
  Workspace ws(*model, 128, nullptr, 64, lora_stack_rank(both));
  std::vector<Sequence> seqs(4, Sequence(64));
  std::vector<Chunk> step;
  for (size_t i = 0; i < stacks.size(); ++i) {
    ASSERT_TRUE(cache.reserve(seqs[i], static_cast<int>(kPrompt.size())));
    step.push_back(Chunk{&seqs[i], kPrompt, Logits::kLast, stacks[i]});
  }
  std::vector<float> logits(stacks.size() * vocab);
  forward(*model, cache, ws, step, logits);
  for (size_t i = 0; i < stacks.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(std::vector<float>(logits.begin() + i * vocab, logits.begin() + (i + 1) * vocab), alone[i]);
  }
  // A workspace sized for less rank than a chunk's stack refuses the step and changes nothing.
  Workspace small(*model, 128, nullptr, 64, a->max_rank());
  Sequence fresh(64);
  ASSERT_TRUE(cache.reserve(fresh, 4));
  const Chunk too_much{&fresh, std::span(kPrompt).first(4), Logits::kLast, both};
  std::vector<float> one(vocab);
  EXPECT_MENTIONS(error_of([&] { forward(*model, cache, small, std::span(&too_much, 1), one); }), "max_lora_rank");
  EXPECT_EQ(fresh.position(), 0);
}

// ---- Malformed adapters ---------------------------------------------------------------------------------------------

class BadAdapter : public ::testing::Test {
 protected:
  std::unique_ptr<Model> model = Model::load(fixture("tiny-ernie-bias/model"));
  TempDir dir;
  std::filesystem::path path = dir.path() / "adapter";

  std::string load_error() {
    return error_of([&] { LoraAdapter::load(path, model->config()); });
  }
  // Rewrites the adapter's safetensors with `edit` applied to the tensor list.
  template <class Edit>
  void edit_tensors(Edit&& edit) {
    std::vector<std::tuple<std::string, DType, std::vector<int64_t>, std::vector<uint8_t>>> kept;
    {
      const SafetensorsArchive archive = SafetensorsArchive::open(path / "adapter_model.safetensors");
      for (const auto& [name, v] : archive.tensors())
        kept.emplace_back(name, v.dtype, v.shape, std::vector<uint8_t>(v.data, v.data + v.nbytes));
    }
    edit(kept);
    std::vector<TensorToWrite> tensors;
    for (auto& [name, dtype, shape, bytes] : kept) {
      tensors.push_back({name, dtype, shape, [&bytes](uint8_t* out) { std::memcpy(out, bytes.data(), bytes.size()); }});
    }
    write_safetensors(path / "adapter_model.safetensors", tensors);
  }
  void edit_config(const nlohmann::json& overrides) {
    nlohmann::json config = testing::read_json(path / "adapter_config.json");
    config.update(overrides);
    testing::write_text(path / "adapter_config.json", config.dump());
  }
  void SetUp() override { write_test_adapter(path, model->config(), TestAdapterSpec{}); }
};

const char* kQ0A = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
const char* kQ0B = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";

TEST_F(BadAdapter, MissingAOrB) {
  edit_tensors([](auto& t) { std::erase_if(t, [](auto& x) { return std::get<0>(x) == kQ0B; }); });
  const std::string e = load_error();
  EXPECT_MENTIONS(e, "model.layers.0.self_attn.q_proj");
  EXPECT_MENTIONS(e, "no lora_B");
}

TEST_F(BadAdapter, WholeModuleMissing) {
  edit_tensors(
      [](auto& t) { std::erase_if(t, [](auto& x) { return std::get<0>(x) == kQ0A || std::get<0>(x) == kQ0B; }); });
  EXPECT_MENTIONS(load_error(), "model.layers.0.self_attn.q_proj is targeted");
}

TEST_F(BadAdapter, WrongBaseShape) {
  edit_tensors([](auto& t) {
    for (auto& [name, dtype, shape, bytes] : t) {
      if (name == kQ0A) {  // [4, in] read as [4, in / 2, 2]... keep bytes, lie about the shape
        shape = {shape[0] * 2, shape[1] / 2};
      }
    }
  });
  const std::string e = load_error();
  EXPECT_MENTIONS(e, kQ0A);
  EXPECT_MENTIONS(e, "expected [4, ");
}

TEST_F(BadAdapter, RankDisagreesWithConfig) {
  edit_config({{"r", 8}});
  EXPECT_MENTIONS(load_error(), "rank 8");
}

TEST_F(BadAdapter, UnknownModule) {
  edit_tensors([](auto& t) {
    auto copy = t.front();
    std::get<0>(copy) = "base_model.model.model.layers.0.mlp.fc9.lora_A.weight";
    t.push_back(copy);
  });
  EXPECT_MENTIONS(load_error(), "base_model.model.model.layers.0.mlp.fc9.lora_A.weight");
}

TEST_F(BadAdapter, LmHeadAndEmbedding) {
  edit_tensors([](auto& t) {
    auto copy = t.front();
    std::get<0>(copy) = "base_model.model.lm_head.lora_A.weight";
    t.push_back(copy);
  });
  EXPECT_MENTIONS(load_error(), "lm_head");
}

TEST_F(BadAdapter, LayerOutsideTheModel) {
  edit_tensors([](auto& t) {
    auto copy = t.front();
    std::get<0>(copy) = "base_model.model.model.layers.99.self_attn.q_proj.lora_A.weight";
    t.push_back(copy);
  });
  EXPECT_MENTIONS(load_error(), "layers.99");
}

TEST_F(BadAdapter, DoraIsRefused) {
  edit_config({{"use_dora", true}});
  EXPECT_MENTIONS(load_error(), "DoRA");
  edit_config({{"use_dora", false}});
  edit_tensors([](auto& t) {
    auto copy = t.front();
    std::get<0>(copy) = "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector";
    t.push_back(copy);
  });
  EXPECT_MENTIONS(load_error(), "DoRA");
}

TEST_F(BadAdapter, RankZero) {
  edit_config({{"r", 0}});
  EXPECT_MENTIONS(load_error(), "r = 0");
}

TEST_F(BadAdapter, ConfigKeysWeCannotHonour) {
  edit_config({{"bias", "all"}});
  EXPECT_MENTIONS(load_error(), "bias");
  edit_config({{"bias", "none"}, {"modules_to_save", {"lm_head"}}});
  EXPECT_MENTIONS(load_error(), "modules_to_save");
  edit_config({{"modules_to_save", nullptr}, {"peft_type", "IA3"}});
  EXPECT_MENTIONS(load_error(), "peft_type");
  edit_config({{"peft_type", "LORA"}, {"target_modules", "(unclosed"}});
  EXPECT_MENTIONS(load_error(), "target_modules");
  edit_config({{"target_modules", {"v_proj"}}});  // tensors for modules the config does not target
  EXPECT_MENTIONS(load_error(), "does not target");
}

// Patterns come from a file anyone may hand the server's load route. One nested a hundred thousand deep (which a
// recursive parser such as std::regex's overflows the stack on) means what the flat one means; one with a construct
// the regex engine lacks is a one-line error.
TEST_F(BadAdapter, HostileOrUnsupportedPatterns) {
  const std::string deep = std::string(100000, '(') + ".*\\.q_proj" + std::string(100000, ')');
  edit_config({{"target_modules", deep}});  // targets q_proj alone, so the adapter's other tensors are refused
  EXPECT_MENTIONS(load_error(), "mlp.down_proj, which adapter_config.json does not target");
  edit_config({{"target_modules", ".*(?=q_proj).*"}});  // a lookahead, which RE2 refuses
  EXPECT_MENTIONS(load_error(), "not a usable regular expression");
  edit_config({{"target_modules", ".*proj"}, {"rank_pattern", {{"(a*)*\\1", 4}}}});  // a backreference
  EXPECT_MENTIONS(load_error(), "rank_pattern key");
  // Nested quantifiers, which a backtracking engine explores exponentially, compile and match as Python's would.
  edit_config({{"rank_pattern", nlohmann::json::object()}, {"target_modules", "(.*)*(.*)*(.*)*x_proj"}});
  EXPECT_MENTIONS(load_error(), "does not target");
}

TEST_F(BadAdapter, GgufFilesThatAreNotAdapters) {
  {
    GgufWriter model_file(dir.path() / "model.gguf");  // what a model file says of itself
    model_file.set("general.architecture", std::string("ernie4_5"));
    model_file.set("general.type", std::string("model"));
    model_file.finish();
  }
  path = dir.path() / "model.gguf";
  EXPECT_MENTIONS(load_error(), "not a LoRA adapter");
  const WrittenAdapter written = write_test_adapter(dir.path() / "b", model->config(), TestAdapterSpec{.rank = 2});
  WrittenAdapter wrong = written;
  wrong.begin()->second.in /= 2;  // a lora_a for a narrower matrix
  wrong.begin()->second.a.resize(wrong.begin()->second.a.size() / 2);
  path = dir.path() / "wrong.gguf";
  testing::write_test_gguf_adapter(path, wrong, 4);
  EXPECT_MENTIONS(load_error(), ".lora_a has ne");
}

TEST_F(BadAdapter, NonFiniteWeightAndMissingFiles) {
  edit_tensors([](auto& t) {
    for (auto& [name, dtype, shape, bytes] : t) {
      if (name == kQ0B) {
        const float inf = INFINITY;
        std::memcpy(bytes.data(), &inf, sizeof inf);
      }
    }
  });
  EXPECT_MENTIONS(load_error(), "non-finite");
  std::filesystem::remove(path / "adapter_model.safetensors");
  EXPECT_MENTIONS(load_error(), "adapter_model.safetensors");
  testing::write_text(path / "adapter_model.bin", "pickle");
  EXPECT_MENTIONS(load_error(), "adapter_model.bin");
  std::filesystem::remove(path / "adapter_config.json");
  EXPECT_MENTIONS(load_error(), "adapter_config.json");
  path = dir.path() / "nowhere";
  EXPECT_MENTIONS(load_error(), "nowhere");
}

}  // namespace
}  // namespace ernie
