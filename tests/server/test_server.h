// A real ernie server for tests: started in-process on a free loopback port with the tiny fixture model, a StepGate
// on its scheduler, and small clients for plain, streaming and abandoned requests. Every network wait has a timeout.
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "server/server.h"
#include "step_gate.h"
#include "test_support.h"

namespace ernie::testing {

using nlohmann::json;

inline server::ServerOptions test_options() {
  server::ServerOptions o;
  o.host = "127.0.0.1";
  o.port = 0;
  o.max_body_bytes = 64 * 1024;
  o.scheduler.max_running = 4;
  o.scheduler.max_waiting = 4;
  o.scheduler.context_length = 256;
  o.scheduler.prefill_chunk = 16;
  return o;
}

struct Reply {
  int status = 0;     // 0: no answer (see error)
  std::string error;  // why there was no answer
  std::string body;
  httplib::Headers headers;
  json body_json() const { return json::parse(body, nullptr, /*allow_exceptions=*/false); }
  std::string header(const std::string& name) const {
    const auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
  // The payloads of a server-sent-event stream's "data: " lines, in order.
  std::vector<std::string> events() const {
    std::vector<std::string> out;
    size_t at = 0;
    for (size_t end; (end = body.find("\n\n", at)) != std::string::npos; at = end + 2) {
      const std::string event = body.substr(at, end - at);
      if (event.rfind("data: ", 0) == 0) out.push_back(event.substr(6));
    }
    return out;
  }
};

class TestServer {
 public:
  explicit TestServer(server::ServerOptions options = test_options(), bool serve = true) {
    options.scheduler.on_step = gate.hook();
    server = std::make_unique<server::Server>(options);
    port = server->listen();
    if (serve) serve_model();
  }
  ~TestServer() {
    gate.open();
    server->shutdown();
  }

  void serve_model() {
    const auto dir = fixture("tiny-ernie/model");
    server->serve_model({.pool = std::make_unique<ThreadPool>(2),
                         .model = Model::load(dir),
                         .tokenizer = std::make_unique<Tokenizer>(Tokenizer::load(dir)),
                         .defaults = GenerationDefaults::load(dir),
                         .id = "tiny-ernie"});
  }

  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_connection_timeout(std::chrono::seconds(5));
    c.set_read_timeout(std::chrono::seconds(30));
    c.set_write_timeout(std::chrono::seconds(5));
    return c;
  }

  Reply get(const std::string& path, const httplib::Headers& headers = {}) const {
    auto c = client();
    return reply(c.Get(path.c_str(), headers));
  }
  Reply post(const std::string& path, const std::string& body, const httplib::Headers& headers = {}) const {
    auto c = client();
    return reply(c.Post(path.c_str(), headers, body, "application/json"));
  }
  Reply post(const std::string& path, const json& body, const httplib::Headers& headers = {}) const {
    return post(path, body.dump(), headers);
  }

  // A metric's value in /metrics (the exact sample name with labels), or -1 if absent.
  double metric(const std::string& sample) const {
    const std::string text = get("/metrics").body;
    for (size_t at = text.find(sample + " "); at != std::string::npos; at = text.find(sample + " ", at + 1)) {
      if (at == 0 || text[at - 1] == '\n') return std::stod(text.substr(at + sample.size() + 1));
    }
    return -1;
  }

  StepGate gate;  // first: outlives the server's scheduler
  std::unique_ptr<server::Server> server;
  int port = 0;

 private:
  static Reply reply(const httplib::Result& result) {
    Reply r;
    if (!result) {
      r.error = httplib::to_string(result.error());
      return r;
    }
    r.status = result->status;
    r.body = result->body;
    r.headers = result->headers;
    return r;
  }
};

// A request on a raw socket, for what an HTTP client library hides: reading a response as it arrives and hanging up
// in the middle of it.
class RawRequest {
 public:
  RawRequest(int port, const std::string& method, const std::string& path, const std::string& body) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
      ADD_FAILURE() << "cannot connect to port " << port;
      return;
    }
    const std::string request = method + " " + path +
                                " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" +
                                "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
    EXPECT_EQ(::send(fd_, request.data(), request.size(), MSG_NOSIGNAL), static_cast<ssize_t>(request.size()));
  }
  ~RawRequest() { hang_up(); }

  // Reads until `marker` has arrived (true) or 10 s pass or the peer closes (false).
  bool read_until(const std::string& marker) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (received_.find(marker) == std::string::npos) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      pollfd p{fd_, POLLIN, 0};
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
      char buffer[4096];
      const ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
      if (n <= 0) return false;
      received_.append(buffer, static_cast<size_t>(n));
    }
    return true;
  }
  void hang_up() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  const std::string& received() const { return received_; }

 private:
  int fd_ = -1;
  std::string received_;
};

}  // namespace ernie::testing
