// The server's Prometheus metrics, rendered in the text exposition format (version 0.0.4). Names follow vLLM's where
// it has one, with the prefix ernie_ instead of vllm:. Counters end in _total, durations are in seconds, sizes in
// bytes; the machine's readings (temperature, RAPL energy) appear only where the kernel exposes them.
// Thread-safe: HTTP threads and the scheduler thread record concurrently, /metrics renders a consistent snapshot.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/scheduler.h"
#include "server/system_probe.h"

namespace ernie::server {

// A cumulative histogram with fixed upper bounds (+Inf implied).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  void render(std::string& out, std::string_view name, std::string_view help) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; one more than bounds_ for +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();

  // A finished HTTP exchange. `endpoint` is the route ("/v1/completions"), or "other" for paths that match none.
  void count_http(std::string_view endpoint, int status);
  // A generation request that ended (including cancelled ones, as finished_reason "abort").
  void observe_request(const RequestSummary& summary);
  // Called from the scheduler thread after each step.
  void observe_step(const StepStats& step);

  // The exposition text. `scheduler` is null while the model is loading (its gauges are then left out).
  std::string render(const std::optional<SchedulerStats>& scheduler, SystemProbe& probe) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> http_requests_;
  std::map<std::string, uint64_t> finished_;  // by finished_reason
  uint64_t prompt_tokens_ = 0;
  uint64_t generation_tokens_ = 0;
  struct AdapterCounts {
    uint64_t requests = 0, prompt_tokens = 0, generation_tokens = 0;
  };
  std::map<std::string, AdapterCounts> adapters_;  // by LoRA adapter name (requests that named one)
  Histogram time_to_first_token_;
  Histogram time_per_output_token_;
  Histogram e2e_latency_;
  Histogram queue_time_;
  Histogram batch_size_;
  Histogram prefill_tokens_;
};

}  // namespace ernie::server
