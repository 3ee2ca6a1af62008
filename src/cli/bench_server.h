// The load generator behind `ernie bench --server URL`: at each concurrency level, that many clients send streaming
// /v1/completions requests back to back (a prompt of exactly prompt_len token ids, exactly gen tokens generated with
// ignore_eos) until `requests` have been answered, and the level's throughput and latencies are reported. Works
// against any server that accepts OpenAI completions with token-id prompts and ignore_eos (ernie serve,
// llama-server, vLLM).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ernie::cli {

struct LoadTestOptions {
  std::string url;  // http://host:port
  std::vector<int> concurrency = {1, 2, 4, 8, 16};
  int requests = 32;     // per level
  int prompt_len = 128;  // prompt tokens per request
  int gen = 128;         // tokens generated per request
  std::string api_key;
  std::string model;             // "model" field; empty leaves it out
  double timeout_seconds = 600;       // per request
  double ready_timeout_seconds = 60;  // for the server to accept connections and finish loading
};

struct Percentiles {
  double p50 = 0, p95 = 0, p99 = 0;
};

struct LevelResult {
  int concurrency = 0;
  int succeeded = 0;
  int failed = 0;
  std::string first_error;  // of the failed requests, for the report
  double seconds = 0;       // wall time of the level
  double requests_per_second = 0;
  double generated_tokens = 0;   // completion tokens the server reported
  double tokens_per_second = 0;  // generated tokens / wall time, all clients together
  Percentiles ttft;              // seconds from sending to the first chunk of generated output
  Percentiles e2e;               // seconds from sending to the end of the stream
};

// Runs every level in turn. Raises ernie::Error if the URL is malformed.
std::vector<LevelResult> run_load(const LoadTestOptions& options);

std::string format_table(const std::vector<LevelResult>& results);
nlohmann::json to_json(const LoadTestOptions& options, const std::vector<LevelResult>& results);

}  // namespace ernie::cli
