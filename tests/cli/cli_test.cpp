// The `ernie` program end to end: the exact command forms outside checks rely on, against the transformers
// goldens, and bad input that must end in a clear error and a non-zero exit, never a crash.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "io/gguf.h"
#include "lora_support.h"
#include "model/config.h"
#include "test_support.h"

namespace ernie {
namespace {

using ernie::testing::demo_model_dir;
using ernie::testing::fixture;
using ernie::testing::read_f32;
using ernie::testing::read_json;
using ernie::testing::TempDir;

struct Outcome {
  int exit_code;  // -1 when the program died from a signal
  std::string out, err;
};

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

Outcome ernie_cli(const std::string& args, const std::string& input = "") {
  TempDir tmp;
  const auto err_path = tmp.path() / "stderr";
  const auto in_path = tmp.path() / "stdin";
  std::ofstream(in_path) << input;
  const std::string command =
      std::string(ERNIE_BINARY) + " " + args + " <" + quote(in_path) + " 2>" + quote(err_path.string());
  FILE* pipe = popen(command.c_str(), "r");
  std::string out;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) out.append(buffer, n);
  const int status = pclose(pipe);
  std::ifstream err_file(err_path);
  std::stringstream err;
  err << err_file.rdbuf();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out, err.str()};
}

std::string model_dir(const char* name = "tiny-ernie/model") {
  return quote(fixture(name).string());
}

std::string join_ids(const nlohmann::json& ids) {
  std::string s;
  for (const auto& id : ids) {
    if (!s.empty()) s += ',';
    s += std::to_string(id.get<int>());
  }
  return s;
}

nlohmann::json golden_prompt(const std::string& fixture_name, const std::string& prompt) {
  const auto golden = read_json(fixture(fixture_name + "/ref/golden.json"));
  for (const auto& p : golden["prompts"]) {
    if (p["name"] == prompt) return p;
  }
  ADD_FAILURE() << "no prompt " << prompt;
  return {};
}

TEST(Cli, RunGreedyIdsMatchTransformers) {
  for (const std::string fx : {"tiny-ernie", "tiny-ernie-bias"}) {
    for (const std::string name : {"english", "chinese", "special_tokens"}) {
      SCOPED_TRACE(fx + " " + name);
      const auto prompt = golden_prompt(fx, name);
      const auto r = ernie_cli("run --model " + model_dir((fx + "/model").c_str()) + " --ids " +
                               join_ids(prompt["ids"]) + " --max-tokens 32 --temperature 0 --ignore-eos --print-ids");
      ASSERT_EQ(r.exit_code, 0) << r.err;
      EXPECT_EQ(nlohmann::json::parse(r.out), prompt["greedy"]["new_ids"]);
      EXPECT_NE(r.err.find("tok/s"), std::string::npos) << "speed report missing: " << r.err;
      EXPECT_NE(r.err.find("loaded"), std::string::npos) << "load time missing: " << r.err;
    }
  }
}

// --threads and --dtype change speed and memory, never the float32 greedy result; quantized types still run.
TEST(Cli, ThreadsAndDtypeFlags) {
  const auto prompt = golden_prompt("tiny-ernie", "english");
  const std::string base = "run --model " + model_dir() + " --ids " + join_ids(prompt["ids"]) +
                           " -n 16 --temperature 0 --ignore-eos --print-ids";
  auto r = ernie_cli(base + " --threads 2 --dtype f32");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto expected = prompt["greedy"]["new_ids"];
  EXPECT_EQ(nlohmann::json::parse(r.out), nlohmann::json(std::vector<int>(expected.begin(), expected.begin() + 16)));
  EXPECT_NE(r.err.find("2 threads"), std::string::npos) << r.err;
  for (const std::string dtype : {"int8", "int4", "bf16", "f16"}) {
    r = ernie_cli(base + " --dtype " + dtype + " --kv-dtype f16");
    ASSERT_EQ(r.exit_code, 0) << dtype << ": " << r.err;
    EXPECT_EQ(nlohmann::json::parse(r.out).size(), 16u) << dtype;
  }
  r = ernie_cli(base + " --dtype int3");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("unknown type"), std::string::npos) << r.err;
  r = ernie_cli(base + " --kv-dtype int4");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--kv-dtype"), std::string::npos) << r.err;
  r = ernie_cli(base + " --kv-dtype q8_0");  // the fixture's heads of 16 are smaller than a q8_0 block
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("head_dim"), std::string::npos) << r.err;
}

