// ernie bench --model: load time, time to first token, prefill and decode speed, peak memory and energy per token,
// for one or several weight types side by side. Each type runs in a fresh child process (this program re-executed)
// so that its peak resident memory and cold load are its own.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "cli/bench.h"
#include "cli/bench_plot.h"
#include "core/cpu_topology.h"
#include "core/error.h"

namespace ernie::cli {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Cumulative package energy from Intel RAPL, in joules; nullopt where the machine does not expose it readable.
std::optional<double> rapl_joules() {
  std::ifstream f("/sys/class/powercap/intel-rapl:0/energy_uj");
  double uj;
  if (!(f >> uj)) return std::nullopt;
  return uj * 1e-6;
}

long peak_rss_kib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

// Asks the kernel to forget the checkpoint's pages in the page cache, so the next load reads from disk.
void evict_from_page_cache(const std::filesystem::path& model) {
  const auto evict = [](const std::filesystem::path& file) {
    const int fd = ::open(file.c_str(), O_RDONLY);
    if (fd < 0) return;
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  };
  if (std::filesystem::is_directory(model)) {
    for (const auto& entry : std::filesystem::directory_iterator(model)) evict(entry.path());
  } else {
    evict(model);
  }
}

std::vector<int32_t> prompt_ids(int n, int vocab) {
  std::vector<int32_t> ids(n);
  for (int i = 0; i < n; ++i) ids[i] = 1000 + (i * 7919) % std::max(1, vocab - 1000);
  return ids;
}

int argmax(std::span<const float> v) {
  return static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin());
}

struct Stats {
  double median, min, max;
};
Stats stats(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  const double median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  return {median, v.front(), v.back()};
}
nlohmann::json to_json(const Stats& s) {
  return {{"median", s.median}, {"min", s.min}, {"max", s.max}};
}

nlohmann::json to_json(const ForwardProfile& p, double per) {
  nlohmann::json ops = nlohmann::json::object();
  for (int op = 0; op < ForwardProfile::kOpCount; ++op) ops[ForwardProfile::kNames[op]] = p.seconds[op] / per;
  return ops;
}

// Time per kind of operation: one prefill of the longest prompt, then --gen decode steps after the first prompt.
nlohmann::json profile(const ModelBenchOptions& o, Session& session, std::span<const int32_t> first_prompt, int vocab) {
  const int longest = *std::max_element(o.prompt_lengths.begin(), o.prompt_lengths.end());
  const auto ids = prompt_ids(longest, vocab);
  ForwardProfile prefill, decode;
  session.reset();
  session.set_profile(&prefill);
  session.forward(ids);
  session.reset();
  int32_t token = argmax(session.forward(first_prompt));
  session.set_profile(&decode);
  for (int i = 0; i < o.gen; ++i) token = argmax(session.forward(std::span<const int32_t>(&token, 1)));
  session.set_profile(nullptr);
  return {{"prefill_tokens", longest},
          {"prefill_seconds", to_json(prefill, 1)},
          {"decode_seconds_per_token", to_json(decode, o.gen)}};
}

// The measurements for one weight type, in this process; printed as one JSON object for the parent.
nlohmann::json measure(const ModelBenchOptions& o, const std::string& dtype, bool cold) {
  if (cold) evict_from_page_cache(o.model.dir);
  ModelOptions model_options = o.model;
  model_options.dtype = dtype;
  const auto start = Clock::now();
  LoadedModel loaded = load_model(model_options, /*with_tokenizer=*/false);
  Session session(*loaded.model, session_options(model_options, loaded));
  const int vocab = loaded.model->config().vocab_size;
  const auto first_prompt = prompt_ids(o.prompt_lengths.front(), vocab);
  session.forward(first_prompt);
  const double load_to_first_token = since(start);

  nlohmann::json result = {{"dtype", dtype.empty() ? "stored" : dtype},
                           {"weights", loaded.model->weight_dtype()},
                           {"weight_mib", loaded.model->weight_bytes() / 1048576.0},
                           {"kv_dtype", std::string(dtype_name(session.kv_dtype()))},
                           {"threads", loaded.pool->size()},
                           {"load_seconds", loaded.load_seconds},
                           {"load_to_first_token_seconds", load_to_first_token}};
  if (cold) return result;

  nlohmann::json prefill = nlohmann::json::array();
  for (int length : o.prompt_lengths) {
    const auto ids = prompt_ids(length, vocab);
    std::vector<double> seconds;
    for (int rep = 0; rep < o.reps; ++rep) {
      session.reset();
      const auto t0 = Clock::now();
      session.forward(ids);
      seconds.push_back(since(t0));
    }
    const Stats s = stats(seconds);
    prefill.push_back({{"prompt_tokens", length},
                       {"ttft_seconds", to_json(s)},
                       {"tokens_per_second", to_json({length / s.median, length / s.max, length / s.min})}});
  }
  result["prefill"] = prefill;

  std::vector<double> decode_rates;
  std::optional<double> joules;
  for (int rep = 0; rep < o.reps; ++rep) {
    session.reset();
    int32_t token = argmax(session.forward(first_prompt));
    const auto energy0 = rapl_joules();
    const auto t0 = Clock::now();
    for (int i = 0; i < o.gen; ++i) token = argmax(session.forward(std::span<const int32_t>(&token, 1)));
    const double seconds = since(t0);
    const auto energy1 = rapl_joules();
    decode_rates.push_back(o.gen / seconds);
    if (energy0 && energy1 && *energy1 >= *energy0) joules = (*energy1 - *energy0) / o.gen;
  }
  const Stats decode = stats(decode_rates);
  result["decode"] = {{"tokens", o.gen},
                      {"after_prompt_tokens", first_prompt.size()},
                      {"tokens_per_second", to_json(decode)},
                      {"weight_gb_per_second", decode.median * loaded.model->weight_bytes() / 1e9}};
  result["joules_per_token"] = joules ? nlohmann::json(*joules) : nlohmann::json("n/a");
  result["peak_rss_mib"] = peak_rss_kib() / 1024.0;
  if (o.profile) result["profile"] = profile(o, session, first_prompt, vocab);
  return result;
}

