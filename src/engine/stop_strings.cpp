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

size_t StopStringMatcher::first_match() const {
  size_t at = std::string::npos;
  for (const auto& stop : stop_strings_) at = std::min(at, held_.find(stop));
  return at;
}

size_t StopStringMatcher::first_partial() const {
  const std::string_view held = held_;
  size_t from = held.size();
  for (const auto& stop : stop_strings_) {
    const size_t longest = std::min(stop.size() - 1, held.size());
    for (size_t length = longest; length > 0 && held.size() - length < from; --length) {
      if (held.ends_with(std::string_view(stop).substr(0, length))) {
        from = held.size() - length;
        break;
      }
    }
  }
  return from;
}

StopStringMatcher::Result StopStringMatcher::push(std::string_view new_text) {
  if (stopped_) return {"", true};
  held_.append(new_text);

  // Everything released earlier was decided, so a match can only start inside held_. The earliest start wins, so
  // a complete match is final only when no stop string that starts before it is still growing at the end of the
  // held text (stops "bcd" and "c" on "b", "c": "c" is complete, but a "d" would make "bcd" win).
  const size_t stop_at = first_match();
  const size_t partial_from = first_partial();
  if (stop_at != std::string::npos && stop_at <= partial_from) {
    std::string text = held_.substr(0, stop_at);
    held_.clear();
    stopped_ = true;
    return {std::move(text), true};
  }

  // Hold back from the earliest tail that is a proper prefix of some stop string: only it can still grow into a
  // match that starts first; and never split a character.
  const std::string_view held = held_;
  const size_t keep_from = std::min(utf8::character_start(held, partial_from), utf8::incomplete_tail(held));
  std::string text = held_.substr(0, keep_from);
  held_.erase(0, keep_from);
  return {std::move(text), false};
}

std::string StopStringMatcher::flush() {
  // What is held may hold a complete match that waited on an earlier partial one which never completed.
  std::string rest = stopped_ ? std::string() : held_.substr(0, std::min(first_match(), held_.size()));
  held_.clear();
  stopped_ = false;
  return rest;
}

}  // namespace ernie
