// ernie logits: the last position's logits for a prompt, as raw little-endian float32, plus the top 5.
#include <algorithm>
#include <bit>
#include <cstdio>
#include <fstream>
#include <numeric>

#include "cli/common.h"
#include "core/error.h"

namespace ernie::cli {
namespace {

struct LogitsOptions {
  ModelOptions model;
  PromptInput input;
  std::string out;
};

void logits(const LogitsOptions& o) {
  static_assert(std::endian::native == std::endian::little, "the output format is little-endian float32");
  LoadedModel loaded = load_model(o.model, /*with_tokenizer=*/o.input.text.has_value());
  const std::vector<int32_t> ids = o.input.ids ? parse_ids(*o.input.ids) : loaded.tokenizer->encode(*o.input.text);
  Session session(*loaded.model, session_options(o.model, loaded));
  const auto values = session.forward(ids);

  if (!o.out.empty()) {
    std::ofstream file(o.out, std::ios::binary);
    file.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size_bytes()));
    if (!file) fail(o.out, ": cannot write");
    std::fprintf(stderr, "ernie: wrote %zu float32 logits to %s\n", values.size(), o.out.c_str());
  }
  std::vector<int> order(values.size());
  std::iota(order.begin(), order.end(), 0);
  const int k = std::min<int>(5, static_cast<int>(order.size()));
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int a, int b) { return values[a] > values[b]; });
  for (int i = 0; i < k; ++i) std::printf("%d\t%d\t%.6f\n", i + 1, order[i], values[order[i]]);
}

}  // namespace

void register_logits(CLI::App& app) {
  auto options = std::make_shared<LogitsOptions>();
  CLI::App* cmd = app.add_subcommand("logits", "Write the last position's logits (raw float32) and print the top 5");
  add_model_options(*cmd, options->model);
  add_prompt_input(*cmd, options->input);
  cmd->add_option("-o,--out", options->out, "File for vocab_size little-endian float32 values");
  cmd->callback([options] { logits(*options); });
}

}  // namespace ernie::cli
