// ernie bench: registers the subcommand; --model measures the engine itself.
#include "cli/bench.h"

namespace ernie::cli {

void register_bench(CLI::App& app) {
  auto options = std::make_shared<ModelBenchOptions>();
  CLI::App* cmd = app.add_subcommand("bench", "Measure load time, TTFT, prefill/decode speed, memory and energy");
  add_model_bench_options(*cmd, *options);
  cmd->callback([options] { run_model_bench(*options); });
}

}  // namespace ernie::cli
