#include "allocation_counter.h"

#include <atomic>
#include <cstdlib>
#include <new>

// Forwarding to malloc/free changes nothing else. (GCC 12 mistakes the malloc/free pairing inside these
// replacements for a new/free mismatch at every inlined call site.)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
namespace {
std::atomic<long> g_allocations{0};
}  // namespace

void* operator new(std::size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}

long ernie::testing::allocation_count() {
  return g_allocations.load(std::memory_order_relaxed);
}
