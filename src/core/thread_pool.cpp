#include "core/thread_pool.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <exception>
#include <fstream>
#include <set>
#include <string>
#include <utility>

namespace ernie {
namespace {

// The futex system call directly: C++20's atomic wait in GCC 12's library was seen to miss a wake-up here.
void futex_wait(std::atomic<uint32_t>& word, uint32_t expected) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
}
void futex_wake_all(std::atomic<uint32_t>& word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
}

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

}  // namespace

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
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  stopping_.store(true);
  generation_.fetch_add(1);
  futex_wake_all(generation_);
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

void ThreadPool::worker_loop() {
  // Generation 0 is the pool's start, before any job, even if this thread starts running after the first job was
  // published.
  uint32_t seen = 0;
  for (;;) {
    // Spin briefly first: in the forward pass the next job follows within microseconds, far below the cost of a
    // futex sleep and wake-up. Then sleep until the generation changes.
    uint32_t now = seen;
    for (int spin = 0; spin < 20000 && (now = generation_.load(std::memory_order_acquire)) == seen; ++spin) cpu_relax();
    while (now == seen) {  // the futex may also return spuriously
      // Announce the sleep before the last look at the generation (both sequentially consistent): run_job either
      // sees the sleeper and wakes it, or this thread sees the new generation.
      sleepers_.fetch_add(1);
      if (generation_.load() == seen) futex_wait(generation_, seen);
      sleepers_.fetch_sub(1);
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
  generation_.fetch_add(1);
  if (sleepers_.load() > 0) futex_wake_all(generation_);  // spinning workers need no system call
  work_on_job();
  const int n_workers = static_cast<int>(workers_.size());
  // Spin while the workers are likely running; yield if one was descheduled (a busy machine) so it can finish.
  for (int spin = 0; workers_done_.load(std::memory_order_acquire) < n_workers; ++spin) {
    if (spin < 4000) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
  if (has_error_.load()) std::rethrow_exception(std::exchange(error_, nullptr));
}

}  // namespace ernie
