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
#include "kernels/attention.h"
#include "kernels/quant.h"

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

// Keys and values of n_keys positions ([n_keys][n_kv_heads * head_dim] floats each) stored through kv_store as a
// cache of `dtype` in blocks 0, 1, 2, ..., plus the values the cache holds (rounded to dtype, widened back) for
// reference computations.
struct TestKvCache {
  TestKvCache(DType dtype, const AttentionShape& shape, const std::vector<float>& keys, const std::vector<float>& values)
      : dtype(dtype), row(shape.n_kv_heads * shape.head_dim) {
    const int n_keys = static_cast<int>(keys.size() / row);
    const size_t block_bytes = dtype_row_bytes(dtype, row) * kKvBlockPositions;
    k.resize((n_keys + kKvBlockPositions - 1) / kKvBlockPositions * block_bytes);
    v.resize(k.size());
    for (int p = 0; p < n_keys; ++p) kv_store(view(), shape, p, keys.data() + p * row, values.data() + p * row);
    stored_keys = rounded(keys);
    stored_values = rounded(values);
  }
  KvCacheView view() const { return KvCacheView{dtype, const_cast<uint8_t*>(k.data()), const_cast<uint8_t*>(v.data()),
                                                contiguous_blocks(), row}; }
  std::vector<float> rounded(const std::vector<float>& x) const {
    std::vector<uint8_t> bytes(dtype_row_bytes(dtype, static_cast<int64_t>(x.size())));
    quantize_row(dtype, x.data(), bytes.data(), static_cast<int64_t>(x.size()));
    std::vector<float> out(x.size());
    dequantize_row(dtype, bytes.data(), out.data(), static_cast<int64_t>(x.size()));
    return out;
  }

  DType dtype;
  int row;
  std::vector<uint8_t> k, v;
  std::vector<float> stored_keys, stored_values;
};

}  // namespace ernie::testing
