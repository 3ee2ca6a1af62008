#include "cli/bench_server.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <thread>

#include "core/error.h"

namespace ernie::cli {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

struct Sample {
  bool ok = false;
  double ttft = 0;
  double e2e = 0;
  int tokens = 0;
  std::string error;
};

// A prompt of exactly `length` token ids, different for every request so that no server can reuse a cached prefix.
// Ids stay below 1000, inside any ERNIE vocabulary (the test checkpoints' included).
json prompt_ids(int request, int length) {
  json ids = json::array();
  for (int i = 0; i < length; ++i) ids.push_back(10 + (request * 7919 + i * 104729) % 990);
  return ids;
}

double since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

class LoadClient {
 public:
  explicit LoadClient(const LoadTestOptions& o) : options_(o), client_(o.url) {
    const auto timeout = std::chrono::duration<double>(o.timeout_seconds);
    client_.set_connection_timeout(std::chrono::seconds(10));
    client_.set_read_timeout(std::chrono::duration_cast<std::chrono::microseconds>(timeout));
    // A connection per request, as independent clients make them; llama-server was seen to drop kept-alive
    // connections between streamed responses, which would count as failures that no user sees.
    client_.set_keep_alive(false);
  }

  Sample send(int request_index) {
    json body = {{"prompt", prompt_ids(request_index, options_.prompt_len)},
                 {"max_tokens", options_.gen},
                 {"ignore_eos", true},
                 {"temperature", 0},
                 {"stream", true},
                 {"stream_options", {{"include_usage", true}}}};
    if (!options_.model.empty()) body["model"] = options_.model;

    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = body.dump();
    req.set_header("Content-Type", "application/json");
    if (!options_.api_key.empty()) req.set_header("Authorization", "Bearer " + options_.api_key);

    Sample s;
    int status = 0;
    int output_chunks = 0;
    std::string buffer, error_body;
    const auto start = Clock::now();
    req.response_handler = [&](const httplib::Response& res) {
      status = res.status;
      return true;
    };
    req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      if (status != 200) {
        error_body.append(data, n);
        return true;
      }
      buffer.append(data, n);
      for (size_t end; (end = buffer.find("\n\n")) != std::string::npos; buffer.erase(0, end + 2)) {
        const std::string_view event = std::string_view(buffer).substr(0, end);
        if (!event.starts_with("data: ") || event == "data: [DONE]") continue;
        const json chunk = json::parse(event.substr(6), nullptr, /*allow_exceptions=*/false);
        if (chunk.contains("error")) s.error = chunk["error"].value("message", "error event");
        if (chunk.contains("usage") && chunk["usage"].is_object()) {
          s.tokens = chunk["usage"].value("completion_tokens", 0);
        }
        const json* choices = chunk.contains("choices") ? &chunk["choices"] : nullptr;
        // The first chunk with a choice marks the first token (its text may still be empty).
        if (choices && choices->is_array() && !choices->empty() && (*choices)[0].contains("text")) {
          if (output_chunks++ == 0) s.ttft = since(start);
        }
      }
      return true;
    };
    const auto result = client_.send(req);
    s.e2e = since(start);
    if (!result) {
      s.error = "connection: " + httplib::to_string(result.error());
    } else if (status != 200) {
      s.error = "HTTP " + std::to_string(status) + ": " + error_body.substr(0, 200);
    }
    if (s.tokens == 0) s.tokens = output_chunks;  // a server that sends no usage: count the chunks
    // Every request must do the same work for the rates to compare across servers (one that ignores ignore_eos and
    // stops early would look fast).
    if (s.error.empty() && s.tokens != options_.gen) {
      s.error = "generated " + std::to_string(s.tokens) + " tokens, not --gen " + std::to_string(options_.gen);
    }
    s.ok = s.error.empty();
    return s;
  }

 private:
  const LoadTestOptions& options_;
  httplib::Client client_;
};

