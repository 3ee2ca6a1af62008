// A persistent pool of worker threads for the forward pass. The calling thread takes part in every job, so a
// pool of size 1 has no workers and runs everything inline. Jobs are split into tasks taken from a shared
// counter; a task must not depend on which thread runs it (results stay identical for any thread count).
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace ernie {

// Physical cores of this machine (hyper-threads counted once), at least 1.
int physical_core_count();

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);  // total threads, caller included; clamped to >= 1
  // The same, with the constructing thread and every worker pinned to `cpus` (all of them may run on any CPU of the
  // set; empty: no pinning). The constructing thread is pinned because it takes part in every job, and threads it
  // starts later inherit the set. Raises ernie::Error when the set cannot be applied (no CPU of it is allowed).
  ThreadPool(int n_threads, const std::vector<int>& cpus);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(task) for every task in [0, n_tasks) across the pool and returns when all are done. Allocates
  // nothing. Not reentrant: fn must not call run() on the same pool. The first exception thrown by a task is
  // rethrown here after the job ends (the other tasks still run).
  template <class Fn>
  void run(int n_tasks, Fn&& fn) {
    run_job(
        n_tasks, [](void* ctx, int task) { (*static_cast<std::remove_reference_t<Fn>*>(ctx))(task); },
        const_cast<void*>(static_cast<const void*>(&fn)));
  }

 private:
  using TaskFn = void (*)(void* ctx, int task);
  void run_job(int n_tasks, TaskFn fn, void* ctx);
  void work_on_job();
  static constexpr uint32_t kClosed = 0xffffffffu;
  void worker_loop();

  std::vector<std::thread> workers_;
  // The job being run. Its fields are written while no task can be claimed; claim_ then opens it.
  std::atomic<TaskFn> job_fn_{nullptr};
  std::atomic<void*> job_ctx_{nullptr};
  std::atomic<int> job_tasks_{0};
  // (job number << 32) | next task to claim, or kClosed between jobs. The job number makes a claim that lost a race
  // with the next job fail its compare-exchange, so a worker never runs a task against another job's fields.
  std::atomic<uint64_t> claim_{0};
  std::atomic<int> tasks_left_{0};  // claimed-or-not tasks of the current job not yet finished
  std::atomic<uint32_t> generation_{0};
  std::atomic<int> sleepers_{0};  // workers blocked (or about to block) in the futex
  std::atomic<bool> stopping_{false};
  std::exception_ptr error_;
  std::atomic<bool> has_error_{false};
};

}  // namespace ernie
