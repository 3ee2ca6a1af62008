// Which CPUs to run the forward pass on. On big.LITTLE boards (RK3588: 4 Cortex-A76 + 4 Cortex-A55) a thread pool
// that hands equal row ranges to every core waits for the little ones at each step, so by default ernie uses only
// the performance cores, one thread per physical core, pinned to them. Everything here reads a sysfs tree given as
// a parameter, so tests drive it with fake trees.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace ernie {

struct CpuCore {
  int cpu = 0;          // logical CPU number (cpuN)
  long capacity = 0;    // cpuN/cpu_capacity (the scheduler's relative speed, 1024 = fastest), 0 when absent
  long max_khz = 0;     // cpuN/cpufreq/cpuinfo_max_freq, 0 when absent
  std::string core_id;  // "package:core" from cpuN/topology; hyper-thread siblings share it
};

struct CpuTopology {
  std::vector<CpuCore> cpus;      // the online CPUs, ascending
  std::vector<int> performance;   // the CPUs of the fastest class, ascending (all of them on a homogeneous machine)
  int performance_cores = 0;      // physical cores among `performance` (>= 1 whenever cpus is non-empty)
  bool heterogeneous() const { return performance.size() < cpus.size(); }
};

// Reads `root` (normally /sys/devices/system/cpu). The online CPUs come from root/online, else from the cpuN
// folders. A CPU is a performance CPU when its cpu_capacity is within 10 % of the highest; where no CPU has a
// capacity file, cpufreq's cpuinfo_max_freq decides the same way; where neither exists every CPU counts (x86
// without hybrid cores). The 10 % margin keeps x86's "favoured cores" (a few % more turbo) from splitting an
// otherwise equal machine. An unreadable or empty tree gives one CPU (cpu 0), never an empty topology.
CpuTopology read_cpu_topology(const std::filesystem::path& root = "/sys/devices/system/cpu");

// "0-3,6" -> {0, 1, 2, 3, 6} (sorted, duplicates removed). Raises ernie::Error on anything else, on a
// reversed range, or on an empty list.
std::vector<int> parse_cpu_list(const std::string& text);

// The pool to build: how many threads and which CPUs to pin them to (empty: no pinning).
struct ThreadPlan {
  int threads = 1;
  std::vector<int> cpus;
};

// threads_flag (--threads, 0 = not given) and cpus_flag (--cpus, empty = not given) over the topology:
// - --cpus LIST: pinned to LIST (every CPU must be online, else ernie::Error); threads default to the physical
//   cores among LIST.
// - otherwise the default is one thread per performance core; the threads are pinned to the performance CPUs when
//   the machine is heterogeneous and the thread count fits on them, and not pinned at all otherwise (a homogeneous
//   machine gains nothing from it, and --threads beyond the big cores asks for the little ones too).
ThreadPlan plan_threads(const CpuTopology& topology, int threads_flag, const std::string& cpus_flag);

}  // namespace ernie
