#include "core/cpu_topology.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <set>
#include <string>

#include "core/error.h"

namespace ernie {
namespace {

// The first whitespace-separated word of a small sysfs file, or "" when it cannot be read.
std::string read_word(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::string word;
  in >> word;
  return word;
}

long read_long(const std::filesystem::path& path) {
  const std::string word = read_word(path);
  if (word.empty() || !std::all_of(word.begin(), word.end(), [](unsigned char c) { return std::isdigit(c); })) {
    return 0;
  }
  try {
    return std::stol(word);
  } catch (const std::exception&) {
    return 0;  // out of range: treat as absent, like any other unreadable value
  }
}

int parse_cpu_number(const std::string& text, const std::string& list) {
  if (text.empty() || text.size() > 6 ||
      !std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isdigit(c); })) {
    fail("bad CPU list \"", list, "\" (expected numbers and ranges such as 0-3,6)");
  }
  return std::stoi(text);
}

// The performance CPUs by one measure (capacity or max frequency): those within 10 % of the highest value.
std::vector<int> fastest(const std::vector<CpuCore>& cpus, long CpuCore::*measure) {
  long best = 0;
  for (const CpuCore& c : cpus) best = std::max(best, c.*measure);
  std::vector<int> out;
  for (const CpuCore& c : cpus) {
    if (c.*measure * 10 >= best * 9) out.push_back(c.cpu);
  }
  return out;
}

int physical_cores(const CpuTopology& topology, const std::vector<int>& cpus) {
  std::set<std::string> cores;
  for (int cpu : cpus) {
    for (const CpuCore& c : topology.cpus) {
      if (c.cpu == cpu) cores.insert(c.core_id);
    }
  }
  return std::max<int>(1, static_cast<int>(cores.size()));
}

}  // namespace

std::vector<int> parse_cpu_list(const std::string& text) {
  std::set<int> cpus;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, comma - start);
    const size_t dash = item.find('-');
    if (dash == std::string::npos) {
      cpus.insert(parse_cpu_number(item, text));
    } else {
      const int first = parse_cpu_number(item.substr(0, dash), text);
      const int last = parse_cpu_number(item.substr(dash + 1), text);
      if (last < first) fail("bad CPU list \"", text, "\": range ", item, " is reversed");
      for (int cpu = first; cpu <= last; ++cpu) cpus.insert(cpu);
    }
    start = comma + 1;
  }
  return {cpus.begin(), cpus.end()};
}

CpuTopology read_cpu_topology(const std::filesystem::path& root) {
  std::vector<int> online;
  const std::string online_text = read_word(root / "online");
  if (!online_text.empty()) {
    try {
      online = parse_cpu_list(online_text);
    } catch (const Error&) {
      online.clear();  // a malformed file: fall back to the folders
    }
  }
  if (online.empty()) {
    std::error_code error;
    for (const auto& entry : std::filesystem::directory_iterator(root, error)) {
      const std::string name = entry.path().filename().string();
      if (name.size() > 3 && name.compare(0, 3, "cpu") == 0 &&
          std::all_of(name.begin() + 3, name.end(), [](unsigned char c) { return std::isdigit(c); })) {
        online.push_back(std::stoi(name.substr(3)));
      }
    }
    std::sort(online.begin(), online.end());
  }
  if (online.empty()) online.push_back(0);

  CpuTopology topology;
  for (int cpu : online) {
    const std::filesystem::path dir = root / ("cpu" + std::to_string(cpu));
    const std::string package = read_word(dir / "topology" / "physical_package_id");
    const std::string core_id = read_word(dir / "topology" / "core_id");
    topology.cpus.push_back(CpuCore{
        .cpu = cpu,
        .capacity = read_long(dir / "cpu_capacity"),
        .max_khz = read_long(dir / "cpufreq" / "cpuinfo_max_freq"),
        // Without topology files each CPU is its own core.
        .core_id = core_id.empty() ? "cpu" + std::to_string(cpu) : package + ":" + core_id});
  }

  const auto has = [&](long CpuCore::*measure) {
    return std::any_of(topology.cpus.begin(), topology.cpus.end(), [&](const CpuCore& c) { return c.*measure > 0; });
  };
  if (has(&CpuCore::capacity)) {
    topology.performance = fastest(topology.cpus, &CpuCore::capacity);
  } else if (has(&CpuCore::max_khz)) {
    topology.performance = fastest(topology.cpus, &CpuCore::max_khz);
  } else {
    for (const CpuCore& c : topology.cpus) topology.performance.push_back(c.cpu);
  }
  topology.performance_cores = physical_cores(topology, topology.performance);
  return topology;
}

ThreadPlan plan_threads(const CpuTopology& topology, int threads_flag, const std::string& cpus_flag) {
  ThreadPlan plan;
  if (!cpus_flag.empty()) {
    plan.cpus = parse_cpu_list(cpus_flag);
    for (int cpu : plan.cpus) {
      const bool known = std::any_of(topology.cpus.begin(), topology.cpus.end(),
                                     [&](const CpuCore& c) { return c.cpu == cpu; });
      if (!known) fail("--cpus ", cpus_flag, ": CPU ", cpu, " is not online");
    }
    plan.threads = threads_flag > 0 ? threads_flag : physical_cores(topology, plan.cpus);
    return plan;
  }
  plan.threads = threads_flag > 0 ? threads_flag : std::max(1, topology.performance_cores);
  if (topology.heterogeneous() && plan.threads <= topology.performance_cores) plan.cpus = topology.performance;
  return plan;
}

}  // namespace ernie
