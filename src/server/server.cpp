#include "server/server.h"

#include <httplib.h>
#include <malloc.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <random>
#include <thread>

#include "core/error.h"
#include "server/chat_page.h"

namespace ernie::server {
namespace {

using nlohmann::json;

// How often a thread waiting on the scheduler looks at its client's socket: the bound on how long a slot stays taken
// after its client went away.
constexpr auto kClientPoll = std::chrono::milliseconds(50);
// With several choices (n), how long one waits before the others are looked at again.
constexpr auto kChoicePoll = std::chrono::milliseconds(5);

// A request body past this size marks the memory it took for release when the server goes idle.
constexpr size_t kLargeBody = 64 * 1024;

constexpr std::array<const char*, 12> kRoutes = {"/",
                                                 "/predict",
                                                 "/v1/completions",
                                                 "/v1/chat/completions",
                                                 "/v1/models",
                                                 "/health",
                                                 "/metrics",
                                                 "/tokenize",
                                                 "/detokenize",
                                                 "/props",
                                                 "/v1/load_lora_adapter",
                                                 "/v1/unload_lora_adapter"};

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

void send_error(httplib::Response& res, const ApiError& error) {
  send_json(res, error.status(), error.body());
}

void log_internal_error(const std::string& where, const std::string& what) {
  std::fprintf(stderr, "ernie: internal error in %s: %s\n", where.c_str(), what.c_str());
}

uint64_t random_u64() {
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ device();
}

std::string request_id(Endpoint endpoint) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(random_u64()));
  return (endpoint == Endpoint::ChatCompletions ? "chatcmpl-" : "cmpl-") + std::string(hex);
}

