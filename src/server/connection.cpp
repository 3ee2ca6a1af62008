#include "server/connection.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "server/api.h"

namespace ernie::server {
namespace {

using Clock = std::chrono::steady_clock;

// How long one wait on a socket lasts before it looks again at whether the server is stopping.
constexpr auto kWaitSlice = std::chrono::milliseconds(100);

// A response this layer writes itself, in the API's error shape, on a connection it then closes.
std::string error_response(int status, const char* reason, const char* code, const std::string& message) {
  const std::string body = dump(ApiError(status, code, message).body());
  std::string head = "HTTP/1.1 " + std::to_string(status) + " " + reason +
                     "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                     "\r\nConnection: close\r\n";
  if (status == 503) head += "Retry-After: 1\r\n";
  return head + "\r\n" + body;
}

// poll() on one descriptor until `deadline`, in slices so that a stopping server is noticed. 1: ready, 0: the
// deadline passed, -1: error or the server stopped.
int wait_until(int fd, short events, Clock::time_point deadline, const httplib::Server* server) {
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return 0;
    pollfd p{.fd = fd, .events = events, .revents = 0};
    const int ready = ::poll(&p, 1, static_cast<int>(std::min(left, kWaitSlice).count()));
    if (ready > 0) return 1;
    if (ready < 0 && errno != EINTR) return -1;
    if (server && !server->is_running()) return -1;
  }
}

bool send_all(int fd, std::string_view data, Clock::time_point deadline) {
  while (!data.empty()) {
    if (wait_until(fd, POLLOUT, deadline, nullptr) != 1) return false;
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Closes so that a response just written reaches a client that is still sending: stop writing, read (briefly)
// whatever it still sends, then close. Closing with unread input would reset the connection and could destroy the
// response in flight.
void close_gently(int fd, std::chrono::milliseconds linger) {
  ::shutdown(fd, SHUT_WR);
  const auto deadline = Clock::now() + linger;
  char sink[4096];
  while (wait_until(fd, POLLIN, deadline, nullptr) == 1) {
    const ssize_t n = ::recv(fd, sink, sizeof sink, 0);
    if (n <= 0 && !(n < 0 && errno == EINTR)) break;
  }
  ::close(fd);
}

void address_of(const sockaddr_storage& address, std::string& ip, int& port) {
  char text[INET6_ADDRSTRLEN] = {};
  if (address.ss_family == AF_INET) {
    const auto& a = reinterpret_cast<const sockaddr_in&>(address);
    ::inet_ntop(AF_INET, &a.sin_addr, text, sizeof text);
    port = ntohs(a.sin_port);
  } else if (address.ss_family == AF_INET6) {
    const auto& a = reinterpret_cast<const sockaddr_in6&>(address);
    ::inet_ntop(AF_INET6, &a.sin6_addr, text, sizeof text);
    port = ntohs(a.sin6_port);
  }
  ip = text;
}

// One connection's byte stream as cpp-httplib reads and writes it, with this layer's limits. One per connection
// (its read buffer carries over from request to request); used by that connection's thread only.
class GuardedStream final : public httplib::Stream {
 public:
  GuardedStream(int fd, const ConnectionLimits& limits, const httplib::Server& server,
                const std::function<void(int)>& on_refused)
      : fd_(fd), limits_(limits), server_(server), on_refused_(on_refused) {}

  // A request's head starts now: its deadlines start with it.
  void begin_request() {
    in_head_ = true;
    head_bytes_ = 0;
    head_lines_ = 0;
    body_bytes_ = 0;
    const auto now = Clock::now();
    request_deadline_ = now + limits_.read_timeout;
    head_deadline_ = std::min(request_deadline_, now + limits_.header_timeout);
  }
  // cpp-httplib has parsed the head; what follows is the body (if any) and the response.
  void end_head() { in_head_ = false; }
  bool refused() const { return refused_; }

  // Between keep-alive requests: true once the next request's first byte is there, false when the connection
  // stayed idle for keepalive_timeout, closed, or the server is stopping.
  bool await_next_request() {
    if (buffered() > 0) return true;
    return wait_until(fd_, POLLIN, Clock::now() + limits_.keepalive_timeout, &server_) == 1;
  }

  bool is_readable() const override {
    pollfd p{.fd = fd_, .events = POLLIN, .revents = 0};
    return buffered() > 0 || ::poll(&p, 1, 0) > 0;
  }

  // Ready to take more output within write_timeout, and the client has not closed its end.
  bool is_writable() const override {
    if (refused_ || wait_until(fd_, POLLOUT, Clock::now() + limits_.write_timeout, nullptr) != 1) return false;
    char byte;
    const ssize_t n = ::recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR));
  }

  ssize_t read(char* out, size_t size) override {
    if (refused_) return -1;
    if (buffered() == 0) {
      const auto deadline = in_head_ ? head_deadline_ : request_deadline_;
      const int ready = wait_until(fd_, POLLIN, deadline, &server_);
      if (ready == 0) {
        refuse(408, "Request Timeout", "request_timeout",
               in_head_ ? "the request head did not arrive within " + seconds(limits_.header_timeout)
                        : "the request did not arrive within " + seconds(limits_.read_timeout));
        return -1;
      }
      if (ready < 0) return -1;
      ssize_t n;
      do {
        n = ::recv(fd_, buffer_, sizeof buffer_, 0);
      } while (n < 0 && errno == EINTR);
      if (n <= 0) return n;
      begin_ = 0;
      end_ = static_cast<size_t>(n);
    }
    const size_t n = std::min(size, buffered());
    if (in_head_ ? !count_head(buffer_ + begin_, n) : !count_body(n)) return -1;
    std::memcpy(out, buffer_ + begin_, n);
    begin_ += n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* data, size_t size) override {
    if (refused_ || wait_until(fd_, POLLOUT, Clock::now() + limits_.write_timeout, nullptr) != 1) return -1;
    ssize_t n;
    do {
      n = ::send(fd_, data, size, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n;
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage address{};
    socklen_t length = sizeof address;
    if (::getpeername(fd_, reinterpret_cast<sockaddr*>(&address), &length) == 0) address_of(address, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage address{};
    socklen_t length = sizeof address;
    if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length) == 0) address_of(address, ip, port);
  }
  socket_t socket() const override { return fd_; }

 private:
  size_t buffered() const { return end_ - begin_; }

  static std::string seconds(std::chrono::milliseconds d) {
    char text[32];
    std::snprintf(text, sizeof text, "%g s", static_cast<double>(d.count()) / 1000.0);
    return text;
  }

  // cpp-httplib reads the head a byte at a time and only checks a line's length once it has all of it, so the
  // head's size and line count are bounded here, as they are delivered.
  bool count_head(const char* bytes, size_t n) {
    head_bytes_ += n;
    head_lines_ += static_cast<size_t>(std::count(bytes, bytes + n, '\n'));
    // The request line, the headers and the blank line that ends them.
    if (head_bytes_ <= limits_.max_header_bytes && head_lines_ <= static_cast<size_t>(limits_.max_headers) + 2) {
      return true;
    }
    refuse(431, "Request Header Fields Too Large", "headers_too_large",
           "the request head is over " + std::to_string(limits_.max_header_bytes) + " bytes or " +
               std::to_string(limits_.max_headers) + " header fields");
    return false;
  }

  bool count_body(size_t n) {
    body_bytes_ += n;
    const size_t framing = limits_.max_body_bytes / 8 + 64 * 1024;
    if (body_bytes_ <= limits_.max_body_bytes + framing) return true;
    refuse(413, "Payload Too Large", "payload_too_large", "the request body is larger than the server accepts");
    return false;
  }

  // Answers with an error of this layer's own and ends the connection: cpp-httplib's reads and writes fail from
  // here on, so whatever it would still say is not sent.
  void refuse(int status, const char* reason, const char* code, const std::string& message) {
    refused_ = true;
    send_all(fd_, error_response(status, reason, code, message), Clock::now() + std::chrono::seconds(1));
    if (on_refused_) on_refused_(status);
  }

  int fd_;
  const ConnectionLimits& limits_;
  const httplib::Server& server_;
  const std::function<void(int)>& on_refused_;
  char buffer_[4096];
  size_t begin_ = 0, end_ = 0;
  bool in_head_ = true;
  bool refused_ = false;
  size_t head_bytes_ = 0, head_lines_ = 0, body_bytes_ = 0;
  Clock::time_point head_deadline_, request_deadline_;
};

// The connection threads: started as connections need them, up to a maximum, and reused most-recently-idle first,
// so the threads (their stacks and malloc arenas) that a steady load touches stay the few it needs rather than
// rotating through all of them. Connections past the maximum wait in a backlog (the connection cap in front of
// this answers them at once, so it stays short).
class ConnectionThreads final : public httplib::TaskQueue {
 public:
  explicit ConnectionThreads(size_t max_threads) : max_threads_(max_threads) {}
  ~ConnectionThreads() override { shutdown(); }

  void enqueue(std::function<void()> job) override {
    std::lock_guard lock(mutex_);
    if (!idle_.empty()) {
      Worker* worker = idle_.back();
      idle_.pop_back();
      worker->job = std::move(job);
      worker->wake.notify_one();
    } else if (workers_.size() < max_threads_) {
      auto worker = std::make_unique<Worker>();
      worker->job = std::move(job);
      Worker* w = worker.get();
      workers_.push_back(std::move(worker));
      w->thread = std::thread([this, w] { work(*w); });
    } else {
      backlog_.push_back(std::move(job));
    }
  }

  // Runs what is queued, then ends every thread.
  void shutdown() override {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
      stopping_ = true;
      for (Worker* w : idle_) w->wake.notify_one();
    }
    for (auto& w : workers_) w->thread.join();
  }

 private:
  struct Worker {
    std::thread thread;
    std::function<void()> job;
    std::condition_variable wake;
  };

  void work(Worker& w) {
    std::unique_lock lock(mutex_);
    while (true) {
      if (!w.job && !backlog_.empty()) {
        w.job = std::move(backlog_.front());
        backlog_.pop_front();
      }
      if (!w.job) {
        if (stopping_) return;
        idle_.push_back(&w);
        w.wake.wait(lock, [&] { return w.job || stopping_; });
        if (!w.job) {
          idle_.erase(std::find(idle_.begin(), idle_.end(), &w));
          return;
        }
      }
      auto job = std::move(w.job);
      w.job = nullptr;
      lock.unlock();
      job();
      lock.lock();
    }
  }

  const size_t max_threads_;
  std::mutex mutex_;  // guards everything below, and each worker's job
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<Worker*> idle_;  // the most recently idle last
  std::deque<std::function<void()>> backlog_;
  bool stopping_ = false;
};

}  // namespace

