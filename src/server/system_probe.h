// Readings of the machine for /metrics: the process's resident memory (/proc/self/statm) and the most it may use
// (the tightest cgroup memory cap on the way up its cgroup path, v2 or v1, and the machine's MemTotal), thermal zones
// (/sys/class/thermal) and RAPL energy counters (/sys/class/powercap). Each reading is present only where the kernel
// exposes it and this process may read it; nothing is estimated or faked. The roots are parameters so that tests can
// point them at a made-up tree.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace ernie::server {

struct ThermalReading {
  std::string zone;  // "thermal_zone0"
  std::string type;  // "x86_pkg_temp", "acpitz", ...
  double celsius;
};

struct EnergyReading {
  std::string domain;  // the powercap directory, "intel-rapl:0"
  std::string name;    // its name file: "package-0", "core", "dram", ...
  double joules;       // since this probe's first reading of it plus that first value; never decreases
};

class SystemProbe {
 public:
  explicit SystemProbe(std::filesystem::path sys = "/sys", std::filesystem::path proc_self = "/proc/self");

  std::optional<uint64_t> resident_bytes() const;
  // What resident memory may grow to before the kernel's OOM killer acts: a container's or a systemd unit's
  // memory.max where one is set, else the machine's memory. Alerts take resident / limit.
  std::optional<uint64_t> memory_limit_bytes() const;
  std::vector<ThermalReading> temperatures() const;
  // RAPL counters wrap at max_energy_range_uj; the probe remembers the last value of each to keep the total
  // monotonic, as a Prometheus counter must be. Thread-safe.
  std::vector<EnergyReading> energy();

 private:
  std::filesystem::path sys_, proc_self_;
  std::mutex mutex_;
  struct Counter {
    uint64_t last_uj = 0;
    uint64_t wrapped_uj = 0;  // sum of the ranges of every wrap seen
  };
  std::map<std::string, Counter> counters_;
};

}  // namespace ernie::server
