// The HTTP server: routes, authentication, streaming and lifecycle around one Scheduler.
//
//   POST /predict               the seed's API: {"text": ...} in, {"text": ...} out
//   POST /v1/completions        OpenAI-compatible, streaming with "stream": true
//   POST /v1/chat/completions   OpenAI-compatible, through the checkpoint's chat template
//   GET  /v1/models             the model served, and each LoRA adapter by name (a request's "model" picks one)
//   POST /v1/load_lora_adapter   vLLM's {"lora_name", "lora_path"}: offers one more adapter
//   POST /v1/unload_lora_adapter {"lora_name"}: stops offering one (freed when its last request ends)
//   GET  /health                200 {"status":"ok"} once the model is loaded, 503 {"status":"loading"} before
//   GET  /metrics               Prometheus text (see metrics.h)
//
// Lifecycle: listen() opens the port at once, so /health answers while the model loads; serve_model() makes the
// server ready. shutdown() stops accepting connections and lets every admitted request finish (cancel_all() first
// makes that immediate). Errors are OpenAI-shaped ({"error": {...}}) with the matching status; nothing a client sends
// can stop the server.
//
// Threads: cpp-httplib answers each connection on a pool thread, with a thread for every connection allowed
// (connection.h), so /health, /metrics and 503s stay answerable whatever the slow or busy clients hold. A generation
// request's thread parses and submits it, then relays the scheduler's output to its socket, checking the socket
// while it waits: a client that goes away cancels its request.
//
// Nothing a client sends can take the server down or hold what others need: the body is bounded (413), the head
// (431) and the time to send them (408), the connections (503), each request's contents (400, RequestLimits), and
// an exception reaching the HTTP layer is a 500 with a generic message, its details logged to stderr only.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <ctime>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "engine/scheduler.h"
#include "model/config.h"
#include "model/model.h"
#include "server/api.h"
#include "server/connection.h"
#include "server/metrics.h"
#include "server/system_probe.h"
#include "tokenizer/tokenizer.h"

namespace ernie::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                  // 0 picks a free port (listen() returns it)
  std::string api_key;              // non-empty: every route but /health needs "Authorization: Bearer <key>"
  size_t max_body_bytes = 1 << 20;  // larger request bodies get 413
  RequestLimits limits;             // what one request may ask for (400 beyond)
  ConnectionLimits connection;      // connections, head size, timeouts (503, 431, 408 beyond)
  SchedulerOptions scheduler;       // slots, queue, context, prefill chunk; its on_step runs after the metrics'
};

// What the server serves. The server owns it from serve_model() on.
struct ServedModel {
  std::unique_ptr<ThreadPool> pool;  // runs the forward passes; null: the scheduler thread alone
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
  GenerationDefaults defaults;
  std::string id;                             // the model name in requests and /v1/models
  std::vector<LoraRegistry::Entry> adapters = {};  // offered by name from the start (ernie serve --lora NAME=DIR)
};

class Server {
 public:
  explicit Server(ServerOptions options);
  // Shuts down (gracefully) if still running.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds host:port and starts answering on background threads; returns the bound port. Raises ernie::Error if the
  // address cannot be bound.
  int listen();
  // Starts the scheduler on `served`; from now on /health is 200 and the generation routes work. Raises
  // ernie::Error (the server stays "loading") if the scheduler cannot be set up.
  void serve_model(ServedModel served);
  // Graceful stop: new generation requests get 503 (and /health 503 "stopping"), admitted ones run to their end and
  // their responses are written; then the port is closed and the HTTP threads finish. Idempotent.
  void shutdown();
  // Cancels every admitted request (a forced shutdown); their streams end with an error event.
  void cancel_all();

  bool ready() const { return ready_; }
  // The scheduler's numbers, or nullopt while loading.
  std::optional<SchedulerStats> scheduler_stats() const;

 private:
  void install_routes();
  // Parses and submits a generation request, then hands the response to a relay that streams it.
  void generate(const httplib::Request& request, const std::string& body, httplib::Response& response,
                Endpoint endpoint);
  void models(httplib::Response& response) const;
  void load_adapter(const std::string& body, httplib::Response& response);
  void unload_adapter(const std::string& body, httplib::Response& response);
  // llama-server's GET /props: context size, slots, chat template, generation defaults, build.
  void props(httplib::Response& response) const;
  // Raises ApiError 503 (with Retry-After) until serve_model() has finished.
  void require_ready(httplib::Response& response) const;
  // What the request parsers need of the served model (valid once ready).
  ApiModel api_model() const;
  // Generation requests from their handler's start to their response's end. shutdown() waits for there to be none
  // before stopping cpp-httplib, whose stop() would cut a response that has not begun writing its body.
  class InFlight;
  std::shared_ptr<InFlight> enter();  // null once draining
  void leave();
  bool draining();
  void release_memory();

  ServerOptions options_;
  std::unique_ptr<GuardedHttpServer> http_;
  std::thread listener_;
  int listening_fd_ = -1;
  Metrics metrics_;
  SystemProbe probe_;
  std::time_t started_ = 0;

  // Set by serve_model() before ready_ turns true, then read-only.
  ServedModel served_;
  std::optional<ChatTemplate> chat_template_;
  mutable GrammarCache grammars_;  // requests with one schema share its grammar and masks
  std::unique_ptr<LoraRegistry> adapters_;
  GenerationOptions defaults_;
  std::unique_ptr<Scheduler> scheduler_;
  std::atomic<bool> ready_{false};
  std::mutex in_flight_mutex_;  // guards the two fields below
  std::condition_variable in_flight_done_;
  int in_flight_ = 0;
  bool draining_ = false;
  std::atomic<uint64_t> next_id_{0};
  std::atomic<bool> large_request_seen_{false};
  std::mutex trim_mutex_;  // guards last_trim_
  std::chrono::steady_clock::time_point last_trim_{};
};

}  // namespace ernie::server
