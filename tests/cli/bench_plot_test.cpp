// `ernie bench ... --plot FILE.svg`: the mapping of results onto charts (bench_plot.h) on results made up here, and
// the real program in both modes, whose figure must parse as XML and show the numbers of the JSON report written by
// the same run.
#include "cli/bench_plot.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "cli/svg_check.h"
#include "test_support.h"

namespace ernie {
namespace {

using ernie::testing::el;
using ernie::testing::expect_label;
using ernie::testing::fixture;
using ernie::testing::in_panel;
using ernie::testing::numbers;
using ernie::testing::read_json;
using ernie::testing::run_command;
using ernie::testing::shell_quote;
using ernie::testing::SvgFile;
using ernie::testing::TempDir;

const std::string kHostile = "m<&\"'>";

const cli::svg::BarChart& bars(const cli::svg::Figure& f, size_t i) {
  return std::get<cli::svg::BarChart>(f.charts.at(i));
}
const cli::svg::LineChart& lines(const cli::svg::Figure& f, size_t i) {
  return std::get<cli::svg::LineChart>(f.charts.at(i));
}

nlohmann::json stats(double median, double min, double max) {
  return {{"median", median}, {"min", min}, {"max", max}};
}

TEST(BenchPlot, ModelReportBecomesFourPanelsOfBarsPerType) {
  // Two types; the second lacks the 512-token prompt, which must show as missing, not shift the bars.
  const nlohmann::json report = {
      {"model", "/models/" + kHostile},
      {"reps", 3},
      {"random_weights", true},
      {"results",
       {{{"dtype", "f32"},
         {"weights", "F32"},
         {"kv_dtype", "f32"},
         {"threads", 2},
         {"weight_mib", 1400.5},
         {"peak_rss_mib", 1500.25},
         {"prefill",
          {{{"prompt_tokens", 32},
            {"ttft_seconds", stats(0.1, 0.09, 0.12)},
            {"tokens_per_second", stats(320, 266, 355)}},
           {{"prompt_tokens", 512},
            {"ttft_seconds", stats(2, 1.9, 2.2)},
            {"tokens_per_second", stats(256, 232, 269)}}}},
         {"decode", {{"tokens", 16}, {"after_prompt_tokens", 32}, {"tokens_per_second", stats(20, 19, 21)}}}},
        {{"dtype", "in<&\"t8"},
         {"weights", "Q8_0"},
         {"kv_dtype", "f16"},
         {"threads", 2},
         {"weight_mib", 365.5},
         {"peak_rss_mib", 420},
         {"prefill",
          {{{"prompt_tokens", 32},
            {"ttft_seconds", stats(0.05, 0.04, 0.06)},
            {"tokens_per_second", stats(640, 533, 800)}}}},
         {"decode", {{"tokens", 16}, {"after_prompt_tokens", 32}, {"tokens_per_second", stats(50, 45, 52)}}}}}}};
  const cli::svg::Figure figure = cli::model_bench_figure(report);
  ASSERT_EQ(figure.charts.size(), 4u);
  EXPECT_NE(figure.title.find("/models/" + kHostile), std::string::npos);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(bars(figure, i).categories, (std::vector<std::string>{"f32", "in<&\"t8"}));
  }
  const auto& ttft = bars(figure, 0);
  EXPECT_EQ(ttft.y_label, "ms");
  ASSERT_EQ(ttft.series.size(), 2u);
  EXPECT_EQ(ttft.series[0].name, "32-token prompt");
  EXPECT_EQ(ttft.series[1].name, "512-token prompt");
  EXPECT_DOUBLE_EQ(ttft.series[0].values[0], 100);
  EXPECT_DOUBLE_EQ(ttft.series[0].low[1], 40);
  EXPECT_DOUBLE_EQ(ttft.series[1].high[0], 2200);
  EXPECT_TRUE(std::isnan(ttft.series[1].values[1]));
  const auto& prefill = bars(figure, 1);
  EXPECT_EQ(prefill.y_label, "tokens/s");
  EXPECT_DOUBLE_EQ(prefill.series[0].values[1], 640);
  EXPECT_DOUBLE_EQ(prefill.series[1].values[0], 256);
  const auto& decode = bars(figure, 2);
  ASSERT_EQ(decode.series.size(), 1u);
  EXPECT_EQ(decode.series[0].values, (std::vector<double>{20, 50}));
  EXPECT_EQ(decode.series[0].high, (std::vector<double>{21, 52}));
  const auto& memory = bars(figure, 3);
  EXPECT_EQ(memory.y_label, "MiB");
  ASSERT_EQ(memory.series.size(), 2u);
  EXPECT_EQ(memory.series[0].values, (std::vector<double>{1400.5, 365.5}));
  EXPECT_EQ(memory.series[1].values, (std::vector<double>{1500.25, 420}));
  std::string notes;
  for (const auto& n : figure.notes) notes += n + "\n";
  EXPECT_MENTIONS(notes, "2 threads");
  EXPECT_MENTIONS(notes, "medians of 3 runs");
  EXPECT_MENTIONS(notes, "16 tokens after a 32-token prompt");
  EXPECT_MENTIONS(notes, "random weights");
  EXPECT_MENTIONS(notes, "Q8_0");