// Constant-time comparison, so response timing does not reveal how much of a guessed key was right.
bool same_secret(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

// Reads a POST body of at most `limit` bytes into `body`. A request with neither Content-Length nor chunked encoding
// has no body (`curl -X POST '/predict?text=hi'` sends none); cpp-httplib alone would wait for the client to close.
// On failure the status is set (413 for too large) and the error handler writes the message.
bool read_body(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader, size_t limit,
               std::string& body) {
  const bool chunked = req.get_header_value("Transfer-Encoding").find("chunked") != std::string::npos;
  if (!chunked && !req.has_header("Content-Length")) return true;
  bool too_large = false;
  const bool ok = reader([&](const char* data, size_t n) {
    too_large = body.size() + n > limit;  // Content-Length is checked by cpp-httplib; chunked bodies here
    if (!too_large) body.append(data, n);
    return !too_large;
  });
  if (ok) return true;
  if (too_large) res.status = 413;
  if (res.status < 400) res.status = 400;
  return false;
}

// Relays one admitted request's output to its client, all its choices (n): server-sent events when streaming, else one
// JSON body when every choice has ended. Runs on the connection's HTTP thread, inside cpp-httplib's chunked content
// provider, and writes the whole response in that one call. A failed write or a closed socket cancels the request.
class Relay {
 public:
  Relay(std::vector<std::unique_ptr<RequestHandle>> handles, const GenerationCall& call, ResponseInfo info,
        std::shared_ptr<void> ticket)
      : handles_(std::move(handles)),
        stream_(call.stream),
        include_usage_(call.include_usage),
        info_(std::move(info)),
        ticket_(std::move(ticket)),
        choices_(handles_.size()) {}

  bool run(httplib::DataSink& sink) {
    if (stream_ && info_.endpoint == Endpoint::ChatCompletions) {
      for (size_t i = 0; i < handles_.size(); ++i) {
        if (!write(sink, stream_role_chunk(info_, static_cast<int>(i)))) return false;
      }
    }
    size_t finished = 0;
    while (finished < handles_.size()) {
      // One choice waits the whole poll interval; the others are only looked at, so that none waits on another.
      bool progress = false;
      for (size_t i = 0; i < handles_.size(); ++i) {
        Choice& c = choices_[i];
        if (c.finished) continue;
        const auto wait = progress || i != first_unfinished() ? std::chrono::milliseconds(0)
                                                              : (handles_.size() > 1 ? kChoicePoll : kClientPoll);
        auto update = handles_[i]->wait(wait);
        // A stream's first chunk goes out with the first token even if it shows no text yet (a special token,
        // part of a character), so that clients see generation start: what time-to-first-token measures.
        const bool first = !c.started && update.tokens > 0;
        c.started = c.started || first;
        progress = progress || first || !update.text.empty() || update.finished;
        if (!stream_) {
          c.output.text += update.text;
          c.output.logprobs.insert(c.output.logprobs.end(), std::make_move_iterator(update.logprobs.begin()),
                                   std::make_move_iterator(update.logprobs.end()));
        } else if ((first || !update.text.empty() || !update.logprobs.empty()) &&
                   !write(sink, stream_chunk(info_, static_cast<int>(i), update.text, nullptr, update.logprobs,
                                             &c.text_offset))) {
          return false;
        }
        if (update.finished) {
          c.finished = true;
          c.output.summary = handles_[i]->summary();
          ++finished;
          if (stream_ && !failed(c.output.summary) &&
              !write(sink, stream_chunk(info_, static_cast<int>(i), "", &c.output.summary))) {
            return false;
          }
        }
      }
      if (!progress && !sink.is_writable()) return abandon();
    }
    if (!write(sink, ending())) return false;
    sink.done();
    return true;
  }

 private:
  struct Choice {
    ChoiceOutput output;
    bool started = false;  // a chunk carrying generated output has gone out
    bool finished = false;
    size_t text_offset = 0;  // a stream's completions text_offset so far
  };

  static bool failed(const RequestSummary& s) { return s.cancelled || !s.error.empty(); }

  size_t first_unfinished() const {
    for (size_t i = 0; i < choices_.size(); ++i) {
      if (!choices_[i].finished) return i;
    }
    return choices_.size();
  }

  // What follows the generated text: the body, or a stream's counts and [DONE]; an error if a choice did not end on
  // its own.
  std::string ending() const {
    for (const Choice& c : choices_) {
      const RequestSummary& summary = c.output.summary;
      if (!failed(summary)) continue;
      const ApiError error = summary.error.empty()
                                 ? ApiError(503, "cancelled", "the request was cancelled: the server is shutting down")
                                 : ApiError(500, "internal_error", "internal server error: generation failed");
      if (!summary.error.empty()) log_internal_error("generation", summary.error);
      return stream_ ? sse_event(error.body()) + "data: [DONE]\n\n" : dump(error.body());
    }
    std::vector<ChoiceOutput> outputs;
    std::vector<RequestSummary> summaries;
    for (const Choice& c : choices_) {
      outputs.push_back(c.output);
      summaries.push_back(c.output.summary);
    }
    if (!stream_) return dump(completion_body(info_, outputs));
    return (include_usage_ ? stream_usage_chunk(info_, summaries) : "") + "data: [DONE]\n\n";
  }

  bool write(httplib::DataSink& sink, const std::string& data) {
    return sink.write(data.data(), data.size()) || abandon();
  }

  // The client is gone: free the slots at the scheduler's next step.
  bool abandon() {
    for (auto& handle : handles_) handle->cancel();
    return false;
  }

  std::vector<std::unique_ptr<RequestHandle>> handles_;
  bool stream_;
  bool include_usage_;
  ResponseInfo info_;
  std::shared_ptr<void> ticket_;  // the server's InFlight count, held until the response is written
  std::vector<Choice> choices_;
};

}  // namespace

class Server::InFlight {
 public:
  explicit InFlight(Server& server) : server_(server) {}
  ~InFlight() { server_.leave(); }

 private:
  Server& server_;
};

// The server's allocation policy, set before its threads start. glibc gives threads up to 8 arenas per core and
// serves large blocks from them once a freed mmap raised its threshold; with a thread per connection, memory freed
// after a burst of large requests then stays fragmented over many arenas (measured: 16 concurrent 950 KB text
// prompts left the RSS at 144 MB instead of 24). Few arenas and a fixed mmap threshold let it go back.
static ConnectionLimits with_body_limit(ConnectionLimits limits, size_t max_body_bytes) {
  limits.max_body_bytes = max_body_bytes;
  return limits;
}

