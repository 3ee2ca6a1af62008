// Loading a checkpoint: config.json parsing and validation, the tensor-by-tensor check against the config, the
// generation defaults, and Session's input checks. Each broken checkpoint is a copy of a fixture in a TempDir.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/config.h"
#include "model/session.h"
#include "test_support.h"

namespace ernie {
namespace {

namespace fs = std::filesystem;
using ernie::testing::fixture;
using ernie::testing::read_json;
using ernie::testing::TempDir;
using nlohmann::json;

using ernie::testing::Bytes;
using ernie::testing::error_of;
using ernie::testing::read_bytes;
using ernie::testing::write_bytes;
using ernie::testing::write_text;

// A safetensors file as an ordered list of (name, entry without offsets, bytes); rewritten contiguously.
struct Checkpoint {
  struct Tensor {
    std::string name;
    std::string dtype;
    std::vector<int64_t> shape;
    Bytes bytes;
  };
  std::vector<Tensor> tensors;

  static Checkpoint read(const fs::path& path) {
    const Bytes file = read_bytes(path);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = header_len << 8 | file[i];
    const json header = json::parse(file.begin() + 8, file.begin() + 8 + static_cast<long>(header_len));
    const auto data = file.begin() + 8 + static_cast<long>(header_len);
    Checkpoint c;
    for (const auto& [name, entry] : header.items()) {
      if (name == "__metadata__") continue;
      const auto offsets = entry["data_offsets"].get<std::vector<long>>();
      c.tensors.push_back({name, entry["dtype"].get<std::string>(), entry["shape"].get<std::vector<int64_t>>(),
                           Bytes(data + offsets[0], data + offsets[1])});
    }
    return c;
  }
  void write(const fs::path& path) const {
    json header = {{"__metadata__", {{"format", "pt"}}}};
    Bytes data;
    for (const auto& t : tensors) {
      header[t.name] = {
          {"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
      data.insert(data.end(), t.bytes.begin(), t.bytes.end());
    }
    std::string text = header.dump();
    while (text.size() % 8) text += ' ';
    Bytes out(8);
    for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));
    out.insert(out.end(), text.begin(), text.end());
    out.insert(out.end(), data.begin(), data.end());
    write_bytes(path, out);
  }
  bool erase(const std::string& name) {
    for (auto it = tensors.begin(); it != tensors.end(); ++it) {
      if (it->name == name) {
        tensors.erase(it);
        return true;
      }
    }
    return false;
  }
};

// A writable copy of a fixture checkpoint directory (the fixtures themselves are read-only).
class CheckpointCopy {
 public:
  explicit CheckpointCopy(const std::string& fixture_dir) {
    for (const auto& entry : fs::directory_iterator(fixture(fixture_dir))) {
      const fs::path target = dir_.path() / entry.path().filename();
      write_bytes(target, read_bytes(entry.path()));
    }
    config_ = read_json(dir_.path() / "config.json");
  }
  const fs::path& dir() const { return dir_.path(); }
  fs::path file(const std::string& name) const { return dir_.path() / name; }
  json& config() { return config_; }
  void save_config() { write_text(file("config.json"), config_.dump(1)); }

