#include "server/metrics.h"

#include <algorithm>
#include <charconv>

namespace ernie::server {
namespace {

// Prometheus float syntax: shortest round-trip decimal, +Inf.
std::string number(double v) {
  if (v == std::numeric_limits<double>::infinity()) return "+Inf";
  char buffer[32];
  const auto end = std::to_chars(buffer, buffer + sizeof buffer, v).ptr;
  return std::string(buffer, end);
}

// Label values escape backslash, double quote and newline.
std::string label(std::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    out += c == '\n' ? std::string("\\n") : std::string(1, c);
  }
  return out;
}

void header(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out.append("# HELP ").append(name).append(" ").append(help).append("\n");
  out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
}

void sample(std::string& out, std::string_view name, double value, std::string_view labels = {}) {
  out.append(name);
  if (!labels.empty()) out.append("{").append(labels).append("}");
  out.append(" ").append(number(value)).append("\n");
}

void single(std::string& out, std::string_view name, std::string_view type, std::string_view help, double value) {
  header(out, name, type, help);
  sample(out, name, value);
}

}  // namespace

// ---- Histogram -----------------------------------------------------------------------------------------------------

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  const auto bucket = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  ++counts_[bucket];
  sum_ += value;
  ++count_;
}

void Histogram::render(std::string& out, std::string_view name, std::string_view help) const {
  header(out, name, "histogram", help);
  const std::string bucket = std::string(name) + "_bucket";
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += counts_[i];
    const double le = i < bounds_.size() ? bounds_[i] : std::numeric_limits<double>::infinity();
    sample(out, bucket, static_cast<double>(cumulative), "le=\"" + number(le) + "\"");
  }
  sample(out, std::string(name) + "_sum", sum_);
  sample(out, std::string(name) + "_count", static_cast<double>(count_));
}

// ---- Metrics -------------------------------------------------------------------------------------------------------

Metrics::Metrics()
    : time_to_first_token_(
          {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80}),
      time_per_output_token_(
          {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 10}),
      e2e_latency_({0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480}),
      queue_time_({0.001, 0.01, 0.05, 0.1, 0.3, 0.5, 1, 2.5, 5, 10, 20, 40, 80}),
      batch_size_({1, 2, 4, 8, 16, 32, 64, 128}),
      prefill_tokens_({0, 1, 8, 16, 32, 64, 128, 256, 512, 1024}) {}

void Metrics::count_http(std::string_view endpoint, int status) {
  std::lock_guard lock(mutex_);
  ++http_requests_[{std::string(endpoint), status}];
}

void Metrics::observe_request(const RequestSummary& s) {
  std::lock_guard lock(mutex_);
  const std::string reason =
      s.cancelled || !s.error.empty() ? "abort" : std::string(finish_reason_name(s.finish_reason));
  ++finished_[reason];
  prompt_tokens_ += s.prompt_tokens;
  generation_tokens_ += s.completion_tokens;
  if (!s.lora_name.empty()) {
    AdapterCounts& a = adapters_[s.lora_name];
    ++a.requests;
    a.prompt_tokens += s.prompt_tokens;
    a.generation_tokens += s.completion_tokens;
  }
  e2e_latency_.observe(s.total_seconds);
  if (s.completion_tokens == 0) return;  // never admitted or cancelled before a token: no token timings
  queue_time_.observe(s.queue_seconds);
  time_to_first_token_.observe(s.first_token_seconds);
  if (s.completion_tokens > 1) {
    time_per_output_token_.observe((s.total_seconds - s.first_token_seconds) / (s.completion_tokens - 1));
  }
}

void Metrics::observe_step(const StepStats& step) {
  std::lock_guard lock(mutex_);
  if (step.decoded > 0) batch_size_.observe(step.decoded);
  prefill_tokens_.observe(step.prefill_tokens);
}

