// matmul_parallel: one pool job over the output rows of several matrices.
#include <algorithm>

#include "kernels/matmul.h"

namespace ernie {
namespace {

// Chunks of output rows small enough to balance the pool, large enough to amortise the dispatch.
int rows_per_chunk(int total_rows, int threads) {
  const int target_chunks = threads * 8;
  const int rows = (total_rows + target_chunks - 1) / target_chunks;
  return std::max(16, (rows + 15) / 16 * 16);
}

}  // namespace

void matmul_parallel(ThreadPool& pool, const MatmulInput& in, std::span<const MatmulTask> tasks) {
  int total_rows = 0;
  for (const MatmulTask& task : tasks) total_rows += task.w->rows;
  const int chunk = rows_per_chunk(total_rows, pool.size());
  int n_chunks = 0;
  for (const MatmulTask& task : tasks) n_chunks += (task.w->rows + chunk - 1) / chunk;
  pool.run(n_chunks, [&](int index) {
    for (const MatmulTask& task : tasks) {
      const int chunks = (task.w->rows + chunk - 1) / chunk;
      if (index >= chunks) {
        index -= chunks;
        continue;
      }
      const int r0 = index * chunk, r1 = std::min(task.w->rows, r0 + chunk);
      if (task.up) {
        matmul_swiglu(task.out, in, *task.w, task.bias, *task.up, task.up_bias, r0, r1);
      } else {
        matmul(task.out, in, *task.w, task.bias, r0, r1);
      }
      return;
    }
  });
}

}  // namespace ernie
