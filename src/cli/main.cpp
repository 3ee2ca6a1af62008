// ernie: run, chat with, inspect and tokenize ERNIE-4.5 checkpoints.
#include <cstdio>
#include <exception>

#include "cli/common.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"ernie-edge: fast, faithful ERNIE-4.5 inference on CPU"};
  app.require_subcommand(1);
  app.failure_message(CLI::FailureMessage::help);  // a wrong or missing argument shows the usage
  ernie::cli::register_run(app);
  ernie::cli::register_chat(app);
  ernie::cli::register_logits(app);
  ernie::cli::register_tokenize(app);
  ernie::cli::register_info(app);
  ernie::cli::register_make_random(app);
  ernie::cli::register_serve(app);
  ernie::cli::register_bench(app);
  ernie::cli::register_accuracy(app);
  ernie::cli::register_quantize(app);
  ernie::cli::register_calibrate(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const ernie::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
