// The thread pool runs every task exactly once per job, across many jobs, and passes task exceptions back.
#include "core/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <stdexcept>
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

TEST(ThreadPool, PhysicalCoresIsPositive) {
  EXPECT_GE(physical_core_count(), 1);
}

}  // namespace
}  // namespace ernie
