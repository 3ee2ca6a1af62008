// What every stage of the Jinja2-subset interpreter behind ChatTemplate (tokenizer/chat_template.h) shares: the
// JSON type values are built on, the limits that bound hostile templates and contexts, and how errors are raised.
// Everything in ernie::jinja is internal to the tokenizer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <utility>

namespace ernie::jinja {

using Json = nlohmann::ordered_json;

// Templates come from model repositories and contexts from users: deep nesting must end in an ernie::Error,
// never in a stack overflow, and no single operation may allocate without bound.
constexpr int kMaxExprDepth = 96;
constexpr int kMaxBlockDepth = 96;
constexpr int kMaxMacroDepth = 48;
constexpr int kMaxDataDepth = 256;
constexpr size_t kMaxBuiltSize = size_t{1} << 22;
// One render's total work, so that loops, nested loops, recursion and growing data end in an ernie::Error instead
// of a hang or an exhausted memory: steps are statements executed, loop iterations and expressions evaluated; data
// is roughly the bytes of every value expressions build (lists, strings, copies; 16 per element plus string bytes)
// and of the text written out. A long chat with tools takes tens of thousands of steps and a few megabytes.
constexpr uint64_t kMaxRenderSteps = uint64_t{1} << 19;
constexpr uint64_t kMaxRenderData = uint64_t{1} << 26;
constexpr size_t kMaxOutputBytes = size_t{1} << 24;  // the rendered text of one template, macro or {% set %} block

// Throws ernie::Error with `message`. Errors are one line (core/error.h) and may quote template or user text, so
// control characters are escaped and the message is bounded.
[[noreturn]] void fail_line(const std::string& message);

// Appends c as Python's repr() writes a control character (\n, \r, \t, \xNN) and returns true; returns false,
// appending nothing, for any other byte.
bool append_control_escape(std::string& out, char c);

// Throws "chat template: <parts...> at line <line>" through fail_line.
template <class... Parts>
[[noreturn]] void fail_at(int line, Parts&&... parts) {
  std::ostringstream message;
  message << "chat template: ";
  (message << ... << std::forward<Parts>(parts));  // a binary fold's init may not be a << expression (clang)
  message << " at line " << line;
  fail_line(message.str());
}

// Fails at `line` when a result of `n` elements or bytes would exceed kMaxBuiltSize.
void check_size(size_t n, int line);

}  // namespace ernie::jinja
