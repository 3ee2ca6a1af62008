// A systematic sweep of damaged model files through Model::load, the path `ernie` takes: the tiny-ernie fixture's
// model.safetensors (single file and split into shards with an index) and a GGUF file exported from it, truncated
// at every tensor boundary and at seeded random offsets, with seeded byte flips in the headers, and with shards that
// disagree with the index. Every case must either load (e.g. a flipped byte inside tensor data) or raise
// ernie::Error whose message is one line and names the damaged file; nothing else, and never a crash.
//
// The samples are drawn from fixed seeds, so a failure reproduces; the whole sweep is a few hundred loads of a 0.6 MB
// checkpoint, quick enough for the sanitizer builds.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/gguf_export.h"
#include "model/session.h"
#include "test_support.h"

namespace ernie {
namespace {

namespace fs = std::filesystem;
using ernie::testing::Bytes;
using ernie::testing::fixture;
using ernie::testing::read_bytes;
using ernie::testing::TempDir;
using ernie::testing::write_bytes;
using ernie::testing::write_text;
using nlohmann::json;

enum class Outcome { Loaded, Refused };

// Loads `path` and checks the contract: loads, or ernie::Error with a one-line message naming `file_name`.
// `what` describes the case for the failure message.
Outcome load_checked(const fs::path& path, const std::string& file_name, const std::string& what) {
  try {
    const auto model = Model::load(path);
    return Outcome::Loaded;
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_EQ(message.find('\n'), std::string::npos) << what << ": message is not one line: " << message;
    EXPECT_NE(message.find(file_name), std::string::npos) << what << ": message does not name " << file_name << ": "
                                                           << message;
    return Outcome::Refused;
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": exception other than ernie::Error: " << e.what();
    return Outcome::Refused;
  }
}

std::vector<size_t> sample_positions(std::mt19937& rng, size_t begin, size_t end, size_t count) {
  std::uniform_int_distribution<size_t> pick(begin, end - 1);
  std::vector<size_t> positions(count);
  for (size_t& p : positions) p = pick(rng);
  return positions;
}

// Values a flipped byte takes: the bit complement, a low-bit flip, and bytes that matter to the parsers.
std::vector<uint8_t> flips_of(uint8_t byte, std::mt19937& rng) {
  static constexpr uint8_t kInteresting[] = {0x00, 0xff, '"', '{', ']', ',', '9', '-', 0x7f, 0x80};
  std::uniform_int_distribution<size_t> pick(0, std::size(kInteresting) - 1);
  return {static_cast<uint8_t>(~byte), static_cast<uint8_t>(byte ^ 0x01), kInteresting[pick(rng)]};
}

// The fixture's config.json and model.safetensors copied into a scratch directory, with the header parsed.
class SafetensorsSweep : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::copy_file(fixture("tiny-ernie/model/config.json"), dir() / "config.json");
    original_ = read_bytes(fixture("tiny-ernie/model/model.safetensors"));
    ASSERT_GT(original_.size(), 8u);
    for (int i = 7; i >= 0; --i) header_len_ = header_len_ << 8 | original_[i];
    const json header = json::parse(original_.begin() + 8, original_.begin() + 8 + static_cast<long>(header_len_));
    for (const auto& [name, entry] : header.items()) {
      if (name == "__metadata__") continue;
      const auto offsets = entry["data_offsets"].get<std::vector<uint64_t>>();
      tensors_.push_back({name, data_start() + offsets[0], data_start() + offsets[1]});
    }
    ASSERT_FALSE(tensors_.empty());
    write_bytes(file(), original_);
    ASSERT_EQ(load_checked(dir(), "model.safetensors", "the undamaged fixture"), Outcome::Loaded);
  }

  const fs::path& dir() const { return tmp_.path(); }
  fs::path file() const { return dir() / "model.safetensors"; }
  size_t data_start() const { return 8 + header_len_; }

  struct TensorSpan {
    std::string name;
    size_t begin, end;  // absolute file offsets of the tensor's bytes
  };

  TempDir tmp_;
  Bytes original_;
  uint64_t header_len_ = 0;
  std::vector<TensorSpan> tensors_;
};

