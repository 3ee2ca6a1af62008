#include "server/system_probe.h"

#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <fstream>

namespace ernie::server {
namespace {

namespace fs = std::filesystem;

std::optional<std::string> read_line(const fs::path& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return std::nullopt;
  return line;
}

std::optional<int64_t> read_integer(const fs::path& path) {
  const auto line = read_line(path);
  if (!line) return std::nullopt;
  try {
    size_t used = 0;
    const int64_t value = std::stoll(*line, &used);
    if (used == 0) return std::nullopt;
    return value;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// Entries of `dir` whose names start with `prefix`, sorted; none if the directory is missing or unreadable.
std::vector<fs::path> entries(const fs::path& dir, std::string_view prefix) {
  std::vector<fs::path> out;
  std::error_code error;
  for (fs::directory_iterator it(dir, error), end; !error && it != end; it.increment(error)) {
    if (it->path().filename().string().starts_with(prefix)) out.push_back(it->path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

SystemProbe::SystemProbe(std::filesystem::path sys, std::filesystem::path proc_self)
    : sys_(std::move(sys)), proc_self_(std::move(proc_self)) {}

std::optional<uint64_t> SystemProbe::resident_bytes() const {
  // statm: size resident shared ... in pages.
  std::ifstream in(proc_self_ / "statm");
  uint64_t size = 0, resident = 0;
  if (!(in >> size >> resident)) return std::nullopt;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

std::optional<uint64_t> SystemProbe::memory_limit_bytes() const {
  std::optional<uint64_t> limit;
  const auto cap = [&limit](const fs::path& file) {
    if (const auto bytes = read_integer(file); bytes && *bytes > 0) {
      limit = std::min(limit.value_or(UINT64_MAX), static_cast<uint64_t>(*bytes));
    }
  };
  // /proc/self/cgroup names this process's cgroup per hierarchy: "0::/system.slice/x.service" on cgroup v2,
  // "4:memory:/docker/ID" for v1's memory controller. Every cgroup on the way up to the root may cap memory (v2's
  // memory.max, v1's memory.limit_in_bytes; "max" or a huge number where none is set), and the smallest cap binds.
  std::ifstream cgroups(proc_self_ / "cgroup");
  for (std::string line; std::getline(cgroups, line);) {
    const size_t first = line.find(':'), second = line.find(':', first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;
    const std::string controllers = line.substr(first + 1, second - first - 1);
    const bool v2 = controllers.empty();
    if (!v2 && controllers != "memory") continue;
    const fs::path root = v2 ? sys_ / "fs/cgroup" : sys_ / "fs/cgroup/memory";
    const fs::path own = fs::path(line.substr(second + 1)).relative_path();
    for (fs::path dir = own.empty() ? root : root / own;; dir = dir.parent_path()) {
      cap(dir / (v2 ? "memory.max" : "memory.limit_in_bytes"));
      if (dir == root || dir == dir.parent_path()) break;
    }
  }
  // And the machine's memory: no cgroup lets a process use more.
  std::ifstream meminfo(proc_self_.parent_path() / "meminfo");  // /proc/self/.. is /proc
  for (std::string line; std::getline(meminfo, line);) {
    uint64_t kib = 0;
    if (std::sscanf(line.c_str(), "MemTotal: %" SCNu64 " kB", &kib) == 1) {
      limit = std::min(limit.value_or(UINT64_MAX), kib * 1024);
    }
  }
  return limit;
}

std::vector<ThermalReading> SystemProbe::temperatures() const {
  std::vector<ThermalReading> out;
  for (const auto& zone : entries(sys_ / "class/thermal", "thermal_zone")) {
    const auto millidegrees = read_integer(zone / "temp");
    if (!millidegrees) continue;
    out.push_back({zone.filename().string(), read_line(zone / "type").value_or(""), *millidegrees / 1000.0});
  }
  return out;
}

std::vector<EnergyReading> SystemProbe::energy() {
  std::vector<EnergyReading> out;
  std::lock_guard lock(mutex_);
  // intel-rapl:0 (package), intel-rapl:0:0 (its sub-domains); AMD's RAPL driver uses the same names.
  for (const auto& domain : entries(sys_ / "class/powercap", "intel-rapl:")) {
    const auto uj = read_integer(domain / "energy_uj");
    if (!uj || *uj < 0) continue;
    const std::string key = domain.filename().string();
    Counter& c = counters_[key];
    const auto current = static_cast<uint64_t>(*uj);
    if (current < c.last_uj)
      c.wrapped_uj += std::max<int64_t>(read_integer(domain / "max_energy_range_uj").value_or(0), 0);
    c.last_uj = current;
    out.push_back({key, read_line(domain / "name").value_or(""), static_cast<double>(c.wrapped_uj + current) / 1e6});
  }
  return out;
}

}  // namespace ernie::server
