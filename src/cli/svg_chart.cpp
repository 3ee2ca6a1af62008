#include "cli/svg_chart.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <limits>
#include <numeric>

#include "core/error.h"
#include "core/utf8.h"

namespace ernie::cli::svg {
namespace {

// Okabe & Ito's palette without its yellow (too pale on white), in their order.
constexpr const char* kPalette[] = {"#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000"};
constexpr const char* kDashes[] = {"", "7 3", "2 3", "9 3 2 3"};
constexpr int kPaletteSize = sizeof kPalette / sizeof kPalette[0];
constexpr int kDashCount = sizeof kDashes / sizeof kDashes[0];

// Geometry in px. A panel is a fixed-size cell of the grid; its plot area leaves room for the tick labels and the
// y-axis label on the left, the category (or x) labels and the x-axis label below.
constexpr double kPanelWidth = 460, kPanelHeight = 300;
constexpr double kPlotLeft = 70, kPlotRightMargin = 18, kPlotBottomMargin = 52;
constexpr double kFigureTitleFont = 16, kPanelTitleFont = 13, kFont = 11, kValueFont = 10;
constexpr double kLegendRow = 16;
constexpr int kMaxIntervals = 6;

const std::string kFontFamily = "DejaVu Sans, Verdana, Arial, Helvetica, sans-serif";
const std::string kAxisColour = "#333333", kGridColour = "#e3e3e3", kTextColour = "#222222";

std::string fixed(double v, int decimals) {
  char buffer[64];
  const auto r = std::to_chars(buffer, buffer + sizeof buffer, v, std::chars_format::fixed, decimals);
  return std::string(buffer, r.ptr);
}

// Coordinates: one decimal is finer than any screen needs and keeps the file small.
std::string px(double v) {
  return fixed(std::isfinite(v) ? v : 0.0, 1);
}

std::string attr(std::string_view name, std::string_view value) {
  return " " + std::string(name) + "=\"" + escape(value) + "\"";
}

// Text is measured by estimate (no font metrics here): 0.6 em per character suits digits and Latin text in the
// sans-serif fonts named above, and is used only to avoid overlaps, never to place a glyph.
double text_width(std::string_view text, double font) {
  size_t characters = 0;
  for (unsigned char c : text) characters += (c & 0xC0) != 0x80;
  return 0.6 * font * static_cast<double>(characters);
}

enum class Anchor { start, middle, end };

struct TextStyle {
  double font = kFont;
  Anchor anchor = Anchor::start;
  std::string cls;
  bool bold = false;
  double rotate = 0;  // degrees, about (x, y)
};

void text(std::string& out, double x, double y, std::string_view content, const TextStyle& style) {
  static constexpr const char* kAnchors[] = {"start", "middle", "end"};
  out += "<text" + attr("x", px(x)) + attr("y", px(y)) + attr("font-size", px(style.font));
  if (style.anchor != Anchor::start) out += attr("text-anchor", kAnchors[static_cast<int>(style.anchor)]);
  if (style.bold) out += attr("font-weight", "bold");
  if (style.rotate != 0) out += attr("transform", "rotate(" + px(style.rotate) + " " + px(x) + " " + px(y) + ")");
  if (!style.cls.empty()) out += attr("class", style.cls);
  out += ">" + escape(content) + "</text>\n";
}

void line(std::string& out, double x1, double y1, double x2, double y2, const std::string& colour, double width = 1,
          std::string_view dash = {}) {
  out += "<line" + attr("x1", px(x1)) + attr("y1", px(y1)) + attr("x2", px(x2)) + attr("y2", px(y2)) +
         attr("stroke", colour) + attr("stroke-width", px(width));
  if (!dash.empty()) out += attr("stroke-dasharray", dash);
  out += "/>\n";
}

// Tick labels show as many decimals as the step needs (step 0.05 → "0.15"), so they are exact and unique. From
// 10 000 up they count thousands or millions ("250k", "30M"): still exact, as such an axis steps by at least 1000
// (it includes zero and has at most kMaxIntervals intervals), and narrow enough for the margin.
std::vector<std::string> tick_labels(const std::vector<double>& ticks) {
  const double step = ticks.size() > 1 ? ticks[1] - ticks[0] : 1;
  double biggest = 0;
  for (double t : ticks) biggest = std::max(biggest, std::fabs(t));
  double unit = 1;
  const char* suffix = "";
  if (biggest >= 1e7 && step >= 1e6) {
    unit = 1e6;
    suffix = "M";
  } else if (biggest >= 1e4 && step >= 1e3) {
    unit = 1e3;
    suffix = "k";
  }
  const int decimals = std::max(0, -static_cast<int>(std::floor(std::log10(step / unit) + 1e-9)));
  std::vector<std::string> labels;
  for (double t : ticks) labels.push_back(t == 0 ? "0" : fixed(t / unit, decimals) + suffix);
  return labels;
}

double value_at(const std::vector<double>& v, size_t i) {
  return i < v.size() ? v[i] : std::numeric_limits<double>::quiet_NaN();
}

// The range of every finite value and whisker end, with zero in it (bars grow from zero; rates and latencies read
// best against it).
std::pair<double, double> data_range(const std::vector<Series>& series) {
  double lo = 0, hi = 0;
  for (const Series& s : series) {
    for (const auto* values : {&s.values, &s.low, &s.high}) {
      for (double v : *values) {
        if (!std::isfinite(v)) continue;
        lo = std::min(lo, v);
        hi = std::max(hi, v);
      }
    }
  }
  return {lo, hi};
}

// A value axis over the data, stretched at the top so that `headroom_px` of the plot stays free above the highest
// value (for its label).
struct ValueAxis {
  std::vector<double> ticks;
  double lo = 0, hi = 1;
  double top = 0, bottom = 0;  // px
  double y(double v) const { return bottom - (v - lo) / (hi - lo) * (bottom - top); }
};

ValueAxis value_axis(std::pair<double, double> range, double top, double bottom, double headroom_px) {
  ValueAxis a;
  a.top = top;
  a.bottom = bottom;
  auto [lo, hi] = range;
  if (hi <= lo) hi = lo + 1;  // all zero (or no data): an axis from 0 to 1
  const double free = std::clamp(headroom_px / (bottom - top), 0.0, 0.5);
  a.ticks = nice_ticks(lo, lo + (hi - lo) / (1 - free), kMaxIntervals);
  a.lo = a.ticks.front();
  a.hi = a.ticks.back();
  return a;
}

// Horizontal grid lines and labelled ticks on the left edge, and the axis title turned along it.
void draw_value_axis(std::string& out, const ValueAxis& a, double left, double right, const std::string& label) {
  const std::vector<std::string> labels = tick_labels(a.ticks);
  out += "<g class=\"y-axis\">\n";
  for (size_t i = 0; i < a.ticks.size(); ++i) {
    const double y = a.y(a.ticks[i]);
    if (a.ticks[i] != 0) line(out, left, y, right, y, kGridColour);
    line(out, left - 4, y, left, y, kAxisColour);
    text(out, left - 7, y + 4, labels[i], {kFont, Anchor::end, "tick"});
  }
  line(out, left, a.top, left, a.bottom, kAxisColour);
  const double mid = (a.top + a.bottom) / 2;
  text(out, 16, mid, label, {kFont, Anchor::middle, "axis-label", false, -90});
  out += "</g>\n";
  // The zero line, drawn over the bars' feet.
  if (a.lo <= 0 && a.hi >= 0) line(out, left, a.y(0), right, a.y(0), kAxisColour);
}

// The legend entries of a panel, wrapped into rows that fit its width. Empty when there is nothing to tell apart.
struct LegendEntry {
  double x, y;
  size_t series;
};
std::vector<LegendEntry> legend_layout(const std::vector<Series>& series, double left, double right, double top,
                                       double swatch) {
  std::vector<LegendEntry> entries;
  if (series.empty() || (series.size() == 1 && series[0].name.empty())) return entries;
  double x = left, y = top;
  for (size_t s = 0; s < series.size(); ++s) {
    const double width = swatch + 5 + text_width(series[s].name, kFont) + 14;
    if (x > left && x + width > right) {
      x = left;
      y += kLegendRow;
    }
    entries.push_back({x, y, s});
    x += width;
  }
  return entries;
}

double legend_height(const std::vector<LegendEntry>& entries, double top) {
  return entries.empty() ? 0 : entries.back().y - top + kLegendRow;
}

enum class Marker { circle, square, triangle, diamond };

void marker(std::string& out, double x, double y, size_t series, const std::string& title = {}) {
  const std::string& colour = kPalette[series % kPaletteSize];
  const double r = 3.8;
  out += title.empty() ? "" : "<g class=\"point\"><title>" + escape(title) + "</title>";
  switch (static_cast<Marker>(series % 4)) {
    case Marker::circle:
      out += "<circle" + attr("cx", px(x)) + attr("cy", px(y)) + attr("r", px(r)) + attr("fill", colour) + "/>";
      break;
    case Marker::square:
      out += "<rect" + attr("x", px(x - r)) + attr("y", px(y - r)) + attr("width", px(2 * r)) +
             attr("height", px(2 * r)) + attr("fill", colour) + "/>";
      break;
    case Marker::triangle:
      out += "<path" +
             attr("d", "M" + px(x) + " " + px(y - 1.2 * r) + "L" + px(x + 1.2 * r) + " " + px(y + r) + "L" +
                           px(x - 1.2 * r) + " " + px(y + r) + "Z") +
             attr("fill", colour) + "/>";
      break;
    case Marker::diamond:
      out += "<path" +
             attr("d", "M" + px(x) + " " + px(y - 1.3 * r) + "L" + px(x + 1.3 * r) + " " + px(y) + "L" + px(x) + " " +
                           px(y + 1.3 * r) + "L" + px(x - 1.3 * r) + " " + px(y) + "Z") +
             attr("fill", colour) + "/>";
      break;
  }
  out += title.empty() ? "\n" : "</g>\n";
}

// A vertical min–max whisker with caps.
void whisker(std::string& out, double x, double y_low, double y_high, const std::string& colour) {
  line(out, x, y_low, x, y_high, colour, 1.2);
  line(out, x - 4, y_low, x + 4, y_low, colour, 1.2);
  line(out, x - 4, y_high, x + 4, y_high, colour, 1.2);
}

std::string with_unit(double v, const std::string& unit) {
  return format_value(v) + (unit.empty() ? "" : " " + unit);
}

void panel_title(std::string& out, const std::string& title) {
  text(out, kPanelWidth / 2, 20, title, {kPanelTitleFont, Anchor::middle, "panel-title", true});
}

void draw_bars(std::string& out, const BarChart& c) {
  panel_title(out, c.title);
  const double left = kPlotLeft, right = kPanelWidth - kPlotRightMargin, bottom = kPanelHeight - kPlotBottomMargin;
  const auto legend = legend_layout(c.series, left, right, 32, 10);
  for (const LegendEntry& e : legend) {
    out += "<g class=\"legend-entry\">";
    out += "<rect" + attr("x", px(e.x)) + attr("y", px(e.y)) + attr("width", "10") + attr("height", "10") +
           attr("fill", kPalette[e.series % kPaletteSize]) + "/>";
    text(out, e.x + 15, e.y + 9, c.series[e.series].name, {kFont, Anchor::start, ""});
    out += "</g>\n";
  }
  const double top = 36 + legend_height(legend, 32) + 6;

  const size_t categories = std::max<size_t>(1, c.categories.size());
  const size_t per_group = std::max<size_t>(1, c.series.size());
  const double group = (right - left) / static_cast<double>(categories);
  const double bar = std::min(0.8 * group / static_cast<double>(per_group), 56.0);
  // Labels that do not fit across their bar are turned upright; the axis then leaves room for the longest.
  double widest = 0;
  for (const Series& s : c.series) {
    for (double v : s.values) widest = std::max(widest, text_width(format_value(v), kValueFont));
  }
  const bool upright = widest > bar + 4;
  const ValueAxis axis = value_axis(data_range(c.series), top, bottom, upright ? widest + 8 : 15);
  draw_value_axis(out, axis, left, right, c.y_label);

  for (size_t i = 0; i < c.categories.size(); ++i) {
    const double x0 = left + group * static_cast<double>(i);
    text(out, x0 + group / 2, bottom + 17, c.categories[i], {kFont, Anchor::middle, "category"});
    const double first = x0 + (group - bar * static_cast<double>(per_group)) / 2;
    for (size_t s = 0; s < c.series.size(); ++s) {
      const Series& series = c.series[s];
      const std::string& colour = kPalette[s % kPaletteSize];
      const double x = first + bar * static_cast<double>(s), centre = x + bar / 2;
      const double v = value_at(series.values, i), low = value_at(series.low, i), high = value_at(series.high, i);
      if (!std::isfinite(v)) {
        text(out, centre, axis.y(0) - 4, "n/a", {kValueFont, Anchor::middle, "value"});
        continue;
      }
      std::string title =
          c.categories[i] + (series.name.empty() ? "" : ", " + series.name) + ": " + with_unit(v, c.y_label);
      const bool whiskers = std::isfinite(low) && std::isfinite(high);
      if (whiskers) title += " (" + format_value(low) + "–" + format_value(high) + ")";
      const double y_top = axis.y(std::max(v, 0.0)), y_bottom = axis.y(std::min(v, 0.0));
      // 1 px between neighbouring bars keeps them apart where colours are close for some readers.
      out += "<rect class=\"bar\"" + attr("x", px(x + 0.5)) + attr("y", px(y_top)) +
             attr("width", px(std::max(bar - 1, 1.0))) + attr("height", px(y_bottom - y_top)) + attr("fill", colour) +
             "><title>" + escape(title) + "</title></rect>\n";
      double label_y = y_top;
      if (whiskers) {
        whisker(out, centre, axis.y(low), axis.y(high), kAxisColour);
        label_y = std::min(label_y, axis.y(std::max(low, high)));
      }
      if (upright) {
        text(out, centre + 3.5, label_y - 4, format_value(v), {kValueFont, Anchor::start, "value", false, -90});
      } else {
        text(out, centre, label_y - 4, format_value(v), {kValueFont, Anchor::middle, "value"});
      }
    }
  }
  if (c.categories.empty() || c.series.empty()) {
    text(out, (left + right) / 2, (top + bottom) / 2, "no data", {kFont, Anchor::middle, "value"});
  }
}

void draw_lines(std::string& out, const LineChart& c) {
  panel_title(out, c.title);
  const double left = kPlotLeft, right = kPanelWidth - kPlotRightMargin, bottom = kPanelHeight - kPlotBottomMargin;
  const auto legend = legend_layout(c.series, left, right, 32, 22);
  for (const LegendEntry& e : legend) {
    out += "<g class=\"legend-entry\">";
    line(out, e.x, e.y + 5, e.x + 22, e.y + 5, kPalette[e.series % kPaletteSize], 2, kDashes[e.series % kDashCount]);
    marker(out, e.x + 11, e.y + 5, e.series);
    text(out, e.x + 27, e.y + 9, c.series[e.series].name, {kFont, Anchor::start, ""});
    out += "</g>\n";
  }
  const double top = 36 + legend_height(legend, 32) + 6;
  const ValueAxis axis = value_axis(data_range(c.series), top, bottom, c.label_points ? 16 : 6);
  draw_value_axis(out, axis, left, right, c.y_label);

  // The x axis: log2 with a tick at every x given, or linear with nice ticks. Points keep a margin from the edges.
  const auto usable = [&](double x) { return std::isfinite(x) && (!c.log2_x || x > 0); };
  const auto u = [&](double x) { return c.log2_x ? std::log2(x) : x; };
  std::vector<double> xs;
  for (double x : c.x) {
    if (usable(x)) xs.push_back(x);
  }
  std::sort(xs.begin(), xs.end());
  xs.erase(std::unique(xs.begin(), xs.end()), xs.end());
  double u_lo = 0, u_hi = 1;
  std::vector<double> ticks;
  std::vector<std::string> labels;
  if (c.log2_x) {
    ticks = xs;
    if (!xs.empty()) {
      u_lo = u(xs.front());
      u_hi = u(xs.back());
    }
    const double pad = u_hi > u_lo ? 0.06 * (u_hi - u_lo) : 1;
    u_lo -= pad;
    u_hi += pad;
    for (double t : ticks) labels.push_back(format_value(t));
  } else {
    ticks = nice_ticks(xs.empty() ? 0 : xs.front(), xs.empty() ? 1 : xs.back(), kMaxIntervals);
    labels = tick_labels(ticks);
    u_lo = ticks.front();
    u_hi = ticks.back();
  }
  const auto x_px = [&](double x) { return left + (u(x) - u_lo) / (u_hi - u_lo) * (right - left); };
  out += "<g class=\"x-axis\">\n";
  line(out, left, bottom, right, bottom, kAxisColour);
  double last_label_end = -1e9;
  for (size_t i = 0; i < ticks.size(); ++i) {
    const double x = x_px(ticks[i]);
    line(out, x, bottom, x, bottom + 4, kAxisColour);
    const std::string& label = labels[i];
    const double half = text_width(label, kFont) / 2;
    if (x - half < last_label_end + 4) continue;  // crowded: the tick stays, its label is left out
    text(out, x, bottom + 17, label, {kFont, Anchor::middle, "tick"});
    last_label_end = x + half;
  }
  text(out, (left + right) / 2, bottom + 38, c.x_label, {kFont, Anchor::middle, "axis-label"});
  out += "</g>\n";

  std::vector<size_t> order(c.x.size());
  std::iota(order.begin(), order.end(), 0);
  const auto key = [&](size_t i) { return usable(c.x[i]) ? c.x[i] : std::numeric_limits<double>::infinity(); };
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return key(a) < key(b); });
  for (size_t s = 0; s < c.series.size(); ++s) {
    const Series& series = c.series[s];
    const std::string& colour = kPalette[s % kPaletteSize];
    // Polylines through runs of points with data; a missing value breaks the line.
    std::vector<std::string> runs(1);
    for (size_t i : order) {
      const double v = value_at(series.values, i);
      if (!usable(c.x[i]) || !std::isfinite(v)) {
        if (!runs.back().empty()) runs.emplace_back();
        continue;
      }
      std::string& run = runs.back();
      if (!run.empty()) run += ' ';
      run += px(x_px(c.x[i]));
      run += ',';
      run += px(axis.y(v));
    }
    for (const std::string& points : runs) {
      if (points.empty()) continue;
      out += "<polyline class=\"line\"" + attr("points", points) + attr("fill", "none") + attr("stroke", colour) +
             attr("stroke-width", "2");
      if (*kDashes[s % kDashCount]) out += attr("stroke-dasharray", kDashes[s % kDashCount]);
      out += "/>\n";
    }
    for (size_t i : order) {
      const double v = value_at(series.values, i);
      if (!usable(c.x[i]) || !std::isfinite(v)) continue;
      const double x = x_px(c.x[i]), y = axis.y(v);
      const double low = value_at(series.low, i), high = value_at(series.high, i);
      if (std::isfinite(low) && std::isfinite(high)) whisker(out, x, axis.y(low), axis.y(high), colour);
      marker(out, x, y, s,
             (series.name.empty() ? "" : series.name + ", ") + c.x_label + " " + format_value(c.x[i]) + ": " +
                 with_unit(v, c.y_label));
      if (c.label_points) text(out, x, y - 8, format_value(v), {kValueFont, Anchor::middle, "value"});
    }
  }
  if (xs.empty() || c.series.empty()) {
    text(out, (left + right) / 2, (top + bottom) / 2, "no data", {kFont, Anchor::middle, "value"});
  }
}

}  // namespace