// make-random writes a loadable checkpoint with the config's shapes, reproducibly for a seed.
TEST(Cli, MakeRandomCheckpoint) {
  TempDir tmp;
  const auto config = fixture("tiny-ernie-bias/model/config.json").string();
  for (const char* out : {"a", "b"}) {
    const auto r = ernie_cli("make-random --config " + quote(config) + " --seed 5 --tokenizer-from " +
                             model_dir("tiny-ernie-bias/model") + " --out " + quote((tmp.path() / out).string()));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find("random"), std::string::npos);
  }
  EXPECT_EQ(ernie::testing::read_bytes(tmp.path() / "a/model.safetensors"),
            ernie::testing::read_bytes(tmp.path() / "b/model.safetensors"));
  const auto r = ernie_cli("run --model " + quote((tmp.path() / "a").string()) +
                           " --prompt hello -n 8 --temperature 0 --ignore-eos --print-ids");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out).size(), 8u);
}

// Each weight type against float32 on the same token ids: F16 weights of a BF16 checkpoint convert exactly and agree
// to float rounding, Q8_0 visibly less; both reports carry every figure.
TEST(Cli, AccuracyComparesEachTypeWithFloat32) {
  TempDir tmp;
  const auto json_path = tmp.path() / "accuracy.json";
  const auto r = ernie_cli("accuracy --model " + model_dir() + " --dtype f16,int8 --tokens 24 --seed 7 --json " +
                           quote(json_path.string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("mean KL"), std::string::npos) << r.out;
  const auto report = read_json(json_path);
  EXPECT_EQ(report["positions"], 24);
  ASSERT_EQ(report["results"].size(), 2u);
  const auto& f16 = report["results"][0];
  const auto& int8 = report["results"][1];
  EXPECT_EQ(int8["weights"], "Q8_0");
  EXPECT_LT(f16["relative_error"].get<double>(), 1e-3);
  EXPECT_GT(int8["relative_error"].get<double>(), f16["relative_error"].get<double>());
  EXPECT_LT(int8["relative_error"].get<double>(), 0.2);
  EXPECT_GE(int8["top1"].get<double>(), 0.5);
  EXPECT_LE(int8["top1"].get<double>(), 1.0);
}

// Whether this process can read the RAPL package energy counter that `ernie bench` reads (root-only on most kernels).
bool rapl_readable() {
  std::ifstream f("/sys/class/powercap/intel-rapl:0/energy_uj");
  double uj;
  return static_cast<bool>(f >> uj);
}

// The benchmark's report has every figure for every type asked for (values are timings: not checked here).
TEST(Cli, BenchReportsEveryTypeAsTableAndJson) {
  TempDir tmp;
  const auto json_path = tmp.path() / "bench.json";
  const auto r = ernie_cli("bench --model " + model_dir() +
                           " --dtype f32,int4 --prompt-len 4,9 --gen 3 --reps 2 --json " + quote(json_path.string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("decode tok/s"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("int4"), std::string::npos) << r.out;
  const auto report = read_json(json_path);
  ASSERT_EQ(report["results"].size(), 2u);
  EXPECT_EQ(report["results"][1]["weights"], "Q4_0");
  for (const auto& result : report["results"]) {
    ASSERT_EQ(result["prefill"].size(), 2u);
    EXPECT_EQ(result["prefill"][1]["prompt_tokens"], 9);
    EXPECT_GT(result["decode"]["tokens_per_second"]["median"].get<double>(), 0);
    EXPECT_GT(result["peak_rss_mib"].get<double>(), 0);
    EXPECT_GT(result["cold_load_to_first_token_seconds"].get<double>(), 0);
    // "n/a" exactly where this machine has no readable RAPL package counter; otherwise joules, finite and not
    // negative (it may be 0: the counter moves about once a millisecond, and 3 tiny-model tokens can take less).
    const auto& joules = result["joules_per_token"];
    if (rapl_readable()) {
      ASSERT_TRUE(joules.is_number()) << joules;
      EXPECT_TRUE(std::isfinite(joules.get<double>())) << joules;
      EXPECT_GE(joules.get<double>(), 0) << joules;
    } else {
      EXPECT_EQ(joules, "n/a");
    }
  }
  EXPECT_EQ(ernie_cli("bench --model " + model_dir() + " --dtype int3").exit_code, 1);
}

TEST(Cli, RunStreamsTheGreedyTextForAPrompt) {
  // The golden prompts start with bos; --add-bos reproduces them from text.
  const auto prompt = golden_prompt("tiny-ernie", "english");
  const auto r = ernie_cli("run --model " + model_dir() + " --add-bos --prompt " + quote(prompt["text"]) +
                           " --max-tokens 32 --temperature 0 --ignore-eos");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto expected =
      ernie_cli("detokenize --skip-special --model " + model_dir() + " --ids " + join_ids(prompt["greedy"]["new_ids"]));
  ASSERT_EQ(expected.exit_code, 0) << expected.err;
  EXPECT_EQ(r.out, expected.out);  // both end with one newline
}

TEST(Cli, SamplingIsReproducibleWithASeed) {
  const std::string args = "run --model " + model_dir() +
                           " --ids 1,1560,1474 --max-tokens 24 --ignore-eos "
                           "--temperature 1.0 --top-p 0.95 --print-ids --seed ";
  const auto a = ernie_cli(args + "7"), b = ernie_cli(args + "7"), c = ernie_cli(args + "8");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, c.out);
  EXPECT_EQ(nlohmann::json::parse(a.out).size(), 24u);
}

TEST(Cli, MaxTokensAndStopString) {
  const auto r =
      ernie_cli("run --model " + model_dir() + " --ids 1,1560 --max-tokens 5 --temperature 0 --ignore-eos --print-ids");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out).size(), 5u);
  EXPECT_NE(r.err.find("finish: length"), std::string::npos);

  // Stop at the text of the 4th greedy token of the english prompt: the output must end right before it.
  const auto prompt = golden_prompt("tiny-ernie", "english");
  const auto ids = join_ids(prompt["ids"]);
  const auto full = ernie_cli("run --model " + model_dir() + " --ids " + ids + " -n 32 --temperature 0 --ignore-eos");
  ASSERT_EQ(full.exit_code, 0);
  const std::string text = full.out.substr(0, full.out.size() - 1);
  ASSERT_GT(text.size(), 12u);
  const std::string stop = text.substr(text.size() / 2, 3);
  const auto stopped = ernie_cli("run --model " + model_dir() + " --ids " + ids +
                                 " -n 32 --temperature 0 --ignore-eos --stop " + quote(stop));
  ASSERT_EQ(stopped.exit_code, 0) << stopped.err;
  EXPECT_EQ(stopped.out, text.substr(0, text.find(stop)) + "\n");
  EXPECT_NE(stopped.err.find("finish: stop"), std::string::npos);
}

