// SafetensorsArchive on files written here byte by byte (8-byte little-endian header length, JSON header, data
// block), on sharded checkpoints, and on every malformed layout the loader promises to refuse with an ernie::Error
// naming the file and, where there is one, the tensor.
#include "io/safetensors.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "test_support.h"

namespace ernie {
namespace {

namespace fs = std::filesystem;
using ernie::testing::fixture;
using ernie::testing::TempDir;
using nlohmann::json;

using ernie::testing::Bytes;
using ernie::testing::error_of;
using ernie::testing::read_bytes;
using ernie::testing::write_bytes;
using ernie::testing::write_text;

Bytes le64(uint64_t v) {
  Bytes b(8);
  for (int i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
  return b;
}

// header length + header text + data, with the header length field given explicitly (for lying about it).
Bytes raw_file(uint64_t header_len_field, const std::string& header, const Bytes& data) {
  Bytes out;
  out.reserve(8 + header.size() + data.size());
  const Bytes length = le64(header_len_field);
  out.insert(out.end(), length.begin(), length.end());
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

Bytes safetensors_file(const json& header, const Bytes& data) {
  std::string text = header.dump();
  while (text.size() % 8 != 0) text += ' ';  // writers pad the header with spaces to 8-byte alignment
  return raw_file(text.size(), text, data);
}

// Builds a header and data block from tensors appended in order, contiguously.
class FileBuilder {
 public:
  FileBuilder& add(const std::string& name, const std::string& dtype, std::vector<int64_t> shape, const Bytes& bytes) {
    header_[name] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {data_.size(), data_.size() + bytes.size()}}};
    data_.insert(data_.end(), bytes.begin(), bytes.end());
    return *this;
  }
  json& header() { return header_; }
  Bytes& data() { return data_; }
  Bytes build() const { return safetensors_file(header_, data_); }

 private:
  json header_ = {{"__metadata__", {{"format", "pt"}}}};
  Bytes data_;
};

template <class T>
Bytes bytes_of(const std::vector<T>& values) {
  Bytes b(values.size() * sizeof(T));
  std::memcpy(b.data(), values.data(), b.size());
  return b;
}

std::string open_error(const fs::path& path) {
  return error_of([&] { SafetensorsArchive::open(path); });
}

// ---- happy path --------------------------------------------------------------------------------------------------

TEST(Safetensors, ReadsDtypesShapesAndData) {
  TempDir dir;
  const std::vector<float> a = {1.5f, -2.0f, 3.25f, 0.0f, 1e-3f, 7.0f};
  const std::vector<uint16_t> b = {0x3f80, 0xc000, 0x7f80, 0x0001};
  const std::vector<uint16_t> c = {0x3c00, 0x7bff, 0x8001, 0x0000};
  const std::vector<float> scalar = {42.0f};
  FileBuilder f;
  f.add("a", "F32", {2, 3}, bytes_of(a))
      .add("layer.b", "BF16", {4}, bytes_of(b))
      .add("c", "F16", {1, 2, 2}, bytes_of(c))
      .add("scalar", "F32", {}, bytes_of(scalar))
      .add("empty", "BF16", {0, 5}, {});
  const fs::path path = dir.path() / "weights.safetensors";
  write_bytes(path, f.build());

  const auto archive = SafetensorsArchive::open(path);
  EXPECT_EQ(archive.tensors().size(), 5u);  // __metadata__ is not a tensor
  EXPECT_EQ(archive.find("__metadata__"), nullptr);
  EXPECT_EQ(archive.find("missing"), nullptr);
  ASSERT_EQ(archive.files().size(), 1u);
  EXPECT_EQ(archive.files()[0], path);
  EXPECT_EQ(archive.mapped_bytes(), fs::file_size(path));

  const TensorView* ta = archive.find("a");
  ASSERT_NE(ta, nullptr);
  EXPECT_EQ(ta->name, "a");
  EXPECT_EQ(ta->dtype, DType::F32);
  EXPECT_EQ(ta->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(ta->element_count(), 6);
  EXPECT_EQ(ta->shape_string(), "[2, 3]");
  ASSERT_EQ(ta->nbytes, 24u);
  EXPECT_EQ(std::memcmp(ta->data, a.data(), 24), 0);
  ASSERT_NE(ta->file, nullptr);
  EXPECT_EQ(*ta->file, path);

  const TensorView* tb = archive.find("layer.b");
  ASSERT_NE(tb, nullptr);
  EXPECT_EQ(tb->dtype, DType::BF16);
  EXPECT_EQ(tb->shape, (std::vector<int64_t>{4}));
  ASSERT_EQ(tb->nbytes, 8u);
  EXPECT_EQ(std::memcmp(tb->data, b.data(), 8), 0);
  EXPECT_EQ(tb->data, ta->data + 24);  // offsets count from the start of the data block

  const TensorView* tc = archive.find("c");
  ASSERT_NE(tc, nullptr);
  EXPECT_EQ(tc->dtype, DType::F16);
  EXPECT_EQ(tc->shape_string(), "[1, 2, 2]");
  ASSERT_EQ(tc->nbytes, 8u);
  EXPECT_EQ(std::memcmp(tc->data, c.data(), 8), 0);

  const TensorView* ts = archive.find("scalar");
  ASSERT_NE(ts, nullptr);
  EXPECT_TRUE(ts->shape.empty());
  EXPECT_EQ(ts->element_count(), 1);
  ASSERT_EQ(ts->nbytes, 4u);
  float s;
  std::memcpy(&s, ts->data, 4);
  EXPECT_EQ(s, 42.0f);

  const TensorView* te = archive.find("empty");
  ASSERT_NE(te, nullptr);
  EXPECT_EQ(te->element_count(), 0);
  EXPECT_EQ(te->nbytes, 0u);

  // The first data byte sits right after the 8-byte length and the header.
  const Bytes file = read_bytes(path);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = header_len << 8 | file[i];
  const auto archive2 = SafetensorsArchive::open(path);
  EXPECT_EQ(std::memcmp(archive2.find("a")->data, file.data() + 8 + header_len, 24), 0);
}

TEST(Safetensors, OpensADirectoryHoldingModelSafetensors) {
  TempDir dir;
  const std::vector<float> v = {1, 2, 3};
  write_bytes(dir.path() / "model.safetensors", FileBuilder().add("w", "F32", {3}, bytes_of(v)).build());
  const auto archive = SafetensorsArchive::open(dir.path());
  ASSERT_NE(archive.find("w"), nullptr);
  EXPECT_EQ(std::memcmp(archive.find("w")->data, v.data(), 12), 0);
  EXPECT_EQ(archive.files().at(0), dir.path() / "model.safetensors");
}

TEST(Safetensors, ReadsTheRealFixture) {
  const fs::path path = fixture("tiny-ernie/model/model.safetensors");
  const Bytes file = read_bytes(path);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = header_len << 8 | file[i];
  const json header = json::parse(file.begin() + 8, file.begin() + 8 + static_cast<long>(header_len));
  const auto archive = SafetensorsArchive::open(path);
  size_t expected_tensors = 0;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    ++expected_tensors;
    const TensorView* t = archive.find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(dtype_name(t->dtype), entry["dtype"].get<std::string>()) << name;
    EXPECT_EQ(t->shape, entry["shape"].get<std::vector<int64_t>>()) << name;
    const auto offsets = entry["data_offsets"].get<std::vector<uint64_t>>();
    EXPECT_EQ(t->data, archive.find(name)->data);
    EXPECT_EQ(std::memcmp(t->data, file.data() + 8 + header_len + offsets[0], offsets[1] - offsets[0]), 0) << name;
  }
  EXPECT_EQ(archive.tensors().size(), expected_tensors);
}

// ---- sharded ---------------------------------------------------------------------------------------------------

struct Shards {
  std::vector<float> w1 = {1, 2, 3, 4}, w2 = {5, 6};
  std::vector<uint16_t> b1 = {0x3f80, 0x4000, 0x4040};
  json index;
};

Shards write_two_shards(const fs::path& dir) {
  Shards s;
  write_bytes(dir / "model-00001-of-00002.safetensors", FileBuilder()
                                                            .add("layer.0.w", "F32", {2, 2}, bytes_of(s.w1))
                                                            .add("layer.0.b", "BF16", {3}, bytes_of(s.b1))
                                                            .build());
  write_bytes(dir / "model-00002-of-00002.safetensors",
              FileBuilder().add("layer.1.w", "F32", {2}, bytes_of(s.w2)).build());
  s.index = {{"metadata", {{"total_size", 30}}},
             {"weight_map",
              {{"layer.0.w", "model-00001-of-00002.safetensors"},
               {"layer.0.b", "model-00001-of-00002.safetensors"},
               {"layer.1.w", "model-00002-of-00002.safetensors"}}}};
  write_text(dir / "model.safetensors.index.json", s.index.dump(2));
  return s;
}

TEST(Safetensors, ShardedCheckpointLoadsEveryTensor) {
  TempDir dir;
  const Shards s = write_two_shards(dir.path());
  const auto archive = SafetensorsArchive::open(dir.path());
  EXPECT_EQ(archive.tensors().size(), 3u);
  EXPECT_EQ(archive.files().size(), 2u);
  const TensorView* w1 = archive.find("layer.0.w");
  const TensorView* b1 = archive.find("layer.0.b");
  const TensorView* w2 = archive.find("layer.1.w");
  ASSERT_TRUE(w1 && b1 && w2);
  EXPECT_EQ(w1->file->filename(), "model-00001-of-00002.safetensors");
  EXPECT_EQ(b1->file->filename(), "model-00001-of-00002.safetensors");
  EXPECT_EQ(w2->file->filename(), "model-00002-of-00002.safetensors");
  EXPECT_EQ(w1->shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(b1->dtype, DType::BF16);
  EXPECT_EQ(std::memcmp(w1->data, s.w1.data(), 16), 0);
  EXPECT_EQ(std::memcmp(b1->data, s.b1.data(), 6), 0);
  EXPECT_EQ(std::memcmp(w2->data, s.w2.data(), 8), 0);
  EXPECT_EQ(archive.mapped_bytes(), fs::file_size(dir.path() / "model-00001-of-00002.safetensors") +
                                        fs::file_size(dir.path() / "model-00002-of-00002.safetensors"));
}

TEST(Safetensors, IndexPointingToAMissingShardIsAnError) {
  TempDir dir;
  Shards s = write_two_shards(dir.path());
  s.index["weight_map"]["layer.1.w"] = "model-00003-of-00003.safetensors";
  write_text(dir.path() / "model.safetensors.index.json", s.index.dump());
  const std::string message = open_error(dir.path());
  EXPECT_MENTIONS(message, "model-00003-of-00003.safetensors");
}

TEST(Safetensors, IndexListingATensorItsShardLacksIsAnError) {
  TempDir dir;
  Shards s = write_two_shards(dir.path());
  s.index["weight_map"]["layer.2.w"] = "model-00002-of-00002.safetensors";
  write_text(dir.path() / "model.safetensors.index.json", s.index.dump());
  const std::string message = open_error(dir.path());
  EXPECT_MENTIONS(message, "layer.2.w");
  EXPECT_MENTIONS(message, "model-00002-of-00002.safetensors");
  EXPECT_MENTIONS(message, "model.safetensors.index.json");
}

TEST(Safetensors, IndexAssigningATensorToTheWrongShardIsAnError) {
  TempDir dir;
  Shards s = write_two_shards(dir.path());
  s.index["weight_map"]["layer.1.w"] = "model-00001-of-00002.safetensors";
  write_text(dir.path() / "model.safetensors.index.json", s.index.dump());
  const std::string message = open_error(dir.path());
  EXPECT_MENTIONS(message, "layer.1.w");
  EXPECT_MENTIONS(message, "model-00001-of-00002.safetensors");
}

TEST(Safetensors, ShardHoldingATensorTheIndexDoesNotListIsAnError) {
  TempDir dir;
  Shards s = write_two_shards(dir.path());
  s.index["weight_map"].erase("layer.0.b");
  write_text(dir.path() / "model.safetensors.index.json", s.index.dump());
  const std::string message = open_error(dir.path());
  EXPECT_MENTIONS(message, "layer.0.b");
  EXPECT_MENTIONS(message, "model-00001-of-00002.safetensors");
  EXPECT_MENTIONS(message, "model.safetensors.index.json");
  EXPECT_MENTIONS(message, "does not list");
}

TEST(Safetensors, ShardNameLeavingTheDirectoryIsRefused) {
  TempDir root;
  const fs::path dir = root.path() / "checkpoint";
  fs::create_directory(dir);
  Shards s = write_two_shards(dir);
  // A valid file really is there, so only the refusal can stop it.
  const std::vector<float> v = {9, 9};
  write_bytes(root.path() / "evil.safetensors", FileBuilder().add("layer.1.w", "F32", {2}, bytes_of(v)).build());
  fs::remove(dir / "model-00002-of-00002.safetensors");
  s.index["weight_map"]["layer.1.w"] = "../evil.safetensors";
  write_text(dir / "model.safetensors.index.json", s.index.dump());
  const std::string message = open_error(dir);
  EXPECT_MENTIONS(message, "../evil.safetensors");
  EXPECT_MENTIONS(message, "layer.1.w");
  EXPECT_MENTIONS(message, "model.safetensors.index.json");

  // The name is refused before the file is touched: an unreadable file there must not be what the error is about.
  write_bytes(root.path() / "evil.safetensors", Bytes(3, 0));
  const std::string refused = open_error(dir);
  EXPECT_MENTIONS(refused, "model.safetensors.index.json");
  EXPECT_MENTIONS(refused, "layer.1.w");
  EXPECT_MENTIONS(refused, "../evil.safetensors");
}

TEST(Safetensors, IndexNotJsonIsAnError) {
  TempDir dir;
  write_two_shards(dir.path());
  write_text(dir.path() / "model.safetensors.index.json", "{\"weight_map\": ");
  EXPECT_MENTIONS(open_error(dir.path()), "model.safetensors.index.json");
  write_text(dir.path() / "model.safetensors.index.json", "{\"metadata\": {}}");
  const std::string message = open_error(dir.path());
  EXPECT_MENTIONS(message, "model.safetensors.index.json");
  EXPECT_MENTIONS(message, "weight_map");
}

TEST(Safetensors, DirectoryWithoutCheckpointIsAnError) {
  TempDir dir;
  EXPECT_MENTIONS(open_error(dir.path()), dir.path().string());
}

TEST(Safetensors, MissingFileIsAnError) {
  TempDir dir;
  EXPECT_MENTIONS(open_error(dir.path() / "nope.safetensors"), "nope.safetensors");
}

// ---- malformed files -------------------------------------------------------------------------------------------

class Malformed : public ::testing::Test {
 protected:
  fs::path write(const Bytes& bytes) {
    const fs::path path = dir_.path() / "broken.safetensors";
    write_bytes(path, bytes);
    return path;
  }
  std::string error_for(const Bytes& bytes) { return open_error(write(bytes)); }
  TempDir dir_;
};

TEST_F(Malformed, FileShorterThanEightBytes) {
  for (size_t n : {0, 1, 5, 7}) {
    const std::string message = error_for(Bytes(n, 0));
    EXPECT_MENTIONS(message, "broken.safetensors");
  }
}

TEST_F(Malformed, HeaderLengthBeyondFileSize) {
  const std::string header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  EXPECT_MENTIONS(error_for(raw_file(header.size() + 5, header, Bytes(4, 0))), "broken.safetensors");
  EXPECT_MENTIONS(error_for(raw_file(1000, header, {})), "broken.safetensors");
  // Lengths whose 8 + N would wrap around a 64-bit size.
  EXPECT_MENTIONS(error_for(raw_file(~uint64_t{0}, header, {})), "broken.safetensors");
  EXPECT_MENTIONS(error_for(raw_file(~uint64_t{0} - 7, header, {})), "broken.safetensors");
  EXPECT_MENTIONS(error_for(raw_file(uint64_t{1} << 63, header, {})), "broken.safetensors");
}

TEST_F(Malformed, HeaderNotJson) {
  for (const std::string header : {"{not json", "", "{\"a\": {\"dtype\": \"F32\",", "\xff\xfe garbage"}) {
    EXPECT_MENTIONS(error_for(raw_file(header.size(), header, {})), "broken.safetensors");
  }
}

TEST_F(Malformed, HeaderNotAnObject) {
  for (const std::string header : {"[1, 2, 3]", "\"text\"", "42", "null", "true"}) {
    EXPECT_MENTIONS(error_for(raw_file(header.size(), header, {})), "broken.safetensors");
  }
}

TEST_F(Malformed, UnknownDtype) {
  FileBuilder f;
  f.add("ok", "F32", {1}, Bytes(4, 0)).add("model.quantized", "I8", {4}, Bytes(4, 0));
  const std::string message = error_for(f.build());
  EXPECT_MENTIONS(message, "broken.safetensors");
  EXPECT_MENTIONS(message, "model.quantized");
  EXPECT_MENTIONS(message, "I8");
}

TEST_F(Malformed, DataOffsetsBeyondTheDataBlock) {
  FileBuilder f;
  f.add("first", "F32", {2}, Bytes(8, 0)).add("second", "F32", {2}, Bytes(8, 0));
  Bytes file = f.build();
  file.resize(file.size() - 3);  // truncated inside "second"
  const std::string message = error_for(file);
  EXPECT_MENTIONS(message, "broken.safetensors");
  EXPECT_MENTIONS(message, "second");

  // Offsets past the end even though the file is complete.
  FileBuilder g;
  g.add("far", "F32", {4}, Bytes(16, 0));
  g.header()["far"]["data_offsets"] = {uint64_t{1} << 62, (uint64_t{1} << 62) + 16};
  const std::string far = error_for(g.build());
  EXPECT_MENTIONS(far, "far");
}

TEST_F(Malformed, TruncatedRealFixture) {
  const fs::path source = fixture("tiny-ernie/model/model.safetensors");
  Bytes file = read_bytes(source);
  ASSERT_GT(file.size(), 100u);
  file.resize(file.size() - 100);
  // Which tensors now end past the data block, from the fixture's own header.
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = header_len << 8 | file[i];
  const json header = json::parse(file.begin() + 8, file.begin() + 8 + static_cast<long>(header_len));
  const uint64_t data_size = file.size() - 8 - header_len;
  std::vector<std::string> cut;
  for (const auto& [name, entry] : header.items()) {
    if (name != "__metadata__" && entry["data_offsets"][1].get<uint64_t>() > data_size) cut.push_back(name);
  }
  ASSERT_EQ(cut.size(), 1u) << "the last 100 bytes lie in a single tensor of the fixture";
  const fs::path path = dir_.path() / "model.safetensors";
  write_bytes(path, file);
  const std::string message = open_error(path);
  EXPECT_MENTIONS(message, path.string());
  EXPECT_MENTIONS(message, cut[0]);
}

TEST_F(Malformed, OffsetsReversed) {
  FileBuilder f;
  f.add("backwards", "F32", {2}, Bytes(8, 0));
  f.header()["backwards"]["data_offsets"] = {8, 0};
  const std::string message = error_for(f.build());
  EXPECT_MENTIONS(message, "broken.safetensors");
  EXPECT_MENTIONS(message, "backwards");
  // Not reported through a wrapped-around size (end - begin as uint64 = 18446744073709551608).
  EXPECT_EQ(message.find("1844674407"), std::string::npos) << message;
}

TEST_F(Malformed, ByteSizeNotMatchingShape) {
  {
    FileBuilder f;
    f.add("short", "F32", {2, 3}, Bytes(20, 0));  // needs 24
    const std::string message = error_for(f.build());
    EXPECT_MENTIONS(message, "broken.safetensors");
    EXPECT_MENTIONS(message, "short");
  }
  {
    FileBuilder f;
    f.add("long", "BF16", {3}, Bytes(8, 0));  // needs 6
    const std::string message = error_for(f.build());
    EXPECT_MENTIONS(message, "long");
  }
  {
    FileBuilder f;  // a shape whose byte count overflows 64 bits must not wrap to a match
    f.add("huge", "F32", {int64_t{1} << 62, 4}, Bytes(0, 0));
    f.header()["huge"]["data_offsets"] = {0, 0};
    const std::string message = error_for(f.build());
    EXPECT_MENTIONS(message, "huge");
  }
}

TEST_F(Malformed, BadEntryFields) {
  const auto entry_error = [&](const std::string& tensor, const json& entry) {
    json header = {{tensor, entry}};
    return error_for(safetensors_file(header, Bytes(16, 0)));
  };
  EXPECT_MENTIONS(entry_error("no_dtype", {{"shape", {4}}, {"data_offsets", {0, 16}}}), "no_dtype");
  EXPECT_MENTIONS(entry_error("no_shape", {{"dtype", "F32"}, {"data_offsets", {0, 16}}}), "no_shape");
  EXPECT_MENTIONS(entry_error("neg_dim", {{"dtype", "F32"}, {"shape", {-4}}, {"data_offsets", {0, 16}}}), "neg_dim");
  EXPECT_MENTIONS(entry_error("float_dim", {{"dtype", "F32"}, {"shape", {4.0}}, {"data_offsets", {0, 16}}}),
                  "float_dim");
  EXPECT_MENTIONS(entry_error("no_offsets", {{"dtype", "F32"}, {"shape", {4}}}), "no_offsets");
  EXPECT_MENTIONS(entry_error("neg_offset", {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {-4, 12}}}),
                  "neg_offset");
  EXPECT_MENTIONS(entry_error("three_offsets", {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {0, 8, 16}}}),
                  "three_offsets");
  EXPECT_MENTIONS(entry_error("not_object", json::array({1, 2})), "not_object");
}

TEST_F(Malformed, TensorInTwoShards) {
  const std::vector<float> v = {1, 2};
  write_bytes(dir_.path() / "a.safetensors", FileBuilder().add("dup", "F32", {2}, bytes_of(v)).build());
  write_bytes(dir_.path() / "b.safetensors", FileBuilder().add("dup", "F32", {2}, bytes_of(v)).build());
  const json index = {{"weight_map", {{"dup", "a.safetensors"}, {"other", "b.safetensors"}}}};
  write_text(dir_.path() / "model.safetensors.index.json", index.dump());
  EXPECT_MENTIONS(open_error(dir_.path()), "dup");
}

}  // namespace
}  // namespace ernie
