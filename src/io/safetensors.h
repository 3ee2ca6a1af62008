// Reads Hugging Face safetensors checkpoints by memory map: one `model.safetensors`, or shards listed by
// `model.safetensors.index.json`. Tensors are views into the mapped files; nothing is copied.
//
// Every structural problem (short file, bad header length, header not JSON, unknown dtype, offsets outside the
// data block, byte size not matching the shape, shard missing a tensor the index promises or holding one it does
// not list) raises ernie::Error naming the file and the tensor, before any tensor is used.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/mapped_file.h"

namespace ernie {

struct TensorView {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const uint8_t* data;  // points into a mapped file; valid while the archive lives. May be unaligned.
  size_t nbytes;
  const std::filesystem::path* file;  // the file it lives in, for error messages

  int64_t element_count() const;
  std::string shape_string() const;  // "[64, 3008]"
};

class SafetensorsArchive {
 public:
  // `path` is a checkpoint directory (model.safetensors, else model.safetensors.index.json) or a .safetensors file.
  static SafetensorsArchive open(const std::filesystem::path& path);

  const TensorView* find(const std::string& name) const;
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  size_t mapped_bytes() const;
  std::vector<std::filesystem::path> files() const;

 private:
  void add_file(const std::filesystem::path& file);

  std::vector<std::unique_ptr<MappedFile>> files_;  // stable addresses: TensorView::file points at their paths
  std::map<std::string, TensorView> tensors_;
};

// One tensor for write_safetensors: `fill` writes its bytes (dtype_row_bytes(dtype, element count)) into a buffer.
struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::function<void(uint8_t* out)> fill;
};

// Writes a .safetensors file, one tensor in memory at a time. Raises ernie::Error if the file cannot be written.
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors);

}  // namespace ernie
