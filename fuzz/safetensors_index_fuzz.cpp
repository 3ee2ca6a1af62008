// Fuzzes the sharded-checkpoint path: the input is model.safetensors.index.json, in a directory holding two fixed,
// valid shards (a.safetensors: "x", "y"; b.safetensors: "z"). Opening must succeed with every tensor the index
// lists found in the shard it names, or raise ernie::Error.
#include <cstring>
#include <exception>

#include "core/error.h"
#include "fuzz_support.h"
#include "io/safetensors.h"

namespace {

const std::filesystem::path& checkpoint_dir() {
  static const std::filesystem::path dir = [] {
    using namespace ernie;
    const auto d = fuzz::scratch_dir() / "sharded";
    std::filesystem::create_directories(d);
    const auto fill = [](uint8_t* out, size_t n) { std::memset(out, 0x3f, n); };
    write_safetensors(d / "a.safetensors",
                      {{"x", DType::F32, {2, 3}, [&](uint8_t* out) { fill(out, 24); }},
                       {"y", DType::BF16, {4}, [&](uint8_t* out) { fill(out, 8); }}});
    write_safetensors(d / "b.safetensors", {{"z", DType::F16, {1, 2}, [&](uint8_t* out) { fill(out, 4); }}});
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ernie;
  const auto& dir = checkpoint_dir();
  fuzz::write_file(dir / "model.safetensors.index.json", {reinterpret_cast<const char*>(data), size});
  try {
    const SafetensorsArchive archive = SafetensorsArchive::open(dir);
    for (const auto& [name, view] : archive.tensors()) {
      if (name != "x" && name != "y" && name != "z") fuzz::violation("tensor no shard holds", name);
      if (view.file->parent_path() != dir) fuzz::violation("shard outside the checkpoint directory", view.file->string());
    }
  } catch (const Error&) {
  } catch (const std::exception& e) {
    fuzz::violation("exception other than ernie::Error", e.what());
  }
  return 0;
}