  TempDir tmp;
  const auto path = tmp.path() / "model.svg";
  cli::svg::write_file(path.string(), figure);
  const SvgFile svg(path);
  ASSERT_EQ(svg.parse_errors(), "");
  EXPECT_EQ(svg.strings(in_panel(4, el("text", "category"))), (std::vector<std::string>{"f32", "in<&\"t8"}));
  EXPECT_EQ(svg.count(in_panel(1, el("rect", "bar"))), 3);  // 2 × 2, less the missing one
}

TEST(BenchPlot, ServerLevelsBecomeLinesAgainstConcurrency) {
  cli::LoadTestOptions options;
  options.url = "http://127.0.0.1:1/" + kHostile;
  options.requests = 4;
  options.prompt_len = 8;
  options.gen = 3;
  std::vector<cli::LevelResult> levels(3);
  levels[0] = {1, 4, 0, "", 2.0, 2.0, 12, 6.0, {0.010, 0.020, 0.030}, {0.5, 0.6, 0.7}};
  levels[1] = {2, 4, 0, "", 1.0, 4.0, 12, 12.0, {0.015, 0.025, 0.035}, {0.4, 0.45, 0.5}};
  levels[2] = {8, 0, 4, "HTTP 503", 1.0, 0.0, 0, 0.0, {}, {}};  // nothing succeeded: no latency to show
  const cli::svg::Figure figure = cli::server_bench_figure(options, levels);
  ASSERT_EQ(figure.charts.size(), 4u);
  EXPECT_NE(figure.title.find(options.url), std::string::npos);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(lines(figure, i).x, (std::vector<double>{1, 2, 8}));
    EXPECT_TRUE(lines(figure, i).log2_x);
  }
  EXPECT_EQ(lines(figure, 0).y_label, "tokens/s");
  EXPECT_EQ(lines(figure, 0).series[0].values, (std::vector<double>{6, 12, 0}));
  EXPECT_EQ(lines(figure, 1).y_label, "requests/s");
  EXPECT_EQ(lines(figure, 1).series[0].values, (std::vector<double>{2, 4, 0}));
  const auto& ttft = lines(figure, 2);
  EXPECT_EQ(ttft.y_label, "ms");
  ASSERT_EQ(ttft.series.size(), 3u);
  EXPECT_EQ(ttft.series[1].name, "p95");
  EXPECT_DOUBLE_EQ(ttft.series[1].values[1], 25);
  EXPECT_DOUBLE_EQ(ttft.series[2].values[0], 30);
  EXPECT_TRUE(std::isnan(ttft.series[0].values[2]));
  const auto& e2e = lines(figure, 3);
  EXPECT_EQ(e2e.y_label, "s");
  EXPECT_DOUBLE_EQ(e2e.series[2].values[1], 0.5);
  EXPECT_TRUE(std::isnan(e2e.series[2].values[2]));
  std::string notes;
  for (const auto& n : figure.notes) notes += n + "\n";
  EXPECT_MENTIONS(notes, "4 streamed requests per level, 8-token prompts, 3 generated tokens each");
  EXPECT_MENTIONS(notes, "4 at concurrency 8");