TEST(Cli, ChatTemplatePrompt) {
  const auto r =
      ernie_cli("run --model " + model_dir() + " --chat --prompt Hello! -n 8 --temperature 0 --ignore-eos --print-ids");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out).size(), 8u);
}

TEST(Cli, InteractiveChatKeepsHistoryAndExitsOnEof) {
  const auto r =
      ernie_cli("chat --model " + model_dir() + " -n 6 --temperature 0 --ignore-eos", "Hello!\nAnd again?\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '>'), 3) << r.err;  // two turns, then the prompt that saw EOF
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '|') / 2, 2) << "one generation report per turn: " << r.err;
}

TEST(Cli, LogitsFileMatchesTransformers) {
  TempDir tmp;
  const auto prompt = golden_prompt("tiny-ernie", "mixed");
  const auto out = tmp.path() / "logits.bin";
  const auto r =
      ernie_cli("logits --model " + model_dir() + " --ids " + join_ids(prompt["ids"]) + " --out " + quote(out));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto ours = read_f32(out);
  const auto ref = read_f32(fixture("tiny-ernie/ref/mixed.last_logits.f32.bin"));
  ASSERT_EQ(ours.size(), ref.size());
  double diff = 0, norm = 0;
  for (size_t i = 0; i < ref.size(); ++i) diff += (ours[i] - ref[i]) * (ours[i] - ref[i]), norm += ref[i] * ref[i];
  EXPECT_LE(std::sqrt(diff / norm), 1e-4);
  // First printed line: rank 1, the reference's top id.
  std::istringstream lines(r.out);
  int rank, id;
  lines >> rank >> id;
  EXPECT_EQ(rank, 1);
  EXPECT_EQ(id, prompt["top5_ids"].back()[0].get<int>());
}

