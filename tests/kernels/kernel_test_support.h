// Helpers shared by the kernel tests: a deterministic random source, a way to run a check on every SIMD target the
// library was compiled for (that this CPU can execute), and bit-level float comparison.
#pragma once

#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "hwy/targets.h"

namespace ernie::testing {

// Uniform in [lo, hi) from the top 24 bits of the generator: every value is lo + k·(hi-lo)·2^-24.
class Random {
 public:
  explicit Random(uint32_t seed) : rng_(seed) {}
  float uniform(float lo, float hi) { return lo + (hi - lo) * static_cast<float>(rng_() >> 8) * 0x1p-24f; }
  std::vector<float> vector(size_t n, float lo = -1.0f, float hi = 1.0f) {
    std::vector<float> v(n);
    for (auto& x : v) x = uniform(lo, hi);
    return v;
  }
  uint32_t bits() { return rng_(); }
  int below(int n) { return static_cast<int>(rng_() % static_cast<uint32_t>(n)); }

 private:
  std::mt19937 rng_;
};

// Runs check() once per compiled SIMD target this CPU supports (scalar, SSE4, AVX2, AVX-512 ... on x86), with the
// kernels' dynamic dispatch forced to that target: the portable Highway code and the x86 intrinsics are both tested
// here whatever the machine's best target is.
template <class Check>
void for_each_simd_target(Check&& check) {
  for (const int64_t target : hwy::SupportedAndGeneratedTargets()) {
    SCOPED_TRACE(std::string("SIMD target ") + hwy::TargetName(target));
    hwy::SetSupportedTargetsForTest(target);
    check();
    hwy::SetSupportedTargetsForTest(0);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

inline bool same_bits(float a, float b) {
  return std::bit_cast<uint32_t>(a) == std::bit_cast<uint32_t>(b);
}

// Index of the first element whose bits differ, or -1.
inline long first_difference(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!same_bits(a[i], b[i])) return static_cast<long>(i);
  }
  return -1;
}

// A block table mapping block i to i, for caches laid out contiguously (position p at row p): room for 2^16 blocks.
inline const int32_t* contiguous_blocks() {
  static const std::vector<int32_t> table = [] {
    std::vector<int32_t> t(1 << 16);
    for (size_t i = 0; i < t.size(); ++i) t[i] = static_cast<int32_t>(i);
    return t;
  }();
  return table.data();
}

}  // namespace ernie::testing
