// Which SIMD targets the kernel tests run on. The other kernel tests loop over hwy::SupportedAndGeneratedTargets()
// (kernel_test_support.h), which silently shrinks when a target is not compiled or the CPU lacks it; this test names
// the list in the log and, where the CPU is known (under qemu: the build sets ERNIE_EXPECT_TARGETS, e.g.
// "NEON,SVE,SVE2"), fails unless each expected target is both compiled and run.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <sstream>
#include <string>

// One tiny function compiled for every target the kernels are (same HWY_DISABLED_TARGETS, from ernie_kernels'
// public definitions) and reached through dynamic dispatch, as the kernels are: it reports the target it was built
// for, which is the one that really ran.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/targets_test.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace ernie_targets_test {
namespace HWY_NAMESPACE {
int64_t CompiledTarget() { return HWY_TARGET; }
}  // namespace HWY_NAMESPACE
}  // namespace ernie_targets_test
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <gtest/gtest.h>

#include "kernel_test_support.h"

namespace ernie_targets_test {
HWY_EXPORT(CompiledTarget);
// Unqualified inside the namespace: where only one target is compiled, HWY_DYNAMIC_DISPATCH is a static call
// that prefixes the name with the target's namespace.
int64_t DispatchedTarget() { return HWY_DYNAMIC_DISPATCH(CompiledTarget)(); }
}  // namespace ernie_targets_test

namespace {

std::set<std::string> split(const std::string& list) {
  std::set<std::string> out;
  std::stringstream in(list);
  for (std::string item; std::getline(in, item, ',');) {
    if (!item.empty()) out.insert(item);
  }
  return out;
}

TEST(SimdTargets, EveryExpectedTargetRuns) {
  // The targets for_each_simd_target actually visits, recorded from inside the loop.
  std::set<std::string> visited;
  std::string names;
  ernie::testing::for_each_simd_target([&] {
    const std::string name = hwy::TargetName(ernie_targets_test::DispatchedTarget());
    visited.insert(name);
    names += (names.empty() ? "" : " ") + name;
  });
  std::printf("kernel tests run on SIMD targets: %s\n", names.c_str());
  ASSERT_FALSE(visited.empty());

  const char* expected = std::getenv("ERNIE_EXPECT_TARGETS");
  if (expected == nullptr) GTEST_SKIP() << "ERNIE_EXPECT_TARGETS not set; targets run: " << names;
  for (const std::string& target : split(expected)) {
    EXPECT_TRUE(visited.count(target)) << target << " expected but not run (ran: " << names << ")";
  }
}

}  // namespace
#endif  // HWY_ONCE
