// `ernie serve` and `ernie bench --server` as programs: the server starts on a free port, the load generator drives
// it and writes its JSON, and SIGTERM stops the server with exit status 0.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <regex>

#include "test_support.h"

namespace ernie {
namespace {

using ernie::testing::fixture;
using ernie::testing::TempDir;

// A child process whose stderr is read through a pipe.
class Child {
 public:
  explicit Child(std::vector<std::string> args) {
    int fds[2];
    EXPECT_EQ(pipe(fds), 0);
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fds[1], STDERR_FILENO);
      close(fds[0]);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(fds[1]);
    err_ = fds[0];
  }
  ~Child() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    close(err_);
  }

  // Reads stderr until `pattern` matches it (returns the match's first group) or 10 s pass ("").
  std::string wait_for(const std::regex& pattern) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    std::smatch match;
    while (!std::regex_search(err_text_, match, pattern)) {
      if (!read_some(deadline)) return "";
    }
    return match.size() > 1 ? match[1].str() : match[0].str();
  }
  // Sends `signal` and waits (10 s at most) for the exit; returns the exit status, -1 if it died otherwise.
  int stop(int signal) {
    kill(pid_, signal);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    int status = 0;
    while (waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) return -1;
      read_some(std::chrono::steady_clock::now() + std::chrono::milliseconds(20));
    }
    pid_ = -1;
    while (read_some(std::chrono::steady_clock::now())) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  const std::string& err() const { return err_text_; }

 private:
  bool read_some(std::chrono::steady_clock::time_point deadline) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd p{err_, POLLIN, 0};
    if (poll(&p, 1, std::max<int>(0, static_cast<int>(left.count()))) <= 0) return false;
    char buffer[4096];
    const ssize_t n = read(err_, buffer, sizeof buffer);
    if (n <= 0) return false;
    err_text_.append(buffer, static_cast<size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  int err_ = -1;
  std::string err_text_;
};

struct Finished {
  int exit_code;
  std::string out;
};

// Runs the program to its end, 60 s at most (a server that should have failed to start would otherwise run on).
Finished run(const std::string& args) {
  FILE* pipe = popen(("timeout 60 " + std::string(ERNIE_BINARY) + " " + args + " 2>&1").c_str(), "r");
  std::string out;
  char buffer[4096];
  for (size_t n; (n = fread(buffer, 1, sizeof buffer, pipe)) > 0;) out.append(buffer, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

TEST(Serve, BenchDrivesTheServerAndSigtermStopsItCleanly) {
  Child server({ERNIE_BINARY, "serve", "--model", fixture("tiny-ernie/model").string(), "--port", "0", "--ctx", "512",
                "--max-batch", "4"});
  const std::string url = server.wait_for(std::regex("ready at (http://127\\.0\\.0\\.1:[0-9]+)"));
  ASSERT_FALSE(url.empty()) << server.err();

  TempDir tmp;
  const auto json_path = tmp.path() / "bench.json";
  const Finished bench = run("bench --server " + url +
                             " --concurrency 1,3 --requests 6 --prompt-len 20 --gen 5 --json " + json_path.string());
  ASSERT_EQ(bench.exit_code, 0) << bench.out;
  EXPECT_NE(bench.out.find("TTFT p50/p95/p99"), std::string::npos) << bench.out;
  const auto report = ernie::testing::read_json(json_path);
  EXPECT_EQ(report["prompt_tokens"], 20);
  ASSERT_EQ(report["levels"].size(), 2u);
  for (const auto& level : report["levels"]) {
    EXPECT_EQ(level["succeeded"], 6);
    EXPECT_EQ(level["failed"], 0);
    EXPECT_EQ(level["generated_tokens"], 30);
    EXPECT_GT(level["generated_tokens_per_second"], 0);
    EXPECT_GT(level["ttft_seconds"]["p50"], 0);
    EXPECT_GE(level["e2e_seconds"]["p99"], level["e2e_seconds"]["p50"]);
  }
  EXPECT_EQ(report["levels"][1]["concurrency"], 3);

  EXPECT_EQ(server.stop(SIGTERM), 0) << server.err();
  EXPECT_NE(server.err().find("stopped"), std::string::npos) << server.err();
}

TEST(Serve, BenchWithoutServerIsAUsageError) {
  const Finished r = run("bench --requests 4");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("--server"), std::string::npos) << r.out;
}

TEST(Serve, BenchAgainstNoServerFailsClearly) {
  const Finished r =
      run("bench --server http://127.0.0.1:1 --concurrency 1 --requests 1 --gen 1 --prompt-len 1 --ready-timeout 0.5");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("was not ready within --ready-timeout 0.5 s (connection"), std::string::npos) << r.out;
}

TEST(Serve, AnUnusablePortIsAClearError) {
  Child first({ERNIE_BINARY, "serve", "--model", fixture("tiny-ernie/model").string(), "--port", "0"});
  const std::string port = first.wait_for(std::regex("ready at http://127\\.0\\.0\\.1:([0-9]+)"));
  ASSERT_FALSE(port.empty()) << first.err();
  const Finished second = run("serve --model " + fixture("tiny-ernie/model").string() + " --port " + port);
  EXPECT_EQ(second.exit_code, 1);
  EXPECT_NE(second.out.find("cannot listen on 127.0.0.1:" + port), std::string::npos) << second.out;
  EXPECT_EQ(first.stop(SIGINT), 0) << first.err();
}

TEST(Serve, LimitFlagsReachTheServer) {
  Child server({ERNIE_BINARY, "serve", "--model", fixture("tiny-ernie/model").string(), "--port", "0",
                "--max-json-depth", "8", "--max-stop", "2", "--max-stop-bytes", "4", "--max-body-bytes", "2048",
                "--max-headers", "8", "--max-messages", "1"});
  const std::string port = server.wait_for(std::regex("ready at http://127\\.0\\.0\\.1:([0-9]+)"));
  ASSERT_FALSE(port.empty()) << server.err();
  httplib::Client client("127.0.0.1", std::stoi(port));
  const auto status = [&](const std::string& body, const httplib::Headers& headers = {}) {
    const auto r = client.Post("/v1/completions", headers, body, "application/json");
    return r ? r->status : 0;
  };
  // The body's object and 7 arrays are 8 levels: allowed; one more is not.
  EXPECT_EQ(status(R"({"prompt": "hi", "max_tokens": 1, "x": [[[[[[[]]]]]]]})"), 200);
  EXPECT_EQ(status(R"({"prompt": "hi", "max_tokens": 1, "x": [[[[[[[[]]]]]]]]})"), 400);
  EXPECT_EQ(status(R"({"prompt": "hi", "stop": ["a", "b", "c"]})"), 400);
  EXPECT_EQ(status(R"({"prompt": "hi", "stop": "abcde"})"), 400);
  EXPECT_EQ(status(R"({"prompt": ")" + std::string(3000, 'a') + "\"}"), 413);
  httplib::Headers many;
  for (int i = 0; i < 9; ++i) many.emplace("X-" + std::to_string(i), "1");
  EXPECT_EQ(status(R"({"prompt": "hi", "max_tokens": 1})", many), 431);
  const auto chat = client.Post("/v1/chat/completions",
                                R"({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]})",
                                "application/json");
  ASSERT_TRUE(chat);
  EXPECT_EQ(chat->status, 400);
  EXPECT_EQ(server.stop(SIGTERM), 0) << server.err();
}

}  // namespace
}  // namespace ernie
