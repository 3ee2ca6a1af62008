// ernie bench: one subcommand, two instruments. --model measures the engine in this process (bench_model.cpp);
// --server URL load-tests a running server at several concurrency levels (bench_server.cpp). Both print a table,
// with --json FILE write JSON, and with --plot FILE.svg draw charts (bench_plot.cpp).
#include "cli/bench.h"

#include <cstdio>
#include <fstream>

#include "cli/bench_plot.h"
#include "cli/bench_server.h"
#include "core/error.h"

namespace ernie::cli {
namespace {

struct BenchOptions {
  ModelBenchOptions model;
  LoadTestOptions load;
};

void bench_server(const BenchOptions& o) {
  LoadTestOptions load = o.load;
  load.prompt_len = o.model.prompt_lengths.front();
  load.gen = o.model.gen;
  if (!o.model.plot_path.empty()) check_plot_path(o.model.plot_path);
  const auto results = run_load(load);
  std::printf("%s", format_table(results).c_str());
  if (!o.model.json_path.empty()) {
    std::ofstream out(o.model.json_path);
    out << to_json(load, results).dump(2) << "\n";
    if (!out) fail("cannot write ", o.model.json_path);
  }
  if (!o.model.plot_path.empty()) svg::write_file(o.model.plot_path, server_bench_figure(load, results));
}

void bench(const BenchOptions& o) {
  if (!o.load.url.empty()) return bench_server(o);
  if (o.model.model.dir.empty()) {
    throw CLI::RequiredError(
        "ernie bench: give --model DIR|FILE to measure the engine, or --server URL to load-test a running server");
  }
  run_model_bench(o.model);
}

}  // namespace

void register_bench(CLI::App& app) {
  auto options = std::make_shared<BenchOptions>();
  CLI::App* cmd = app.add_subcommand(
      "bench", "Measure the engine (--model: load, TTFT, prefill/decode, memory, energy) or a server (--server URL)");
  add_model_bench_options(*cmd, options->model);
  LoadTestOptions& l = options->load;
  cmd->add_option("--server", l.url, "Load-test a running server at this base URL, e.g. http://127.0.0.1:8080")
      ->group("Server load test");
  cmd->add_option("--concurrency", l.concurrency, "Concurrent clients per level, comma-separated")
      ->delimiter(',')
      ->capture_default_str()
      ->group("Server load test");
  cmd->add_option("--requests", l.requests, "Requests per concurrency level")
      ->capture_default_str()
      ->check(CLI::PositiveNumber)
      ->group("Server load test");
  cmd->add_option("--api-key", l.api_key, "Sent as 'Authorization: Bearer KEY'")->group("Server load test");
  cmd->add_option("--ready-timeout", l.ready_timeout_seconds,
                  "Seconds to wait for the server to accept connections and finish loading")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber)
      ->group("Server load test");
  cmd->add_option("--model-name", l.model, "\"model\" field of the requests (default: none)")
      ->group("Server load test");
  cmd->callback([options] { bench(*options); });
}

}  // namespace ernie::cli
