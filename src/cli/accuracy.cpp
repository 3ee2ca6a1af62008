// ernie accuracy: how far each weight type's logits lie from the same checkpoint's in float32, at every position of a
// text, a prompt or seeded random token ids (enough for a random-weights checkpoint): relative logit error, mean KL
// divergence, top-1 agreement and the perplexity of the tokens, as a table and optionally JSON. GGUF files (ours,
// e.g. calibrated, or llama.cpp's) join the comparison with --gguf, against the same float32 reference.
#include "model/accuracy.h"

#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>

#include "cli/common.h"
#include "core/error.h"

namespace ernie::cli {
namespace {

struct AccuracyOptions {
  ModelOptions model;
  std::optional<std::string> prompt;
  std::optional<std::string> text;  // --text FILE
  int tokens = 0;                   // 0: 256 random ids, or the whole text
  uint64_t seed = 1;
  std::vector<std::string> gguf;
  std::string json_path;
};

// The token ids scored, as chunks that each run from an empty cache.
std::vector<std::vector<int32_t>> positions(const AccuracyOptions& o, const LoadedModel& reference) {
  if (o.tokens < 0) fail("--tokens must not be negative");
  const int vocab = reference.model->config().vocab_size;
  if (o.prompt) return {reference.tokenizer->encode(*o.prompt, /*add_bos=*/true)};
  if (!o.text) {
    std::mt19937_64 rng(o.seed);
    std::uniform_int_distribution<int32_t> id(0, vocab - 1);
    std::vector<int32_t> ids(o.tokens > 0 ? o.tokens : 256);
    for (int32_t& i : ids) i = id(rng);
    return {ids};
  }
  // A text: <s> and the next context - 1 tokens per chunk, as llama-perplexity scores a file.
  std::ifstream in(*o.text, std::ios::binary);
  if (!in) fail(*o.text, ": cannot read");
  std::stringstream contents;
  contents << in.rdbuf();
  const std::vector<int32_t> ids = reference.tokenizer->encode(contents.str(), /*add_bos=*/false);
  const int context = std::min(o.model.context_length, reference.model->config().max_position_embeddings);
  if (context < 2) fail("--ctx must be at least 2 to score a text");
  std::vector<std::vector<int32_t>> chunks;
  int64_t budget = o.tokens > 0 ? o.tokens : INT64_MAX;
  for (size_t at = 0; at < ids.size() && budget > 1;) {
    const size_t take =
        std::min<size_t>({static_cast<size_t>(context - 1), ids.size() - at, static_cast<size_t>(budget - 1)});
    std::vector<int32_t> chunk{reference.tokenizer->bos_id()};
    chunk.insert(chunk.end(), ids.begin() + at, ids.begin() + at + take);
    budget -= static_cast<int64_t>(chunk.size());
    chunks.push_back(std::move(chunk));
    at += take;
  }
  if (chunks.empty()) fail(*o.text, ": no text to score");
  return chunks;
}

struct Scores {
  LogitAgreement agreement;
  Perplexity perplexity, reference_perplexity;
};

// Both models over every chunk, side by side in passes of up to 64 positions (so that memory holds 2 x 64 rows of
// logits, whatever the text's length).
Scores score(const LoadedModel& reference, const ModelOptions& reference_options, const LoadedModel& tested,
             const ModelOptions& tested_options, const std::vector<std::vector<int32_t>>& chunks) {
  const int vocab = reference.model->config().vocab_size;
  if (tested.model->config().vocab_size != vocab)
    fail(tested.model->path().string(), ": a vocabulary of ", tested.model->config().vocab_size,
         " against the reference's ", vocab);
  Scores scores;
  constexpr size_t kRows = 64;
  std::vector<float> ours(kRows * vocab), theirs(kRows * vocab);
  for (const auto& chunk : chunks) {
    const auto session_for = [&](const LoadedModel& loaded, const ModelOptions& options) {
      SessionOptions s = session_options(options, loaded);
      s.context_length = static_cast<int>(chunk.size());
      return std::make_unique<Session>(*loaded.model, s);
    };
    const auto ref_session = session_for(reference, reference_options);
    const auto test_session = session_for(tested, tested_options);
    for (size_t at = 0; at < chunk.size(); at += kRows) {
      const size_t n = std::min(kRows, chunk.size() - at);
      const auto ids = std::span<const int32_t>(chunk).subspan(at, n);
      ref_session->forward(ids, std::span<float>(theirs).first(n * vocab));
      test_session->forward(ids, std::span<float>(ours).first(n * vocab));
      for (size_t t = 0; t < n; ++t) {
        const auto r = std::span<const float>(theirs).subspan(t * vocab, vocab);
        const auto u = std::span<const float>(ours).subspan(t * vocab, vocab);
        scores.agreement.add(r, u);
        if (at + t + 1 < chunk.size()) {
          scores.perplexity.add(u, chunk[at + t + 1]);
          scores.reference_perplexity.add(r, chunk[at + t + 1]);
        }
      }
    }
  }
  return scores;
}

void accuracy(const AccuracyOptions& o) {
  if (o.prompt && o.text) fail("give --prompt or --text, not both");
  std::vector<std::string> dtypes;
  std::stringstream list(o.model.dtype.empty() ? (o.gguf.empty() ? "bf16,f16,int8,int4" : "") : o.model.dtype);
  for (std::string d; std::getline(list, d, ',');) {
    parse_weight_dtype(d);  // reject a bad name before the long reference run
    dtypes.push_back(d);
  }

  ModelOptions reference_options = o.model;
  reference_options.dtype = "f32";
  reference_options.kv_dtype = "f32";  // --kv-dtype is under test too: the reference keeps an exact cache
  const LoadedModel reference = load_model(reference_options, o.prompt.has_value() || o.text.has_value());
  const std::vector<std::vector<int32_t>> chunks = positions(o, reference);
  int64_t total = 0;
  for (const auto& c : chunks) total += static_cast<int64_t>(c.size());

  // Each row: a weight type of --model, or a --gguf file as stored.
  std::vector<std::pair<std::string, ModelOptions>> rows;
  for (const auto& dtype : dtypes) {
    ModelOptions options = o.model;
    options.dtype = dtype;
    rows.push_back({dtype, options});
  }
  for (const auto& file : o.gguf) {
    ModelOptions options = o.model;
    options.dir = file;
    options.dtype.clear();
    rows.push_back({std::filesystem::path(file).filename().string(), options});
  }

  std::printf("%lld positions in %zu chunk%s against float32 weights and KV cache\n\n", static_cast<long long>(total),
              chunks.size(), chunks.size() == 1 ? "" : "s");
  std::printf("%-24s %-8s %-4s %12s %12s %8s %12s\n", "weights", "type", "KV", "rel. error", "mean KL", "top-1",
              "perplexity");
  nlohmann::json results = nlohmann::json::array();
  double reference_ppl = 0;
  for (const auto& [label, options] : rows) {
    const LoadedModel loaded = load_model(options, false);
    const Scores s = score(reference, reference_options, loaded, options, chunks);
    const DType kv = kv_cache_dtype(options).value_or(default_kv_dtype(*loaded.model));
    if (reference_ppl == 0) {
      reference_ppl = s.reference_perplexity.value();
      std::printf("%-24s %-8s %-4s %12s %12s %8s %12.4f\n", "f32 (reference)", "F32", "F32", "-", "-", "-",
                  reference_ppl);
    }
    std::printf("%-24s %-8s %-4s %12.3e %12.3e %8.3f %12.4f\n", label.c_str(), loaded.model->weight_dtype().c_str(),
                std::string(dtype_name(kv)).c_str(), s.agreement.relative_error(), s.agreement.mean_kl(),
                s.agreement.top1(), s.perplexity.value());
    results.push_back({{"dtype", label},
                       {"weights", loaded.model->weight_dtype()},
                       {"kv_dtype", std::string(dtype_name(kv))},
                       {"relative_error", s.agreement.relative_error()},
                       {"mean_kl", s.agreement.mean_kl()},
                       {"top1", s.agreement.top1()},
                       {"perplexity", s.perplexity.value()},
                       {"perplexity_change", s.perplexity.value() / s.reference_perplexity.value() - 1}});
  }
  if (!o.json_path.empty()) {
    std::ofstream out(o.json_path);
    out << nlohmann::json{{"model", checkpoint_dir(o.model.dir).string()},
                          {"positions", total},
                          {"chunks", chunks.size()},
                          {"text", o.text.value_or("")},
                          {"reference", "f32"},
                          {"reference_perplexity", reference_ppl},
                          {"results", results}}
               .dump(2)
        << "\n";
    if (!out) fail("cannot write ", o.json_path);
  }
}

}  // namespace

void register_accuracy(CLI::App& app) {
  auto options = std::make_shared<AccuracyOptions>();
  CLI::App* cmd = app.add_subcommand("accuracy",
                                     "Compare each weight type's logits with float32's: relative error, mean KL "
                                     "divergence, top-1, perplexity");
  add_model_options(*cmd, options->model);
  cmd->add_option("-p,--prompt", options->prompt, "Text to score (default: seeded random token ids)");
  cmd->add_option("--text", options->text,
                  "A text file to score, in chunks of --ctx tokens that each start with <s> (perplexity as "
                  "llama-perplexity measures it)");
  cmd->add_option("--tokens", options->tokens, "Random token ids to score (default 256), or the most of --text")
      ->capture_default_str();
  cmd->add_option("--seed", options->seed, "Seed of the random token ids")->capture_default_str();
  cmd->add_option("--gguf", options->gguf,
                  "Also score this GGUF file (as stored) against --model in float32 (repeatable)")
      ->allow_extra_args(false);  // one file per --gguf
  cmd->add_option("--json", options->json_path, "Also write the results as JSON to this file");
  cmd->callback([options] { accuracy(*options); });
}

}  // namespace ernie::cli
