// A read-only memory map of a whole file. Float weights are used in place from the map; integer ones are repacked.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>

namespace ernie {

class MappedFile {
 public:
  // Maps `path` read-only; raises ernie::Error naming the file if it cannot be opened or mapped.
  static MappedFile open(const std::filesystem::path& path);

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::filesystem::path& path() const { return path_; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::filesystem::path path_;
};

// Drops the whole pages inside [data, data + size) of a read-only file mapping from resident memory (a later read
// faults them back in from the page cache): for ranges whose contents were converted into a copy.
void release_mapped_range(const void* data, size_t size);

}  // namespace ernie
