// Errors that reach the user. Every load-time or input problem is raised as ernie::Error with a one-line
// message naming what was wrong and where (file, tensor, field); front ends print it and exit non-zero.
// Nothing in the per-token loop throws.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace ernie {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Builds the message from its parts with operator<<, so callers can mix strings and numbers.
template <class... Parts>
[[noreturn]] void fail(Parts&&... parts) {
  std::ostringstream message;
  (message << ... << std::forward<Parts>(parts));
  throw Error(message.str());
}

}  // namespace ernie
