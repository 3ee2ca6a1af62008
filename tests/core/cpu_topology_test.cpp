// CPU topology detection over fake sysfs trees (the machines ernie-edge targets), the thread plans chosen from
// them, --cpus parsing, and that a pinned pool really runs its tasks on the CPUs it was given.
#include "core/cpu_topology.h"

#include <gtest/gtest.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"

namespace ernie {
namespace {

namespace fs = std::filesystem;

// A fake /sys/devices/system/cpu in a fresh temporary folder, removed at the end of the test.
class FakeSysfs {
 public:
  FakeSysfs() {
    root_ = fs::temp_directory_path() / ("ernie-sysfs-" + std::to_string(getpid()) + "-" + std::to_string(next_++));
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  ~FakeSysfs() { fs::remove_all(root_); }
  const fs::path& root() const { return root_; }

  void write(const std::string& relative, const std::string& text) {
    const fs::path path = root_ / relative;
    fs::create_directories(path.parent_path());
    std::ofstream(path) << text << "\n";
  }
  // cpuN with optional capacity, max frequency (kHz) and (package, core) ids; 0 / empty leaves the file out.
  void cpu(int n, long capacity, long max_khz, const std::string& core_id = "", const std::string& package = "0") {
    const std::string dir = "cpu" + std::to_string(n);
    fs::create_directories(root_ / dir);
    if (capacity > 0) write(dir + "/cpu_capacity", std::to_string(capacity));
    if (max_khz > 0) write(dir + "/cpufreq/cpuinfo_max_freq", std::to_string(max_khz));
    if (!core_id.empty()) {
      write(dir + "/topology/core_id", core_id);
      write(dir + "/topology/physical_package_id", package);
    }
  }

 private:
  static inline int next_ = 0;
  fs::path root_;
};

std::vector<int> range(int first, int last) {
  std::vector<int> out;
  for (int i = first; i <= last; ++i) out.push_back(i);
  return out;
}

// RK3588: cpu0-3 are Cortex-A55 (capacity 414), cpu4-7 Cortex-A76 (1024), as its device tree declares.
void rk3588(FakeSysfs& sys, bool with_capacity = true) {
  sys.write("online", "0-7");
  for (int i = 0; i < 8; ++i) {
    const bool big = i >= 4;
    sys.cpu(i, with_capacity ? (big ? 1024 : 414) : 0, big ? 2400000 : 1800000, std::to_string(i));
  }
}

TEST(CpuTopology, Rk3588UsesTheFourBigCoresPinned) {
  FakeSysfs sys;
  rk3588(sys);
  const CpuTopology t = read_cpu_topology(sys.root());
  ASSERT_EQ(t.cpus.size(), 8u);
  EXPECT_EQ(t.cpus[0].capacity, 414);
  EXPECT_EQ(t.cpus[7].capacity, 1024);
  EXPECT_EQ(t.performance, range(4, 7));
  EXPECT_EQ(t.performance_cores, 4);
  EXPECT_TRUE(t.heterogeneous());

  const ThreadPlan plan = plan_threads(t, 0, "");
  EXPECT_EQ(plan.threads, 4);
  EXPECT_EQ(plan.cpus, range(4, 7));
}

TEST(CpuTopology, Rk3588WithoutCapacityFallsBackToCpufreq) {
  FakeSysfs sys;
  rk3588(sys, /*with_capacity=*/false);
  const CpuTopology t = read_cpu_topology(sys.root());
  EXPECT_EQ(t.cpus[0].capacity, 0);
  EXPECT_EQ(t.cpus[0].max_khz, 1800000);
  EXPECT_EQ(t.performance, range(4, 7));
  EXPECT_EQ(plan_threads(t, 0, "").cpus, range(4, 7));
}

TEST(CpuTopology, ThreadsAndCpusFlagsOverride) {
  FakeSysfs sys;
  rk3588(sys);
  const CpuTopology t = read_cpu_topology(sys.root());
  // Fewer threads than big cores: still on the big cores.
  ThreadPlan plan = plan_threads(t, 2, "");
  EXPECT_EQ(plan.threads, 2);
  EXPECT_EQ(plan.cpus, range(4, 7));
  // More than the big cores asks for the little ones too: not pinned.
  plan = plan_threads(t, 8, "");
  EXPECT_EQ(plan.threads, 8);
  EXPECT_TRUE(plan.cpus.empty());
  // --cpus picks the set; the thread count follows it unless --threads says otherwise.
  plan = plan_threads(t, 0, "0-2,6");
  EXPECT_EQ(plan.threads, 4);
  EXPECT_EQ(plan.cpus, (std::vector<int>{0, 1, 2, 6}));
  plan = plan_threads(t, 2, "0-3");
  EXPECT_EQ(plan.threads, 2);
  EXPECT_EQ(plan.cpus, range(0, 3));
  EXPECT_THROW(plan_threads(t, 0, "6-9"), Error);  // 8 and 9 are not online
}

TEST(CpuTopology, PiLikeEqualCoresAreNotPinned) {
  // Raspberry Pi 4: four A72, no cpu_capacity files, one cpufreq policy for all.
  FakeSysfs sys;
  sys.write("online", "0-3");
  for (int i = 0; i < 4; ++i) sys.cpu(i, 0, 1800000, std::to_string(i));
  const CpuTopology t = read_cpu_topology(sys.root());
  EXPECT_EQ(t.performance, range(0, 3));
  EXPECT_FALSE(t.heterogeneous());
  const ThreadPlan plan = plan_threads(t, 0, "");
  EXPECT_EQ(plan.threads, 4);
  EXPECT_TRUE(plan.cpus.empty());
}

TEST(CpuTopology, SingleCore) {
  FakeSysfs sys;
  sys.write("online", "0");
  sys.cpu(0, 0, 0);
  const CpuTopology t = read_cpu_topology(sys.root());
  ASSERT_EQ(t.cpus.size(), 1u);
  EXPECT_EQ(t.performance, std::vector<int>{0});
  const ThreadPlan plan = plan_threads(t, 0, "");
  EXPECT_EQ(plan.threads, 1);
  EXPECT_TRUE(plan.cpus.empty());
}

TEST(CpuTopology, X86WithoutCapacityOrCpufreqCountsPhysicalCores) {
  // 4 cores with 2 hyper-threads each (siblings n and n+4 share a core id), nothing about speed.
  FakeSysfs sys;
  sys.write("online", "0-7");
  for (int i = 0; i < 8; ++i) sys.cpu(i, 0, 0, std::to_string(i % 4));
  const CpuTopology t = read_cpu_topology(sys.root());
  EXPECT_EQ(t.performance, range(0, 7));
  EXPECT_EQ(t.performance_cores, 4);
  const ThreadPlan plan = plan_threads(t, 0, "");
  EXPECT_EQ(plan.threads, 4);
  EXPECT_TRUE(plan.cpus.empty());
}

TEST(CpuTopology, X86FavouredCoresDoNotSplitTheMachine) {
  // Two cores turbo 4 % higher than the rest: still one class of core.
  FakeSysfs sys;
  sys.write("online", "0-3");
  for (int i = 0; i < 4; ++i) sys.cpu(i, 0, i < 2 ? 4900000 : 4700000, std::to_string(i));
  EXPECT_FALSE(read_cpu_topology(sys.root()).heterogeneous());
}

TEST(CpuTopology, OfflineCpusAndMissingOnlineFile) {
  FakeSysfs sys;
  for (int i = 0; i < 4; ++i) sys.cpu(i, i == 3 ? 1024 : 512, 0);
  // Without "online", every cpuN folder counts ...
  EXPECT_EQ(read_cpu_topology(sys.root()).performance, std::vector<int>{3});
  // ... with it, an offline big core is not used.
  sys.write("online", "0-2");
  const CpuTopology t = read_cpu_topology(sys.root());
  EXPECT_EQ(t.cpus.size(), 3u);
  EXPECT_EQ(t.performance, range(0, 2));
  // Unrelated entries (cpufreq/, cpuidle/, "possible") are not CPUs.
  sys.write("possible", "0-3");
  fs::create_directories(sys.root() / "cpufreq");
  fs::remove(sys.root() / "online");
  EXPECT_EQ(read_cpu_topology(sys.root()).cpus.size(), 4u);
}

TEST(CpuTopology, EmptyTreeIsOneCpu) {
  const CpuTopology t = read_cpu_topology("/nonexistent/ernie/sysfs");
  ASSERT_EQ(t.cpus.size(), 1u);
  EXPECT_EQ(plan_threads(t, 0, "").threads, 1);
}

TEST(CpuTopology, ThisMachine) {
  const CpuTopology t = read_cpu_topology();
  ASSERT_FALSE(t.cpus.empty());
  ASSERT_FALSE(t.performance.empty());
  EXPECT_LE(t.performance.size(), t.cpus.size());
  EXPECT_GE(t.performance_cores, 1);
  EXPECT_LE(t.performance_cores, static_cast<int>(t.performance.size()));
}

TEST(CpuList, Parses) {
  EXPECT_EQ(parse_cpu_list("0-3,6"), (std::vector<int>{0, 1, 2, 3, 6}));
  EXPECT_EQ(parse_cpu_list("5"), std::vector<int>{5});
  EXPECT_EQ(parse_cpu_list("3,1,1-2"), (std::vector<int>{1, 2, 3}));
  for (const char* bad : {"", ",", "1,,2", "a", "-1", "3-1", "1-", "0-3;6", " 1", "1234567"}) {
    EXPECT_THROW(parse_cpu_list(bad), Error) << '"' << bad << '"';
  }
}

// A pool pinned to one CPU runs every task there, the calling thread's share included.
TEST(ThreadPoolPinning, TasksRunOnTheGivenCpus) {
  cpu_set_t original;
  ASSERT_EQ(pthread_getaffinity_np(pthread_self(), sizeof(original), &original), 0);
  int target = -1;
  for (int cpu = CPU_SETSIZE - 1; cpu >= 0; --cpu) {
    if (CPU_ISSET(cpu, &original)) target = cpu;  // the lowest allowed CPU
  }
  ASSERT_GE(target, 0);
  {
    ThreadPool pool(3, {target});
    std::mutex mutex;
    std::set<int> seen;
    pool.run(64, [&](int) {
      cpu_set_t mine;
      pthread_getaffinity_np(pthread_self(), sizeof(mine), &mine);
      std::lock_guard lock(mutex);
      seen.insert(CPU_COUNT(&mine) == 1 && CPU_ISSET(target, &mine) ? sched_getcpu() : -1);
    });
    EXPECT_EQ(seen, std::set<int>{target});
  }
  pthread_setaffinity_np(pthread_self(), sizeof(original), &original);
}

TEST(ThreadPoolPinning, ImpossibleSetIsAnError) {
  cpu_set_t original;
  ASSERT_EQ(pthread_getaffinity_np(pthread_self(), sizeof(original), &original), 0);
  EXPECT_THROW(ThreadPool(2, {CPU_SETSIZE + 5}), Error);
  int unused = -1;  // an allowed-set hole: a CPU number this process may not run on
  for (int cpu = 0; cpu < CPU_SETSIZE && unused < 0; ++cpu) {
    if (!CPU_ISSET(cpu, &original)) unused = cpu;
  }
  if (unused >= 0) {
    EXPECT_THROW(ThreadPool(2, {unused}), Error);
  }
  pthread_setaffinity_np(pthread_self(), sizeof(original), &original);
}

}  // namespace
}  // namespace ernie