static void set_allocation_policy() {
  static const bool once = [] {
    const int arenas = static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 2u, 4u));
    ::mallopt(M_ARENA_MAX, arenas);
    ::mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    return true;
  }();
  (void)once;
}

Server::Server(ServerOptions options)
    : options_((set_allocation_policy(), std::move(options))),
      http_(std::make_unique<GuardedHttpServer>(with_body_limit(options_.connection, options_.max_body_bytes),
                                                [this](int status) { metrics_.count_http("other", status); })) {
  http_->set_payload_max_length(options_.max_body_bytes);
  // SO_REUSEADDR to restart at once on a port in TIME_WAIT, but not cpp-httplib's default SO_REUSEPORT, with which a
  // second server on the same port would silently take half the connections instead of failing to start.
  http_->set_socket_options([this](int fd) {
    const int yes = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    listening_fd_ = fd;
  });
  install_routes();
}

Server::~Server() {
  shutdown();
}

int Server::listen() {
  int port = options_.port;
  if (port == 0) {
    port = http_->bind_to_any_port(options_.host);
  } else if (!http_->bind_to_port(options_.host, port)) {
    port = -1;
  }
  if (port < 0) fail("cannot listen on ", options_.host, ":", options_.port, " (address in use or not available)");
  // cpp-httplib 0.11 listens with a backlog of 5: a burst of clients beyond that can find their connection dropped
  // before it is accepted. Listening again on the bound socket raises the backlog.
  ::listen(listening_fd_, SOMAXCONN);
  started_ = std::time(nullptr);
  listener_ = std::thread([this] { http_->listen_after_bind(); });
  // stop() is a no-op until the accept loop runs, so make sure it does before anyone may call shutdown().
  while (!http_->is_running()) std::this_thread::yield();
  return port;
}

void Server::serve_model(ServedModel served) {
  if (ready_) fail("the server already serves a model");
  served_ = std::move(served);
  defaults_ = default_generation_options(served_.model->config(), served_.defaults);
  if (!served_.tokenizer->chat_template().empty())
    chat_template_ = ChatTemplate::parse(served_.tokenizer->chat_template());
  SchedulerOptions scheduler = options_.scheduler;
  scheduler.pool = served_.pool.get();
  // The workspace holds the largest rank among the adapters offered from the start and max_lora_rank, so that
  // adapters loaded later up to that rank fit too.
  for (const LoraRegistry::Entry& entry : served_.adapters)
    scheduler.max_lora_rank = std::max(scheduler.max_lora_rank, entry.adapter->max_rank());
  scheduler.on_step = [this, after = options_.scheduler.on_step](const StepStats& step) {
    metrics_.observe_step(step);
    if (after) after(step);
  };
  scheduler.on_finish = [this, after = options_.scheduler.on_finish](const RequestSummary& summary) {
    metrics_.observe_request(summary);
    if (after) after(summary);
  };
  adapters_ = std::make_unique<LoraRegistry>(served_.model->config(), scheduler.max_lora_rank);
  for (LoraRegistry::Entry& entry : served_.adapters) adapters_->add(std::move(entry), served_.id);
  served_.adapters.clear();
  scheduler_ = std::make_unique<Scheduler>(*served_.model, *served_.tokenizer, std::move(scheduler));
  ready_ = true;
}

std::shared_ptr<Server::InFlight> Server::enter() {
  std::lock_guard lock(in_flight_mutex_);
  if (draining_) return nullptr;
  ++in_flight_;
  return std::make_shared<InFlight>(*this);
}

bool Server::draining() {
  std::lock_guard lock(in_flight_mutex_);
  return draining_;
}

void Server::leave() {
  bool idle;
  {
    std::lock_guard lock(in_flight_mutex_);
    idle = --in_flight_ == 0;
  }
  in_flight_done_.notify_all();
  if (idle) release_memory();
}

// glibc keeps what a burst freed in its arenas (one per few threads, and the server has many threads), so the RSS
// would stay at the burst's peak. When the server goes idle after large requests, or a second after the last time,
// the free memory goes back to the system.
void Server::release_memory() {
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(trim_mutex_);
  if (!large_request_seen_.exchange(false) && now - last_trim_ < std::chrono::seconds(1)) return;
  last_trim_ = now;
  ::malloc_trim(0);
}

