// ernie calibrate: runs the model over a calibration text and writes the activation statistics of every weight
// matrix's input (model/calibration.h) as an importance-matrix GGUF, for ernie quantize --calibration (or
// llama-quantize --imatrix). The text is read and tokenized a block of lines at a time and run in chunks of --chunk
// tokens, each starting afresh with <s> as llama-imatrix's do, so memory stays that of one chunk whatever the file's
// size.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>

#include "cli/common.h"
#include "core/error.h"
#include "model/calibration.h"

namespace ernie::cli {
namespace {

struct CalibrateOptions {
  ModelOptions model;
  std::string data;
  int64_t tokens = 0;  // 0: the whole text
  int chunk = 512;
  std::string out;
};

// Shows the tokens processed: a bar redrawn in place on a terminal, else a line every tenth of the run.
class Progress {
 public:
  explicit Progress(int64_t total) : total_(total), tty_(isatty(STDERR_FILENO) != 0) {}

  void update(int64_t done, double seconds) {
    const double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0.0;
    if (tty_) {
      constexpr int kWidth = 30;
      const int filled = total_ > 0 ? static_cast<int>(kWidth * std::min<int64_t>(done, total_) / total_) : 0;
      std::fprintf(stderr, "\rcalibrate [%-*s] %lld%s tokens, %.0f tok/s ", kWidth, std::string(filled, '#').c_str(),
                   static_cast<long long>(done), total_ > 0 ? ("/" + std::to_string(total_)).c_str() : "", rate);
      return;
    }
    const int64_t step = std::max<int64_t>(1, total_ > 0 ? total_ / 10 : 16384);
    if (done / step > reported_ / step || reported_ == 0) {
      std::fprintf(stderr, "calibrate: %lld tokens, %.0f tok/s\n", static_cast<long long>(done), rate);
      reported_ = done;
    }
  }
  void finish() const {
    if (tty_) std::fputc('\n', stderr);
  }

 private:
  int64_t total_;
  bool tty_;
  int64_t reported_ = 0;
};

void calibrate(const CalibrateOptions& o) {
  if (o.tokens < 0) fail("--tokens must not be negative");
  if (o.chunk < 2) fail("--chunk must be at least 2 tokens");
  std::ifstream text(o.data, std::ios::binary);
  if (!text) fail(o.data, ": cannot read the calibration text");

  ModelOptions model_options = o.model;
  model_options.context_length = o.chunk;
  const LoadedModel loaded = load_model(model_options, /*with_tokenizer=*/true);
  const Model& model = *loaded.model;
  Session session(model, session_options(model_options, loaded));
  const int chunk = session.context_length();  // --chunk capped at the model's context
  ActivationStats stats(model.config());
  session.set_activation_observer(stats.observer());

  const int rows = std::min(chunk, 64);  // logits rows per pass: the LM head's input is observed on every token
  std::vector<float> logits(static_cast<size_t>(rows) * model.config().vocab_size);
  std::vector<int32_t> pending, ids;
  const auto start = std::chrono::steady_clock::now();
  Progress progress(o.tokens);
  int64_t done = 0;
  uint32_t chunks = 0;
  // Room for another chunk: <s> and at least one token.
  const auto budget_left = [&] { return o.tokens == 0 || done + 1 < o.tokens; };
  // One chunk: <s> and up to chunk - 1 pending ids (within the --tokens budget).
  const auto run_chunk = [&] {
    int64_t take = std::min<int64_t>(chunk - 1, static_cast<int64_t>(pending.size()));
    if (o.tokens > 0) take = std::min<int64_t>(take, o.tokens - done - 1);
    ids.assign(1, loaded.tokenizer->bos_id());
    ids.insert(ids.end(), pending.begin(), pending.begin() + take);
    pending.erase(pending.begin(), pending.begin() + take);
    session.reset();
    for (size_t at = 0; at < ids.size(); at += rows) {
      const size_t n = std::min<size_t>(rows, ids.size() - at);
      session.forward(std::span<const int32_t>(ids).subspan(at, n),
                      std::span<float>(logits).first(n * model.config().vocab_size));
    }
    done += static_cast<int64_t>(ids.size());
    ++chunks;
    progress.update(done, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  };

  // Blocks of whole lines of about 64 KiB, so that tokenization never splits a line.
  std::string block, line;
  const auto encode_block = [&] {
    const std::vector<int32_t> encoded = loaded.tokenizer->encode(block, /*add_bos=*/false);
    pending.insert(pending.end(), encoded.begin(), encoded.end());
    block.clear();
  };
  while (budget_left() && std::getline(text, line)) {
    block += line;
    block += '\n';
    if (block.size() < 65536) continue;
    encode_block();
    while (budget_left() && pending.size() >= static_cast<size_t>(chunk - 1)) run_chunk();
  }
  if (text.bad()) fail(o.data, ": read error");
  if (!block.empty()) encode_block();
  while (budget_left() && !pending.empty()) run_chunk();
  progress.finish();
  if (done == 0) fail(o.data, ": no text to calibrate on");

  stats.provenance().datasets = {o.data};
  stats.provenance().chunks = chunks;
  stats.provenance().chunk_size = static_cast<uint32_t>(chunk);
  stats.save(o.out);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "ernie: %lld tokens in %u chunks of up to %d (%.1f s, %.0f tok/s): wrote %s\n",
               static_cast<long long>(done), chunks, chunk, seconds, done / std::max(seconds, 1e-9), o.out.c_str());
}

}  // namespace

void register_calibrate(CLI::App& app) {
  auto options = std::make_shared<CalibrateOptions>();
  CLI::App* cmd = app.add_subcommand(
      "calibrate", "Record every weight matrix's input statistics over a text (for ernie quantize --calibration)");
  add_model_options(*cmd, options->model);
  cmd->add_option("--data", options->data, "Calibration text (UTF-8), e.g. data/calibration/default.txt")->required();
  cmd->add_option("--tokens", options->tokens, "Stop after this many tokens (0: the whole text)")
      ->capture_default_str();
  cmd->add_option("--chunk", options->chunk, "Tokens per pass, <s> first (capped at the model's context)")
      ->capture_default_str();
  cmd->add_option("-o,--out", options->out, "Statistics file to write (.gguf, llama.cpp's imatrix format)")->required();
  cmd->callback([options] { calibrate(*options); });
}

}  // namespace ernie::cli
