// `ernie bench ... --plot FILE.svg`: the benchmark results as a figure of small charts (svg_chart.h).
//   --model:  per weight type, bars of time to first token, prefill and decode speed, and memory (one panel each;
//             several prompt lengths are grouped bars); bars are medians, whiskers the min–max of the runs.
//   --server: against concurrency (log2 axis), generated tokens/s, requests/s, and the p50/p95/p99 of time to first
//             token and of end-to-end latency (one panel each).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/bench_server.h"
#include "cli/svg_chart.h"

namespace ernie::cli {

// From the report `ernie bench --model` writes with --json (its "results" array, one object per type).
svg::Figure model_bench_figure(const nlohmann::json& report);

// A level with no successful request has no latency points (its throughput, zero, is shown).
svg::Figure server_bench_figure(const LoadTestOptions& options, const std::vector<LevelResult>& results);

// Raises ernie::Error if the plot could not be written into its folder (checked before a run of minutes).
void check_plot_path(const std::string& path);

}  // namespace ernie::cli