void Server::shutdown() {
  if (!listener_.joinable()) return;
  {
    std::unique_lock lock(in_flight_mutex_);
    draining_ = true;
    in_flight_done_.wait(lock, [&] { return in_flight_ == 0; });
  }
  http_->stop();  // closes the listening socket; requests in flight run to their end
  listener_.join();
  ready_ = false;
  scheduler_.reset();
}

void Server::cancel_all() {
  if (ready_) scheduler_->cancel_all();
}

std::optional<SchedulerStats> Server::scheduler_stats() const {
  if (!ready_) return std::nullopt;
  return scheduler_->stats();
}

void Server::install_routes() {
  httplib::Server& http = *http_;

  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    // /health for probes, and the chat page (static, no model data), which then asks for the key itself.
    const bool open_route = req.path == "/health" || (req.path == "/" && req.method == "GET");
    if (options_.api_key.empty() || open_route) return httplib::Server::HandlerResponse::Unhandled;
    const std::string given = req.get_header_value("Authorization");
    const std::string_view scheme = "Bearer ";
    if (given.starts_with(scheme) && same_secret(std::string_view(given).substr(scheme.size()), options_.api_key)) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    res.set_header("WWW-Authenticate", "Bearer");
    send_error(res, ApiError(401, "invalid_api_key",
                             given.empty() ? "missing API key: send the header 'Authorization: Bearer <key>'"
                                           : "invalid API key"));
    return httplib::Server::HandlerResponse::Handled;
  });

  // cpp-httplib's own refusals (no route, body too large, malformed HTTP) come here with an empty body.
  http.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;  // one of ours
    const bool known = std::find(kRoutes.begin(), kRoutes.end(), req.path) != kRoutes.end();
    if (res.status == 404 && known) {
      send_error(res, ApiError(405, "method_not_allowed", "method " + req.method + " is not allowed on " + req.path));
    } else if (res.status == 404) {
      send_error(res, ApiError(404, "unknown_route", "no route " + req.method + " " + req.path));
    } else if (res.status == 413) {
      send_error(res, ApiError(413, "payload_too_large", "the request body is larger than the server accepts"));
    } else {
      send_error(res, ApiError(res.status, "bad_request",
                               "malformed HTTP request (status " + std::to_string(res.status) + ")"));
    }
    return httplib::Server::HandlerResponse::Handled;
  }));

  // Whatever escapes a handler is our bug, not the client's: a generic answer, the details in the log only.
  http.set_exception_handler([](const httplib::Request& req, httplib::Response& res, std::exception_ptr error) {
    std::string what = "unknown exception";
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    log_internal_error(req.method + " " + req.path, what);
    send_error(res, ApiError(500, "internal_error", "internal server error"));
  });

  http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    const bool known = std::find(kRoutes.begin(), kRoutes.end(), req.path) != kRoutes.end();
    metrics_.count_http(known ? req.path : "other", res.status);
  });

  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const bool draining = this->draining();
    send_json(res, ready_ && !draining ? 200 : 503, {{"status", draining ? "stopping" : ready_ ? "ok" : "loading"}});
  });
  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_.render(scheduler_stats(), probe_), "text/plain; version=0.0.4; charset=utf-8");
  });
  http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) { models(res); });
  const auto route = [this](Endpoint endpoint) {
    return [this, endpoint](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
      std::string body;
      if (read_body(req, res, reader, options_.max_body_bytes, body)) {
        if (body.size() > kLargeBody) large_request_seen_ = true;
        generate(req, body, res, endpoint);
      }
    };
  };
  http.Post("/predict", route(Endpoint::Predict));
  http.Post("/v1/completions", route(Endpoint::Completions));
  http.Post("/v1/chat/completions", route(Endpoint::ChatCompletions));
  // llama-server's tokenizer routes: answered at once on the HTTP thread, no scheduler involved.
  const auto tokenizer_route = [this](json (*answer)(std::string_view, const ApiModel&)) {
    return [this, answer](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
      std::string body;
      if (!read_body(req, res, reader, options_.max_body_bytes, body)) return;
      try {
        require_ready(res);
        send_json(res, 200, answer(body, api_model()));
      } catch (const ApiError& e) {
        send_error(res, e);
      }
    };
  };
  http.Post("/tokenize", tokenizer_route(&tokenize_body));
  http.Post("/detokenize", tokenizer_route(&detokenize_body));
  const auto adapter_route = [this](void (Server::*handle)(const std::string&, httplib::Response&)) {
    return [this, handle](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader) {
      std::string body;
      if (read_body(req, res, reader, options_.max_body_bytes, body)) (this->*handle)(body, res);
    };
  };
  http.Post("/v1/load_lora_adapter", adapter_route(&Server::load_adapter));
  http.Post("/v1/unload_lora_adapter", adapter_route(&Server::unload_adapter));
  http.Get("/props", [this](const httplib::Request&, httplib::Response& res) { props(res); });
  // The chat page: static, compiled into the binary, open without the API key (it holds nothing secret); the page
  // asks for the key when the API answers 401.
  http.Get("/", [](const httplib::Request&, httplib::Response& res) { serve_chat_page(res); });
}