std::vector<double> nice_ticks(double lo, double hi, int max_intervals) {
  if (!std::isfinite(lo)) lo = 0;
  if (!std::isfinite(hi) || hi <= lo) hi = lo + 1;
  max_intervals = std::max(1, max_intervals);
  // Candidates in increasing order from just under the even split; the first that fits wins. The small slack keeps
  // a value that is a multiple of the step up to rounding (0.3 / 0.1) on its tick rather than one step further.
  const double raw = (hi - lo) / max_intervals;
  if (!std::isfinite(raw)) return {lo, hi};  // a span beyond double's range has no round step
  double base = std::pow(10.0, std::floor(std::log10(raw)) - 1);
  for (;; base *= 10) {
    for (double m : {1.0, 2.0, 5.0}) {
      const double step = m * base;
      const double first = std::floor(lo / step + 1e-9), last = std::ceil(hi / step - 1e-9);
      if (last - first > max_intervals) continue;
      std::vector<double> ticks;
      for (double i = first; i <= last; ++i) ticks.push_back(i * step);
      if (ticks.size() < 2) ticks.push_back((last + 1) * step);
      return ticks;
    }
  }
}

std::string format_value(double value) {
  if (std::isnan(value)) return "n/a";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  const double a = std::fabs(value);
  if (a == 0) return "0";
  char buffer[64];
  if (a < 1e-3 || a >= 1e15) {
    const auto r = std::to_chars(buffer, buffer + sizeof buffer, value, std::chars_format::scientific, 2);
    return std::string(buffer, r.ptr);
  }
  const int decimals = a >= 100 ? 0 : 2 - static_cast<int>(std::floor(std::log10(a)));
  std::string s = fixed(value, decimals);
  if (s.find('.') != std::string::npos) {
    s.erase(s.find_last_not_of('0') + 1);
    if (s.back() == '.') s.pop_back();
  }
  return s;
}

