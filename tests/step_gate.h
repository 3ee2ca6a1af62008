// Holds a Scheduler at a known point: plugged into SchedulerOptions::on_step, it blocks the scheduler thread at the
// end of every step while closed, letting through only the steps a test allows. Tests use it to make requests
// coexist (or not) deterministically, without sleeping. Every wait has a deadline. Close it only while the scheduler
// is idle (e.g. just made) or held, so that the next step to end is a known one.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

#include "engine/scheduler.h"

namespace ernie::testing {

class StepGate {
 public:
  // Opens the gate so that a scheduler still using it can run to its end.
  ~StepGate() { open(); }

  std::function<void(const StepStats&)> hook() {
    return [this](const StepStats& stats) { pass(stats); };
  }
  void close() {
    std::lock_guard lock(mutex_);
    open_ = false;
  }
  void open() {
    {
      std::lock_guard lock(mutex_);
      open_ = true;
    }
    changed_.notify_all();
  }
  // Lets `n` more steps end while closed.
  void allow(int n) {
    {
      std::lock_guard lock(mutex_);
      allowed_ += n;
    }
    changed_.notify_all();
  }
  // Waits until at least `n` steps have ended in all; false after 10 s.
  bool wait_for_steps(int64_t n) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, std::chrono::seconds(10), [&] { return steps_ >= n; });
  }
  int64_t steps() const {
    std::lock_guard lock(mutex_);
    return steps_;
  }
  int max_decoded() const {
    std::lock_guard lock(mutex_);
    return max_decoded_;
  }
  // Steps that decoded and prefilled together, and the most passes over the weights any one step made.
  int mixed_steps() const {
    std::lock_guard lock(mutex_);
    return mixed_steps_;
  }
  int max_passes() const {
    std::lock_guard lock(mutex_);
    return max_passes_;
  }

 private:
  void pass(const StepStats& stats) {
    std::unique_lock lock(mutex_);
    ++steps_;
    max_decoded_ = std::max(max_decoded_, stats.decoded);
    if (stats.decoded > 0 && stats.prefilled > 0) ++mixed_steps_;
    max_passes_ = std::max(max_passes_, stats.forward_passes);
    changed_.notify_all();
    changed_.wait(lock, [&] { return open_ || allowed_ > 0; });
    if (!open_) --allowed_;
  }

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  bool open_ = true;
  int allowed_ = 0;
  int64_t steps_ = 0;
  int max_decoded_ = 0;
  int mixed_steps_ = 0;
  int max_passes_ = 0;
};

// Polls `condition` until it holds; false after 10 s. For state that has no notification to wait on.
template <class Condition>
bool eventually(Condition condition) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace ernie::testing