 private:
  TempDir dir_;
  json config_;
};

std::string load_error(const fs::path& dir) {
  return error_of([&] { Model::load(dir); });
}
std::string config_error(const fs::path& dir) {
  return error_of([&] { ModelConfig::load(dir); });
}

// ---- the fixtures load ---------------------------------------------------------------------------------------------

TEST(ConfigLoad, FixtureValuesComeFromConfigJson) {
  for (const char* name : {"tiny-ernie/model", "tiny-ernie-bias/model"}) {
    SCOPED_TRACE(name);
    const json j = read_json(fixture(std::string(name) + "/config.json"));
    const ModelConfig c = ModelConfig::load(fixture(name));
    EXPECT_EQ(c.hidden_size, j["hidden_size"].get<int>());
    EXPECT_EQ(c.intermediate_size, j["intermediate_size"].get<int>());
    EXPECT_EQ(c.num_hidden_layers, j["num_hidden_layers"].get<int>());
    EXPECT_EQ(c.num_attention_heads, j["num_attention_heads"].get<int>());
    EXPECT_EQ(c.num_key_value_heads, j["num_key_value_heads"].get<int>());
    EXPECT_EQ(c.head_dim, j["head_dim"].get<int>());
    EXPECT_EQ(c.vocab_size, j["vocab_size"].get<int>());
    EXPECT_EQ(c.max_position_embeddings, j["max_position_embeddings"].get<int>());
    EXPECT_EQ(c.rms_norm_eps, j["rms_norm_eps"].get<float>());
    EXPECT_EQ(c.rope_theta, j["rope_theta"].get<float>());
    EXPECT_EQ(c.tie_word_embeddings, j["tie_word_embeddings"].get<bool>());
    EXPECT_EQ(c.use_bias, j["use_bias"].get<bool>());
    EXPECT_EQ(c.bos_token_id, j["bos_token_id"].get<int>());
    EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>{j["eos_token_id"].get<int32_t>()});
    EXPECT_EQ(c.pad_token_id, j["pad_token_id"].get<int>());
    EXPECT_EQ(c.torch_dtype, j["dtype"].get<std::string>());
    EXPECT_EQ(c.q_dim(), c.num_attention_heads * c.head_dim);
    EXPECT_EQ(c.kv_dim(), c.num_key_value_heads * c.head_dim);
  }
}

TEST(ModelLoad, BindsEveryFixtureTensor) {
  for (const char* name : {"tiny-ernie/model", "tiny-ernie/model-fp32", "tiny-ernie-bias/model"}) {
    SCOPED_TRACE(name);
    const auto model = Model::load(fixture(name));
    const ModelConfig& c = model->config();
    const ModelWeights& w = model->weights();
    EXPECT_EQ(w.layers.size(), static_cast<size_t>(c.num_hidden_layers));
    EXPECT_EQ(w.embed_tokens.rows, c.vocab_size);
    EXPECT_EQ(w.embed_tokens.cols, c.hidden_size);
    EXPECT_EQ(w.final_norm.size(), static_cast<size_t>(c.hidden_size));
    if (c.tie_word_embeddings)
      EXPECT_EQ(w.lm_head.data, w.embed_tokens.data);
    else
      EXPECT_NE(w.lm_head.data, w.embed_tokens.data);
    for (const auto& layer : w.layers) {
      EXPECT_EQ(layer.q_bias.empty(), !c.use_bias);
      EXPECT_EQ(layer.down_bias.size(), c.use_bias ? static_cast<size_t>(c.hidden_size) : 0u);
      EXPECT_EQ(layer.gate_proj.rows, c.intermediate_size);
      EXPECT_EQ(layer.k_proj.rows, c.kv_dim());
    }
  }
}

// ---- config.json problems ------------------------------------------------------------------------------------------

TEST(ConfigLoad, ChangedShapeNamesTheTensorAndBothShapes) {
  CheckpointCopy ckpt("tiny-ernie/model");
  const int stored = ckpt.config()["intermediate_size"].get<int>();
  const int hidden = ckpt.config()["hidden_size"].get<int>();
  ckpt.config()["intermediate_size"] = 191;
  ckpt.save_config();
  const std::string message = load_error(ckpt.dir());
  EXPECT_MENTIONS(message, "model.safetensors");
  const auto shape = [](int a, int b) {
    std::string text = "[";
    text += std::to_string(a);
    text += ", ";
    text += std::to_string(b);
    return text + "]";
  };
  if (message.find("mlp.down_proj.weight") != std::string::npos) {
    EXPECT_MENTIONS(message, shape(hidden, stored));
    EXPECT_MENTIONS(message, shape(hidden, 191));
  } else {
    EXPECT_TRUE(message.find("mlp.gate_proj.weight") != std::string::npos ||
                message.find("mlp.up_proj.weight") != std::string::npos)
        << message;
    EXPECT_MENTIONS(message, shape(stored, hidden));
    EXPECT_MENTIONS(message, shape(191, hidden));
  }
  EXPECT_MENTIONS(message, "model.layers.");
}

TEST(ConfigLoad, WrongModelTypeNamesTheSupportedType) {
  CheckpointCopy ckpt("tiny-ernie/model");
  ckpt.config()["model_type"] = "llama";
  ckpt.save_config();
  std::string message = config_error(ckpt.dir());
  EXPECT_MENTIONS(message, "config.json");
  EXPECT_MENTIONS(message, "llama");
  EXPECT_MENTIONS(message, "ernie4_5");
  EXPECT_MENTIONS(load_error(ckpt.dir()), "ernie4_5");

  ckpt.config().erase("model_type");
  ckpt.save_config();
  message = config_error(ckpt.dir());
  EXPECT_MENTIONS(message, "model_type");
  EXPECT_MENTIONS(message, "ernie4_5");

  ckpt.config()["model_type"] = "ernie4_5_moe";  // the MoE sibling is a different model
  ckpt.save_config();
  EXPECT_MENTIONS(config_error(ckpt.dir()), "ernie4_5_moe");
}

TEST(ConfigLoad, WrongArchitectures) {
  CheckpointCopy ckpt("tiny-ernie/model");
  ckpt.config()["architectures"] = {"LlamaForCausalLM"};
  ckpt.save_config();
  const std::string message = config_error(ckpt.dir());
  EXPECT_MENTIONS(message, "config.json");
  EXPECT_MENTIONS(message, "LlamaForCausalLM");
  EXPECT_MENTIONS(message, "Ernie4_5ForCausalLM");

  ckpt.config()["architectures"] = "Ernie4_5ForCausalLM";  // a string, not a list
  ckpt.save_config();
  EXPECT_MENTIONS(config_error(ckpt.dir()), "architectures");

  ckpt.config()["architectures"] = {"Ernie4_5_ForCausalLM"};  // the remote-code class name is accepted
  ckpt.save_config();
  EXPECT_NO_THROW(ModelConfig::load(ckpt.dir()));
  ckpt.config()["architectures"] = nullptr;  // null means absent, as transformers reads it; model_type decides
  ckpt.save_config();
  EXPECT_NO_THROW(ModelConfig::load(ckpt.dir()));
}

TEST(ConfigLoad, MissingHiddenSize) {
  CheckpointCopy ckpt("tiny-ernie/model");
  ckpt.config().erase("hidden_size");
  ckpt.save_config();
  const std::string message = config_error(ckpt.dir());
  EXPECT_MENTIONS(message, "config.json");
  EXPECT_MENTIONS(message, "hidden_size");
}

TEST(ConfigLoad, HiddenSizeAsAString) {
  CheckpointCopy ckpt("tiny-ernie/model");
  ckpt.config()["hidden_size"] = ckpt.config()["hidden_size"].dump();  // "64"
  ckpt.save_config();
  const std::string message = config_error(ckpt.dir());
  EXPECT_MENTIONS(message, "config.json");
  EXPECT_MENTIONS(message, "hidden_size");
}

TEST(ConfigLoad, OtherMistypedOrInvalidFields) {
  const std::pair<const char*, json> cases[] = {
      {"num_hidden_layers", 2.5},     {"vocab_size", -3},
      {"num_attention_heads", 0},     {"intermediate_size", nullptr},
      {"tie_word_embeddings", "yes"}, {"rms_norm_eps", "1e-5"},
      {"hidden_size", 1e12},
  };
  for (const auto& [key, value] : cases) {
    SCOPED_TRACE(key);
    CheckpointCopy ckpt("tiny-ernie/model");
    ckpt.config()[key] = value;
    ckpt.save_config();
    EXPECT_MENTIONS(config_error(ckpt.dir()), key);
  }
}

TEST(ConfigLoad, HeadsNotAMultipleOfKvHeads) {
  CheckpointCopy ckpt("tiny-ernie/model");
  ckpt.config()["num_attention_heads"] = 4;
  ckpt.config()["num_key_value_heads"] = 3;
  ckpt.save_config();
  const std::string message = config_error(ckpt.dir());
  EXPECT_MENTIONS(message, "config.json");
  EXPECT_MENTIONS(message, "num_key_value_heads");
}

TEST(ConfigLoad, HeadDimDefaultsToHiddenOverHeads) {
  CheckpointCopy ckpt("tiny-ernie/model");
  const int hidden = ckpt.config()["hidden_size"].get<int>();
  ckpt.config().erase("head_dim");
  ckpt.save_config();
  const ModelConfig c = ModelConfig::load(ckpt.dir());
  EXPECT_EQ(c.head_dim, hidden / ckpt.config()["num_attention_heads"].get<int>());
  // Other head counts give a different default, so this is not a constant.
  ckpt.config()["num_attention_heads"] = 8;
  ckpt.config()["num_key_value_heads"] = 2;
  ckpt.save_config();
  EXPECT_EQ(ModelConfig::load(ckpt.dir()).head_dim, hidden / 8);
  // An explicit head_dim is used as given even when it differs from hidden / heads (ERNIE-4.5-0.3B: 1024 / 16 != 128).
  ckpt.config()["head_dim"] = 32;
  ckpt.save_config();
  EXPECT_EQ(ModelConfig::load(ckpt.dir()).head_dim, 32);
  EXPECT_EQ(ModelConfig::load(ckpt.dir()).q_dim(), 8 * 32);
  // An odd head_dim cannot pair dimensions for RoPE.
  ckpt.config()["head_dim"] = 15;
  ckpt.save_config();
  EXPECT_MENTIONS(config_error(ckpt.dir()), "head_dim");
}

TEST(ConfigLoad, RopeThetaOnlyTopLevel) {
  CheckpointCopy ckpt("tiny-ernie/model");
  ckpt.config().erase("rope_parameters");
  ckpt.config()["rope_theta"] = 10000.0;
  ckpt.save_config();
  EXPECT_EQ(ModelConfig::load(ckpt.dir()).rope_theta, 10000.0f);
  ckpt.config()["rope_theta"] = 250000;  // an integer in JSON
  ckpt.save_config();
  EXPECT_EQ(ModelConfig::load(ckpt.dir()).rope_theta, 250000.0f);
}

TEST(ConfigLoad, RopeThetaOnlyInRopeParameters) {
  CheckpointCopy ckpt("tiny-ernie/model");
  ckpt.config().erase("rope_theta");
  ckpt.config()["rope_parameters"] = {{"rope_theta", 20000.0}, {"rope_type", "default"}};
  ckpt.save_config();
  EXPECT_EQ(ModelConfig::load(ckpt.dir()).rope_theta, 20000.0f);
}

TEST(ConfigLoad, UnsupportedRopeTypeIsAnError) {
  CheckpointCopy ckpt("tiny-ernie/model");
  ckpt.config()["rope_parameters"]["rope_type"] = "yarn";
  ckpt.save_config();
  EXPECT_MENTIONS(config_error(ckpt.dir()), "yarn");
}

TEST(ConfigLoad, ConfigNotJson) {
  CheckpointCopy ckpt("tiny-ernie/model");
  write_text(ckpt.file("config.json"), "{\"hidden_size\": 64,");
  std::string message = config_error(ckpt.dir());
  EXPECT_MENTIONS(message, "config.json");
  EXPECT_MENTIONS(load_error(ckpt.dir()), "config.json");
  write_text(ckpt.file("config.json"), "[1, 2]");
  EXPECT_MENTIONS(config_error(ckpt.dir()), "config.json");
}

TEST(ConfigLoad, ConfigMissing) {
  CheckpointCopy ckpt("tiny-ernie/model");
  fs::remove(ckpt.file("config.json"));
  EXPECT_MENTIONS(config_error(ckpt.dir()), "config.json");
}

TEST(ConfigLoad, EosTokenIdMayBeAList) {
  CheckpointCopy ckpt("tiny-ernie/model");
  ckpt.config()["eos_token_id"] = {2, 7};
  ckpt.save_config();
  EXPECT_EQ(ModelConfig::load(ckpt.dir()).eos_token_ids, (std::vector<int32_t>{2, 7}));
}

// ---- checkpoint contents vs config ---------------------------------------------------------------------------------

TEST(ModelLoad, ExtraTensorIsUnexpected) {
  CheckpointCopy ckpt("tiny-ernie/model");
  Checkpoint c = Checkpoint::read(ckpt.file("model.safetensors"));
  c.tensors.push_back({"model.layers.0.extra.weight", "BF16", {2, 3}, Bytes(12, 0)});
  c.write(ckpt.file("model.safetensors"));
  const std::string message = load_error(ckpt.dir());
  EXPECT_MENTIONS(message, "unexpected tensor");
  EXPECT_MENTIONS(message, "model.layers.0.extra.weight");
  EXPECT_MENTIONS(message, "model.safetensors");
}

TEST(ModelLoad, ExtraLayerIsUnexpected) {
  // A layer beyond num_hidden_layers: the file has more layers than the config says.
  CheckpointCopy ckpt("tiny-ernie/model");
  const int layers = ckpt.config()["num_hidden_layers"].get<int>();
  ckpt.config()["num_hidden_layers"] = layers - 1;
  ckpt.save_config();
  const std::string message = load_error(ckpt.dir());
  EXPECT_MENTIONS(message, "unexpected tensor");
  EXPECT_MENTIONS(message, "model.layers." + std::to_string(layers - 1) + ".");
}

TEST(ModelLoad, RemovedTensorIsMissing) {
  CheckpointCopy ckpt("tiny-ernie/model");
  Checkpoint c = Checkpoint::read(ckpt.file("model.safetensors"));
  ASSERT_TRUE(c.erase("model.layers.1.self_attn.v_proj.weight"));
  c.write(ckpt.file("model.safetensors"));
  const std::string message = load_error(ckpt.dir());
  EXPECT_MENTIONS(message, "missing tensor");
  EXPECT_MENTIONS(message, "model.layers.1.self_attn.v_proj.weight");
  EXPECT_MENTIONS(message, "model.safetensors");
}

TEST(ModelLoad, UseBiasOnCheckpointWithoutBiases) {
  CheckpointCopy ckpt("tiny-ernie/model");
  ckpt.config()["use_bias"] = true;
  ckpt.save_config();
  const std::string message = load_error(ckpt.dir());
  EXPECT_MENTIONS(message, "missing tensor");
  EXPECT_MENTIONS(message, ".bias");
  EXPECT_MENTIONS(message, "model.layers.0.");
}

TEST(ModelLoad, NoBiasConfigOnCheckpointWithBiases) {
  CheckpointCopy ckpt("tiny-ernie-bias/model");
  ckpt.config()["use_bias"] = false;
  ckpt.save_config();
  const std::string message = load_error(ckpt.dir());
  EXPECT_MENTIONS(message, "unexpected tensor");
  EXPECT_MENTIONS(message, ".bias");
  EXPECT_MENTIONS(message, "use_bias");
}

TEST(ModelLoad, UntiedConfigOnTiedCheckpointNeedsLmHead) {
  CheckpointCopy ckpt("tiny-ernie/model");
  ckpt.config()["tie_word_embeddings"] = false;
  ckpt.save_config();
  const std::string message = load_error(ckpt.dir());
  EXPECT_MENTIONS(message, "missing tensor");
  EXPECT_MENTIONS(message, "lm_head.weight");
}

TEST(ModelLoad, TiedConfigOnUntiedCheckpointRejectsLmHead) {
  CheckpointCopy ckpt("tiny-ernie-bias/model");
  ckpt.config()["tie_word_embeddings"] = true;
  ckpt.save_config();
  const std::string message = load_error(ckpt.dir());
  EXPECT_MENTIONS(message, "unexpected tensor");
  EXPECT_MENTIONS(message, "lm_head.weight");
  EXPECT_MENTIONS(message, "tie_word_embeddings");
}

TEST(ModelLoad, TensorWithWrongRankNamesIt) {
  CheckpointCopy ckpt("tiny-ernie/model");
  Checkpoint c = Checkpoint::read(ckpt.file("model.safetensors"));
  for (auto& t : c.tensors) {
    if (t.name == "model.norm.weight") t.shape = {1, t.shape[0]};
  }
  c.write(ckpt.file("model.safetensors"));
  const std::string message = load_error(ckpt.dir());
  EXPECT_MENTIONS(message, "model.norm.weight");
  const int hidden = ckpt.config()["hidden_size"].get<int>();
  EXPECT_MENTIONS(message, "[1, " + std::to_string(hidden) + "]");
  EXPECT_MENTIONS(message, "[" + std::to_string(hidden) + "]");
}

TEST(ModelLoad, NotADirectory) {
  TempDir dir;
  EXPECT_MENTIONS(load_error(dir.path() / "absent"), "absent");
}

// ---- generation_config.json ----------------------------------------------------------------------------------------

TEST(GenerationDefaults, ReadsTheFixtureFile) {
  const fs::path dir = fixture("tiny-ernie/model");
  const json j = read_json(dir / "generation_config.json");
  const GenerationDefaults g = GenerationDefaults::load(dir);
  ASSERT_TRUE(g.do_sample.has_value());
  EXPECT_EQ(*g.do_sample, j["do_sample"].get<bool>());
  EXPECT_TRUE(*g.do_sample);
  ASSERT_TRUE(g.top_p.has_value());
  EXPECT_EQ(*g.top_p, j["top_p"].get<float>());
  EXPECT_FLOAT_EQ(*g.top_p, 0.8f);
  ASSERT_TRUE(g.temperature.has_value());
  EXPECT_EQ(*g.temperature, j["temperature"].get<float>());
  EXPECT_FLOAT_EQ(*g.temperature, 0.8f);
  ASSERT_TRUE(g.repetition_penalty.has_value());
  EXPECT_EQ(*g.repetition_penalty, j["repetition_penalty"].get<float>());
  EXPECT_FALSE(j.contains("top_k"));
  EXPECT_FALSE(g.top_k.has_value());
  EXPECT_FALSE(j.contains("max_new_tokens"));
  EXPECT_FALSE(g.max_new_tokens.has_value());
  EXPECT_EQ(g.eos_token_ids, std::vector<int32_t>{j["eos_token_id"].get<int32_t>()});
}

TEST(GenerationDefaults, MissingFileLeavesEverythingUnset) {
  TempDir dir;
  const GenerationDefaults g = GenerationDefaults::load(dir.path());
  EXPECT_FALSE(g.do_sample.has_value());
  EXPECT_FALSE(g.temperature.has_value());
  EXPECT_FALSE(g.top_p.has_value());
  EXPECT_FALSE(g.top_k.has_value());
  EXPECT_FALSE(g.repetition_penalty.has_value());
  EXPECT_FALSE(g.max_new_tokens.has_value());
  EXPECT_TRUE(g.eos_token_ids.empty());
}

TEST(GenerationDefaults, ReadsEveryField) {
  TempDir dir;
  const json j = {{"do_sample", false},        {"temperature", 0.6},   {"top_p", 0.95},         {"top_k", 40},
                  {"repetition_penalty", 1.3}, {"max_new_tokens", 77}, {"eos_token_id", {2, 5}}};
  write_text(dir.path() / "generation_config.json", j.dump());
  const GenerationDefaults g = GenerationDefaults::load(dir.path());
  EXPECT_EQ(g.do_sample, false);
  EXPECT_EQ(g.temperature, 0.6f);
  EXPECT_EQ(g.top_p, 0.95f);
  EXPECT_EQ(g.top_k, 40);
  EXPECT_EQ(g.repetition_penalty, 1.3f);
  EXPECT_EQ(g.max_new_tokens, 77);
  EXPECT_EQ(g.eos_token_ids, (std::vector<int32_t>{2, 5}));

  write_text(dir.path() / "generation_config.json", R"({"top_p": null, "temperature": 1})");
  const GenerationDefaults h = GenerationDefaults::load(dir.path());
  EXPECT_FALSE(h.top_p.has_value());  // null means unset
  EXPECT_EQ(h.temperature, 1.0f);     // an integer is a valid number
  EXPECT_FALSE(h.do_sample.has_value());
}

TEST(GenerationDefaults, MalformedFileIsAnError) {
  TempDir dir;
  write_text(dir.path() / "generation_config.json", "{\"top_p\": ");
  EXPECT_MENTIONS(error_of([&] { GenerationDefaults::load(dir.path()); }), "generation_config.json");
  write_text(dir.path() / "generation_config.json", "{\"top_k\": \"fifty\"}");
  const std::string message = error_of([&] { GenerationDefaults::load(dir.path()); });
  EXPECT_MENTIONS(message, "generation_config.json");
  EXPECT_MENTIONS(message, "top_k");
}

// ---- Session input checks ------------------------------------------------------------------------------------------

class SessionInput : public ::testing::Test {
 protected:
  void SetUp() override { model_ = Model::load(fixture("tiny-ernie/model")); }
  std::unique_ptr<Model> model_;
};

TEST_F(SessionInput, TokenIdOutsideVocabulary) {
  Session session(*model_, {.context_length = 8});
  const int32_t vocab = model_->config().vocab_size;
  for (int32_t bad : {vocab, vocab + 1000, -1}) {
    const std::vector<int32_t> tokens = {1, 5, bad};
    const std::string message = error_of([&] { session.forward(tokens); });
    EXPECT_MENTIONS(message, std::to_string(bad));
    EXPECT_EQ(session.position(), 0);
  }
  // The last valid id works.
  const std::vector<int32_t> edge = {1, vocab - 1};
  EXPECT_NO_THROW(session.forward(edge));
  EXPECT_EQ(session.position(), 2);
  const std::vector<int32_t> bad = {vocab};
  error_of([&] { session.forward(bad); });
  EXPECT_EQ(session.position(), 2);
}

TEST_F(SessionInput, ContextOverflow) {
  Session session(*model_, {.context_length = 8});
  EXPECT_EQ(session.context_length(), 8);
  const std::vector<int32_t> nine(9, 300);
  const std::string message = error_of([&] { session.forward(nine); });
  EXPECT_MENTIONS(message, "context");
  EXPECT_MENTIONS(message, "8");
  EXPECT_EQ(session.position(), 0);
  std::vector<float> all(9 * static_cast<size_t>(model_->config().vocab_size));
  error_of([&] { session.forward(nine, all); });
  EXPECT_EQ(session.position(), 0);

  const std::vector<int32_t> five = {1, 300, 301, 302, 303};
  session.forward(five);
  EXPECT_EQ(session.position(), 5);
  const std::vector<int32_t> four(4, 400);
  error_of([&] { session.forward(four); });
  EXPECT_EQ(session.position(), 5);
  const std::vector<int32_t> three(3, 400);  // exactly fills the context
  EXPECT_NO_THROW(session.forward(three));
  EXPECT_EQ(session.position(), 8);
  const std::vector<int32_t> one = {400};
  error_of([&] { session.forward(one); });
  EXPECT_EQ(session.position(), 8);
}

TEST_F(SessionInput, ContextLengthIsCappedAtMaxPositions) {
  Session session(*model_, {.context_length = 1 << 20});
  EXPECT_EQ(session.context_length(), model_->config().max_position_embeddings);
}

TEST_F(SessionInput, RejectedCallLeavesTheCacheIntact) {
  // Failed calls between two good ones change nothing: the logits equal those of the same two calls alone.
  const std::vector<int32_t> a = {1, 300, 301}, b = {302, 303};
  Session fresh(*model_, {.context_length = 8});
  fresh.forward(a);
  const auto expected_span = fresh.forward(b);
  const std::vector<float> expected(expected_span.begin(), expected_span.end());

  Session session(*model_, {.context_length = 8});
  session.forward(a);
  const std::vector<int32_t> poisoned = {302, model_->config().vocab_size};
  error_of([&] { session.forward(poisoned); });
  const std::vector<int32_t> too_long(6, 302);
  error_of([&] { session.forward(too_long); });
  const auto got = session.forward(b);
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) ASSERT_EQ(got[i], expected[i]) << "logit " << i;
}

TEST_F(SessionInput, EmptyInputIsAnError) {
  Session session(*model_, {});
  error_of([&] { session.forward(std::span<const int32_t>()); });
  EXPECT_EQ(session.position(), 0);
}

}  // namespace
}  // namespace ernie
