#include "core/thread_pool.h"

#include <exception>
#include <fstream>
#include <set>
#include <string>
#include <utility>

namespace ernie {

int physical_core_count() {
  // Unique (package, core) pairs among the online CPUs; hyper-thread siblings share both.
  std::set<std::pair<std::string, std::string>> cores;
  const unsigned logical = std::thread::hardware_concurrency();
  for (unsigned cpu = 0; cpu < logical; ++cpu) {
    const std::string base = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
    std::ifstream package(base + "physical_package_id"), core(base + "core_id");
    std::string p, c;
    if (!(package >> p) || !(core >> c)) continue;
    cores.emplace(p, c);
  }
  if (!cores.empty()) return static_cast<int>(cores.size());
  return logical > 0 ? static_cast<int>(logical) : 1;
}

ThreadPool::ThreadPool(int n_threads) {
  // Workers count jobs from the generation at construction: one that first runs after a job was published must still
  // take part in it (the caller waits for every worker).
  const uint32_t start = generation_.load();
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this, start] { worker_loop(start); });
}

ThreadPool::~ThreadPool() {
  stopping_.store(true);
  generation_.fetch_add(1);
  generation_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::work_on_job() {
  for (int task; (task = next_task_.fetch_add(1, std::memory_order_relaxed)) < job_tasks_;) {
    try {
      job_fn_(job_ctx_, task);
    } catch (...) {
      if (!has_error_.exchange(true)) error_ = std::current_exception();
    }
  }
}

void ThreadPool::worker_loop(uint32_t seen) {
  for (;;) {
    // Spin briefly first: in the forward pass the next job follows within microseconds, far below the cost of a
    // futex sleep and wake-up. Then sleep until the generation changes.
    uint32_t now = seen;
    for (int spin = 0; spin < 20000 && (now = generation_.load(std::memory_order_acquire)) == seen; ++spin) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    if (now == seen) {
      generation_.wait(seen, std::memory_order_acquire);
      now = generation_.load(std::memory_order_acquire);
    }
    seen = now;
    if (stopping_.load()) return;
    work_on_job();
    workers_done_.fetch_add(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::run_job(int n_tasks, TaskFn fn, void* ctx) {
  if (n_tasks <= 0) return;
  if (workers_.empty() || n_tasks == 1) {
    for (int task = 0; task < n_tasks; ++task) fn(ctx, task);
    return;
  }
  job_fn_ = fn;
  job_ctx_ = ctx;
  job_tasks_ = n_tasks;
  has_error_.store(false);
  error_ = nullptr;
  next_task_.store(0, std::memory_order_relaxed);
  workers_done_.store(0, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  generation_.notify_all();
  work_on_job();
  const int n_workers = static_cast<int>(workers_.size());
  while (workers_done_.load(std::memory_order_acquire) < n_workers) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  if (has_error_.load()) std::rethrow_exception(std::exchange(error_, nullptr));
}

}  // namespace ernie