TEST_F(SafetensorsSweep, TruncatedAtEveryTensorBoundaryAndRandomOffsetsIsRefused) {
  std::set<size_t> cuts;
  for (const auto& t : tensors_) cuts.insert({t.begin, t.end});
  std::mt19937 rng(20240601);
  for (size_t p : {0, 1, 4, 7, 8, 9}) cuts.insert(p);  // inside the length prefix, and just after it
  for (size_t p : sample_positions(rng, 8, data_start(), 20)) cuts.insert(p);  // inside the JSON header
  for (size_t p : sample_positions(rng, 0, original_.size(), 30)) cuts.insert(p);
  cuts.erase(original_.size());  // the whole file is not a truncation
  for (size_t cut : cuts) {
    write_bytes(file(), Bytes(original_.begin(), original_.begin() + static_cast<long>(cut)));
    EXPECT_EQ(load_checked(dir(), "model.safetensors", "truncated at " + std::to_string(cut)), Outcome::Refused)
        << "a file truncated at byte " << cut << " of " << original_.size() << " loaded";
  }
}

TEST_F(SafetensorsSweep, FlippedHeaderBytesLoadOrAreRefused) {
  std::mt19937 rng(7);
  std::vector<size_t> positions = {0, 1, 2, 3, 4, 5, 6, 7};  // every byte of the length prefix
  for (size_t p : sample_positions(rng, 8, data_start(), 60)) positions.push_back(p);
  int refused = 0;
  for (size_t p : positions) {
    for (uint8_t value : flips_of(original_[p], rng)) {
      Bytes damaged = original_;
      damaged[p] = value;
      write_bytes(file(), damaged);
      refused += load_checked(dir(), "model.safetensors",
                              "byte " + std::to_string(p) + " set to " + std::to_string(value)) == Outcome::Refused;
    }
  }
  EXPECT_GT(refused, 0);
}

TEST_F(SafetensorsSweep, FlippedTensorDataStillLoads) {
  std::mt19937 rng(11);
  for (size_t p : sample_positions(rng, data_start(), original_.size(), 10)) {
    Bytes damaged = original_;
    damaged[p] ^= 0xff;
    write_bytes(file(), damaged);
    EXPECT_EQ(load_checked(dir(), "model.safetensors", "data byte " + std::to_string(p)), Outcome::Loaded);
  }
}

// The fixture split into two shards (tensors alternating) with model.safetensors.index.json.
class ShardedSweep : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::copy_file(fixture("tiny-ernie/model/config.json"), dir() / "config.json");
    source_ = std::make_unique<SafetensorsArchive>(SafetensorsArchive::open(fixture("tiny-ernie/model")));
    size_t i = 0;
    for (const auto& [name, view] : source_->tensors()) shard_of_[name] = i++ % 2 ? kShard2 : kShard1;
    write_shards();
    write_index();
    ASSERT_EQ(load_checked(dir(), "model.safetensors", "the undamaged sharded fixture"), Outcome::Loaded);
  }

  static constexpr const char* kShard1 = "model-00001-of-00002.safetensors";
  static constexpr const char* kShard2 = "model-00002-of-00002.safetensors";

  const fs::path& dir() const { return tmp_.path(); }
  fs::path index_file() const { return dir() / "model.safetensors.index.json"; }

  // Writes each shard with the tensors assigned to it, plus `extra` tensors named into a given shard.
  void write_shards(const std::multimap<std::string, std::string>& extra = {}) {
    for (const char* shard : {kShard1, kShard2}) {
      std::vector<TensorToWrite> tensors;
      const auto add = [&](const std::string& name, const TensorView& view) {
        tensors.push_back({name, view.dtype, view.shape,
                           [&view](uint8_t* out) { std::memcpy(out, view.data, view.nbytes); }});
      };
      for (const auto& [name, in] : shard_of_) {
        if (in == shard) add(name, *source_->find(name));
      }
      for (const auto& [name, in] : extra) {
        if (in == shard) add(name, *source_->find(name));
      }
      write_safetensors(dir() / shard, tensors);
    }
  }
  void write_index(const std::map<std::string, std::string>& weight_map) {
    write_text(index_file(), json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump(2));
  }
  void write_index() { write_index(shard_of_); }

  TempDir tmp_;
  std::unique_ptr<SafetensorsArchive> source_;
  std::map<std::string, std::string> shard_of_;  // tensor -> shard file name
};