std::string escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const utf8::Decoded d = utf8::decode(text, i);
    i += d.length;
    char32_t c = d.valid ? d.code_point : 0xFFFD;
    // XML 1.0 allows no other control characters, nor U+FFFE and U+FFFF; tabs and line breaks would be folded into
    // spaces by any reader anyway.
    if (c == '\t' || c == '\n' || c == '\r') c = ' ';
    if (c < 0x20 || c == 0xFFFE || c == 0xFFFF) c = 0xFFFD;
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: utf8::append(out, c);
    }
  }
  return out;
}

std::string render(const Figure& figure) {
  const size_t count = figure.charts.size();
  const size_t columns =
      std::clamp<size_t>(static_cast<size_t>(std::max(1, figure.columns)), 1, std::max<size_t>(1, count));
  const size_t rows = (count + columns - 1) / columns;
  const double header = 34 + 15 * static_cast<double>(figure.notes.size()) + 6;
  double width = kPanelWidth * static_cast<double>(columns);
  width = std::max(width, text_width(figure.title, kFigureTitleFont) + 32);
  for (const std::string& note : figure.notes) width = std::max(width, text_width(note, kFont) + 32);
  const double height = header + kPanelHeight * static_cast<double>(rows) + 8;

  std::string out = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  out += "<svg xmlns=\"http://www.w3.org/2000/svg\"" + attr("width", px(width)) + attr("height", px(height)) +
         attr("viewBox", "0 0 " + px(width) + " " + px(height)) + attr("font-family", kFontFamily) +
         attr("fill", kTextColour) + ">\n";
  out += "<title>" + escape(figure.title) + "</title>\n";
  out += "<rect" + attr("width", px(width)) + attr("height", px(height)) + attr("fill", "#ffffff") + "/>\n";
  text(out, 16, 26, figure.title, {kFigureTitleFont, Anchor::start, "figure-title", true});
  for (size_t i = 0; i < figure.notes.size(); ++i) {
    text(out, 16, 46 + 15 * static_cast<double>(i), figure.notes[i], {kFont, Anchor::start, "note"});
  }
  for (size_t i = 0; i < count; ++i) {
    const double x = kPanelWidth * static_cast<double>(i % columns);
    const double y = header + kPanelHeight * static_cast<double>(i / columns);
    out += "<g class=\"panel\"" + attr("transform", "translate(" + px(x) + " " + px(y) + ")") + ">\n";
    out += "<rect" + attr("x", "4") + attr("y", "4") + attr("width", px(kPanelWidth - 8)) +
           attr("height", px(kPanelHeight - 8)) + attr("rx", "4") + attr("fill", "none") + attr("stroke", "#cccccc") +
           "/>\n";
    if (const auto* bars = std::get_if<BarChart>(&figure.charts[i])) {
      draw_bars(out, *bars);
    } else {
      draw_lines(out, std::get<LineChart>(figure.charts[i]));
    }
    out += "</g>\n";
  }
  out += "</svg>\n";
  return out;
}

void write_file(const std::string& path, const Figure& figure) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << render(figure);
  out.close();
  if (!out) fail("cannot write the plot to ", path);
}

}  // namespace ernie::cli::svg
