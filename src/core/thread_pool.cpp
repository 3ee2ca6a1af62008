#include "core/thread_pool.h"

#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <cstring>
#include <exception>
#include <fstream>
#include <set>
#include <string>
#include <utility>

#include "core/error.h"

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

ThreadPool::ThreadPool(int n_threads) : claim_(kClosed) {
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::ThreadPool(int n_threads, const std::vector<int>& cpus) : claim_(kClosed) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int cpu : cpus) {
    if (cpu < 0 || cpu >= CPU_SETSIZE) fail("cannot pin threads to CPU ", cpu);
    CPU_SET(cpu, &set);
  }
  // The caller is pinned before any worker exists, so a set that cannot be applied fails here with nothing to
  // undo, and the workers begin on the set (threads inherit their creator's). Each is pinned again by handle so the
  // promise does not rest on inheritance alone; the same set cannot fail for them once it worked for the caller.
  if (!cpus.empty()) {
    if (const int error = pthread_setaffinity_np(pthread_self(), sizeof(set), &set); error != 0) {
      fail("cannot pin threads to the chosen CPUs: ", std::strerror(error));
    }
  }
  for (int i = 1; i < n_threads; ++i) {
    workers_.emplace_back([this] { worker_loop(); });
    if (!cpus.empty()) pthread_setaffinity_np(workers_.back().native_handle(), sizeof(set), &set);
  }
}

ThreadPool::~ThreadPool() {
  stopping_.store(true);
  generation_.fetch_add(1);
  futex_wake_all(generation_);
  for (auto& t : workers_) t.join();
}

// Takes tasks until none is left. A thread that arrives late (woken after the others finished, or descheduled on a
// busy machine) finds nothing to claim and leaves; the job never waits for it.
void ThreadPool::work_on_job() {
  for (uint64_t claim = claim_.load();;) {
    const uint32_t task = static_cast<uint32_t>(claim);
    if (task == kClosed || task >= static_cast<uint32_t>(job_tasks_.load())) return;
    if (!claim_.compare_exchange_weak(claim, claim + 1)) continue;  // claim now holds the current value
    try {
      job_fn_.load()(job_ctx_.load(), static_cast<int>(task));
    } catch (...) {
      if (!has_error_.exchange(true)) error_ = std::current_exception();
    }
    tasks_left_.fetch_sub(1, std::memory_order_acq_rel);
    claim = claim_.load();
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
  }
}

void ThreadPool::run_job(int n_tasks, TaskFn fn, void* ctx) {
  if (n_tasks <= 0) return;
  if (workers_.empty() || n_tasks == 1) {
    for (int task = 0; task < n_tasks; ++task) fn(ctx, task);
    return;
  }
  job_fn_.store(fn);
  job_ctx_.store(ctx);
  job_tasks_.store(n_tasks);
  has_error_.store(false);
  error_ = nullptr;
  tasks_left_.store(n_tasks);
  const uint64_t job = generation_.load() + 1;
  claim_.store(job << 32);
  generation_.store(static_cast<uint32_t>(job));
  if (sleepers_.load() > 0) futex_wake_all(generation_);  // spinning workers need no system call
  work_on_job();
  // Only tasks a worker claimed and is still running are waited for; yield if that worker was descheduled.
  for (int spin = 0; tasks_left_.load(std::memory_order_acquire) > 0; ++spin) {
    if (spin < 4000) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
  claim_.store(kClosed);
  if (has_error_.load()) std::rethrow_exception(std::exchange(error_, nullptr));
}

}  // namespace ernie