TEST_F(ShardedSweep, MissingShardFileIsRefused) {
  fs::remove(dir() / kShard2);
  EXPECT_EQ(load_checked(dir(), kShard2, "missing shard"), Outcome::Refused);
}

TEST_F(ShardedSweep, TensorListedInTheWrongShardIsRefused) {
  auto map = shard_of_;
  const std::string moved = map.begin()->first;
  map[moved] = map[moved] == kShard1 ? kShard2 : kShard1;
  write_index(map);
  EXPECT_EQ(load_checked(dir(), "model.safetensors.index.json", "tensor in the wrong shard"), Outcome::Refused);
}

TEST_F(ShardedSweep, IndexNamingATensorNoShardHasIsRefused) {
  auto map = shard_of_;
  map["model.layers.0.mlp.extra.weight"] = kShard1;
  write_index(map);
  EXPECT_EQ(load_checked(dir(), "model.safetensors.index.json", "tensor no shard has"), Outcome::Refused);
}

TEST_F(ShardedSweep, ShardHoldingATensorTheIndexDoesNotListIsRefused) {
  auto map = shard_of_;
  map.erase(map.begin());
  write_index(map);
  EXPECT_EQ(load_checked(dir(), "model.safetensors.index.json", "tensor missing from the index"), Outcome::Refused);
}

TEST_F(ShardedSweep, TensorDuplicatedAcrossShardsIsRefused) {
  const auto& [name, shard] = *shard_of_.begin();
  write_shards({{name, shard == kShard1 ? kShard2 : kShard1}});
  EXPECT_EQ(load_checked(dir(), "model-0000", "duplicated tensor"), Outcome::Refused);
}

TEST_F(ShardedSweep, TruncatedOrFlippedIndexLoadsOrIsRefused) {
  const std::string text = json{{"weight_map", shard_of_}}.dump(2);
  std::mt19937 rng(3);
  for (size_t cut : sample_positions(rng, 0, text.size(), 15)) {
    write_text(index_file(), text.substr(0, cut));
    EXPECT_EQ(load_checked(dir(), "model.safetensors.index.json", "index cut at " + std::to_string(cut)),
              Outcome::Refused);
  }
  for (size_t p : sample_positions(rng, 0, text.size(), 30)) {
    for (uint8_t value : flips_of(static_cast<uint8_t>(text[p]), rng)) {
      std::string damaged = text;
      damaged[p] = static_cast<char>(value);
      write_text(index_file(), damaged);
      // The message names the index, or the (possibly damaged) shard file name it gives, by its path.
      load_checked(dir(), dir().string(), "index byte " + std::to_string(p));
    }
  }
}

// Walks a GGUF file's header the way the format lays it out, for the offsets the sweep cuts at.
struct GgufLayout {
  std::vector<size_t> entry_starts;  // each metadata entry's and tensor-info entry's first byte
  size_t tensor_info_end = 0;
};

GgufLayout walk_gguf(const Bytes& b) {
  GgufLayout layout;
  size_t pos = 0;
  const auto u32 = [&] {
    uint32_t v;
    std::memcpy(&v, &b.at(pos + 3) - 3, 4);
    pos += 4;
    return v;
  };
  const auto u64 = [&] {
    uint64_t v;
    std::memcpy(&v, &b.at(pos + 7) - 7, 8);
    pos += 8;
    return v;
  };
  const auto skip_string = [&] { pos += u64(); };
  std::function<void(uint32_t)> skip_value = [&](uint32_t type) {
    static constexpr size_t kSizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    if (type == static_cast<uint32_t>(GgufType::STRING)) {
      skip_string();
    } else if (type == static_cast<uint32_t>(GgufType::ARRAY)) {
      const uint32_t element = u32();
      const uint64_t count = u64();
      for (uint64_t i = 0; i < count; ++i) skip_value(element);
    } else {
      pos += kSizes[type];
    }
  };
  pos = 8;
  const uint64_t n_tensors = u64();
  const uint64_t n_metadata = u64();
  for (uint64_t i = 0; i < n_metadata; ++i) {
    layout.entry_starts.push_back(pos);
    skip_string();
    skip_value(u32());
  }
  for (uint64_t i = 0; i < n_tensors; ++i) {
    layout.entry_starts.push_back(pos);
    skip_string();
    pos += 8 * u32() + 4 + 8;
  }
  layout.tensor_info_end = pos;
  return layout;
}

