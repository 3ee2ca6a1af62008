// A large, uninitialised, writable memory block for weights made at load (converted or dequantized matrices),
// backed by transparent huge pages where the kernel allows it. Filling a fresh block of hundreds of MiB in 4 KiB
// pages takes one page fault per page, which cost more than the conversion itself (about 1 s for the 0.3B model's
// 365 MiB of Q8_0); 2 MiB pages take 512 times fewer.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ernie {

class LargeBuffer {
 public:
  // Raises ernie::Error if the memory cannot be reserved.
  static LargeBuffer allocate(size_t bytes);

  LargeBuffer() = default;
  LargeBuffer(LargeBuffer&& other) noexcept;
  LargeBuffer& operator=(LargeBuffer&& other) noexcept;
  LargeBuffer(const LargeBuffer&) = delete;
  LargeBuffer& operator=(const LargeBuffer&) = delete;
  ~LargeBuffer();

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace ernie