GuardedHttpServer::GuardedHttpServer(ConnectionLimits limits, std::function<void(int)> on_refused)
    : limits_(limits), on_refused_(std::move(on_refused)) {
  // A thread per connection allowed, and a few to turn away the ones past the cap without delay.
  const size_t threads = static_cast<size_t>(limits_.max_connections) + 4;
  new_task_queue = [threads] { return new ConnectionThreads(threads); };
}

bool GuardedHttpServer::process_and_close_socket(socket_t sock) {
  struct Counted {
    std::atomic<int>& open;
    ~Counted() { --open; }
  } counted{open_connections_};
  if (++open_connections_ > limits_.max_connections) {
    send_all(sock,
             error_response(503, "Service Unavailable", "too_many_connections",
                            "the server has " + std::to_string(limits_.max_connections) +
                                " connections open, its limit; retry later"),
             Clock::now() + std::chrono::seconds(1));
    if (on_refused_) on_refused_(503);
    close_gently(sock, std::chrono::milliseconds(100));
    return true;
  }
  GuardedStream stream(sock, limits_, *this, on_refused_);
  bool ok = true;
  for (int n = 0; n < limits_.keepalive_requests && is_running(); ++n) {
    if (n > 0 && !stream.await_next_request()) break;
    stream.begin_request();
    bool closed = false;
    const bool last = n + 1 == limits_.keepalive_requests;
    ok = process_request(stream, last, closed, [&](httplib::Request&) { stream.end_head(); });
    if (!ok || closed || stream.refused()) break;
  }
  close_gently(sock, std::chrono::milliseconds(stream.refused() ? 200 : 0));
  return ok;
}

}  // namespace ernie::server
