// Every operator new in the test_engine program is counted (allocation_counter.cpp replaces the global one), so
// tests can check the no-allocation contracts of the per-token code.
#pragma once

namespace ernie::testing {
long allocation_count();
}  // namespace ernie::testing
