// ernie tokenize / detokenize: text to ids as a JSON array, ids back to text.
#include <cstdio>

#include "cli/common.h"

namespace ernie::cli {
namespace {

struct TokenizeOptions {
  std::string dir;
  std::string text;
  std::string ids;
  bool skip_special = false;
};

}  // namespace

void register_tokenize(CLI::App& app) {
  auto options = std::make_shared<TokenizeOptions>();
  // Tokenizing needs only the tokenizer files, so these commands do not load or check the weights.
  CLI::App* tokenize = app.add_subcommand("tokenize", "Print the token ids of a text as a JSON array");
  tokenize->add_option("-m,--model", options->dir,
                       "Checkpoint directory or GGUF file (default: the built-in demo model)");
  tokenize->add_option("-t,--text", options->text, "Text to tokenize")->required();
  tokenize->callback([options] {
    const Tokenizer tokenizer = Tokenizer::load(checkpoint_dir(options->dir));
    std::printf("%s\n", ids_to_json(tokenizer.encode(options->text)).c_str());
  });

  CLI::App* detokenize = app.add_subcommand("detokenize", "Print the text of token ids");
  detokenize->add_option("-m,--model", options->dir,
                         "Checkpoint directory or GGUF file (default: the built-in demo model)");
  detokenize->add_option("--ids", options->ids, "Token ids, e.g. 1,5,9")->required();
  detokenize->add_flag("--skip-special", options->skip_special, "Leave out special tokens");
  detokenize->callback([options] {
    const Tokenizer tokenizer = Tokenizer::load(checkpoint_dir(options->dir));
    const std::string text = tokenizer.decode(parse_ids(options->ids), options->skip_special);
    std::printf("%s\n", text.c_str());
  });
}

}  // namespace ernie::cli
