// Helpers shared by the test programs: where the Hugging Face fixtures are, and readers for their files.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "core/error.h"

namespace ernie::testing {

// ../shared/fixtures beside the checkout, or $ERNIE_FIXTURES. A missing directory fails the test: the
// golden comparisons are the point of the suite and must never be silently skipped.
inline std::filesystem::path fixtures_dir() {
  if (const char* env = std::getenv("ERNIE_FIXTURES")) return env;
  return ERNIE_FIXTURES_DIR;
}

inline std::filesystem::path fixture(const std::string& relative) {
  const auto path = fixtures_dir() / relative;
  if (!std::filesystem::exists(path)) {
    ADD_FAILURE() << "fixture missing: " << path << " (set ERNIE_FIXTURES to shared/fixtures)";
  }
  return path;
}

inline nlohmann::json read_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) {
    ADD_FAILURE() << "cannot read " << path;
    return {};
  }
  return nlohmann::json::parse(in);
}

inline std::vector<float> read_f32(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    ADD_FAILURE() << "cannot read " << path;
    return {};
  }
  in.seekg(0, std::ios::end);
  std::vector<float> values(static_cast<size_t>(in.tellg()) / sizeof(float));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(float)));
  return values;
}

// ‖ours − ref‖ / ‖ref‖, the measure the logit goldens are held to.
inline double relative_error(std::span<const float> ours, std::span<const float> ref) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    diff += (double(ours[i]) - ref[i]) * (double(ours[i]) - ref[i]);
    norm += double(ref[i]) * ref[i];
  }
  return std::sqrt(diff / norm);
}

// Where the built-in demo model (models/demo) is.
inline std::filesystem::path demo_model_dir() {
  return ERNIE_DEMO_MODEL_DIR;
}

// The demo model's quatrain adapter (models/demo-quatrain-lora, from tools/finetune_lora).
inline std::filesystem::path demo_lora_dir() {
  return ERNIE_DEMO_LORA_DIR;
}

using Bytes = std::vector<uint8_t>;

inline Bytes read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void write_bytes(const std::filesystem::path& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  EXPECT_TRUE(out.good()) << "cannot write " << path;
}

inline void write_text(const std::filesystem::path& path, const std::string& text) {
  write_bytes(path, Bytes(text.begin(), text.end()));
}

// The message of the ernie::Error that `f` raises; records a failure if it raises nothing or something else.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected ernie::Error, got another exception: " << e.what();
    return {};
  }
  ADD_FAILURE() << "expected ernie::Error, nothing was thrown";
  return {};
}

// A scratch directory removed when the test ends.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "ernie-test-XXXXXX").string();
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace ernie::testing

// Error messages must name what went wrong: a vague message fails this.
#define EXPECT_MENTIONS(message, part) \
  EXPECT_NE(std::string(message).find(part), std::string::npos) << "message: " << (message) << "\nlacks: " << (part)