// One word for /bin/sh whatever the text holds (a model folder may be named with quotes or spaces).
std::string shell_quote(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

// Runs `ernie bench --worker ...` for one type and returns its JSON.
nlohmann::json run_worker(const ModelBenchOptions& o, const std::string& dtype, bool cold) {
  // Under emulation (scripts/emulate.sh) this binary is foreign to the host, so it re-executes itself through the
  // emulator that ERNIE_REEXEC names.
  const char* reexec = std::getenv("ERNIE_REEXEC");
  std::string command = std::string(reexec ? reexec : "") + (reexec ? " " : "") +
                        shell_quote(std::filesystem::read_symlink("/proc/self/exe").string()) + " bench --worker" +
                        (cold ? " --cold" : "") + " --model " + shell_quote(o.model.dir) + " --ctx " +
                        std::to_string(o.model.context_length) + " --reps " + std::to_string(o.reps) + " --gen " +
                        std::to_string(o.gen) + " --prompt-len ";
  for (size_t i = 0; i < o.prompt_lengths.size(); ++i) command += (i ? "," : "") + std::to_string(o.prompt_lengths[i]);
  if (o.model.threads > 0) command += " --threads " + std::to_string(o.model.threads);
  if (!o.model.cpus.empty()) {
    parse_cpu_list(o.model.cpus);  // digits, commas and dashes only (else ernie::Error), so safe in the command
    command += " --cpus " + o.model.cpus;
  }
  if (!o.model.kv_dtype.empty()) command += " --kv-dtype " + shell_quote(o.model.kv_dtype);
  if (!dtype.empty()) command += " --dtype " + shell_quote(dtype);
  if (o.profile && !cold) command += " --profile";
  command += " 2>/dev/null";
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) fail("cannot start a benchmark process");
  std::string out;
  char buffer[4096];
  for (size_t n; (n = fread(buffer, 1, sizeof buffer, pipe)) > 0;) out.append(buffer, n);
  const int status = pclose(pipe);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fail("the benchmark of ", dtype.empty() ? "the stored type" : dtype, " failed (run it alone: ernie bench --model ",
         o.model.dir, dtype.empty() ? "" : " --dtype " + dtype, ")");
  }
  return nlohmann::json::parse(out);
}

std::string range(const nlohmann::json& s, const char* format) {
  char text[96];
  std::snprintf(text, sizeof text, format, s["median"].get<double>(), s["min"].get<double>(), s["max"].get<double>());
  return text;
}

void print_table(const nlohmann::json& report) {
  std::printf("model %s, %d threads, medians of %d runs (min-max)%s\n\n", report["model"].get<std::string>().c_str(),
              report["results"][0]["threads"].get<int>(), report["reps"].get<int>(),
              report["random_weights"].get<bool>() ? "; random weights: speed only" : "");
  std::printf("%-8s %-10s %9s %11s %11s", "dtype", "weights", "MiB", "load→1st s", "warm s");
  for (const auto& p : report["results"][0]["prefill"]) {
    const int n = p["prompt_tokens"].get<int>();
    std::printf(" %16s %18s", ("TTFT" + std::to_string(n) + " ms").c_str(),
                ("pp" + std::to_string(n) + " tok/s").c_str());
  }
  std::printf(" %20s %8s %9s %8s\n", "decode tok/s", "GB/s", "peak MiB", "J/tok");
  for (const auto& r : report["results"]) {
    std::printf("%-8s %-10s %9.1f %11.3f %11.3f", r["dtype"].get<std::string>().c_str(),
                r["weights"].get<std::string>().c_str(), r["weight_mib"].get<double>(),
                r["cold_load_to_first_token_seconds"].get<double>(), r["load_to_first_token_seconds"].get<double>());
    for (const auto& p : r["prefill"]) {
      nlohmann::json ms = p["ttft_seconds"];
      for (const char* k : {"median", "min", "max"}) ms[k] = ms[k].get<double>() * 1000;
      std::printf(" %16s %18s", range(ms, "%.0f (%.0f-%.0f)").c_str(),
                  range(p["tokens_per_second"], "%.1f (%.0f-%.0f)").c_str());
    }
    const auto& d = r["decode"];
    std::printf(
        " %20s %8.2f %9.1f %8s\n", range(d["tokens_per_second"], "%.1f (%.1f-%.1f)").c_str(),
        d["weight_gb_per_second"].get<double>(), r["peak_rss_mib"].get<double>(),
        r["joules_per_token"].is_number() ? std::to_string(r["joules_per_token"].get<double>()).c_str() : "n/a");
  }
}

