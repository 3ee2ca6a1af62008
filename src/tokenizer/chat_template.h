// Chat-template renderer: interprets the subset of Jinja2 that Hugging Face chat templates use, with the semantics
// transformers gives them — jinja2's ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and loop
// controls, no autoescape, plus transformers' additions: raise_exception(), strftime_now(), the {% generation %}
// tag, and its tojson (json.dumps with ensure_ascii=False, keys in insertion order). No C++ Jinja engine is
// packaged in Debian, hence our own.
//
// Contract
//  - parse() returns a template that renders as jinja2 would, or throws ernie::Error "chat template: <what> at
//    line N". Syntax outside the subset (unknown or unsupported tags, filters or tests, recursive loops, *args)
//    and invalid UTF-8 are rejected there, never misrendered. Unknown filters and tests are parse errors, as they
//    are compile errors in jinja2. Unknown methods (`x.foo()`) are only known at render time.
//  - render() binds the top-level keys of `context` (an object, or null for none) as variables. A variable the
//    context lacks is undefined, as in jinja2's default Undefined: `is defined` is false, it prints as "",
//    iterates as empty, has length 0 and takes `| default`; any other use — arithmetic (`"User: " + undefined`),
//    ordering, attribute or item access, tojson — throws ernie::Error naming it ("'dict object' has no attribute
//    'content'"), exactly where jinja2 raises UndefinedError.
//  - raise_exception(msg) called by the template throws ernie::Error whose message contains msg. Every other
//    runtime fault (type errors, division by zero, methods that would modify data, which the sandbox forbids) is
//    an ernie::Error too. Nesting of templates, expressions, macro calls and data is bounded, so no template or
//    context can crash the process. So is the work of one render (jinja/common.h): more than ~500 K steps (statements,
//    loop iterations, expressions), ~64 MB of data built, or 16 MiB of output raises ernie::Error naming the limit,
//    so no template or context can hang it or exhaust memory either.
//  - Where Python types show through, we differ on purpose: dicts from `context` iterate (and tojson) in
//    nlohmann::json's sorted-key order (render_ordered() keeps the caller's order; dicts the template builds keep
//    insertion order as in Python); tuples are lists (print as [1, 2]); map/select/reject/items return lists
//    where jinja2 returns generators; integers are 64-bit (overflow is an error, not a bignum).
//  - A ChatTemplate is immutable after parse(), cheap to copy, and render() may run on several threads at once.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace ernie {

namespace jinja {
struct Program;
}

class ChatTemplate {
 public:
  // Throws ernie::Error on syntax it does not support.
  static ChatTemplate parse(std::string_view source);

  // Renders with `context` as the template's variables, e.g. {"messages": [...], "add_generation_prompt": true,
  // "bos_token": "<s>", ...}. Throws ernie::Error on a runtime error (see the contract above).
  std::string render(const nlohmann::json& context) const;

  // The same for a context held as nlohmann::ordered_json. nlohmann::json sorts object keys, so render() shows
  // dicts (e.g. tool schemas through tojson) in sorted order; this keeps the caller's order, as transformers
  // does. A separate name, because a braced context would make an overload ambiguous.
  std::string render_ordered(const nlohmann::ordered_json& context) const;

 private:
  explicit ChatTemplate(std::shared_ptr<const jinja::Program> program) : program_(std::move(program)) {}
  std::shared_ptr<const jinja::Program> program_;
};

}  // namespace ernie