// ernie quantize writes a GGUF file that every command takes as --model: greedy ids as transformers', the same
// tokenizer and chat prompt; a checkpoint without a tokenizer still yields a loadable file, with a log line.
TEST(Cli, QuantizeToGgufAndRunFromIt) {
  TempDir tmp;
  const auto gguf = tmp.path() / "tiny-bf16.gguf";
  auto r = ernie_cli("quantize --model " + model_dir() + " --type bf16 --out " + quote(gguf));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("wrote"), std::string::npos) << r.err;
  const auto prompt = golden_prompt("tiny-ernie", "english");
  r = ernie_cli("run --model " + quote(gguf) + " --ids " + join_ids(prompt["ids"]) +
                " --max-tokens 32 --temperature 0 --ignore-eos --print-ids");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out), prompt["greedy"]["new_ids"]);
  for (const std::string text : {"Hello <s> world", "你好，世界"}) {
    const auto from_gguf = ernie_cli("tokenize --model " + quote(gguf) + " --text " + quote(text));
    const auto from_dir = ernie_cli("tokenize --model " + model_dir() + " --text " + quote(text));
    ASSERT_EQ(from_gguf.exit_code, 0) << from_gguf.err;
    EXPECT_EQ(from_gguf.out, from_dir.out) << text;
  }
  r = ernie_cli("info --model " + quote(gguf));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("chat template: yes"), std::string::npos) << r.out;
  r = ernie_cli("run --model " + quote(gguf) + " --dtype int8 --prompt hello -n 4 --temperature 0 --print-ids");
  ASSERT_EQ(r.exit_code, 0) << r.err;

  // No tokenizer.model: a placeholder vocabulary, said in a log line; the file loads and runs on ids.
  const auto bare = tmp.path() / "bare";
  std::filesystem::create_directories(bare);
  for (const char* name : {"config.json", "model.safetensors"}) {
    std::filesystem::copy_file(fixture(std::string("tiny-ernie/model/") + name), bare / name);
  }
  r = ernie_cli("quantize --model " + quote(bare) + " --type q8_0 --out " + quote(tmp.path() / "bare.gguf"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("placeholder vocabulary"), std::string::npos) << r.err;
  r = ernie_cli("run --model " + quote(tmp.path() / "bare.gguf") + " --ids 1,5,9 -n 4 --temperature 0 --print-ids");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out).size(), 4u);

  r = ernie_cli("quantize --model " + model_dir() + " --type q3 --out " + quote(tmp.path() / "x.gguf"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("unknown type"), std::string::npos) << r.err;
  r = ernie_cli("quantize --model " + quote(gguf) + " --type q8_0 --out " + quote(gguf));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("same file"), std::string::npos) << r.err;
}

