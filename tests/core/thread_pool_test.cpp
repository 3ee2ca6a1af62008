#include "core/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <vector>

namespace ernie {
namespace {

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

TEST(ThreadPool, EveryTaskRunsOnceAcrossManyJobs) {
  ThreadPool pool(2);
  std::vector<std::atomic<int>> hits(37);
  for (int job = 0; job < 1000; ++job) pool.run(37, [&](int task) { hits[task].fetch_add(1); });
  for (const auto& h : hits) EXPECT_EQ(h.load(), 1000);
}

}  // namespace
}  // namespace ernie