// Per dtype: each op's share of one prefill and of a decoded token.
void print_profiles(const nlohmann::json& report) {
  for (const auto& r : report["results"]) {
    if (!r.contains("profile")) continue;
    const auto& p = r["profile"];
    const auto total = [](const nlohmann::json& ops) {
      double sum = 0;
      for (const auto& [name, seconds] : ops.items()) sum += seconds.get<double>();
      return sum;
    };
    const double prefill_total = total(p["prefill_seconds"]), decode_total = total(p["decode_seconds_per_token"]);
    std::printf("\nprofile, %s: prefill of %d tokens %.1f ms, decode %.2f ms/token\n",
                r["dtype"].get<std::string>().c_str(), p["prefill_tokens"].get<int>(), prefill_total * 1e3,
                decode_total * 1e3);
    std::printf("  %-20s %12s %6s %16s %6s\n", "op", "prefill ms", "%", "decode ms/token", "%");
    for (const char* op : ForwardProfile::kNames) {
      const double pre = p["prefill_seconds"][op].get<double>(), dec = p["decode_seconds_per_token"][op].get<double>();
      std::printf("  %-20s %12.2f %5.1f%% %16.3f %5.1f%%\n", op, pre * 1e3, 100 * pre / prefill_total, dec * 1e3,
                  100 * dec / decode_total);
    }
  }
}

}  // namespace

void add_model_bench_options(CLI::App& command, ModelBenchOptions& o) {
  add_model_options(command, o.model);
  command.get_option("--model")->required(false);
  command
      .add_option("--prompt-len", o.prompt_lengths,
                  "Prompt lengths to time, comma-separated (--server: the first, per request)")
      ->delimiter(',')
      ->capture_default_str();
  command.add_option("--gen", o.gen, "Tokens to decode per run")->capture_default_str()->check(CLI::PositiveNumber);
  command.add_option("--reps", o.reps, "Runs per measurement (medians reported)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  command.add_option("--json", o.json_path, "Also write the results as JSON to this file");
  command.add_option("--plot", o.plot_path,
                     "Also draw the results as charts in this SVG file (--model: per type; --server: per level)");
  command.add_flag("--profile", o.profile, "Also time each kind of operation (matmuls, attention, ...) per pass");
  command.add_flag("--worker", o.worker, "(internal) measure one type in this process and print JSON");
  command.add_flag("--cold", o.cold, "(internal) with --worker: evict the checkpoint from the page cache first");
  command.get_option("--worker")->group("");
  command.get_option("--cold")->group("");
}

void run_model_bench(const ModelBenchOptions& o) {
  if (o.prompt_lengths.empty()) fail("--prompt-len needs at least one length");
  for (int n : o.prompt_lengths) {
    if (n <= 0 || n + o.gen > o.model.context_length) fail("prompt length ", n, " + --gen must fit --ctx");
  }
  if (o.worker) {  // a worker never plots: the parent draws the final report, once
    // The parent reads stdout; progress and load messages go to stderr.
    std::printf("%s\n", measure(o, o.model.dtype, o.cold).dump().c_str());
    return;
  }
  std::vector<std::string> dtypes;
  std::stringstream list(o.model.dtype);
  for (std::string d; std::getline(list, d, ',');) dtypes.push_back(d);
  if (dtypes.empty()) dtypes.push_back("");
  for (const auto& d : dtypes) {
    if (!d.empty()) parse_weight_dtype(d);  // reject a bad name before any run
  }
  if (!o.plot_path.empty()) check_plot_path(o.plot_path);

  nlohmann::json report = {{"model", o.model.dir}, {"reps", o.reps}, {"context", o.model.context_length}};
  report["random_weights"] = has_random_weights(o.model.dir);
  report["results"] = nlohmann::json::array();
  for (const auto& d : dtypes) {
    std::fprintf(stderr, "ernie bench: %s ...\n", d.empty() ? "stored type" : d.c_str());
    const nlohmann::json cold = run_worker(o, d, /*cold=*/true);
    nlohmann::json warm = run_worker(o, d, /*cold=*/false);
    warm["cold_load_to_first_token_seconds"] = cold["load_to_first_token_seconds"];
    report["results"].push_back(warm);
  }
  print_table(report);
  print_profiles(report);
  if (!o.json_path.empty()) {
    std::ofstream(o.json_path) << report.dump(2) << "\n";
  }
  if (!o.plot_path.empty()) svg::write_file(o.plot_path, model_bench_figure(report));
}

}  // namespace ernie::cli
