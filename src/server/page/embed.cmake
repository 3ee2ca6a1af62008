# Compiles the chat page into the binary: turns INPUT (chat.html) into OUTPUT, a C++ source holding the file as a
# byte array (no raw-string delimiter can clash with its text) and the SHA-256 of its inline script and style, which
# the Content-Security-Policy names so that the browser runs those two and nothing else.
# Run by CMakeLists.txt at build time: cmake -DINPUT=... -DOUTPUT=... -P embed.cmake
cmake_minimum_required(VERSION 3.25)

file(READ "${INPUT}" page)

# The text between the one `<open>` tag and its `</close>`, as the browser hashes it (exactly, whitespace included).
function(inline_element tag out)
  string(FIND "${page}" "<${tag}>" open)
  string(FIND "${page}" "<${tag}>" last REVERSE)
  string(FIND "${page}" "</${tag}>" close)
  if(open EQUAL -1 OR close EQUAL -1 OR NOT open EQUAL last OR close LESS open)
    message(FATAL_ERROR "${INPUT}: needs exactly one <${tag}> element, without attributes (the CSP hashes it)")
  endif()
  string(LENGTH "<${tag}>" tag_length)
  math(EXPR begin "${open} + ${tag_length}")
  math(EXPR length "${close} - ${begin}")
  string(SUBSTRING "${page}" ${begin} ${length} content)
  string(SHA256 digest "${content}")
  set(${out} ${digest} PARENT_SCOPE)
endfunction()

inline_element(script script_sha256)
inline_element(style style_sha256)

file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" hex_length)
math(EXPR size "${hex_length} / 2")
# Sixteen bytes a line.
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "((0x..,){16})" "\\1\n" bytes "${bytes}")

file(WRITE "${OUTPUT}"
"// Generated from src/server/page/chat.html by src/server/page/embed.cmake; do not edit.\n"
"#include <cstddef>\n\n"
"namespace ernie::server::page {\n\n"
"extern const unsigned char kChatHtml[] = {\n${bytes}\n};\n"
"extern const size_t kChatHtmlSize = ${size};\n"
"extern const char kChatScriptSha256[] = \"${script_sha256}\";\n"
"extern const char kChatStyleSha256[] = \"${style_sha256}\";\n\n"
"}  // namespace ernie::server::page\n")
