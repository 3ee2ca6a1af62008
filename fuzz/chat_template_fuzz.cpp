// Fuzzes the chat-template engine. The input is split at its first NUL: the template source, then the
// conversation — a JSON array of messages if it parses as one, else one user message with that text as content.
// A byte after a second NUL, when present, sets add_generation_prompt. Parsing and rendering may raise
// ernie::Error; any other exception is a finding, and so are hangs and huge memory (libFuzzer's -timeout and
// -rss_limit_mb catch those).
#include <exception>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "fuzz_support.h"
#include "tokenizer/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ernie;
  using nlohmann::json;
  fuzz::Input in(data, size);
  const std::string_view source = in.until_nul();
  const std::string_view conversation = in.until_nul();
  const bool add_generation_prompt = in.byte() & 1;
  try {
    const ChatTemplate tmpl = ChatTemplate::parse(source);
    json messages = json::parse(conversation, nullptr, /*allow_exceptions=*/false);
    if (messages.is_discarded() || !messages.is_array()) {
      // Raw text, not necessarily valid UTF-8: a client can send anything as content.
      messages = json::array({{{"role", "user"}, {"content", std::string(conversation)}}});
    }
    const json context = {{"messages", messages},
                          {"add_generation_prompt", add_generation_prompt},
                          {"bos_token", "<s>"},
                          {"eos_token", "</s>"}};
    (void)tmpl.render(context);
  } catch (const Error&) {
  } catch (const std::exception& e) {
    fuzz::violation("exception other than ernie::Error", e.what());
  }
  return 0;
}
