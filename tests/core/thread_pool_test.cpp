// The thread pool runs every task exactly once per job, across many jobs, and passes task exceptions back.
#include "core/thread_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace ernie {
namespace {

TEST(ThreadPool, RunsEveryTaskOnceInManyJobs) {
  for (int threads : {1, 2, 4}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int n_tasks : {0, 1, 2, 3, 17, 1000}) {
      for (int job = 0; job < 50; ++job) {
        std::vector<std::atomic<int>> hits(n_tasks);
        pool.run(n_tasks, [&](int task) { hits[task].fetch_add(1); });
        for (int t = 0; t < n_tasks; ++t) ASSERT_EQ(hits[t].load(), 1) << "task " << t << " of " << n_tasks;
      }
    }
  }
}

// A job published before a worker thread has first run must still complete: the caller waits for every worker, so
// a worker that missed the job's announcement would hang it.
TEST(ThreadPool, JobRightAfterConstructionCompletes) {
  for (int i = 0; i < 200; ++i) {
    ThreadPool pool(3);
    std::atomic<int> done{0};
    pool.run(16, [&](int) { done.fetch_add(1); });
    ASSERT_EQ(done.load(), 16);
  }
}

TEST(ThreadPool, UsesItsWorkers) {
  ThreadPool pool(3);
  std::mutex mutex;
  std::set<std::thread::id> seen;
  // Tasks that wait for each other can only finish if they run on distinct threads at the same time.
  std::atomic<int> arrived{0};
  pool.run(3, [&](int) {
    arrived.fetch_add(1);
    while (arrived.load() < 3) std::this_thread::yield();
    std::lock_guard lock(mutex);
    seen.insert(std::this_thread::get_id());
  });
  EXPECT_EQ(seen.size(), 3u);
}

TEST(ThreadPool, RethrowsATaskExceptionAfterTheJob) {
  ThreadPool pool(2);
  std::atomic<int> ran{0};
  EXPECT_THROW(pool.run(10,
                        [&](int task) {
                          ran.fetch_add(1);
                          if (task == 3) throw std::runtime_error("task 3 failed");
                        }),
               std::runtime_error);
  EXPECT_EQ(ran.load(), 10);
  // The pool is still usable.
  std::atomic<int> again{0};
  pool.run(5, [&](int) { again.fetch_add(1); });
  EXPECT_EQ(again.load(), 5);
}

// The count of distinct (package, core) pairs, checked against the kernel's other account of them, /proc/cpuinfo's
// "physical id" and "core id" (where it has them: not every architecture's cpuinfo does).
TEST(ThreadPool, PhysicalCoresMatchesProcCpuinfo) {
  const int cores = physical_core_count();
  EXPECT_GE(cores, 1);
  EXPECT_LE(cores, static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::set<std::pair<std::string, std::string>> pairs;
  std::string line, package;
  while (std::getline(cpuinfo, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string key = line.substr(0, line.find_last_not_of(" \t", colon - 1) + 1);
    const std::string value = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
    if (key == "physical id") package = value;
    if (key == "core id") pairs.emplace(package, value);
  }
  if (pairs.empty()) GTEST_SKIP() << "/proc/cpuinfo names no cores here; only the bounds were checked";
  EXPECT_EQ(cores, static_cast<int>(pairs.size()));
}

}  // namespace
}  // namespace ernie