  TempDir tmp;
  const auto path = tmp.path() / "server.svg";
  cli::svg::write_file(path.string(), figure);
  const SvgFile svg(path);
  ASSERT_EQ(svg.parse_errors(), "");
  EXPECT_EQ(svg.count(in_panel(1, el("g", "point"))), 3);
  EXPECT_EQ(svg.count(in_panel(3, el("g", "point"))), 6);  // three percentiles at the two levels that succeeded
}

// --- the program -----------------------------------------------------------------------------------------------

struct Ran {
  int exit_code;
  std::string out, err;
};
Ran run_ernie(const std::string& args, const TempDir& tmp) {
  const auto err_path = tmp.path() / "stderr";
  const auto r = run_command("timeout 120 " + std::string(ERNIE_BINARY) + " " + args + " </dev/null 2>" +
                             shell_quote(err_path.string()));
  std::ifstream in(err_path);
  std::stringstream err;
  err << in.rdbuf();
  return {r.exit_code, r.out, err.str()};
}

// Every panel's y-axis steps roundly from zero to above its highest value.
void expect_value_axes(const SvgFile& svg, int panels, const std::vector<double>& highest) {
  for (int p = 1; p <= panels; ++p) {
    const auto ticks = numbers(svg.strings(in_panel(p, el("g", "y-axis") + "//" + el("text", "tick"))));
    ernie::testing::expect_nice_ticks(ticks, "panel " + std::to_string(p));
    if (ticks.empty()) continue;
    EXPECT_EQ(ticks.front(), 0) << "panel " << p;
    EXPECT_GE(ticks.back(), highest[p - 1]) << "panel " << p;
  }
}

