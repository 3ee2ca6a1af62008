// ernie bench: measurements. `--server URL` load-tests a running server (see bench_server.h) at several
// concurrency levels and prints a table (and JSON with --json FILE).
#include <cstdio>
#include <fstream>

#include "cli/bench_server.h"
#include "cli/common.h"
#include "core/error.h"

namespace ernie::cli {
namespace {

struct BenchOptions {
  LoadOptions load;
  std::string json_path;
};

void bench_server(const BenchOptions& o) {
  const auto results = run_load(o.load);
  std::printf("%s", format_table(results).c_str());
  if (!o.json_path.empty()) {
    std::ofstream out(o.json_path);
    out << to_json(o.load, results).dump(2) << "\n";
    if (!out) fail("cannot write ", o.json_path);
  }
}

void bench(const BenchOptions& o) {
  if (!o.load.url.empty()) return bench_server(o);
  throw CLI::RequiredError(
      "ernie bench: give --server URL to load-test a running `ernie serve` (or any OpenAI-compatible server)");
}

}  // namespace

void register_bench(CLI::App& app) {
  auto options = std::make_shared<BenchOptions>();
  LoadOptions& l = options->load;
  CLI::App* cmd = app.add_subcommand("bench", "Benchmarks: --server URL load-tests a running server");
  cmd->add_option("--server", l.url, "Base URL of a running server, e.g. http://127.0.0.1:8080");
  cmd->add_option("--concurrency", l.concurrency, "Concurrent clients per level, comma-separated")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--requests", l.requests, "Requests per concurrency level")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--prompt-len", l.prompt_len, "Prompt tokens per request")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--gen", l.gen, "Tokens generated per request (end-of-sequence ignored)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--api-key", l.api_key, "Sent as 'Authorization: Bearer KEY'");
  cmd->add_option("--model-name", l.model, "\"model\" field of the requests (default: none)");
  cmd->add_option("--json", options->json_path, "Also write the results as JSON to FILE");
  cmd->callback([options] { bench(*options); });
}

}  // namespace ernie::cli
