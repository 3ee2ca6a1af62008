#include "cli/bench_plot.h"

#include <cmath>
#include <filesystem>
#include <limits>

#include "core/error.h"

namespace ernie::cli {
namespace {

using nlohmann::json;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// A number of the report, or NaN (drawn as "no data") where it is missing or not a number, e.g. joules "n/a".
double number(const json& object, const char* key) {
  if (!object.is_object() || !object.contains(key) || !object[key].is_number()) return kNaN;
  return object[key].get<double>();
}

// Appends median, min and max of a {"median", "min", "max"} object, scaled, as a bar and its whisker.
void push_stats(svg::Series& series, const json& stats, double scale) {
  series.values.push_back(number(stats, "median") * scale);
  series.low.push_back(number(stats, "min") * scale);
  series.high.push_back(number(stats, "max") * scale);
}

std::string text(const json& object, const char* key) {
  return object.is_object() && object.contains(key) && object[key].is_string() ? object[key].get<std::string>() : "";
}

}  // namespace

svg::Figure model_bench_figure(const json& report) {
  const json& results = report.contains("results") ? report["results"] : json::array();
  svg::Figure figure;
  figure.title = "ernie bench --model " + text(report, "model");
  figure.columns = 2;

  // The prompt lengths, as the first type measured them (every type runs the same list).
  std::vector<int> lengths;
  if (!results.empty() && results[0].contains("prefill")) {
    for (const json& p : results[0]["prefill"]) lengths.push_back(p.value("prompt_tokens", 0));
  }
  std::string weights_note;
  svg::BarChart ttft{"Time to first token (prefill)", "ms", {}, {}};
  svg::BarChart prefill{"Prefill speed", "tokens/s", {}, {}};
  svg::BarChart decode{"Decode speed", "tokens/s", {}, {svg::Series{}}};
  svg::BarChart memory{"Memory", "MiB", {}, {svg::Series{"weights", {}, {}, {}}, svg::Series{"peak RSS", {}, {}, {}}}};
  for (int length : lengths) {
    const std::string name = std::to_string(length) + "-token prompt";
    ttft.series.push_back({name, {}, {}, {}});
    prefill.series.push_back({name, {}, {}, {}});
  }
  for (const json& r : results) {
    std::string category = text(r, "dtype");
    if (category == "stored") category += " (" + text(r, "weights") + ")";
    for (svg::BarChart* chart : {&ttft, &prefill, &decode, &memory}) chart->categories.push_back(category);
    weights_note += (weights_note.empty() ? "" : ", ") + category + " " + text(r, "weights") + " (KV cache " +
                    text(r, "kv_dtype") + ")";
    // Matched by prompt length, not position, so a result that lacks one shows "n/a" rather than a wrong bar.
    for (size_t i = 0; i < lengths.size(); ++i) {
      json found = json::object();
      for (const json& p : r.value("prefill", json::array())) {
        if (p.value("prompt_tokens", -1) == lengths[i]) found = p;
      }
      push_stats(ttft.series[i], found.value("ttft_seconds", json::object()), 1e3);
      push_stats(prefill.series[i], found.value("tokens_per_second", json::object()), 1);
    }
    push_stats(decode.series[0], r.value("decode", json::object()).value("tokens_per_second", json::object()), 1);
    memory.series[0].values.push_back(number(r, "weight_mib"));
    memory.series[1].values.push_back(number(r, "peak_rss_mib"));
  }

  const json first = results.empty() ? json::object() : results[0];
  const json decode_info = first.value("decode", json::object());
  std::string setup = std::to_string(first.value("threads", 0)) + " threads; bars are medians of " +
                      std::to_string(report.value("reps", 0)) +
                      " runs, whiskers their min–max; decode: " + std::to_string(decode_info.value("tokens", 0)) +
                      " tokens after a " + std::to_string(decode_info.value("after_prompt_tokens", 0)) +
                      "-token prompt";
  if (report.value("random_weights", false)) setup += "; random weights (speed only)";
  figure.notes = {setup, "weights: " + weights_note};
  figure.charts = {ttft, prefill, decode, memory};
  return figure;
}

svg::Figure server_bench_figure(const LoadTestOptions& o, const std::vector<LevelResult>& results) {
  svg::Figure figure;
  figure.title = "ernie bench --server " + o.url;
  figure.columns = 2;
  const auto chart = [&](std::string title, std::string unit, bool labelled) {
    svg::LineChart c;
    c.title = std::move(title);
    c.y_label = std::move(unit);
    c.x_label = "concurrent clients";
    c.log2_x = true;
    c.label_points = labelled;
    for (const LevelResult& r : results) c.x.push_back(r.concurrency);
    return c;
  };
  svg::LineChart tokens = chart("Generated tokens per second", "tokens/s", true);
  svg::LineChart requests = chart("Requests per second", "requests/s", true);
  svg::LineChart ttft = chart("Time to first token", "ms", false);
  svg::LineChart e2e = chart("End-to-end latency", "s", false);
  tokens.series = {svg::Series{}};
  requests.series = {svg::Series{}};
  for (svg::LineChart* c : {&ttft, &e2e}) {
    c->series = {{"p50", {}, {}, {}}, {"p95", {}, {}, {}}, {"p99", {}, {}, {}}};
  }
  std::string failures;
  for (const LevelResult& r : results) {
    tokens.series[0].values.push_back(r.tokens_per_second);
    requests.series[0].values.push_back(r.requests_per_second);
    // Percentiles of no request are not zero latency: leave the points out.
    const bool any = r.succeeded > 0;
    const Percentiles& t = r.ttft;
    const Percentiles& e = r.e2e;
    for (int i = 0; i < 3; ++i) {
      const double tv[] = {t.p50, t.p95, t.p99}, ev[] = {e.p50, e.p95, e.p99};
      ttft.series[i].values.push_back(any ? tv[i] * 1e3 : kNaN);
      e2e.series[i].values.push_back(any ? ev[i] : kNaN);
    }
    if (r.failed) {
      failures += (failures.empty() ? "" : ", ") + std::to_string(r.failed) + " at concurrency " +
                  std::to_string(r.concurrency);
    }
  }
  figure.notes = {std::to_string(o.requests) + " streamed requests per level, " + std::to_string(o.prompt_len) +
                  "-token prompts, " + std::to_string(o.gen) +
                  " generated tokens each; latency percentiles over the requests that succeeded"};
  if (!failures.empty()) figure.notes.push_back("failed requests (left out): " + failures);
  figure.charts = {tokens, requests, ttft, e2e};
  return figure;
}

void check_plot_path(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty() && !std::filesystem::is_directory(parent)) {
    fail("--plot ", path, ": the folder ", parent.string(), " does not exist");
  }
}

}  // namespace ernie::cli