TEST(BenchPlot, ModelBenchDrawsTheNumbersOfItsJsonReport) {
  TempDir tmp;
  // A checkpoint folder whose name XML and the shell both give meaning to.
  const auto model = tmp.path() / kHostile;
  std::filesystem::copy(fixture("tiny-ernie/model"), model, std::filesystem::copy_options::recursive);
  const auto json_path = tmp.path() / "bench.json", plot_path = tmp.path() / "bench.svg";
  const Ran r = run_ernie("bench --model " + shell_quote(model.string()) +
                              " --dtype f32,int4 --prompt-len 4,9 --gen 3 --reps 2 --json " +
                              shell_quote(json_path.string()) + " --plot " + shell_quote(plot_path.string()),
                          tmp);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto report = read_json(json_path);
  ASSERT_EQ(report["results"].size(), 2u);
  const SvgFile svg(plot_path);
  ASSERT_EQ(svg.parse_errors(), "");

  EXPECT_EQ(svg.count("//" + el("g", "panel")), 4);
  EXPECT_NE(svg.eval("string(//" + el("text", "figure-title") + ")").find(model.string()), std::string::npos);
  EXPECT_EQ(svg.strings("//" + el("text", "panel-title")),
            (std::vector<std::string>{"Time to first token (prefill)", "Prefill speed", "Decode speed", "Memory"}));
  EXPECT_EQ(svg.strings(in_panel(1, el("g", "legend-entry") + "/" + el("text"))),
            (std::vector<std::string>{"4-token prompt", "9-token prompt"}));
  for (int p = 1; p <= 4; ++p) {
    EXPECT_EQ(svg.strings(in_panel(p, el("text", "category"))), (std::vector<std::string>{"f32", "int4"}))
        << "panel " << p;
  }
  EXPECT_EQ(svg.count(in_panel(1, el("rect", "bar"))), 4);
  EXPECT_EQ(svg.count(in_panel(2, el("rect", "bar"))), 4);
  EXPECT_EQ(svg.count(in_panel(3, el("rect", "bar"))), 2);
  EXPECT_EQ(svg.count(in_panel(4, el("rect", "bar"))), 4);

  // The printed values, type by type and within a type series by series, are the report's.
  std::vector<double> ttft_ms, prefill, decode, memory;
  std::vector<double> highest(4, 0);
  for (const auto& result : report["results"]) {
    for (const auto& p : result["prefill"]) {
      ttft_ms.push_back(p["ttft_seconds"]["median"].get<double>() * 1e3);
      prefill.push_back(p["tokens_per_second"]["median"].get<double>());
      highest[0] = std::max(highest[0], p["ttft_seconds"]["max"].get<double>() * 1e3);
      highest[1] = std::max(highest[1], p["tokens_per_second"]["max"].get<double>());
    }
    decode.push_back(result["decode"]["tokens_per_second"]["median"].get<double>());
    highest[2] = std::max(highest[2], result["decode"]["tokens_per_second"]["max"].get<double>());
    memory.push_back(result["weight_mib"].get<double>());
    memory.push_back(result["peak_rss_mib"].get<double>());
    highest[3] = std::max({highest[3], memory.end()[-1], memory.end()[-2]});
  }
  const std::vector<double>* expected[] = {&ttft_ms, &prefill, &decode, &memory};
  for (int p = 1; p <= 4; ++p) {
    const auto labels = svg.strings(in_panel(p, el("text", "value")));
    ASSERT_EQ(labels.size(), expected[p - 1]->size()) << "panel " << p;
    for (size_t i = 0; i < labels.size(); ++i) {
      expect_label(labels[i], (*expected[p - 1])[i], "panel " + std::to_string(p) + " bar " + std::to_string(i));
    }
  }
  expect_value_axes(svg, 4, highest);
}

TEST(BenchPlot, APlotIntoAMissingFolderFailsBeforeAnyRun) {
  TempDir tmp;
  const Ran r = run_ernie("bench --model " + shell_quote(fixture("tiny-ernie/model").string()) +
                              " --dtype f32 --gen 2 --prompt-len 4 --reps 1 --plot " +
                              shell_quote((tmp.path() / "missing" / "bench.svg").string()),
                          tmp);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_MENTIONS(r.err, "--plot");
  EXPECT_MENTIONS(r.err, "does not exist");
  EXPECT_EQ(r.err.find("ernie bench: f32"), std::string::npos) << "no measurement should have started: " << r.err;
}

