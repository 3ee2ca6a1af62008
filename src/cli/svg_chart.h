// A small SVG writer for figures made of charts: bar charts (categories × series) and line charts (numeric x,
// optionally on a log2 axis), laid out as a grid of panels in one self-contained SVG document. It knows nothing of
// what is plotted; `ernie bench --plot` maps its results onto it (bench_plot.cpp).
//
// Each panel is one chart with its own title, axes, ticks, unit and legend. Value axes include zero and step by
// 1, 2 or 5 × 10^k. Colours are the Okabe–Ito palette (distinguishable with the common colour-vision deficiencies),
// and line series also differ by marker shape and dash pattern, so a figure survives greyscale printing. Fonts have
// fixed sizes; the background is white. All text is XML-escaped, and bytes that are not UTF-8 (or characters XML
// forbids) become U+FFFD, so any string (a model path, a server URL) gives a well-formed document.
//
// The elements carry classes a reader (or a test) can select: g.panel per chart, text.panel-title, text.tick
// (g.y-axis / g.x-axis), text.axis-label, text.category, rect.bar, g.point, text.value (the printed values),
// g.legend-entry; each bar and point has a <title> (its series, category or x, and value) that viewers show on hover.
//
// Pure functions: no global state, safe on any thread.
#pragma once

#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace ernie::cli::svg {

// One named sequence of values: a bar in each category (BarChart) or a line through the x positions (LineChart).
// A NaN value means "no data": no bar (an "n/a" label instead) or no point (the line breaks there).
struct Series {
  std::string name;               // legend text; a chart whose only series has no name gets no legend
  std::vector<double> values;     // one per category or per x (missing ones count as NaN)
  std::vector<double> low, high;  // optional whiskers (e.g. min and max of repeated runs): empty, or one per value
};

struct BarChart {
  std::string title;
  std::string y_label;                  // the quantity and its unit, e.g. "ms"
  std::vector<std::string> categories;  // one group of bars each, labelled under it
  std::vector<Series> series;           // one bar per series in every category
};

struct LineChart {
  std::string title;
  std::string x_label, y_label;
  std::vector<double> x;      // one per value of every series; any order (points are joined in order of x)
  bool log2_x = false;        // log2 x axis with a tick at each x (x must be > 0), e.g. concurrency 1, 2, 4, 8
  bool label_points = false;  // print each value above its marker (best for one or two series)
  std::vector<Series> series;
};

using Chart = std::variant<BarChart, LineChart>;

struct Figure {
  std::string title;
  std::vector<std::string> notes;  // small lines under the title: what was measured, where, how
  int columns = 2;                 // panels per row
  std::vector<Chart> charts;
};

// The whole SVG document (UTF-8, with an XML declaration).
std::string render(const Figure& figure);

// Writes render(figure) to `path`; raises ernie::Error if the file cannot be written.
void write_file(const std::string& path, const Figure& figure);

// Ticks i × step for consecutive integers i, the first <= lo and the last >= hi, with the smallest step of the form
// 1, 2 or 5 × 10^k that needs at most `max_intervals` intervals (at least one). hi <= lo is taken as [lo, lo + 1].
std::vector<double> nice_ticks(double lo, double hi, int max_intervals);

// A value as labels print it: three significant digits (all the digits before the point from 100 on), trailing
// zeros dropped, so within 0.5 % of the value; an exponent only below 0.001 or from 10^15; "n/a" for NaN.
std::string format_value(double value);

// `text` escaped for XML character data and attribute values.
std::string escape(std::string_view text);

}  // namespace ernie::cli::svg
