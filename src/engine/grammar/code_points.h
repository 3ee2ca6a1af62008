// Sets of Unicode code points as sorted, merged inclusive ranges: what GBNF classes and regex classes compile from.
#pragma once

#include <algorithm>
#include <utility>
#include <vector>

namespace ernie::code_points {

using Range = std::pair<char32_t, char32_t>;  // inclusive
using Ranges = std::vector<Range>;

inline constexpr char32_t kMax = 0x10FFFF;

// Sorted, overlapping and adjacent ranges joined.
inline Ranges merged(Ranges ranges) {
  std::erase_if(ranges, [](const Range& r) { return r.first > r.second; });
  std::sort(ranges.begin(), ranges.end());
  Ranges out;
  for (const Range& r : ranges) {
    if (!out.empty() && r.first <= out.back().second + 1) {
      out.back().second = std::max(out.back().second, r.second);
    } else {
      out.push_back(r);
    }
  }
  return out;
}

// Every code point up to U+10FFFF not in `ranges`.
inline Ranges complement(const Ranges& ranges) {
  Ranges out;
  char32_t next = 0;
  for (const auto& [lo, hi] : merged(ranges)) {
    if (lo > next) out.emplace_back(next, lo - 1);
    next = hi + 1;
  }
  if (next <= kMax) out.emplace_back(next, kMax);
  return out;
}

}  // namespace ernie::code_points
