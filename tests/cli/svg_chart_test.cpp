// The chart writer behind `ernie bench --plot` (src/cli/svg_chart.h), on figures built here: the documents parse
// as XML, hold the panels, bars, points, ticks and labels asked for, and escape whatever text they are given.
#include "cli/svg_chart.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <sstream>

#include "cli/svg_check.h"
#include "test_support.h"

namespace ernie {
namespace {

using cli::svg::BarChart;
using cli::svg::Figure;
using cli::svg::LineChart;
using cli::svg::Series;
using ernie::testing::el;
using ernie::testing::in_panel;
using ernie::testing::numbers;
using ernie::testing::SvgFile;
using ernie::testing::TempDir;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// Every character XML gives a meaning to, a byte that is not UTF-8 and a control character.
const std::string kHostile = "a<b>&c\"d'e \xff\x01 <!-- ]]> &amp;";
// What a reader must get back for it: the same text, with U+FFFD for the two bytes that cannot be in XML.
const std::string kHostileRead = "a<b>&c\"d'e \xEF\xBF\xBD\xEF\xBF\xBD <!-- ]]> &amp;";

SvgFile write(const TempDir& tmp, const Figure& figure, const char* name = "figure.svg") {
  const auto path = tmp.path() / name;
  cli::svg::write_file(path.string(), figure);
  return SvgFile(path);
}

void expect_ticks(const std::vector<double>& ticks, const std::vector<double>& expected) {
  ASSERT_EQ(ticks.size(), expected.size());
  for (size_t i = 0; i < ticks.size(); ++i) EXPECT_NEAR(ticks[i], expected[i], 1e-12) << i;
}

TEST(SvgChart, NiceTicksCoverTheRangeWithTheSmallestRoundStep) {
  expect_ticks(cli::svg::nice_ticks(0, 108, 6), {0, 20, 40, 60, 80, 100, 120});
  expect_ticks(cli::svg::nice_ticks(0, 100, 5), {0, 20, 40, 60, 80, 100});
  expect_ticks(cli::svg::nice_ticks(0, 0, 6), {0, 0.2, 0.4, 0.6, 0.8, 1});  // no span: [0, 1]
  expect_ticks(cli::svg::nice_ticks(-3, 7, 4), {-5, 0, 5, 10});
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> exponent(-6, 9), unit(0, 1);
  for (int trial = 0; trial < 2000; ++trial) {
    const double hi = std::pow(10.0, exponent(rng)), lo = trial % 3 == 0 ? -hi * unit(rng) : hi * unit(rng);
    const int max_intervals = 2 + trial % 7;
    const auto ticks = cli::svg::nice_ticks(lo, hi, max_intervals);
    std::ostringstream where_text;
    where_text << "[" << lo << ", " << hi << "] in " << max_intervals;
    const std::string where = where_text.str();
    ASSERT_GE(ticks.size(), 2u) << where;
    EXPECT_LE(ticks.front(), lo) << where;
    EXPECT_GE(ticks.back(), hi * (1 - 1e-12)) << where;
    EXPECT_LE(ticks.size() - 1, static_cast<size_t>(max_intervals)) << where;
    ernie::testing::expect_nice_ticks(ticks, where);
    // The next smaller round step (1 → 5 of the decade below, 2 → 1, 5 → 2) would need more intervals.
    const double step = ticks[1] - ticks[0];
    const double mantissa = std::round(step / std::pow(10.0, std::floor(std::log10(step) + 1e-9)));
    const double smaller = mantissa == 1 ? step / 2 : mantissa == 2 ? step / 2 : step * 0.4;
    EXPECT_GT(std::ceil(hi / smaller - 1e-9) - std::floor(lo / smaller + 1e-9), max_intervals) << where;
  }
}

TEST(SvgChart, ValuesShowThreeSignificantDigits) {
  EXPECT_EQ(cli::svg::format_value(1234.56), "1235");
  EXPECT_EQ(cli::svg::format_value(123.4), "123");
  EXPECT_EQ(cli::svg::format_value(12.34), "12.3");
  EXPECT_EQ(cli::svg::format_value(1.5), "1.5");
  EXPECT_EQ(cli::svg::format_value(2), "2");
  EXPECT_EQ(cli::svg::format_value(0.01234), "0.0123");
  EXPECT_EQ(cli::svg::format_value(-2.5), "-2.5");
  EXPECT_EQ(cli::svg::format_value(0), "0");
  EXPECT_EQ(cli::svg::format_value(0.00001234), "1.23e-05");
  EXPECT_EQ(cli::svg::format_value(kNaN), "n/a");
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> exponent(-8, 16);
  for (int i = 0; i < 5000; ++i) {
    const double v = std::pow(10.0, exponent(rng));
    ernie::testing::expect_label(cli::svg::format_value(v), v, "format_value");
  }
}

TEST(SvgChart, EscapesMarkupAndReplacesWhatXmlCannotHold) {
  EXPECT_EQ(cli::svg::escape("a<b>&c\"d'e"), "a&lt;b&gt;&amp;c&quot;d&#39;e");
  EXPECT_EQ(cli::svg::escape("你好, ERNIE"), "你好, ERNIE");
  EXPECT_EQ(cli::svg::escape("\xff\x01x\xef\xbf\xbe"), "\xEF\xBF\xBD\xEF\xBF\xBDx\xEF\xBF\xBD");
  EXPECT_EQ(cli::svg::escape("tab\tnew\nline"), "tab new line");
}

Figure bars_figure() {
  BarChart speed{"Speed " + kHostile, "tokens/s " + kHostile, {"f32", kHostile, "int4"}, {}};
  speed.series.push_back({"short " + kHostile, {12.5, 250, kNaN}, {11, 200, kNaN}, {14, 260, kNaN}});
  speed.series.push_back({"long", {3, 1234, 0.5}, {}, {}});
  BarChart memory{"Memory", "MiB", {"a", "b"}, {Series{"", {100, 400}, {}, {}}}};
  Figure figure;
  figure.title = "Title " + kHostile;
  figure.notes = {"note " + kHostile};
  figure.charts = {speed, memory};
  return figure;
}

TEST(SvgChart, BarChartsAreWellFormedAndHoldEveryBarAndLabel) {
  TempDir tmp;
  const SvgFile svg = write(tmp, bars_figure());
  ASSERT_EQ(svg.parse_errors(), "");
  EXPECT_EQ(svg.count("/" + el("svg")), 1);
  EXPECT_EQ(svg.count("//" + el("g", "panel")), 2);

  // Text comes back exactly as given (the parser decodes the entities).
  EXPECT_EQ(svg.eval("string(//" + el("text", "figure-title") + ")"), "Title " + kHostileRead);
  EXPECT_EQ(svg.eval("string(//" + el("text", "note") + ")"), "note " + kHostileRead);
  EXPECT_EQ(svg.strings(in_panel(1, el("text", "panel-title"))), std::vector<std::string>{"Speed " + kHostileRead});
  EXPECT_EQ(svg.strings(in_panel(1, el("text", "axis-label"))), std::vector<std::string>{"tokens/s " + kHostileRead});
  EXPECT_EQ(svg.strings(in_panel(1, el("text", "category"))), (std::vector<std::string>{"f32", kHostileRead, "int4"}));
  EXPECT_EQ(svg.strings(in_panel(1, el("g", "legend-entry") + "/" + el("text"))),
            (std::vector<std::string>{"short " + kHostileRead, "long"}));
  // A chart's only, unnamed series needs no legend.
  EXPECT_EQ(svg.count(in_panel(2, el("g", "legend-entry"))), 0);

  // Category by category, series by series: one bar per finite value, "n/a" where there is none.
  EXPECT_EQ(svg.count(in_panel(1, el("rect", "bar"))), 5);
  EXPECT_EQ(svg.count(in_panel(2, el("rect", "bar"))), 2);
  const auto labels = svg.strings(in_panel(1, el("text", "value")));
  const std::vector<double> expected = {12.5, 3, 250, 1234, kNaN, 0.5};
  ASSERT_EQ(labels.size(), expected.size());
  for (size_t i = 0; i < labels.size(); ++i) {
    if (std::isnan(expected[i])) {
      EXPECT_EQ(labels[i], "n/a");
    } else {
      ernie::testing::expect_label(labels[i], expected[i], "bar " + std::to_string(i));
    }
  }
  // Each bar's tooltip names its category, series and value with the unit, and the whisker's range.
  EXPECT_EQ(svg.eval("string((//" + el("rect", "bar") + ")[1]/" + el("title") + ")"),
            "f32, short " + kHostileRead + ": 12.5 tokens/s " + kHostileRead + " (11–14)");

  // Heights are proportional to the values on an axis from zero.
  const auto heights = numbers(svg.strings(in_panel(2, el("rect", "bar") + "/@height")));
  ASSERT_EQ(heights.size(), 2u);
  EXPECT_NEAR(heights[1] / heights[0], 4.0, 0.05);

  // The axis starts at zero, steps roundly and reaches above the highest whisker.
  for (int panel : {1, 2}) {
    const auto ticks = numbers(svg.strings(in_panel(panel, el("g", "y-axis") + "//" + el("text", "tick"))));
    ernie::testing::expect_nice_ticks(ticks, "panel " + std::to_string(panel));
    EXPECT_EQ(ticks.front(), 0);
    EXPECT_GE(ticks.back(), panel == 1 ? 1234 : 400);
  }
}

TEST(SvgChart, LineChartsOnALog2AxisBreakAtMissingValues) {
  LineChart c;
  c.title = "Latency";
  c.x_label = "clients";
  c.y_label = "ms";
  c.x = {8, 1, 4, 2};  // out of order: the lines still run left to right
  c.log2_x = true;
  c.series = {{"p50", {80, 10, 40, 20}, {}, {}}, {"p99", {90, 15, kNaN, 30}, {}, {}}};
  LineChart labelled = c;
  labelled.series.resize(1);
  labelled.series[0].name.clear();
  labelled.label_points = true;
  Figure figure;
  figure.title = "lines";
  figure.charts = {c, labelled};
  TempDir tmp;
  const SvgFile svg = write(tmp, figure);
  ASSERT_EQ(svg.parse_errors(), "");
  EXPECT_EQ(svg.count("//" + el("g", "panel")), 2);

  EXPECT_EQ(svg.strings(in_panel(1, el("g", "x-axis") + "//" + el("text", "tick"))),
            (std::vector<std::string>{"1", "2", "4", "8"}));
  EXPECT_EQ(svg.strings(in_panel(1, el("g", "legend-entry") + "/" + el("text"))),
            (std::vector<std::string>{"p50", "p99"}));
  EXPECT_EQ(svg.count(in_panel(1, el("g", "point"))), 7);
  // p50 is one polyline; p99 lacks its value at x = 4, which splits its line in two.
  EXPECT_EQ(svg.count(in_panel(1, el("polyline", "line"))), 3);
  const std::string first_line = svg.eval("string(" + in_panel(1, el("polyline", "line")) + "[1]/@points)");
  double x[4], y[4];
  ASSERT_EQ(std::sscanf(first_line.c_str(), "%lf,%lf %lf,%lf %lf,%lf %lf,%lf", &x[0], &y[0], &x[1], &y[1], &x[2], &y[2],
                        &x[3], &y[3]),
            8)
      << first_line;
  for (int i = 1; i < 4; ++i) {
    EXPECT_NEAR(x[i] - x[i - 1], x[1] - x[0], 0.15) << "powers of two sit evenly on a log2 axis: " << first_line;
    EXPECT_LT(y[i], y[i - 1]) << "values rise with x, so the line climbs (SVG's y points down): " << first_line;
  }
  EXPECT_EQ(svg.eval("string((" + in_panel(1, el("g", "point")) + ")[1]/" + el("title") + ")"),
            "p50, clients 1: 10 ms");

  // Labelled points print their values, in order of x.
  const auto labels = svg.strings(in_panel(2, el("text", "value")));
  ASSERT_EQ(labels.size(), 4u);
  const double in_x_order[] = {10, 20, 40, 80};
  for (size_t i = 0; i < 4; ++i) ernie::testing::expect_label(labels[i], in_x_order[i], "point");
  EXPECT_EQ(svg.count(in_panel(2, el("g", "legend-entry"))), 0);
}

TEST(SvgChart, EmptyChartsAndFiguresStayWellFormed) {
  Figure figure;
  figure.title = kHostile;
  TempDir tmp;
  EXPECT_EQ(write(tmp, figure, "empty.svg").parse_errors(), "");
  figure.charts = {BarChart{}, LineChart{}, BarChart{"zeros", "x", {"a"}, {Series{"", {0}, {}, {}}}}};
  const SvgFile svg = write(tmp, figure, "blank.svg");
  ASSERT_EQ(svg.parse_errors(), "");
  EXPECT_EQ(svg.count("//" + el("g", "panel")), 3);
  EXPECT_EQ(svg.strings(in_panel(1, el("text", "value"))), std::vector<std::string>{"no data"});
  EXPECT_EQ(svg.strings(in_panel(2, el("text", "value"))), std::vector<std::string>{"no data"});
  ernie::testing::expect_nice_ticks(numbers(svg.strings(in_panel(3, el("text", "tick")))), "all-zero data");
}

TEST(SvgChart, LargeTicksCountThousandsAndMillions) {
  Figure figure;
  figure.charts = {BarChart{"k", "tokens/s", {"a"}, {Series{"", {260000}, {}, {}}}},
                   BarChart{"M", "B", {"a"}, {Series{"", {2.5e7}, {}, {}}}},
                   BarChart{"plain", "B", {"a"}, {Series{"", {7000}, {}, {}}}}};
  TempDir tmp;
  const SvgFile svg = write(tmp, figure);
  ASSERT_EQ(svg.parse_errors(), "");
  EXPECT_EQ(svg.strings(in_panel(1, el("text", "tick"))),
            (std::vector<std::string>{"0", "50k", "100k", "150k", "200k", "250k", "300k"}));
  EXPECT_EQ(svg.strings(in_panel(2, el("text", "tick"))),
            (std::vector<std::string>{"0", "5M", "10M", "15M", "20M", "25M", "30M"}));
  EXPECT_EQ(svg.strings(in_panel(3, el("text", "tick"))),
            (std::vector<std::string>{"0", "2000", "4000", "6000", "8000"}));
}

TEST(SvgChart, AnUnwritablePathIsAClearError) {
  const std::string message =
      ernie::testing::error_of([] { cli::svg::write_file("/nonexistent-folder/figure.svg", bars_figure()); });
  EXPECT_MENTIONS(message, "/nonexistent-folder/figure.svg");
}

}  // namespace
}  // namespace ernie