void Server::require_ready(httplib::Response& res) const {
  if (ready_) return;
  res.set_header("Retry-After", "1");
  throw ApiError(503, "model_loading", "the model is still loading");
}

ApiModel Server::api_model() const {
  return {.tokenizer = *served_.tokenizer,
          .chat_template = chat_template_ ? &*chat_template_ : nullptr,
          .defaults = defaults_,
          .id = served_.id,
          .context_length = scheduler_->context_length(),
          .vocab_size = served_.model->config().vocab_size,
          .limits = options_.limits,
          .grammars = &grammars_,
          .adapters = adapters_.get()};
}

void Server::props(httplib::Response& res) const {
  try {
    require_ready(res);
  } catch (const ApiError& e) {
    return send_error(res, e);
  }
  const Tokenizer& tokenizer = *served_.tokenizer;
  const SamplingParams& sampling = defaults_.sampling;
  const auto token_text = [&](int32_t id) { return id < 0 ? json(nullptr) : json(tokenizer.decode({&id, 1})); };
  send_json(res, 200,
            {{"model", served_.id},
             {"n_ctx", scheduler_->context_length()},
             {"total_slots", options_.scheduler.max_running},
             {"vocab_size", tokenizer.vocab_size()},
             {"bos_token", token_text(tokenizer.bos_id())},
             {"eos_token", token_text(tokenizer.eos_id())},
             {"chat_template", tokenizer.chat_template()},
             {"default_generation_settings",
              {{"n_ctx", scheduler_->context_length()},
               {"params",
                {{"n_predict", defaults_.max_new_tokens},
                 {"temperature", sampling.temperature},
                 {"top_k", sampling.top_k},
                 {"top_p", sampling.top_p},
                 {"min_p", sampling.min_p},
                 {"repeat_penalty", sampling.repetition_penalty},
                 {"presence_penalty", sampling.presence_penalty},
                 {"frequency_penalty", sampling.frequency_penalty}}}}},
             {"build_info", "ernie-edge " ERNIE_VERSION}});
}

void Server::models(httplib::Response& res) const {
  try {
    require_ready(res);
  } catch (const ApiError& e) {
    return send_error(res, e);
  }
  json data = json::array({{{"id", served_.id},
                            {"object", "model"},
                            {"created", started_},
                            {"owned_by", "ernie-edge"},
                            {"root", served_.model->path().string()},
                            {"parent", nullptr},
                            {"max_model_len", scheduler_->context_length()}}});
  // As vLLM lists them: each adapter by its name, its parent the base model.
  for (const LoraRegistry::Entry& entry : adapters_->list()) {
    data.push_back({{"id", entry.name},
                    {"object", "model"},
                    {"created", started_},
                    {"owned_by", "ernie-edge"},
                    {"root", entry.adapter->path().string()},
                    {"parent", served_.id},
                    {"max_model_len", scheduler_->context_length()}});
  }
  send_json(res, 200, {{"object", "list"}, {"data", std::move(data)}});
}

