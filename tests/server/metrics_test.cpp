// /metrics: the names and values a scrape shows after real traffic, Prometheus' own linter (promtool, when
// installed) accepting the text, and the machine probes reading a made-up /sys tree (and showing nothing for what
// is not there).
#include "server/metrics.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>

#include "server/system_probe.h"
#include "test_server.h"

namespace ernie {
namespace {

using ernie::testing::json;
using ernie::testing::TempDir;
using ernie::testing::TestServer;
using ernie::testing::write_text;

TEST(Metrics, ScrapeShowsTrafficAndScheduler) {
  TestServer s;
  const auto hello = s.post("/v1/completions", json{{"prompt", "Hello"}, {"max_tokens", 5}, {"ignore_eos", true}});
  ASSERT_EQ(hello.status, 200);
  const int prompt_tokens = hello.body_json()["usage"]["prompt_tokens"];
  ASSERT_EQ(s.post("/v1/completions", json{{"prompt", 5}}).status, 400);
  ASSERT_EQ(s.get("/nowhere").status, 404);
  const auto reply = s.get("/metrics");
  ASSERT_EQ(reply.status, 200);
  EXPECT_EQ(reply.header("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  const std::string& text = reply.body;
  for (const char* name : {"ernie_time_to_first_token_seconds_bucket", "ernie_time_per_output_token_seconds_count",
                           "ernie_e2e_request_latency_seconds_sum", "ernie_request_queue_time_seconds_count",
                           "ernie_batch_size_bucket", "ernie_num_requests_running", "ernie_num_requests_waiting",
                           "ernie_kv_cache_usage_perc", "ernie_process_resident_memory_bytes"}) {
    EXPECT_NE(text.find(std::string("\n") + name), std::string::npos) << name;
  }
  // An exchange is counted once its response is written, which the client may see a moment before.
  for (const char* sample : {R"(ernie_http_requests_total{endpoint="/v1/completions",status="200"})",
                             R"(ernie_http_requests_total{endpoint="/v1/completions",status="400"})",
                             R"(ernie_http_requests_total{endpoint="other",status="404"})"}) {
    EXPECT_TRUE(ernie::testing::eventually([&] { return s.metric(sample) == 1; })) << sample;
  }
  EXPECT_EQ(s.metric(R"(ernie_request_success_total{finished_reason="length"})"), 1);
  EXPECT_EQ(s.metric("ernie_generation_tokens_total"), 5);
  EXPECT_EQ(s.metric("ernie_prompt_tokens_total"), prompt_tokens);  // the refused request's never ran
  EXPECT_EQ(s.metric("ernie_time_to_first_token_seconds_count"), 1);
  EXPECT_EQ(s.metric("ernie_num_requests_running"), 0);
  EXPECT_GT(s.metric("ernie_process_resident_memory_bytes"), 1e6);
  EXPECT_GE(s.metric("ernie_memory_limit_bytes"), s.metric("ernie_process_resident_memory_bytes"));
}

TEST(Metrics, PromtoolAcceptsTheExposition) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "promtool is not installed (Debian package prometheus; scripts/setup.sh installs it)";
  }
  TestServer s;
  ASSERT_EQ(
      s.post("/v1/chat/completions", json{{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"max_tokens", 4}})
          .status,
      200);
  // Include the machine readings promtool would otherwise never see here, from a made-up /sys.
  TempDir sys;
  std::filesystem::create_directories(sys.path() / "class/thermal/thermal_zone0");
  write_text(sys.path() / "class/thermal/thermal_zone0/temp", "45000\n");
  write_text(sys.path() / "class/thermal/thermal_zone0/type", "x86_pkg_temp\n");
  std::filesystem::create_directories(sys.path() / "class/powercap/intel-rapl:0");
  write_text(sys.path() / "class/powercap/intel-rapl:0/energy_uj", "123456789\n");
  write_text(sys.path() / "class/powercap/intel-rapl:0/name", "package-0\n");
  server::SystemProbe probe(sys.path());
  server::Metrics metrics;
  const std::string probed = metrics.render(std::nullopt, probe);

  TempDir out;
  for (const auto& [name, text] :
       {std::pair{"server.prom", s.get("/metrics").body}, std::pair{"probed.prom", probed}}) {
    SCOPED_TRACE(name);
    write_text(out.path() / name, text);
    const std::string command = "promtool check metrics < " + (out.path() / name).string() + " > " +
                                (out.path() / "lint.txt").string() + " 2>&1";
    const int status = std::system(command.c_str());
    std::ifstream lint(out.path() / "lint.txt");
    const std::string findings((std::istreambuf_iterator<char>(lint)), std::istreambuf_iterator<char>());
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << findings << "\n--- metrics:\n" << text;
  }
}

TEST(SystemProbe, ReadsThermalZonesAndRaplEnergyWhereTheyExist) {
  TempDir sys;
  server::SystemProbe probe(sys.path());
  EXPECT_TRUE(probe.temperatures().empty());
  EXPECT_TRUE(probe.energy().empty());
  server::Metrics metrics;
  std::string text = metrics.render(std::nullopt, probe);
  EXPECT_EQ(text.find("temperature"), std::string::npos);
  EXPECT_EQ(text.find("rapl"), std::string::npos);

  const auto zone = sys.path() / "class/thermal/thermal_zone3";
  std::filesystem::create_directories(zone);
  write_text(zone / "temp", "51500\n");
  write_text(zone / "type", "acpitz\n");
  std::filesystem::create_directories(sys.path() / "class/thermal/thermal_zone4");  // no temp file: skipped
  const auto rapl = sys.path() / "class/powercap/intel-rapl:0";
  std::filesystem::create_directories(rapl);
  write_text(rapl / "name", "package-0\n");
  write_text(rapl / "max_energy_range_uj", "1000000\n");
  write_text(rapl / "energy_uj", "900000\n");

  const auto zones = probe.temperatures();
  ASSERT_EQ(zones.size(), 1u);
  EXPECT_EQ(zones[0].zone, "thermal_zone3");
  EXPECT_EQ(zones[0].type, "acpitz");
  EXPECT_DOUBLE_EQ(zones[0].celsius, 51.5);
  auto energy = probe.energy();
  ASSERT_EQ(energy.size(), 1u);
  EXPECT_EQ(energy[0].domain, "intel-rapl:0");
  EXPECT_EQ(energy[0].name, "package-0");
  EXPECT_DOUBLE_EQ(energy[0].joules, 0.9);
  // The hardware counter wraps at max_energy_range_uj; the exported total keeps growing.
  write_text(rapl / "energy_uj", "200000\n");
  energy = probe.energy();
  EXPECT_DOUBLE_EQ(energy[0].joules, 1.2);

  text = metrics.render(std::nullopt, probe);
  EXPECT_NE(text.find(R"(ernie_thermal_zone_temperature_celsius{zone="thermal_zone3",type="acpitz"} 51.5)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find(R"(ernie_rapl_energy_joules_total{domain="intel-rapl:0",name="package-0"} 1.2)"),
            std::string::npos)
      << text;
}


TEST(SystemProbe, MemoryLimitIsTheTightestCgroupCapOrTheMachinesMemory) {
  TempDir root;
  const auto sys = root.path() / "sys", proc_self = root.path() / "proc/self";
  std::filesystem::create_directories(proc_self);
  server::SystemProbe probe(sys, proc_self);
  EXPECT_FALSE(probe.memory_limit_bytes().has_value());  // nothing readable: no reading, not a guess

  write_text(root.path() / "proc/meminfo", "MemTotal:       16000000 kB\nMemFree:         100 kB\nHugePages_Total:       0\n");
  EXPECT_EQ(probe.memory_limit_bytes(), uint64_t{16000000} * 1024);

  // cgroup v2: the service's own cgroup sets no cap ("max"), its parent slice caps at 1 GiB.
  write_text(proc_self / "cgroup", "0::/ernie.slice/ernie-serve.service\n");
  std::filesystem::create_directories(sys / "fs/cgroup/ernie.slice/ernie-serve.service");
  write_text(sys / "fs/cgroup/ernie.slice/ernie-serve.service/memory.max", "max\n");
  write_text(sys / "fs/cgroup/ernie.slice/memory.max", "1073741824\n");
  EXPECT_EQ(probe.memory_limit_bytes(), uint64_t{1} << 30);

  // cgroup v1 (a hybrid host, as Docker on older kernels): the memory controller's line; "unlimited" is a huge
  // number, so the machine's memory binds until a real cap is set.
  write_text(proc_self / "cgroup", "9:name=systemd:/\n4:memory:/docker/abc\n0::/\n");
  std::filesystem::create_directories(sys / "fs/cgroup/memory/docker/abc");
  write_text(sys / "fs/cgroup/memory/docker/abc/memory.limit_in_bytes", "9223372036854771712\n");
  EXPECT_EQ(probe.memory_limit_bytes(), uint64_t{16000000} * 1024);
  write_text(sys / "fs/cgroup/memory/docker/abc/memory.limit_in_bytes", "536870912\n");
  EXPECT_EQ(probe.memory_limit_bytes(), uint64_t{512} << 20);

  server::Metrics metrics;
  EXPECT_NE(metrics.render(std::nullopt, probe).find("ernie_memory_limit_bytes 536870912"), std::string::npos);
}

}  // namespace
}  // namespace ernie
