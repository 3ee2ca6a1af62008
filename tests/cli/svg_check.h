// Reading the SVG figures of `ernie bench --plot` back in tests, through a real XML parser: libxml2's xmllint
// (package libxml2-utils, installed by scripts/setup.sh). Well-formedness is xmllint --noout; content is read with
// XPath, so entities are decoded by the parser, not by the test.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace ernie::testing {

inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

struct Command {
  int exit_code;
  std::string out;
};
inline Command run_command(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "r");
  std::string out;
  char buffer[4096];
  for (size_t n; (n = fread(buffer, 1, sizeof buffer, pipe)) > 0;) out.append(buffer, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

class SvgFile {
 public:
  explicit SvgFile(std::filesystem::path path) : path_(std::move(path)) {}

  // xmllint's complaints, empty when the file is well-formed XML.
  std::string parse_errors() const {
    const Command c = run_command("xmllint --noout " + shell_quote(path_.string()) + " 2>&1");
    if (c.exit_code == 0) return "";
    return c.out.empty() ? "xmllint exited with " + std::to_string(c.exit_code) : c.out;
  }

  // The string value of an XPath 1.0 expression, e.g. "string(//x)" or "count(//x)".
  std::string eval(const std::string& xpath) const {
    std::string out =
        run_command("xmllint --xpath " + shell_quote(xpath) + " " + shell_quote(path_.string()) + " 2>/dev/null").out;
    if (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  }
  int count(const std::string& xpath) const { return std::atoi(eval("count(" + xpath + ")").c_str()); }

  // The string value of every node `xpath` selects, in document order (one xmllint call per node; small figures).
  std::vector<std::string> strings(const std::string& xpath) const {
    std::vector<std::string> values;
    const int n = count(xpath);
    for (int i = 1; i <= n; ++i) values.push_back(eval("string((" + xpath + ")[" + std::to_string(i) + "])"));
    return values;
  }

 private:
  std::filesystem::path path_;
};

// XPath for elements of the SVG namespace by name and class, e.g. el("text", "tick").
inline std::string el(const std::string& name, const std::string& cls = "") {
  std::string xpath = "*[local-name()='" + name + "']";
  if (!cls.empty()) xpath += "[@class='" + cls + "']";
  return xpath;
}
// The i-th panel (1-based), then a descendant path below it.
inline std::string in_panel(int i, const std::string& below) {
  return "(//" + el("g", "panel") + ")[" + std::to_string(i) + "]//" + below;
}

// Tick labels as numbers: "250k" is 250000, "3M" 3000000; anything else must be a plain number (else NaN).
inline std::vector<double> numbers(const std::vector<std::string>& labels) {
  std::vector<double> values;
  for (const std::string& s : labels) {
    char* end = nullptr;
    double v = std::strtod(s.c_str(), &end);
    if (end == s.c_str()) v = NAN;
    if (*end == 'k' || *end == 'M') v *= *end++ == 'k' ? 1e3 : 1e6;
    values.push_back(*end == '\0' ? v : NAN);
  }
  return values;
}

// Tick labels of an axis must rise by one step of 1, 2 or 5 × 10^k.
inline void expect_nice_ticks(const std::vector<double>& ticks, const std::string& where) {
  ASSERT_GE(ticks.size(), 2u) << where;
  const double step = ticks[1] - ticks[0];
  ASSERT_GT(step, 0) << where;
  for (size_t i = 1; i < ticks.size(); ++i) {
    EXPECT_NEAR(ticks[i] - ticks[i - 1], step, 1e-9 * std::max(1.0, std::fabs(ticks[i]))) << where;
  }
  const double mantissa = step / std::pow(10.0, std::floor(std::log10(step) + 1e-9));
  EXPECT_TRUE(std::fabs(mantissa - 1) < 1e-6 || std::fabs(mantissa - 2) < 1e-6 || std::fabs(mantissa - 5) < 1e-6)
      << where << ": step " << step;
}

// A printed label (three significant digits) against the value it shows.
inline void expect_label(const std::string& label, double value, const std::string& where) {
  char* end = nullptr;
  const double shown = std::strtod(label.c_str(), &end);
  ASSERT_TRUE(end != label.c_str() && *end == '\0') << where << ": label \"" << label << "\" is not a number";
  EXPECT_LE(std::fabs(shown - value), 0.005 * std::fabs(value) + 1e-12)
      << where << ": label " << label << " for " << value;
}

}  // namespace ernie::testing