// Both take vLLM's bodies; the pre-routing handler has checked the API key. Errors: 400 for a bad body or adapter,
// 404 for unloading a name nobody has.
void Server::load_adapter(const std::string& body, httplib::Response& res) {
  try {
    require_ready(res);
    const json request = parse_json(body, options_.limits.max_json_depth);
    const auto text = [&](const char* key) {
      const auto it = request.is_object() ? request.find(key) : request.end();
      if (it == request.end() || !it->is_string() || it->get<std::string>().empty())
        throw ApiError(400, "invalid_request_error", std::string("'") + key + "' must be a non-empty string", key);
      return it->get<std::string>();
    };
    const std::string name = text("lora_name"), path = text("lora_path");
    float scale = 1.0f;
    if (const auto it = request.find("scale"); it != request.end()) {
      if (!it->is_number()) throw ApiError(400, "invalid_request_error", "'scale' must be a number", "scale");
      scale = it->get<float>();
    }
    try {
      adapters_->load(name, path, scale, served_.id);
    } catch (const Error& e) {
      throw ApiError(400, "invalid_lora_adapter", e.what(), "lora_path");
    }
    std::fprintf(stderr, "ernie: LoRA adapter %s loaded from %s\n", name.c_str(), path.c_str());
    send_json(res, 200, {{"object", "lora_adapter"}, {"id", name}, {"status", "loaded"}});
  } catch (const ApiError& e) {
    send_error(res, e);
  }
}

void Server::unload_adapter(const std::string& body, httplib::Response& res) {
  try {
    require_ready(res);
    const json request = parse_json(body, options_.limits.max_json_depth);
    const auto it = request.is_object() ? request.find("lora_name") : request.end();
    if (it == request.end() || !it->is_string())
      throw ApiError(400, "invalid_request_error", "'lora_name' must be a string", "lora_name");
    const std::string name = it->get<std::string>();
    if (!adapters_->unload(name))
      throw ApiError(404, "lora_adapter_not_found", "no LoRA adapter named '" + name.substr(0, 256) + "' is loaded",
                     "lora_name");
    std::fprintf(stderr, "ernie: LoRA adapter %s unloaded\n", name.c_str());
    send_json(res, 200, {{"object", "lora_adapter"}, {"id", name}, {"status", "unloaded"}});
  } catch (const ApiError& e) {
    send_error(res, e);
  }
}

void Server::generate(const httplib::Request& req, const std::string& body, httplib::Response& res, Endpoint endpoint) {
  try {
    auto ticket = enter();
    if (!ticket) throw ApiError(503, "shutting_down", "the server is shutting down");
    require_ready(res);
    ApiModel model = api_model();
    // Without a "seed", sampling differs from request to request, as OpenAI's does.
    model.defaults.sampling.seed = random_u64();
    GenerationCall call;
    if (endpoint == Endpoint::Predict) {
      call = parse_predict(body, {req.params.begin(), req.params.end()}, model);
    } else if (endpoint == Endpoint::Completions) {
      call = parse_completion(body, model);
    } else {
      call = parse_chat_completion(body, model);
    }

    std::vector<std::unique_ptr<RequestHandle>> handles;
    try {
      handles = scheduler_->try_submit_copies(call.prompt, call.options, call.n);
    } catch (const Error& e) {
      throw ApiError(400, "invalid_value", e.what());
    }
    if (handles.empty()) {
      res.set_header("Retry-After", "1");
      const auto stats = scheduler_->stats();
      throw ApiError(503, "server_busy",
                     "the server is at capacity (" + std::to_string(stats.running) + " running, " +
                         std::to_string(stats.waiting) + " waiting); retry later");
    }

    auto relay = std::make_shared<Relay>(
        std::move(handles), call,
        ResponseInfo{endpoint, request_id(endpoint), std::time(nullptr), model_name(call, model),
                     served_.tokenizer.get(), call.options.top_logprobs >= 0},
        std::move(ticket));
    if (call.stream) {
      res.set_header("Cache-Control", "no-cache");
    }
    res.set_chunked_content_provider(call.stream ? "text/event-stream" : "application/json",
                                     [relay](size_t, httplib::DataSink& sink) { return relay->run(sink); });
  } catch (const ApiError& e) {
    send_error(res, e);
  }
}

}  // namespace ernie::server
