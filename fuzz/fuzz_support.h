// Helpers shared by the libFuzzer targets: a per-process scratch directory for parsers that only take paths, an
// input splitter, and the one way a target reports a broken contract (abort, which libFuzzer records as a crash).
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

namespace ernie::fuzz {

// Reports a violated contract and aborts: libFuzzer saves the input as a crash.
[[noreturn]] inline void violation(const char* what, std::string_view detail = {}) {
  std::fprintf(stderr, "fuzz contract violated: %s: %.*s\n", what, static_cast<int>(detail.size()), detail.data());
  std::abort();
}

// /dev/shm/ernie-fuzz-<pid> (else $TMPDIR or /tmp), created once, removed at exit. One per process, so parallel
// fuzzing jobs (-jobs / -fork) do not share files.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    namespace fs = std::filesystem;
    fs::path base = "/dev/shm";
    if (!fs::is_directory(base)) {
      const char* tmp = std::getenv("TMPDIR");
      base = tmp ? tmp : "/tmp";
    }
    fs::path d = base / ("ernie-fuzz-" + std::to_string(::getpid()));
    fs::create_directories(d);
    static const std::string to_remove = d.string();
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(to_remove, ec);
    });
    return d;
  }();
  return dir;
}

inline void write_file(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) violation("cannot write scratch file", path.string());
}

// Consumes the input from the front: small numbers for choices, NUL-terminated pieces for strings.
class Input {
 public:
  Input(const uint8_t* data, size_t size) : rest_(reinterpret_cast<const char*>(data), size) {}

  bool empty() const { return rest_.empty(); }
  uint8_t byte() {
    if (rest_.empty()) return 0;
    const uint8_t b = static_cast<uint8_t>(rest_[0]);
    rest_.remove_prefix(1);
    return b;
  }
  // Up to the next NUL (dropped), or everything left.
  std::string_view until_nul() {
    const size_t at = rest_.find('\0');
    const std::string_view piece = rest_.substr(0, at);
    rest_.remove_prefix(at == std::string_view::npos ? rest_.size() : at + 1);
    return piece;
  }
  std::string_view take(size_t n) {
    const std::string_view piece = rest_.substr(0, n);
    rest_.remove_prefix(piece.size());
    return piece;
  }
  std::string_view rest() {
    const std::string_view all = rest_;
    rest_ = {};
    return all;
  }

 private:
  std::string_view rest_;
};

}  // namespace ernie::fuzz
