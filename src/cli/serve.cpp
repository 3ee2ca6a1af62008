// ernie serve: the HTTP server (/predict, OpenAI-compatible completions and chat, /health, /metrics) over the
// continuous-batching scheduler. SIGINT/SIGTERM stop it gracefully: no new connections, admitted requests finish,
// exit 0; a second signal cancels what is still running.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include "cli/common.h"
#include "server/server.h"

namespace ernie::cli {
namespace {

struct ServeOptions {
  ModelOptions model;
  server::ServerOptions server;
  int64_t kv_memory_mib = 0;
  bool no_prefix_cache = false;
  int max_lora_rank = 64;
};

// The name clients use for the model: the checkpoint folder's name, or a GGUF file's name without ".gguf".
std::string model_id(const std::string& model) {
  std::filesystem::path path(model);
  if (path.filename().empty()) path = path.parent_path();
  if (path.extension() == ".gguf") path = path.stem();
  return path.filename().empty() ? "ernie" : path.filename().string();
}

void serve(ServeOptions& o) {
  // This thread takes SIGINT and SIGTERM with sigwait(); blocking them first means every thread started from here on
  // (HTTP pool, scheduler) inherits the mask and none is interrupted by them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  o.server.scheduler.context_length = o.model.context_length;
  o.server.scheduler.kv_dtype = kv_cache_dtype(o.model);
  o.server.scheduler.kv_memory_bytes = o.kv_memory_mib << 20;
  o.server.scheduler.prefix_cache = !o.no_prefix_cache;
  o.server.scheduler.max_lora_rank = o.max_lora_rank;
  server::Server server(o.server);
  const int port = server.listen();
  std::fprintf(stderr, "ernie: listening on http://%s:%d (loading the model)\n", o.server.host.c_str(), port);

  LoadedModel loaded = load_model(o.model, /*with_tokenizer=*/true);
  // Unmerged adapters are offered by name, each request naming the one it runs with.
  std::vector<LoraRegistry::Entry> adapters;
  for (LoadedAdapter& a : loaded.adapters) adapters.push_back({a.name, std::move(a.adapter), a.scale});
  const std::string id = model_id(o.model.dir);
  for (const LoraRegistry::Entry& a : adapters) {
    std::fprintf(stderr, "ernie: serving the LoRA adapter %s as \"model\": \"%s\"\n", a.adapter->path().c_str(),
                 a.name.c_str());
  }
  server.serve_model({.pool = std::move(loaded.pool),
                      .model = std::move(loaded.model),
                      .tokenizer = std::make_unique<Tokenizer>(std::move(*loaded.tokenizer)),
                      .defaults = loaded.defaults,
                      .id = id,
                      .adapters = std::move(adapters)});
  const auto stats = *server.scheduler_stats();
  std::fprintf(stderr,
               "ernie: ready at http://%s:%d: %d slots, %d tokens of context each, KV cache of %lld tokens "
               "(%.1f MiB, %s, prefix cache %s), queue of %d\n",
               o.server.host.c_str(), port, o.server.scheduler.max_running, o.model.context_length,
               static_cast<long long>(stats.kv_capacity), stats.kv_bytes / 1048576.0,
               std::string(dtype_name(stats.kv_dtype)).c_str(), o.server.scheduler.prefix_cache ? "on" : "off",
               o.server.scheduler.max_waiting);

  int signal = 0;
  sigwait(&signals, &signal);
  const auto left = *server.scheduler_stats();
  std::fprintf(stderr, "ernie: %s: finishing %d running and %d waiting requests (signal again to cancel them)\n",
               strsignal(signal), left.running, left.waiting);
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    server.shutdown();
    stopped = true;
  });
  const timespec poll{.tv_sec = 0, .tv_nsec = 100'000'000};
  while (!stopped) {
    if (sigtimedwait(&signals, nullptr, &poll) > 0) {
      std::fprintf(stderr, "ernie: cancelling the requests still running\n");
      server.cancel_all();
    }
  }
  stopper.join();
  std::fprintf(stderr, "ernie: stopped\n");
}

// A duration flag in seconds (fractions allowed), shown with its default.
void add_seconds(CLI::App& cmd, const std::string& name, std::chrono::milliseconds& target, const std::string& what) {
  cmd.add_option_function<double>(
         name, [&target](double s) { target = std::chrono::milliseconds(static_cast<int64_t>(s * 1000.0)); },
         what + " (seconds; default " + std::to_string(target.count() / 1000) + ")")
      ->check(CLI::Range(0.05, 86400.0));
}

