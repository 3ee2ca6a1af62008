#include "core/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>

namespace ernie {
namespace {

// A job published before a worker thread has first run must still complete: the caller waits for every worker, so
// a worker that missed the job's announcement would hang it.
TEST(ThreadPoolStart, JobRightAfterConstructionCompletes) {
  for (int i = 0; i < 200; ++i) {
    ThreadPool pool(3);
    std::atomic<int> done{0};
    pool.run(16, [&](int) { done.fetch_add(1); });
    ASSERT_EQ(done.load(), 16);
  }
}

}  // namespace
}  // namespace ernie
