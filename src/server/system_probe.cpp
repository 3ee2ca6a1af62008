#include "server/system_probe.h"

#include <unistd.h>

#include <algorithm>
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
