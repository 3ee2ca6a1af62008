// ernie accuracy: how far each weight type's logits lie from the same checkpoint's in float32, at every position of a
// prompt (or of seeded random token ids, enough for a random-weights checkpoint): relative logit error, mean KL
// divergence and top-1 agreement, as a table and optionally JSON.
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>

#include "cli/common.h"
#include "core/error.h"
#include "model/accuracy.h"

namespace ernie::cli {
namespace {

struct AccuracyOptions {
  ModelOptions model;
  std::optional<std::string> prompt;
  int tokens = 256;
  uint64_t seed = 1;
  std::string json_path;
};

struct Logits {
  std::vector<float> values;  // [ids, vocab]
  DType kv_dtype;
};

// Every position's logits with the options' weight and KV types.
Logits all_logits(const LoadedModel& loaded, const ModelOptions& options, const std::vector<int32_t>& ids) {
  SessionOptions session_opts = session_options(options, loaded);
  session_opts.context_length = static_cast<int>(ids.size());
  Session session(*loaded.model, session_opts);
  Logits logits{std::vector<float>(ids.size() * loaded.model->config().vocab_size), session.kv_dtype()};
  session.forward(ids, logits.values);
  return logits;
}

void accuracy(const AccuracyOptions& o) {
  std::vector<std::string> dtypes;
  std::stringstream list(o.model.dtype.empty() ? "bf16,f16,int8,int4" : o.model.dtype);
  for (std::string d; std::getline(list, d, ',');) {
    parse_weight_dtype(d);  // reject a bad name before the long reference run
    dtypes.push_back(d);
  }

  ModelOptions reference_options = o.model;
  reference_options.dtype = "f32";
  reference_options.kv_dtype = "f32";  // --kv-dtype is under test too: the reference keeps an exact cache
  std::vector<int32_t> ids;
  std::vector<float> reference;
  int vocab = 0;
  {
    const LoadedModel loaded = load_model(reference_options, o.prompt.has_value());
    vocab = loaded.model->config().vocab_size;
    if (o.prompt) {
      ids = loaded.tokenizer->encode(*o.prompt, /*add_bos=*/true);
    } else {
      if (o.tokens < 1) fail("--tokens must be positive");
      std::mt19937_64 rng(o.seed);
      std::uniform_int_distribution<int32_t> id(0, vocab - 1);
      for (int i = 0; i < o.tokens; ++i) ids.push_back(id(rng));
    }
    reference = all_logits(loaded, reference_options, ids).values;
  }

  std::printf("%zu positions against float32 weights and KV cache\n\n", ids.size());
  std::printf("%-6s %-8s %-4s %12s %12s %8s\n", "dtype", "weights", "KV", "rel. error", "mean KL", "top-1");
  nlohmann::json results = nlohmann::json::array();
  for (const auto& dtype : dtypes) {
    ModelOptions options = o.model;
    options.dtype = dtype;
    const LoadedModel loaded = load_model(options, false);
    const auto [logits, kv] = all_logits(loaded, options, ids);
    LogitAgreement agreement;
    for (size_t t = 0; t < ids.size(); ++t) {
      agreement.add(std::span<const float>(reference.data() + t * vocab, vocab),
                    std::span<const float>(logits.data() + t * vocab, vocab));
    }
    std::printf("%-6s %-8s %-4s %12.3e %12.3e %8.3f\n", dtype.c_str(), loaded.model->weight_dtype().c_str(),
                std::string(dtype_name(kv)).c_str(), agreement.relative_error(), agreement.mean_kl(),
                agreement.top1());
    results.push_back({{"dtype", dtype},
                       {"weights", loaded.model->weight_dtype()},
                       {"kv_dtype", std::string(dtype_name(kv))},
                       {"relative_error", agreement.relative_error()},
                       {"mean_kl", agreement.mean_kl()},
                       {"top1", agreement.top1()}});
  }
  if (!o.json_path.empty()) {
    std::ofstream out(o.json_path);
    out << nlohmann::json{{"model", checkpoint_dir(o.model.dir).string()},
                          {"positions", ids.size()},
                          {"reference", "f32"},
                          {"results", results}}
               .dump(2)
        << "\n";
    if (!out) fail("cannot write ", o.json_path);
  }
}

}  // namespace

void register_accuracy(CLI::App& app) {
  auto options = std::make_shared<AccuracyOptions>();
  CLI::App* cmd = app.add_subcommand(
      "accuracy", "Compare each weight type's logits with float32's: relative error, mean KL divergence, top-1");
  add_model_options(*cmd, options->model);
  cmd->add_option("-p,--prompt", options->prompt, "Text to score (default: seeded random token ids)");
  cmd->add_option("--tokens", options->tokens, "Random token ids to score without --prompt")->capture_default_str();
  cmd->add_option("--seed", options->seed, "Seed of the random token ids")->capture_default_str();
  cmd->add_option("--json", options->json_path, "Also write the results as JSON to this file");
  cmd->callback([options] { accuracy(*options); });
}

}  // namespace ernie::cli