class GgufSweep : public ::testing::Test {
 protected:
  void SetUp() override {
    export_gguf(*Model::load(fixture("tiny-ernie/model")), DType::BF16, file());
    original_ = read_bytes(file());
    layout_ = walk_gguf(original_);
    // Tensor data offsets: the first tensor's data starts the (aligned) data block.
    const GgufFile gguf = GgufFile::open(file());
    ASSERT_FALSE(gguf.tensors().empty());
    const uint8_t* base = gguf.tensors().front().data;
    for (const GgufTensor& t : gguf.tensors()) base = std::min(base, t.data);
    const size_t data_start = (layout_.tensor_info_end + gguf.alignment() - 1) / gguf.alignment() * gguf.alignment();
    for (const GgufTensor& t : gguf.tensors()) {
      const size_t begin = data_start + static_cast<size_t>(t.data - base);
      boundaries_.insert({begin, begin + t.nbytes});
    }
    ASSERT_LE(*boundaries_.rbegin(), original_.size());
    ASSERT_EQ(load_checked(file(), "model.gguf", "the undamaged GGUF file"), Outcome::Loaded);
  }

  fs::path file() const { return tmp_.path() / "model.gguf"; }

  TempDir tmp_;
  Bytes original_;
  GgufLayout layout_;
  std::set<size_t> boundaries_;
};

TEST_F(GgufSweep, TruncatedAtEveryTensorBoundaryAndInTheHeaderIsRefused) {
  std::set<size_t> cuts = boundaries_;
  for (size_t p : {0, 2, 4, 6, 8, 12, 16, 20, 24}) cuts.insert(p);  // magic, version, counts
  for (size_t p : layout_.entry_starts) cuts.insert({p, p + 5});  // at an entry and inside its key length
  cuts.insert(layout_.tensor_info_end);
  std::mt19937 rng(5);
  for (size_t p : sample_positions(rng, 0, layout_.tensor_info_end, 30)) cuts.insert(p);
  cuts.erase(original_.size());
  // Cutting off only the padding after the last tensor leaves every tensor whole: that file is fine.
  const size_t last_end = *boundaries_.rbegin();
  for (size_t cut : cuts) {
    write_bytes(file(), Bytes(original_.begin(), original_.begin() + static_cast<long>(cut)));
    const Outcome outcome = load_checked(file(), "model.gguf", "truncated at " + std::to_string(cut));
    if (cut < last_end) {
      EXPECT_EQ(outcome, Outcome::Refused) << "a file truncated at byte " << cut << " of " << original_.size()
                                           << " loaded";
    }
  }
}

TEST_F(GgufSweep, FlippedHeaderAndMetadataBytesLoadOrAreRefused) {
  std::mt19937 rng(13);
  std::vector<size_t> positions;
  for (size_t p = 0; p < 24; ++p) positions.push_back(p);  // magic, version and counts, every byte
  for (size_t p : sample_positions(rng, 24, layout_.tensor_info_end, 70)) positions.push_back(p);
  int refused = 0;
  for (size_t p : positions) {
    for (uint8_t value : flips_of(original_[p], rng)) {
      Bytes damaged = original_;
      damaged[p] = value;
      write_bytes(file(), damaged);
      refused += load_checked(file(), "model.gguf",
                              "byte " + std::to_string(p) + " set to " + std::to_string(value)) == Outcome::Refused;
    }
  }
  EXPECT_GT(refused, 0);
}

TEST_F(GgufSweep, FlippedTensorDataStillLoads) {
  std::mt19937 rng(17);
  for (size_t p : sample_positions(rng, *boundaries_.begin(), *boundaries_.rbegin(), 10)) {
    Bytes damaged = original_;
    damaged[p] ^= 0xff;
    write_bytes(file(), damaged);
    EXPECT_EQ(load_checked(file(), "model.gguf", "data byte " + std::to_string(p)), Outcome::Loaded);
  }
}

}  // namespace
}  // namespace ernie
