// The chat template renderer's work bounds (jinja/common.h): templates that would loop, recurse or print without
// end fail with an ernie::Error naming the limit, quickly and without a large allocation, while long but ordinary
// conversations still render.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "test_support.h"
#include "tokenizer/chat_template.h"

namespace ernie {
namespace {

using ernie::testing::error_of;
using nlohmann::json;

std::string render_error(const std::string& source, const json& context = json::object()) {
  const ChatTemplate t = ChatTemplate::parse(source);
  return error_of([&] { t.render(context); });
}

TEST(ChatTemplateLimits, NestedLoopsRunOutOfSteps) {
  const auto start = std::chrono::steady_clock::now();
  const std::string message = render_error(
      "{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}");
  EXPECT_MENTIONS(message, "steps");
  EXPECT_MENTIONS(message, "line 1");
  // A hang guard, not a speed test: under qemu-user (ERNIE_EMULATED) code runs 10-50x slower, and a sanitizer on a
  // busy machine took 40 s here.
#ifdef ERNIE_SANITIZER
  const int guard = 300;
#else
  const int guard = 30;
#endif
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(std::getenv("ERNIE_EMULATED") ? 600 : guard));
}

TEST(ChatTemplateLimits, BranchingRecursionRunsOutOfSteps) {
  // Depth 40 stays under the nesting limit, but two calls per level would be 2^40 calls.
  const std::string message = render_error(
      "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}");
  EXPECT_MENTIONS(message, "steps");
}

TEST(ChatTemplateLimits, LoopOverMoreItemsThanStepsLeftFailsBeforeIterating) {
  EXPECT_MENTIONS(render_error("{% for c in 'x' * 4000000 %}{% endfor %}"), "steps");
  EXPECT_MENTIONS(render_error("{% for i in range(4000000) %}{% endfor %}"), "steps");
}

TEST(ChatTemplateLimits, HugeOutputIsAnError) {
  // 4 MiB per line, printed 100 times.
  EXPECT_MENTIONS(render_error("{% for i in range(100) %}{{ 'x' * 4000000 }}{% endfor %}"), "output exceeds");
}

TEST(ChatTemplateLimits, DoublingDataIsAnError) {
  // Each pass doubles a nested list: 2^40 elements if nothing stopped it.
  const std::string message = render_error(
      "{% set ns = namespace(a=[1]) %}{% for i in range(40) %}{% set ns.a = [ns.a, ns.a] %}{% endfor %}"
      "{{ ns.a | length }}");
  EXPECT_MENTIONS(message, "bytes of data");
}

TEST(ChatTemplateLimits, RepeatedBigStringsAreAnError) {
  const std::string message =
      render_error("{% for i in range(1000) %}{% set s = 'x' * 1000000 %}{% endfor %}");
  EXPECT_MENTIONS(message, "bytes of data");
}

TEST(ChatTemplateLimits, OneBuiltValueIsBounded) {
  EXPECT_MENTIONS(render_error("{{ range(5000000) | length }}"), "too large");
  EXPECT_MENTIONS(render_error("{{ 'ab' * 3000000 }}"), "too large");
}

// Found by chat_template_fuzz (LeakSanitizer): a namespace stored in itself was a shared_ptr cycle, leaked after
// every render. Its attributes are now dropped when the render ends; the leak shows in the sanitizer builds.
TEST(ChatTemplateLimits, NamespaceHoldingItselfRenders) {
  const ChatTemplate t = ChatTemplate::parse(
      "{% set ns = namespace(n=1) %}{% set ns.me = ns %}{% set other = namespace(a=ns) %}{% set ns.b = other %}"
      "{{ ns.me.me.n }}{{ ns.b.a.n }}");
  EXPECT_EQ(t.render(json::object()), "11");
}

TEST(ChatTemplateLimits, LongConversationStillRenders) {
  json messages = json::array();
  for (int i = 0; i < 2000; ++i) {
    messages.push_back({{"role", i % 2 ? "assistant" : "user"}, {"content", std::string(200, 'a' + i % 26)}});
  }
  const ChatTemplate t = ChatTemplate::parse(
      "{% for m in messages %}{% if m.role == 'user' %}User: {{ m.content }}\n{% else %}Assistant: "
      "{{ m.content | trim }}{{ loop.previtem.role if loop.previtem is defined }}\n{% endif %}{% endfor %}");
  const std::string out = t.render({{"messages", messages}});
  EXPECT_GT(out.size(), 2000u * 200u);
}

}  // namespace
}  // namespace ernie
