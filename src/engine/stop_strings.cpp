#include "engine/stop_strings.h"

#include <algorithm>
#include <utility>

#include "core/utf8.h"

namespace ernie {

StopStringMatcher::StopStringMatcher(std::vector<std::string> stop_strings) {
  for (auto& stop : stop_strings) {
    if (!stop.empty()) stop_strings_.push_back(std::move(stop));
  }
}

StopStringMatcher::Result StopStringMatcher::push(std::string_view new_text) {
  if (stopped_) return {"", true};
  held_.append(new_text);

  // Everything released earlier was decided, so a match can only start inside held_.
  size_t stop_at = std::string::npos;
  for (const auto& stop : stop_strings_) stop_at = std::min(stop_at, held_.find(stop));
  if (stop_at != std::string::npos) {
    std::string text = held_.substr(0, stop_at);
    held_.clear();
    stopped_ = true;
    return {std::move(text), true};
  }

  // Hold back the longest tail that is a proper prefix of some stop string: only it can still grow into a
  // match (a full match was ruled out above).
  const std::string_view held = held_;
  size_t keep_from = held.size();
  for (const auto& stop : stop_strings_) {
    const size_t longest = std::min(stop.size() - 1, held.size());
    for (size_t length = longest; length > 0 && held.size() - length < keep_from; --length) {
      if (held.ends_with(std::string_view(stop).substr(0, length))) {
        keep_from = held.size() - length;
        break;
      }
    }
  }
  keep_from = std::min(utf8::character_start(held, keep_from), utf8::incomplete_tail(held));

  std::string text = held_.substr(0, keep_from);
  held_.erase(0, keep_from);
  return {std::move(text), false};
}

std::string StopStringMatcher::flush() {
  std::string rest = stopped_ ? std::string() : std::move(held_);
  held_.clear();
  stopped_ = false;
  return rest;
}

}  // namespace ernie
