// A fixture written as GGUF and loaded back runs exactly as the safetensors checkpoint it came from: same config,
// logits equal bit for bit for F32/BF16 files, and a Q8_0 file repacked at load equal to quantizing the checkpoint at
// load. Block types DType lacks are widened at load, and broken files are refused with errors naming the GGUF tensor.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "core/error.h"
#include "kernels/ggml_blocks.h"
#include "kernels/quant.h"
#include "model/gguf_ernie.h"
#include "model/gguf_export.h"
#include "model/session.h"
#include "test_support.h"

namespace ernie {
namespace {

namespace fs = std::filesystem;
using ernie::testing::error_of;
using ernie::testing::fixture;
using ernie::testing::read_json;
using ernie::testing::TempDir;

// Every position's logits for each of the fixture's golden prompts, concatenated.
std::vector<float> all_logits(const Model& model, const std::string& checkpoint) {
  const auto golden = read_json(fixture(checkpoint + "/ref/golden.json"));
  std::vector<float> out;
  for (const auto& prompt : golden["prompts"]) {
    const auto ids = prompt["ids"].get<std::vector<int32_t>>();
    Session session(model, {.context_length = 512});
    std::vector<float> logits(ids.size() * model.config().vocab_size);
    session.forward(ids, logits);
    out.insert(out.end(), logits.begin(), logits.end());
  }
  return out;
}

bool bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

class GgufFixture : public ::testing::TestWithParam<std::string> {
 protected:
  fs::path checkpoint() const { return fixture(GetParam() + "/model"); }
  fs::path exported(DType type) const {
    const fs::path path = dir_.path() / (std::string(dtype_name(type)) + ".gguf");
    export_gguf(*Model::load(checkpoint()), type, path);
    return path;
  }
  TempDir dir_;
};

TEST_P(GgufFixture, ConfigSurvivesTheRoundTrip) {
  const ModelConfig a = Model::load(checkpoint())->config();
  const ModelConfig b = Model::load(exported(DType::BF16))->config();
  EXPECT_EQ(b.hidden_size, a.hidden_size);
  EXPECT_EQ(b.intermediate_size, a.intermediate_size);
  EXPECT_EQ(b.num_hidden_layers, a.num_hidden_layers);
  EXPECT_EQ(b.num_attention_heads, a.num_attention_heads);
  EXPECT_EQ(b.num_key_value_heads, a.num_key_value_heads);
  EXPECT_EQ(b.head_dim, a.head_dim);
  EXPECT_EQ(b.vocab_size, a.vocab_size);
  EXPECT_EQ(b.max_position_embeddings, a.max_position_embeddings);
  EXPECT_EQ(b.rms_norm_eps, a.rms_norm_eps);
  EXPECT_EQ(b.rope_theta, a.rope_theta);
  EXPECT_EQ(b.tie_word_embeddings, a.tie_word_embeddings);
  EXPECT_EQ(b.use_bias, a.use_bias);
}

TEST_P(GgufFixture, FloatFilesGiveTheSafetensorsLogitsBitForBit) {
  const auto reference = all_logits(*Model::load(checkpoint()), GetParam());
  for (DType type : {DType::F32, DType::BF16}) {
    const auto model = Model::load(exported(type));
    // The checkpoint is BF16: both files hold exactly its values, so the forward pass is the same computation.
    EXPECT_TRUE(bit_equal(all_logits(*model, GetParam()), reference)) << dtype_name(type);
  }
}

TEST_P(GgufFixture, Q8_0FileRepackedEqualsQuantizingAtLoad) {
  const fs::path file = exported(DType::Q8_0);
  const auto at_load = all_logits(*Model::load(checkpoint(), {.dtype = DType::Q8_0}), GetParam());
  const auto repacked = Model::load(file, {.dtype = DType::Q8_0});
  EXPECT_TRUE(bit_equal(all_logits(*repacked, GetParam()), at_load));
  // Without --dtype the file's Q8_0 matrices are packed as they are: the same kernels, so the same bits.
  const auto as_stored = Model::load(file);
  EXPECT_EQ(as_stored->weight_dtype(), "Q8_0");
  EXPECT_TRUE(bit_equal(all_logits(*as_stored, GetParam()), at_load));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GgufFixture, ::testing::Values("tiny-ernie", "tiny-ernie-bias"),
                         [](const auto& info) { return info.param == "tiny-ernie" ? "tiny" : "bias"; });

TEST(GgufModel, GgufNamesFollowLlamaCpp) {
  EXPECT_EQ(gguf_tensor_name("model.embed_tokens.weight"), "token_embd.weight");
  EXPECT_EQ(gguf_tensor_name("model.norm.weight"), "output_norm.weight");
  EXPECT_EQ(gguf_tensor_name("lm_head.weight"), "output.weight");
  EXPECT_EQ(gguf_tensor_name("model.layers.17.input_layernorm.weight"), "blk.17.attn_norm.weight");
  EXPECT_EQ(gguf_tensor_name("model.layers.0.post_attention_layernorm.weight"), "blk.0.ffn_norm.weight");
  EXPECT_EQ(gguf_tensor_name("model.layers.3.self_attn.q_proj.weight"), "blk.3.attn_q.weight");
  EXPECT_EQ(gguf_tensor_name("model.layers.3.self_attn.k_proj.bias"), "blk.3.attn_k.bias");
  EXPECT_EQ(gguf_tensor_name("model.layers.3.self_attn.v_proj.weight"), "blk.3.attn_v.weight");
  EXPECT_EQ(gguf_tensor_name("model.layers.3.self_attn.o_proj.weight"), "blk.3.attn_output.weight");
  EXPECT_EQ(gguf_tensor_name("model.layers.3.mlp.gate_proj.weight"), "blk.3.ffn_gate.weight");
  EXPECT_EQ(gguf_tensor_name("model.layers.3.mlp.up_proj.weight"), "blk.3.ffn_up.weight");
  EXPECT_EQ(gguf_tensor_name("model.layers.3.mlp.down_proj.weight"), "blk.3.ffn_down.weight");
}

// A GGUF file with the tiny fixture's tensors rewritten by `edit`, which may change a tensor's type and bytes,
// drop it (return false) or change the architecture.
struct Rewrite {
  GgmlType type;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};
fs::path rewritten(const fs::path& out, const std::function<bool(const std::string&, Rewrite&)>& edit,
                   const std::string& arch = "ernie4_5") {
  const GgufFile source = GgufFile::open(out.parent_path() / "source.gguf");
  GgufWriter writer(out);
  for (const auto& [key, value] : source.metadata()) writer.set(key, value);
  writer.set("general.architecture", arch);
  std::vector<Rewrite> kept;
  for (const GgufTensor& t : source.tensors()) {
    Rewrite r{t.type, t.shape(), std::vector<uint8_t>(t.data, t.data + t.nbytes)};
    if (!edit(t.name, r)) continue;
    writer.declare_tensor(t.name, r.type, r.shape);
    kept.push_back(std::move(r));
  }
  for (const Rewrite& r : kept) writer.write_tensor(r.bytes);
  writer.finish();
  return out;
}

class GgufEdits : public ::testing::Test {
 protected:
  void SetUp() override { export_gguf(*Model::load(fixture("tiny-ernie/model")), DType::F32, dir_.path() / "source.gguf"); }
  fs::path path(const char* name) const { return dir_.path() / name; }
  TempDir dir_;
};

// A block type DType lacks (Q5_1 here; the K-quants take the same path, but need rows of 256, wider than the tiny
// fixture's) is dequantized at load and stored again: as Q8_0 by default, as the --dtype asked otherwise.
TEST_F(GgufEdits, OtherBlockTypesAreWidenedAtLoad) {
  std::mt19937 rng(7);
  std::vector<uint8_t> q5_bytes;
  const fs::path file = rewritten(path("q5_1.gguf"), [&](const std::string& name, Rewrite& r) {
    if (name != "blk.1.ffn_down.weight") return true;
    const int64_t blocks = r.shape[0] * r.shape[1] / 32;
    r.type = GgmlType::Q5_1;
    r.bytes.resize(blocks * 24);
    for (auto& b : r.bytes) b = static_cast<uint8_t>(rng());
    for (int64_t i = 0; i < blocks; ++i) {  // finite scales: random bits could make NaN
      const uint16_t d = f32_to_f16(0.001f), m = f32_to_f16(-0.01f);
      std::memcpy(&r.bytes[i * 24], &d, 2);
      std::memcpy(&r.bytes[i * 24 + 2], &m, 2);
    }
    q5_bytes = r.bytes;
    return true;
  });
  const auto model = Model::load(file);
  const WeightMatrix& down = model->weights().layers[1].down_proj;
  ASSERT_EQ(down.dtype, DType::Q8_0);
  const int cols = down.cols;
  const size_t in_row = cols / 32 * 24;
  std::vector<float> row(cols);
  std::vector<uint8_t> expected(dtype_row_bytes(DType::Q8_0, cols));
  std::vector<uint8_t> got(expected.size());
  for (int r = 0; r < down.rows; ++r) {
    dequantize_ggml_row(GgmlType::Q5_1, q5_bytes.data() + r * in_row, row.data(), cols);
    quantize_row(DType::Q8_0, row.data(), expected.data(), cols);
    unpack_weight_row(down, r, got.data());  // packed at load
    ASSERT_EQ(got, expected) << "row " << r;
  }
  // Asked for F32, the matrix holds the dequantized values themselves.
  const auto wide = Model::load(file, {.dtype = DType::F32});
  dequantize_ggml_row(GgmlType::Q5_1, q5_bytes.data(), row.data(), cols);
  std::vector<float> first(cols);
  dequantize_row(DType::F32, wide->weights().layers[1].down_proj.data, first.data(), cols);
  EXPECT_EQ(first, row);
  Session session(*model, {.context_length = 16});
  EXPECT_TRUE(std::isfinite(session.forward(std::vector<int32_t>{1, 5, 9})[0]));
}

TEST_F(GgufEdits, ErrorsNameTheGgufTensor) {
  std::string message = error_of([&] {
    Model::load(rewritten(path("missing.gguf"), [](const std::string& name, Rewrite&) {
      return name != "blk.1.attn_k.weight";
    }));
  });
  EXPECT_MENTIONS(message, "missing.gguf");
  EXPECT_MENTIONS(message, "blk.1.attn_k.weight");

  message = error_of([&] {
    Model::load(rewritten(path("shape.gguf"), [](const std::string& name, Rewrite& r) {
      if (name == "blk.0.ffn_up.weight") {
        r.shape[0] -= 32;
        r.bytes.resize(r.bytes.size() - 32 * r.shape[1] * 4);
      }
      return true;
    }));
  });
  EXPECT_MENTIONS(message, "blk.0.ffn_up.weight");
  EXPECT_MENTIONS(message, "shape");

  message = error_of([&] {
    Model::load(rewritten(path("arch.gguf"), [](const std::string& name, Rewrite& r) {
      if (name == "output_norm.weight") r.shape = {64};
      return true;
    }, "llama"));
  });
  EXPECT_MENTIONS(message, "general.architecture");
  EXPECT_MENTIONS(message, "llama");
}

TEST_F(GgufEdits, AnOutputTensorUntiesTheHead) {
  const fs::path file = rewritten(path("untied.gguf"), [](const std::string&, Rewrite&) { return true; });
  // Same file plus output.weight: a separate LM head, bound from the file.
  const GgufFile source = GgufFile::open(file);
  GgufWriter writer(path("with-output.gguf"));
  for (const auto& [key, value] : source.metadata()) writer.set(key, value);
  for (const GgufTensor& t : source.tensors()) writer.declare_tensor(t.name, t.type, t.shape());
  const GgufTensor* embedding = source.find_tensor("token_embd.weight");
  writer.declare_tensor("output.weight", embedding->type, embedding->shape());
  for (const GgufTensor& t : source.tensors()) writer.write_tensor({t.data, t.nbytes});
  writer.write_tensor({embedding->data, embedding->nbytes});
  writer.finish();
  const auto model = Model::load(path("with-output.gguf"));
  EXPECT_FALSE(model->config().tie_word_embeddings);
  EXPECT_NE(model->weights().lm_head.data, model->weights().embed_tokens.data);
}

}  // namespace
}  // namespace ernie