// A server that has just been started may still be refusing connections or loading: /health answers 503 until it is
// ready (ernie serve and llama-server alike). A server without /health is taken as ready once it answers at all.
void wait_until_ready(const LoadTestOptions& o) {
  httplib::Client client(o.url);
  client.set_connection_timeout(std::chrono::seconds(5));
  const auto deadline = Clock::now() + std::chrono::duration<double>(o.ready_timeout_seconds);
  for (;;) {
    const auto result = client.Get("/health");
    if (result && result->status != 503) return;
    if (Clock::now() >= deadline) {
      fail("the server at ", o.url, " was not ready within --ready-timeout ", o.ready_timeout_seconds, " s (",
           result ? "it answers 503, still loading" : "connection: " + httplib::to_string(result.error()), ")");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

Percentiles percentiles(std::vector<double> values) {
  if (values.empty()) return {};
  std::sort(values.begin(), values.end());
  const auto rank = [&](double q) {
    const size_t i = static_cast<size_t>(std::ceil(q * values.size()));
    return values[std::clamp<size_t>(i, 1, values.size()) - 1];
  };
  return {rank(0.50), rank(0.95), rank(0.99)};
}

LevelResult run_level(const LoadTestOptions& o, int concurrency, int& next_request) {
  std::vector<Sample> samples(o.requests);
  std::atomic<int> next{0};
  const int base = next_request;
  const auto start = Clock::now();
  std::vector<std::thread> clients;
  for (int c = 0; c < concurrency; ++c) {
    clients.emplace_back([&] {
      LoadClient client(o);
      for (int i; (i = next++) < o.requests;) samples[i] = client.send(base + i);
    });
  }
  for (auto& t : clients) t.join();
  next_request += o.requests;

  LevelResult r;
  r.concurrency = concurrency;
  r.seconds = since(start);
  std::vector<double> ttft, e2e;
  for (const Sample& s : samples) {
    if (!s.ok) {
      ++r.failed;
      if (r.first_error.empty()) r.first_error = s.error;
      continue;
    }
    ++r.succeeded;
    r.generated_tokens += s.tokens;
    ttft.push_back(s.ttft);
    e2e.push_back(s.e2e);
  }
  r.requests_per_second = r.succeeded / r.seconds;
  r.tokens_per_second = r.generated_tokens / r.seconds;
  r.ttft = percentiles(ttft);
  r.e2e = percentiles(e2e);
  return r;
}

json percentiles_json(const Percentiles& p) {
  return {{"p50", p.p50}, {"p95", p.p95}, {"p99", p.p99}};
}

}  // namespace

std::vector<LevelResult> run_load(const LoadTestOptions& o) {
  if (!o.url.starts_with("http://") && !o.url.starts_with("https://")) {
    fail("--server must be a URL such as http://127.0.0.1:8080, not \"", o.url, "\"");
  }
  if (o.requests < 1 || o.prompt_len < 1 || o.gen < 1) fail("--requests, --prompt-len and --gen must be at least 1");
  wait_until_ready(o);
  // One request first, uncounted: the server's first pass touches its weights and fills its caches.
  int next_request = 0;
  const Sample warmup = LoadClient(o).send(next_request++);
  if (!warmup.ok) fail("the warm-up request to ", o.url, " failed: ", warmup.error);

  std::vector<LevelResult> results;
  for (int c : o.concurrency) {
    if (c < 1) fail("concurrency levels must be at least 1");
    results.push_back(run_level(o, c, next_request));
    const LevelResult& r = results.back();
    std::fprintf(stderr, "ernie bench: concurrency %d: %.2f req/s, %.1f generated tok/s%s\n", c, r.requests_per_second,
                 r.tokens_per_second, r.failed ? (", " + std::to_string(r.failed) + " failed").c_str() : "");
  }
  return results;
}

std::string format_table(const std::vector<LevelResult>& results) {
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "%11s %8s %6s %8s %11s %26s %23s\n", "concurrency", "requests", "failed", "req/s",
                "gen tok/s", "TTFT p50/p95/p99 (ms)", "e2e p50/p95/p99 (s)");
  out += line;
  for (const LevelResult& r : results) {
    std::snprintf(line, sizeof line, "%11d %8d %6d %8.2f %11.1f %8.1f /%7.1f /%7.1f %7.2f /%6.2f /%6.2f\n",
                  r.concurrency, r.succeeded, r.failed, r.requests_per_second, r.tokens_per_second, r.ttft.p50 * 1e3,
                  r.ttft.p95 * 1e3, r.ttft.p99 * 1e3, r.e2e.p50, r.e2e.p95, r.e2e.p99);
    out += line;
  }
  for (const LevelResult& r : results) {
    if (r.failed) out += "concurrency " + std::to_string(r.concurrency) + ": first error: " + r.first_error + "\n";
  }
  return out;
}

json to_json(const LoadTestOptions& o, const std::vector<LevelResult>& results) {
  json levels = json::array();
  for (const LevelResult& r : results) {
    levels.push_back({{"concurrency", r.concurrency},
                      {"succeeded", r.succeeded},
                      {"failed", r.failed},
                      {"seconds", r.seconds},
                      {"requests_per_second", r.requests_per_second},
                      {"generated_tokens", r.generated_tokens},
                      {"generated_tokens_per_second", r.tokens_per_second},
                      {"ttft_seconds", percentiles_json(r.ttft)},
                      {"e2e_seconds", percentiles_json(r.e2e)}});
  }
  return {{"server", o.url},
          {"requests_per_level", o.requests},
          {"prompt_tokens", o.prompt_len},
          {"generated_tokens_per_request", o.gen},
          {"levels", std::move(levels)}};
}

}  // namespace ernie::cli
