// Fuzzes the GGUF reader: the input is the whole file. Opening must either succeed, with every metadata value
// readable and every tensor view inside the file, or raise ernie::Error. A file that opens is also read the way
// `ernie` reads one: the model config, the sampling defaults and the tokenizer vocabulary (each may refuse it with
// ernie::Error).
#include <exception>
#include <variant>

#include "core/error.h"
#include "fuzz_support.h"
#include "io/gguf.h"
#include "model/gguf_ernie.h"
#include "tokenizer/spm_vocabulary.h"
#include "tokenizer/tokenizer.h"

namespace {

// Visits a value and everything nested in it; returns a number so the reads are not optimized away.
size_t walk(const ernie::GgufValue& value) {
  return std::visit(
      [](const auto& v) -> size_t {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) {
          return v.size();
        } else if constexpr (std::is_same_v<T, ernie::GgufArray>) {
          size_t n = 0;
          for (const auto& item : v.items) {
            if (item.type() != v.element_type) ernie::fuzz::violation("array item of another type");
            n += walk(item);
          }
          return n + 1;
        } else {
          return static_cast<size_t>(v != T{});
        }
      },
      static_cast<const ernie::GgufVariant&>(value));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ernie;
  const auto file = fuzz::scratch_dir() / "model.gguf";
  fuzz::write_file(file, {reinterpret_cast<const char*>(data), size});
  try {
    const GgufFile gguf = GgufFile::open(file);
    volatile size_t sink = 0;
    for (const auto& [key, value] : gguf.metadata()) {
      sink = sink + walk(value);
      // The typed getters either give a value or refuse it with ernie::Error.
      try { (void)gguf.get_int(key); } catch (const Error&) {}
      try { (void)gguf.get_float(key); } catch (const Error&) {}
      try { (void)gguf.get_bool(key); } catch (const Error&) {}
      try { (void)gguf.get_string(key); } catch (const Error&) {}
      try { (void)gguf.get_array(key, GgufType::STRING); } catch (const Error&) {}
    }
    for (const GgufTensor& t : gguf.tensors()) {
      if (gguf.find_tensor(t.name) != &t) fuzz::violation("find_tensor disagrees with tensors()", t.name);
      if (t.nbytes > size) fuzz::violation("tensor larger than the file", t.name);
      if (t.nbytes > 0) sink = sink + (t.data[0] ^ t.data[t.nbytes - 1]);
      (void)t.shape();
      (void)t.element_count();
    }
    try { (void)config_from_gguf(gguf); } catch (const Error&) {}
    try { (void)generation_defaults_from_gguf(gguf); } catch (const Error&) {}
    try {
      SpmVocabulary vocabulary = read_gguf_vocabulary(gguf);
      // What `ernie` does next with a GGUF file's vocabulary; kept to small ones so that an iteration stays fast.
      if (vocabulary.tokens.size() <= 4096) {
        const Tokenizer tokenizer = Tokenizer::from_vocabulary(std::move(vocabulary), file.string());
        const auto ids = tokenizer.encode("Hello <s> world");
        (void)tokenizer.decode(ids);
      }
    } catch (const Error&) {
    }
  } catch (const Error&) {
  } catch (const std::exception& e) {
    fuzz::violation("exception other than ernie::Error", e.what());
  }
  return 0;
}
