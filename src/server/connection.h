// The HTTP transport under the routes: cpp-httplib's request parsing and routing, over connections this file owns.
//
// cpp-httplib (0.11, Debian 12) gives every connection a thread and reads it with per-read timeouts only, so a client
// that trickles a byte a second holds a thread for ever, a header line may grow without bound before its length is
// checked, and the number of headers is not limited at all. GuardedHttpServer replaces its per-connection loop:
//  - at most max_connections connections are served; one more is answered 503 (Retry-After) at once and closed,
//    and the thread pool has a thread for each connection allowed, so a slow client never waits for a worker and
//    never keeps one from anybody else;
//  - a request's head (request line and headers) must arrive within header_timeout and stay within
//    max_header_bytes and max_headers (else 431), the whole request within read_timeout (else 408), and what
//    follows the head within about max_body_bytes (else 413);
//  - a write that cannot proceed for write_timeout fails (a client that stopped reading), and an idle keep-alive
//    connection is closed after keepalive_timeout.
// Sockets are waited on with poll(), never select(), so descriptors past FD_SETSIZE are safe.
#pragma once

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>

namespace ernie::server {

struct ConnectionLimits {
  int max_connections = 256;
  size_t max_header_bytes = 16 * 1024;
  int max_headers = 64;
  std::chrono::milliseconds header_timeout{10'000};
  std::chrono::milliseconds read_timeout{30'000};
  std::chrono::milliseconds write_timeout{30'000};
  std::chrono::milliseconds keepalive_timeout{5'000};
  int keepalive_requests = 100;  // requests one connection may carry before it is closed
  // Bytes a request may send after its head: the body limit plus room for chunked framing. The routes check the
  // body itself (413); this bounds what cpp-httplib buffers on its own, such as a chunk-size line with no end.
  size_t max_body_bytes = 1 << 20;
};

class GuardedHttpServer : public httplib::Server {
 public:
  // `on_refused(status)` is told of every response this layer writes itself (408, 431, 503), for the metrics.
  GuardedHttpServer(ConnectionLimits limits, std::function<void(int status)> on_refused);

  int open_connections() const { return open_connections_.load(); }

 private:
  bool process_and_close_socket(socket_t sock) override;

  ConnectionLimits limits_;
  std::function<void(int)> on_refused_;
  std::atomic<int> open_connections_{0};
};

}  // namespace ernie::server