// The limits of connection.h and api.h: what one client or one request may take of the server.
void add_limit_options(CLI::App& cmd, server::ServerOptions& s) {
  server::ConnectionLimits& c = s.connection;
  cmd.add_option("--max-connections", c.max_connections,
                 "Open connections served at once (a thread each); one more is answered 503 and closed")
      ->capture_default_str()
      ->check(CLI::Range(1, 900));  // below FD_SETSIZE, with room for the model's and the server's own descriptors
  cmd.add_option("--max-body-bytes", s.max_body_bytes, "Largest request body; larger ones get 413")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1024}, size_t{1} << 30));
  cmd.add_option("--max-header-bytes", c.max_header_bytes, "Largest request head (request line + headers): 431 beyond")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1024}, size_t{1} << 20));
  cmd.add_option("--max-headers", c.max_headers, "Most header fields in a request: 431 beyond")
      ->capture_default_str()
      ->check(CLI::Range(8, 10000));
  add_seconds(cmd, "--header-timeout", c.header_timeout, "Time for a request's head to arrive, else 408");
  add_seconds(cmd, "--read-timeout", c.read_timeout, "Time for a whole request (head and body) to arrive, else 408");
  add_seconds(cmd, "--write-timeout", c.write_timeout, "Time a response write may wait on a client not reading");
  add_seconds(cmd, "--keepalive-timeout", c.keepalive_timeout, "Idle time before a keep-alive connection is closed");
  server::RequestLimits& r = s.limits;
  cmd.add_option("--max-json-depth", r.max_json_depth,
                 "Deepest nesting of arrays/objects in a request body: 400 beyond")
      ->capture_default_str()
      ->check(CLI::Range(2, 1000));
  cmd.add_option("--max-stop", r.max_stop_strings, "Most stop strings in a request")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  cmd.add_option("--max-stop-bytes", r.max_stop_bytes, "Longest stop string, in bytes")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{65536}));
  cmd.add_option("--max-messages", r.max_messages, "Most messages in a chat request")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
}

}  // namespace

void register_serve(CLI::App& app) {
  auto options = std::make_shared<ServeOptions>();
  CLI::App* cmd = app.add_subcommand("serve", "HTTP server: /predict, OpenAI-compatible API, /health, /metrics");
  add_model_options(*cmd, options->model);
  server::ServerOptions& s = options->server;
  cmd->add_option("--host", s.host, "Address to listen on (0.0.0.0 for every interface)")->capture_default_str();
  cmd->add_option("--port", s.port, "TCP port (0 picks a free one)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--max-batch", s.scheduler.max_running, "Requests generating at once (decoded in one batch)")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  cmd->add_option("--queue", s.scheduler.max_waiting, "Requests waiting for a slot; beyond that the answer is 503")
      ->capture_default_str()
      ->check(CLI::Range(0, 4096));
  cmd->add_option("--prefill-chunk", s.scheduler.prefill_chunk,
                  "Prompt tokens per scheduler step: smaller keeps running streams smoother while long prompts load")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--kv-memory", options->kv_memory_mib,
                  "KV-cache memory in MiB, shared by all requests (default: --max-batch x --ctx tokens)")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--kv-tokens", s.scheduler.kv_tokens, "KV-cache size in tokens (instead of --kv-memory)")
      ->check(CLI::Range(int64_t{16}, int64_t{1} << 30))
      ->excludes("--kv-memory");
  cmd->add_flag("--no-prefix-cache", options->no_prefix_cache,
                "Never reuse the KV cache of an earlier request's prompt prefix");
  cmd->add_option("--api-key", s.api_key, "Require 'Authorization: Bearer KEY' on every route but /health");
  cmd->add_option("--max-lora-rank", options->max_lora_rank,
                  "Largest LoRA rank an adapter loaded at run time may have (POST /v1/load_lora_adapter); "
                  "0 refuses adapters")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  add_limit_options(*cmd, s);
  // The systemd unit (deploy/systemd/ernie-serve.service) configures the server from /etc/default/ernie-serve: each
  // variable stands in for its flag when the flag is not given (a flag wins; an empty variable counts as unset).
  // The API key is best passed this way: a flag's value is visible to every user in the process list.
  for (const auto& [flag, variable] : {std::pair{"--model", "ERNIE_MODEL"},
                                       {"--host", "ERNIE_HOST"},
                                       {"--port", "ERNIE_PORT"},
                                       {"--threads", "ERNIE_THREADS"},
                                       {"--cpus", "ERNIE_CPUS"},
                                       {"--dtype", "ERNIE_DTYPE"},
                                       {"--kv-dtype", "ERNIE_KV_DTYPE"},
                                       {"--ctx", "ERNIE_CTX"},
                                       {"--api-key", "ERNIE_API_KEY"}}) {
    cmd->get_option(flag)->envname(variable);
  }
  cmd->callback([options] { serve(*options); });
}

}  // namespace ernie::cli
