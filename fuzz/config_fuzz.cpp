// Fuzzes the JSON files of a Hugging Face checkpoint. The first byte picks the file, the rest is its text:
//   0 config.json            -> ModelConfig::load
//   1 generation_config.json -> GenerationDefaults::load
//   2 tokenizer_config.json  -> Tokenizer::load (beside the demo model's tokenizer.model)
//   3 special_tokens_map.json, 4 added_tokens.json -> Tokenizer::load likewise
// Each must load or raise ernie::Error; a tokenizer that loads is used once.
#include <exception>

#include "core/error.h"
#include "fuzz_support.h"
#include "model/config.h"
#include "tokenizer/tokenizer.h"

namespace {

constexpr const char* kFiles[] = {"config.json", "generation_config.json", "tokenizer_config.json",
                                  "special_tokens_map.json", "added_tokens.json"};

// One directory per file kind, so each holds only the fuzzed file (and tokenizer.model where needed).
std::filesystem::path dir_for(size_t mode) {
  namespace fs = std::filesystem;
  const fs::path dir = ernie::fuzz::scratch_dir() / ("config-" + std::to_string(mode));
  if (!fs::exists(dir)) {
    fs::create_directories(dir);
    if (mode >= 2) fs::copy_file(fs::path(ERNIE_DEMO_MODEL_DIR) / "tokenizer.model", dir / "tokenizer.model");
  }
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ernie;
  fuzz::Input in(data, size);
  const size_t mode = in.byte() % std::size(kFiles);
  const auto dir = dir_for(mode);
  fuzz::write_file(dir / kFiles[mode], in.rest());
  try {
    if (mode == 0) {
      const ModelConfig config = ModelConfig::load(dir);
      if (config.head_dim <= 0 || config.num_attention_heads <= 0 || config.q_dim() <= 0) {
        fuzz::violation("config loaded with unusable sizes");
      }
    } else if (mode == 1) {
      (void)GenerationDefaults::load(dir);
    } else {
      const Tokenizer tokenizer = Tokenizer::load(dir);
      const auto ids = tokenizer.encode("Hi <s></s><unk> <|end_of_sentence|>");
      for (int32_t id : ids) {
        if (id < 0 || id >= tokenizer.vocab_size()) fuzz::violation("encode gave an id outside the vocabulary");
      }
      (void)tokenizer.decode(ids, false);
      (void)tokenizer.decode(ids, true);
    }
  } catch (const Error&) {
  } catch (const std::exception& e) {
    fuzz::violation("exception other than ernie::Error", e.what());
  }
  return 0;
}