// ernie calibrate writes llama.cpp's imatrix file over exactly the tokens asked for; ernie quantize --calibration
// turns it into different (standard) Q4_0 blocks that load and run; ernie accuracy scores both files on a text
// against the float32 reference, with perplexity. A file for another model is refused naming what is missing.
TEST(Cli, CalibrateQuantizeAndScoreOnAText) {
  TempDir tmp;
  std::string text;
  for (int i = 0; i < 40; ++i) text += "The quick brown fox jumps over the lazy dog. 你好，世界。 Once upon a time\n";
  const auto data = tmp.path() / "calibration.txt";
  ernie::testing::write_text(data, text);
  const auto stats = tmp.path() / "stats.gguf";
  auto r = ernie_cli("calibrate --model " + model_dir() + " --data " + quote(data) + " --tokens 100 --chunk 40 --out " +
                     quote(stats));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("100 tokens in 3 chunks"), std::string::npos) << r.err;  // 40 + 40 + 20
  const GgufFile file = GgufFile::open(stats);
  EXPECT_EQ(file.get_string("general.type"), "imatrix");
  EXPECT_EQ(file.get_int("imatrix.chunk_count"), 3);
  const GgufTensor* counts = file.find_tensor("blk.1.ffn_down.weight.counts");
  ASSERT_NE(counts, nullptr);
  float count;
  std::memcpy(&count, counts->data, sizeof count);
  EXPECT_EQ(count, 100.0f);

  const auto plain = tmp.path() / "plain.gguf", calibrated = tmp.path() / "calibrated.gguf";
  ASSERT_EQ(ernie_cli("quantize --model " + model_dir() + " --type q4_0 --out " + quote(plain)).exit_code, 0);
  r = ernie_cli("quantize --model " + model_dir() + " --type q4_0 --calibration " + quote(stats) + " --out " +
                quote(calibrated));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("calibrated"), std::string::npos) << r.err;
  // The same tensors in the same types (the same bits per weight), with other blocks in some.
  const GgufFile plain_file = GgufFile::open(plain), calibrated_file = GgufFile::open(calibrated);
  ASSERT_EQ(plain_file.tensors().size(), calibrated_file.tensors().size());
  int differing = 0;
  for (size_t i = 0; i < plain_file.tensors().size(); ++i) {
    const GgufTensor &a = plain_file.tensors()[i], &b = calibrated_file.tensors()[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.type, b.type) << a.name;
    ASSERT_EQ(a.nbytes, b.nbytes) << a.name;
    differing += std::memcmp(a.data, b.data, a.nbytes) != 0;
  }
  EXPECT_GT(differing, 0);
  EXPECT_EQ(calibrated_file.get_string("quantize.imatrix.file"), stats.string());
  r = ernie_cli("run --model " + quote(calibrated) + " --prompt hello -n 4 --temperature 0 --ignore-eos --print-ids");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out).size(), 4u);

  const auto json_path = tmp.path() / "accuracy.json";
  r = ernie_cli("accuracy --model " + model_dir() + " --text " + quote(data) + " --ctx 64 --gguf " + quote(plain) +
                " --gguf " + quote(calibrated) + " --json " + quote(json_path));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("perplexity"), std::string::npos) << r.out;
  const auto report = read_json(json_path);
  ASSERT_EQ(report["results"].size(), 2u);
  EXPECT_EQ(report["results"][1]["dtype"], "calibrated.gguf");
  EXPECT_GT(report["chunks"].get<int>(), 1);  // 64-token chunks of the whole text
  // Uniform guessing over the vocabulary bounds nothing here, but the reference's perplexity of any text is > 1.
  EXPECT_GT(report["reference_perplexity"].get<double>(), 1.0);
  for (const auto& row : report["results"]) {
    EXPECT_GT(row["perplexity"].get<double>(), 1.0);
    EXPECT_LT(row["mean_kl"].get<double>(), 1.0);
  }

  // --awq folds activation scales in first (exactness: tests/model/activation_scaling_test.cpp); it needs statistics.
  r = ernie_cli("quantize --model " + model_dir() + " --type q4_0 --calibration " + quote(stats) + " --awq --out " +
                quote(tmp.path() / "awq.gguf"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("activation-scaled"), std::string::npos) << r.err;
  r = ernie_cli("quantize --model " + model_dir() + " --type q4_0 --awq --out " + quote(tmp.path() / "awq.gguf"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--awq needs --calibration"), std::string::npos) << r.err;

  // --output-type: the LM head (here the tied embedding) in its own type, the rest in --type.
  const auto mixed = tmp.path() / "mixed.gguf";
  r = ernie_cli("quantize --model " + model_dir() + " --type q4_0 --output-type q8_0 --calibration " + quote(stats) +
                " --out " + quote(mixed));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const GgufFile mixed_file = GgufFile::open(mixed);
  EXPECT_EQ(mixed_file.find_tensor("token_embd.weight")->type, GgmlType::Q8_0);
  EXPECT_EQ(mixed_file.find_tensor("blk.0.attn_q.weight")->type, GgmlType::Q4_0);
  r = ernie_cli("run --model " + quote(mixed) + " --prompt hello -n 4 --temperature 0 --ignore-eos --print-ids");
  ASSERT_EQ(r.exit_code, 0) << r.err;

  // tiny-ernie has 2 layers, tiny-ernie-bias 3: its statistics lack layer 2.
  r = ernie_cli("quantize --model " + model_dir("tiny-ernie-bias/model") + " --type q8_0 --calibration " +
                quote(stats) + " --out " + quote(tmp.path() / "other.gguf"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("blk.2."), std::string::npos) << r.err;
  r = ernie_cli("calibrate --model " + model_dir() + " --data " + quote(tmp.path() / "none.txt") + " --out " +
                quote(stats));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("none.txt"), std::string::npos) << r.err;
}

// A truncated GGUF file is a clear error naming it, not a crash.
TEST(Cli, TruncatedGgufIsAClearError) {
  TempDir tmp;
  const auto gguf = tmp.path() / "t.gguf";
  ASSERT_EQ(ernie_cli("quantize --model " + model_dir() + " --type f32 --out " + quote(gguf)).exit_code, 0);
  std::filesystem::resize_file(gguf, std::filesystem::file_size(gguf) - 1000);
  const auto r = ernie_cli("run --model " + quote(gguf) + " --ids 1,2 -n 2");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("t.gguf"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("past the end"), std::string::npos) << r.err;
}

TEST(Cli, TokenizeAndDetokenizeMatchTransformers) {
  const auto golden = read_json(fixture("tiny-ernie/ref/tokenizer_golden.json"));
  int checked = 0;
  for (const auto& s : golden["strings"]) {
    const std::string text = s["text"];
    if (text.empty() || text.find('\0') != std::string::npos) continue;
    const auto r = ernie_cli("tokenize --model " + model_dir() + " --text " + quote(text));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(nlohmann::json::parse(r.out), s["hf_ids"]) << text;
    if (s["hf_ids"].empty()) continue;
    const auto d = ernie_cli("detokenize --model " + model_dir() + " --ids " + join_ids(s["hf_ids"]));
    ASSERT_EQ(d.exit_code, 0) << d.err;
    EXPECT_EQ(d.out, s["hf_decoded"].get<std::string>() + "\n");
    ++checked;
  }
  EXPECT_GE(checked, 15);
}

TEST(Cli, InfoDescribesTheCheckpoint) {
  const auto r = ernie_cli("info --model " + model_dir("tiny-ernie-bias/model"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // tiny-ernie-bias: vocab 3008, hidden 64, 3 layers, q 4x16, kv 2x16, intermediate 192, biases, untied head.
  const long long per_layer =
      2 * 64 + (64 * 64 + 64) + 2 * (32 * 64 + 32) + (64 * 64 + 64) + 2 * (192 * 64 + 192) + (64 * 192 + 64);
  const long long expected = 3008LL * 64 + 3 * per_layer + 64 + 3008LL * 64;
  EXPECT_NE(r.out.find("parameters       " + std::to_string(expected)), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("separate LM head"), std::string::npos);
  EXPECT_NE(r.out.find("4 query heads, 2 kv heads, head_dim 16"), std::string::npos);
}

// Without --model every subcommand uses the demo model that ships in the repository, and says so once on stderr.
TEST(Cli, WithoutModelTheBuiltInDemoModelRuns) {
  const std::string notice = "ernie: using the built-in demo model; pass --model DIR for ERNIE-4.5-0.3B\n";
  const auto golden = read_json(demo_model_dir() / "reference" / "golden.json");
  for (const auto& prompt : golden["prompts"]) {
    const auto name = prompt["name"].get<std::string>();
    std::string args;
    if (name == "english") {
      args = "--prompt " + quote(prompt["text"]);
    } else if (name == "chat") {
      args = "--chat --prompt 'Tell me a fortune.'";  // the template renders the golden prompt's text
    } else {
      continue;
    }
    SCOPED_TRACE(name);
    const auto r = ernie_cli("run " + args + " --max-tokens 32 --temperature 0 --ignore-eos --print-ids");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(nlohmann::json::parse(r.out), prompt["greedy_new_ids"]);
    EXPECT_EQ(r.err.find(notice), r.err.rfind(notice)) << "one notice: " << r.err;
    EXPECT_NE(r.err.find(notice), std::string::npos) << r.err;
  }

  const auto chat = ernie_cli("chat --max-tokens 16", "Tell me a fortune.\n");
  ASSERT_EQ(chat.exit_code, 0) << chat.err;
  EXPECT_NE(chat.err.find(notice), std::string::npos) << chat.err;

  const auto info = ernie_cli("info");
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_NE(info.out.find(std::to_string(golden["vocab_size"].get<int>())), std::string::npos) << info.out;
  EXPECT_EQ(info.err.find(notice), info.err.rfind(notice)) << "one notice: " << info.err;

  const auto& english = golden["prompts"][0];
  const auto tokens = ernie_cli("tokenize --text " + quote(english["text"]));
  ASSERT_EQ(tokens.exit_code, 0) << tokens.err;
  EXPECT_EQ(nlohmann::json::parse(tokens.out), english["ids"]);
}

TEST(Cli, UsageErrorsExitNonZeroWithUsage) {
  for (const std::string args : {"", "run", "run --model", "bogus", "run --model x --max-tokens abc",
                                 "logits --model x", "run --model x --prompt hi --ids 1"}) {
    SCOPED_TRACE(args);
    const auto r = ernie_cli(args);
    EXPECT_GT(r.exit_code, 0);
    EXPECT_NE(r.err.find("Usage"), std::string::npos) << r.err;
  }
}

TEST(Cli, BadInputIsAClearErrorNotACrash) {
  TempDir tmp;
  const auto copy = tmp.path() / "model";
  std::filesystem::copy(fixture("tiny-ernie/model"), copy);
  std::filesystem::permissions(copy / "model.safetensors", std::filesystem::perms::owner_write,
                               std::filesystem::perm_options::add);
  std::filesystem::resize_file(copy / "model.safetensors",
                               std::filesystem::file_size(copy / "model.safetensors") - 100);

  const struct {
    std::string args, message;
  } cases[] = {
      {"run --model /nonexistent --prompt hi", "/nonexistent"},
      {"run --model " + model_dir() + " --ids 1,x,3", "not a token id"},
      {"run --model " + model_dir() + " --ids 1,99999", "99999"},
      {"run --model " + model_dir() + " --ids 1,2 --top-p 1.5", "top_p"},
      {"run --model " + model_dir() + " --ctx 8 --ids 1,2,3,4,5,6,7,8,9", "context"},
      {"run --model " + quote(copy.string()) + " --prompt hi", "model.safetensors"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.args);
    const auto r = ernie_cli(c.args);
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.err.rfind("error: ", 0) == 0 || r.err.find("\nerror: ") != std::string::npos, true) << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
  }
}

// `ernie logits --lora DIR` (per token) and with --lora-merge give the logits of the same weights merged by hand;
// --lora-scale scales the --lora before it; stacked adapters add up.
TEST(Cli, LogitsWithLoraMatchWeightsMergedByHand) {
  TempDir tmp;
  const auto base = fixture("tiny-ernie-bias/model");
  const ModelConfig config = ModelConfig::load(base);
  const auto a = ernie::testing::write_test_adapter(tmp.path() / "a", config, {.seed = 31});
  const auto b = ernie::testing::write_test_adapter(tmp.path() / "b", config,
                                                    {.rank = 2, .projections = {"k_proj", "up_proj"}, .seed = 32});
  ernie::testing::write_merged_checkpoint(base, tmp.path() / "merged", {{&a, 0.5}, {&b, 1.0}});
  const std::string ids = " --ids 5,17,300,42,7,7,900,12 --out ";
  const auto logits = [&](const std::string& args, const std::string& name) {
    const auto out = tmp.path() / name;
    const auto r = ernie_cli("logits " + args + ids + quote(out.string()));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return read_f32(out);
  };
  const auto reference = logits("--model " + quote((tmp.path() / "merged").string()), "reference.bin");
  const std::string lora = " --lora " + quote((tmp.path() / "a").string()) + " --lora-scale 0.5 --lora " +
                           quote((tmp.path() / "b").string());
  const auto rel = [&](const std::vector<float>& x) { return ernie::testing::relative_error(x, reference); };
  EXPECT_GT(rel(logits("--model " + quote(base.string()), "base.bin")), 0.05);
  EXPECT_LE(rel(logits("--model " + quote(base.string()) + lora, "lora.bin")), 1e-5);
  EXPECT_LE(rel(logits("--model " + quote(base.string()) + lora + " --lora-merge", "merged.bin")), 1e-5);
}

// The demo model with its quatrain adapter, as a user runs it: `ernie run` without --model (the built-in demo model)
// and --lora models/demo-quatrain-lora gives the recipe's own PyTorch greedy ids, unmerged and merged.
TEST(Cli, RunWithTheDemoAdapterGivesTheRecipesGreedyIds) {
  const auto golden = read_json(ernie::testing::demo_lora_dir() / "reference" / "golden.json");
  const std::string lora = " --lora " + quote(ernie::testing::demo_lora_dir().string());
  for (const auto& prompt : golden["prompts"]) {
    if (prompt["name"] != "chat_quatrain" && prompt["name"] != "quatrain_header") continue;
    SCOPED_TRACE(prompt["name"].get<std::string>());
    for (const std::string merge : {"", " --lora-merge"}) {
      const auto r = ernie_cli("run --ids " + join_ids(prompt["ids"]) + lora + merge +
                               " --max-tokens 32 --temperature 0 --ignore-eos --print-ids");
      ASSERT_EQ(r.exit_code, 0) << r.err;
      EXPECT_EQ(nlohmann::json::parse(r.out), prompt["greedy_new_ids"]) << merge;
    }
  }
}

TEST(Cli, LoraFlagErrors) {
  TempDir tmp;
  const auto base = fixture("tiny-ernie-bias/model");
  ernie::testing::write_test_adapter(tmp.path() / "a", ModelConfig::load(base), {});
  const std::string model = "logits --ids 1,2 --model " + quote(base.string());
  const std::string a = quote((tmp.path() / "a").string());
  const struct {
    std::string args, message;
  } cases[] = {
      {model + " --lora-scale 2 --lora " + a, "before any --lora"},
      {model + " --lora " + a + " --lora-scale 2 --lora-scale 3", "two scales"},
      {model + " --lora-merge", "--lora-merge needs"},
      {model + " --lora " + quote((tmp.path() / "none").string()), "none"},
      {"logits --ids 1,2 --model " + model_dir() + " --lora " + a, "layer 2"},  // an adapter for another model
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.args);
    const auto r = ernie_cli(c.args);
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace ernie
