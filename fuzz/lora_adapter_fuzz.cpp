// Fuzzes a PEFT LoRA adapter directory for the demo model. The first byte picks the file, the rest is its contents:
//   even: adapter_config.json (beside a valid adapter_model.safetensors: rank 2 on layer 0's q_proj)
//   odd:  adapter_model.safetensors (beside a valid adapter_config.json naming that module)
// (Small on purpose: a whole seed fits scripts/fuzz.sh's -max_len.)
// LoraAdapter::load must load or raise ernie::Error. An adapter that loads has consistent modules and runs a few
// tokens on the demo model (under ASan, any out-of-bounds access in the LoRA path shows).
#include <cmath>
#include <exception>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "fuzz_support.h"
#include "io/safetensors.h"
#include "model/lora.h"
#include "model/session.h"

namespace {

using namespace ernie;

const Model& demo_model() {
  static const auto model = Model::load(ERNIE_DEMO_MODEL_DIR);
  return *model;
}

constexpr const char* kValidConfig =
    R"({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"], "layers_to_transform": [0]})";

// The valid safetensors of the odd inputs' neighbour, written once.
void write_valid_weights(const std::filesystem::path& file) {
  const ModelConfig& c = demo_model().config();
  std::vector<TensorToWrite> tensors;
  const auto [out, in] = projection_shape(c, Projection::kQ);
  const std::string name = "base_model.model." + module_name(0, Projection::kQ);
  for (const auto& [suffix, shape] : {std::pair{".lora_A.weight", std::vector<int64_t>{2, in}},
                                      std::pair{".lora_B.weight", std::vector<int64_t>{out, 2}}}) {
    tensors.push_back({name + suffix, DType::F32, shape, [n = shape[0] * shape[1]](uint8_t* bytes) {
                         auto* f = reinterpret_cast<float*>(bytes);
                         for (int64_t i = 0; i < n; ++i) f[i] = 0.01f * static_cast<float>(i % 7 - 3);
                       }});
  }
  write_safetensors(file, tensors);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Input in(data, size);
  const bool weights = in.byte() % 2 == 1;
  const auto dir = fuzz::scratch_dir() / (weights ? "lora-weights" : "lora-config");
  if (!std::filesystem::exists(dir)) {
    std::filesystem::create_directories(dir);
    if (weights) {
      fuzz::write_file(dir / "adapter_config.json", kValidConfig);
    } else {
      write_valid_weights(dir / "adapter_model.safetensors");
    }
  }
  fuzz::write_file(dir / (weights ? "adapter_model.safetensors" : "adapter_config.json"), in.rest());
  try {
    const Model& model = demo_model();
    const auto adapter = LoraAdapter::load(dir, model.config());
    if (adapter->max_rank() <= 0) fuzz::violation("an adapter loaded with no rank");
    for (int l = 0; l < adapter->layers(); ++l) {
      for (Projection p : kProjections) {
        const LoraModule* m = adapter->module(l, p);
        if (!m) continue;
        const auto [out, in_cols] = projection_shape(model.config(), p);
        if (m->in != in_cols || m->out != out || m->a.size() != static_cast<size_t>(m->rank) * in_cols ||
            m->b_t.size() != static_cast<size_t>(m->rank) * out || !std::isfinite(m->scale))
          fuzz::violation("an adapter module loaded with inconsistent sizes");
      }
    }
    Session session(model, SessionOptions{.context_length = 8, .lora = {{adapter.get(), 1.0f}}});
    const int32_t ids[] = {1, 300, 4000};
    (void)session.forward(ids);  // huge finite weights may overflow to inf, as they would in transformers
  } catch (const Error&) {
  } catch (const std::exception& e) {
    fuzz::violation("exception other than ernie::Error", e.what());
  }
  return 0;
}
