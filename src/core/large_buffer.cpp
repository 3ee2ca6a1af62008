#include "core/large_buffer.h"

#include <sys/mman.h>

#include <utility>

#include "core/error.h"

namespace ernie {

LargeBuffer LargeBuffer::allocate(size_t bytes) {
  LargeBuffer buffer;
  if (bytes == 0) return buffer;
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) fail("cannot reserve ", bytes >> 20, " MiB for the weights");
  // Advice only: where huge pages are off or unavailable the block stays in 4 KiB pages, just slower to fill.
  ::madvise(p, bytes, MADV_HUGEPAGE);
  buffer.data_ = static_cast<uint8_t*>(p);
  buffer.size_ = bytes;
  return buffer;
}

LargeBuffer::LargeBuffer(LargeBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

LargeBuffer& LargeBuffer::operator=(LargeBuffer&& other) noexcept {
  if (this != &other) {
    if (data_) ::munmap(data_, size_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

LargeBuffer::~LargeBuffer() {
  if (data_) ::munmap(data_, size_);
}

}  // namespace ernie
