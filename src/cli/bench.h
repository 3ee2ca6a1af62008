// ernie bench: the model benchmark (bench_model.cpp) and the server load generator share one subcommand.
#pragma once

#include "cli/common.h"

namespace ernie::cli {

struct ModelBenchOptions {
  ModelOptions model;  // --dtype may list several types, e.g. f32,int8,int4
  std::vector<int> prompt_lengths = {32, 512};
  int gen = 128;
  int reps = 5;
  std::string json_path;
  std::string plot_path;  // --plot FILE.svg: the results drawn as charts (bench_plot.h), by the parent process only
  bool profile = false;   // also time each kind of operation in one prefill and one decode run
  bool worker = false;
  bool cold = false;
};
void add_model_bench_options(CLI::App& command, ModelBenchOptions& options);
void run_model_bench(const ModelBenchOptions& options);

}  // namespace ernie::cli