// `ernie serve` on a free port, its stderr in a file; stopped (SIGTERM, then SIGKILL) when the test ends.
class Server {
 public:
  explicit Server(const TempDir& tmp) : log_(tmp.path() / "serve.log") {
    const std::string model = fixture("tiny-ernie/model").string();
    pid_ = fork();
    if (pid_ == 0) {
      const int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(fd, STDERR_FILENO);
      execl(ERNIE_BINARY, ERNIE_BINARY, "serve", "--model", model.c_str(), "--port", "0", "--ctx", "512", "--max-batch",
            "4", static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  ~Server() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    for (int i = 0; i < 100 && waitpid(pid_, nullptr, WNOHANG) == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  // The URL it announces once ready, or "" after 20 s.
  std::string url() const {
    const std::regex ready("ready at (http://127\\.0\\.0\\.1:[0-9]+)");
    for (int i = 0; i < 200; ++i) {
      std::smatch match;
      const std::string text = log();
      if (std::regex_search(text, match, ready)) return match[1].str();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return "";
  }
  std::string log() const {
    std::ifstream in(log_);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

 private:
  std::filesystem::path log_;
  pid_t pid_ = -1;
};

// The number as a point's tooltip prints it: "12.3" in "p95, concurrent clients 2: 12.3 ms".
std::string tooltip_number(const std::string& title) {
  const size_t colon = title.rfind(": ");
  if (colon == std::string::npos) return "";
  const size_t end = title.find(' ', colon + 2);
  return title.substr(colon + 2, end == std::string::npos ? std::string::npos : end - colon - 2);
}

TEST(BenchPlot, ServerBenchDrawsTheNumbersOfItsJsonReport) {
  TempDir tmp;
  Server server(tmp);
  const std::string url = server.url();
  ASSERT_FALSE(url.empty()) << server.log();
  const auto json_path = tmp.path() / "bench.json", plot_path = tmp.path() / "bench.svg";
  const Ran r = run_ernie("bench --server " + url + " --concurrency 1,2,4 --requests 4 --prompt-len 8 --gen 3 --json " +
                              shell_quote(json_path.string()) + " --plot " + shell_quote(plot_path.string()),
                          tmp);
  ASSERT_EQ(r.exit_code, 0) << r.err << server.log();
  const auto report = read_json(json_path);
  ASSERT_EQ(report["levels"].size(), 3u);
  const SvgFile svg(plot_path);
  ASSERT_EQ(svg.parse_errors(), "");
  EXPECT_EQ(svg.count("//" + el("g", "panel")), 4);
  EXPECT_NE(svg.eval("string(//" + el("text", "figure-title") + ")").find(url), std::string::npos);

  std::vector<double> highest(4, 0);
  for (int p = 1; p <= 4; ++p) {
    EXPECT_EQ(svg.strings(in_panel(p, el("g", "x-axis") + "//" + el("text", "tick"))),
              (std::vector<std::string>{"1", "2", "4"}))
        << "panel " << p;
  }
  // Throughput: one labelled point per level.
  const char* rates[] = {"generated_tokens_per_second", "requests_per_second"};
  for (int p = 1; p <= 2; ++p) {
    const auto labels = svg.strings(in_panel(p, el("text", "value")));
    ASSERT_EQ(labels.size(), 3u) << "panel " << p;
    for (size_t i = 0; i < 3; ++i) {
      const double v = report["levels"][i][rates[p - 1]].get<double>();
      expect_label(labels[i], v, std::string(rates[p - 1]) + " level " + std::to_string(i));
      highest[p - 1] = std::max(highest[p - 1], v);
    }
  }
  // Latency: p50, p95, p99 lines (in that order), each point's tooltip holding its value.
  const char* latencies[] = {"ttft_seconds", "e2e_seconds"};
  const double scale[] = {1e3, 1};
  for (int p = 3; p <= 4; ++p) {
    EXPECT_EQ(svg.strings(in_panel(p, el("g", "legend-entry") + "/" + el("text"))),
              (std::vector<std::string>{"p50", "p95", "p99"}));
    const auto titles = svg.strings(in_panel(p, el("g", "point") + "/" + el("title")));
    ASSERT_EQ(titles.size(), 9u) << "panel " << p;
    size_t k = 0;
    for (const char* percentile : {"p50", "p95", "p99"}) {
      for (size_t i = 0; i < 3; ++i, ++k) {
        const double v = report["levels"][i][latencies[p - 3]][percentile].get<double>() * scale[p - 3];
        EXPECT_EQ(titles[k].rfind(percentile, 0), 0u) << titles[k];
        EXPECT_NE(titles[k].find("concurrent clients " + std::to_string(1 << i) + ":"), std::string::npos) << titles[k];
        expect_label(tooltip_number(titles[k]), v, titles[k]);
        highest[p - 1] = std::max(highest[p - 1], v);
      }
    }
  }
  expect_value_axes(svg, 4, highest);
}

}  // namespace
}  // namespace ernie