std::string Metrics::render(const std::optional<SchedulerStats>& scheduler, SystemProbe& probe) const {
  std::string out;
  {
    std::lock_guard lock(mutex_);
    header(out, "ernie_http_requests_total", "counter", "HTTP requests answered, by route and status code.");
    for (const auto& [key, count] : http_requests_) {
      sample(out, "ernie_http_requests_total", static_cast<double>(count),
             "endpoint=\"" + label(key.first) + "\",status=\"" + std::to_string(key.second) + "\"");
    }
    header(out, "ernie_request_success_total", "counter",
           "Generation requests finished, by finished_reason (stop, length, abort = cancelled).");
    for (const auto& [reason, count] : finished_) {
      sample(out, "ernie_request_success_total", static_cast<double>(count), "finished_reason=\"" + reason + "\"");
    }
    single(out, "ernie_prompt_tokens_total", "counter", "Prompt tokens of finished requests.",
           static_cast<double>(prompt_tokens_));
    single(out, "ernie_generation_tokens_total", "counter", "Tokens generated by finished requests.",
           static_cast<double>(generation_tokens_));
    // Per LoRA adapter (an adapter unloaded keeps its counts: counters never go back).
    const std::pair<const char*, uint64_t AdapterCounts::*> per_adapter[] = {
        {"ernie_lora_requests_total", &AdapterCounts::requests},
        {"ernie_lora_prompt_tokens_total", &AdapterCounts::prompt_tokens},
        {"ernie_lora_generation_tokens_total", &AdapterCounts::generation_tokens}};
    const char* help[] = {"Generation requests finished, by the LoRA adapter they named.",
                          "Prompt tokens of finished requests, by LoRA adapter.",
                          "Tokens generated by finished requests, by LoRA adapter."};
    for (size_t i = 0; i < std::size(per_adapter); ++i) {
      header(out, per_adapter[i].first, "counter", help[i]);
      for (const auto& [name, counts] : adapters_) {
        sample(out, per_adapter[i].first, static_cast<double>(counts.*per_adapter[i].second),
               "adapter=\"" + label(name) + "\"");
      }
    }
    time_to_first_token_.render(out, "ernie_time_to_first_token_seconds",
                                "Time from a request's arrival to its first generated token.");
    time_per_output_token_.render(out, "ernie_time_per_output_token_seconds",
                                  "Mean time per generated token after the first, one observation per request.");
    e2e_latency_.render(out, "ernie_e2e_request_latency_seconds", "Time from a request's arrival to its end.");
    queue_time_.render(out, "ernie_request_queue_time_seconds", "Time a request waited for a slot.");
    batch_size_.render(out, "ernie_batch_size", "Sequences decoded together in one scheduler step.");
    prefill_tokens_.render(out, "ernie_iteration_prefill_tokens", "Prompt tokens run in one scheduler step.");
  }
  if (scheduler) {
    single(out, "ernie_num_requests_running", "gauge", "Requests generating (holding a slot).", scheduler->running);
    single(out, "ernie_num_requests_waiting", "gauge", "Requests queued for a slot.", scheduler->waiting);
    single(out, "ernie_kv_cache_usage_perc", "gauge", "Fraction of the KV-cache token capacity in use (0-1).",
           scheduler->kv_capacity ? static_cast<double>(scheduler->kv_tokens) / scheduler->kv_capacity : 0.0);
    single(out, "ernie_kv_cache_bytes", "gauge", "Memory reserved for the KV cache.",
           static_cast<double>(scheduler->kv_bytes));
    single(out, "ernie_kv_blocks_used", "gauge", "KV-cache blocks held by running requests.",
           static_cast<double>(scheduler->kv.used_blocks));
    single(out, "ernie_kv_blocks_cached", "gauge", "KV-cache blocks held by no request, kept for prefix reuse.",
           static_cast<double>(scheduler->kv.cached_blocks));
    single(out, "ernie_kv_blocks_capacity", "gauge", "KV-cache blocks in all.",
           static_cast<double>(scheduler->kv.total_blocks));
    single(out, "ernie_prefix_cache_queries_total", "counter", "Prompt tokens looked up in the prefix cache.",
           static_cast<double>(scheduler->kv.prefix_query_tokens));
    single(out, "ernie_prefix_cache_hits_total", "counter", "Prompt tokens found in the prefix cache (not prefilled).",
           static_cast<double>(scheduler->kv.prefix_hit_tokens));
  }
  if (const auto rss = probe.resident_bytes()) {
    single(out, "ernie_process_resident_memory_bytes", "gauge", "Resident memory of the server process.",
           static_cast<double>(*rss));
  }
  if (const auto limit = probe.memory_limit_bytes()) {
    single(out, "ernie_memory_limit_bytes", "gauge",
           "Most memory the process may use: its cgroup's memory.max, else the machine's memory.",
           static_cast<double>(*limit));
  }
  if (const auto zones = probe.temperatures(); !zones.empty()) {
    header(out, "ernie_thermal_zone_temperature_celsius", "gauge", "Temperature of each thermal zone of the machine.");
    for (const auto& z : zones) {
      sample(out, "ernie_thermal_zone_temperature_celsius", z.celsius,
             "zone=\"" + label(z.zone) + "\",type=\"" + label(z.type) + "\"");
    }
  }
  if (const auto domains = probe.energy(); !domains.empty()) {
    header(out, "ernie_rapl_energy_joules_total", "counter",
           "Energy used by each RAPL power domain (rate() gives watts).");
    for (const auto& d : domains) {
      sample(out, "ernie_rapl_energy_joules_total", d.joules,
             "domain=\"" + label(d.domain) + "\",name=\"" + label(d.name) + "\"");
    }
  }
  return out;
}

}  // namespace ernie::server
