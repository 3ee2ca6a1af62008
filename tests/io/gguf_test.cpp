// GgufFile and GgufWriter: a written file reads back with every metadata type and tensor intact; files built or
// damaged byte by byte here (the layout spelled out in the test, not taken from the writer) are refused with an
// ernie::Error naming the file and the problem.
#include "io/gguf.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "test_support.h"

namespace ernie {
namespace {

namespace fs = std::filesystem;
using ernie::testing::Bytes;
using ernie::testing::error_of;
using ernie::testing::read_bytes;
using ernie::testing::TempDir;
using ernie::testing::write_bytes;

// Appends little-endian values and GGUF strings, to build files by hand.
struct ByteWriter {
  Bytes bytes;
  template <class T>
  ByteWriter& put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    bytes.insert(bytes.end(), p, p + sizeof v);
    return *this;
  }
  ByteWriter& str(const std::string& s) {
    put<uint64_t>(s.size());
    bytes.insert(bytes.end(), s.begin(), s.end());
    return *this;
  }
  ByteWriter& pad_to(size_t alignment) {
    while (bytes.size() % alignment) bytes.push_back(0);
    return *this;
  }
};

// "GGUF", v3, one metadata string, one F32 tensor "w" of ne = {4, 2} at `offset`, data of `data_bytes` bytes.
Bytes one_tensor_file(uint64_t offset, size_t data_bytes, uint32_t type = 0) {
  ByteWriter w;
  w.put<uint32_t>(0x46554747).put<uint32_t>(3).put<uint64_t>(1).put<uint64_t>(1);
  w.str("general.architecture").put<uint32_t>(8).str("ernie4_5");
  w.str("w").put<uint32_t>(2).put<uint64_t>(4).put<uint64_t>(2).put<uint32_t>(type).put<uint64_t>(offset);
  w.pad_to(32);
  w.bytes.resize(w.bytes.size() + data_bytes, 0x3f);
  return w.bytes;
}

std::string open_error(const fs::path& path) {
  return error_of([&] { GgufFile::open(path); });
}

TEST(Gguf, ReadsAHandBuiltFile) {
  TempDir dir;
  const auto path = dir.path() / "a.gguf";
  write_bytes(path, one_tensor_file(0, 32));
  const GgufFile file = GgufFile::open(path);
  EXPECT_EQ(file.version(), 3u);
  EXPECT_EQ(file.get_string("general.architecture"), "ernie4_5");
  ASSERT_EQ(file.tensors().size(), 1u);
  const GgufTensor& t = file.tensors()[0];
  EXPECT_EQ(t.ne, (std::vector<int64_t>{4, 2}));
  EXPECT_EQ(t.shape(), (std::vector<int64_t>{2, 4}));  // row-major: 2 rows of 4
  EXPECT_EQ(t.nbytes, 32u);
  float first;
  std::memcpy(&first, t.data, 4);
  const uint8_t expected[4] = {0x3f, 0x3f, 0x3f, 0x3f};
  float expected_value;
  std::memcpy(&expected_value, expected, 4);
  EXPECT_EQ(first, expected_value);
}

TEST(Gguf, RoundTripsEveryMetadataTypeAndTensors) {
  TempDir dir;
  const auto path = dir.path() / "all.gguf";
  GgufArray strings{GgufType::STRING, {GgufValue(std::string("a")), GgufValue(std::string("")),
                                       GgufValue(std::string("\xE2\x96\x81x"))}};
  GgufArray nested{GgufType::ARRAY, {GgufValue(GgufArray{GgufType::I32, {GgufValue(int32_t{-1})}})}};
  const std::vector<std::pair<std::string, GgufValue>> values = {
      {"u8", uint8_t{250}},         {"i8", int8_t{-5}},
      {"u16", uint16_t{65000}},     {"i16", int16_t{-30000}},
      {"u32", uint32_t{4000000000}}, {"i32", int32_t{-2000000000}},
      {"f32", 1.5f},                {"bool", true},
      {"string", std::string("héllo")}, {"array", strings},
      {"u64", uint64_t{1} << 60},   {"i64", -(int64_t{1} << 60)},
      {"f64", 0.1},                 {"nested", nested},
      {"empty", GgufArray{GgufType::F32, {}}},
  };
  const std::vector<uint8_t> q8(34 * 2, 7), f32(4 * 3 * 4, 9);
  {
    GgufWriter writer(path, 64);
    for (const auto& [key, value] : values) writer.set(key, value);
    writer.declare_tensor("q", GgmlType::Q8_0, {1, 64});
    writer.declare_tensor("f", GgmlType::F32, {3, 4});
    writer.write_tensor(q8);
    writer.write_tensor(f32);
    writer.finish();
  }
  const GgufFile file = GgufFile::open(path);
  EXPECT_EQ(file.alignment(), 64u);
  for (const auto& [key, value] : values) {
    const GgufValue* read = file.find(key);
    ASSERT_NE(read, nullptr) << key;
    EXPECT_EQ(read->type(), value.type()) << key;
    EXPECT_TRUE(static_cast<const GgufVariant&>(*read) == static_cast<const GgufVariant&>(value)) << key;
  }
  EXPECT_EQ(file.get_int("u32"), 4000000000);
  EXPECT_EQ(file.get_int("i8"), -5);
  EXPECT_EQ(file.get_float("f64"), 0.1);
  EXPECT_MENTIONS(error_of([&] { file.get_int("string"); }), "expected an integer");
  EXPECT_MENTIONS(error_of([&] { file.get_array("array", GgufType::I32); }), "array of i32");

  const GgufTensor* q = file.find_tensor("q");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->type, GgmlType::Q8_0);
  EXPECT_EQ(q->shape(), (std::vector<int64_t>{1, 64}));
  EXPECT_EQ(std::vector<uint8_t>(q->data, q->data + q->nbytes), q8);
  const GgufTensor* f = file.find_tensor("f");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(std::vector<uint8_t>(f->data, f->data + f->nbytes), f32);
  EXPECT_EQ((f->data - q->data) % 64, 0);  // offsets are whole multiples of the alignment
  EXPECT_EQ(read_bytes(path).size() % 64, 0u);
}

TEST(Gguf, WriterRefusesMisuse) {
  TempDir dir;
  GgufWriter writer(dir.path() / "x.gguf");
  EXPECT_MENTIONS(error_of([&] { writer.declare_tensor("odd", GgmlType::Q4_0, {2, 48}); }), "Q4_0");
  writer.declare_tensor("t", GgmlType::F32, {2});
  EXPECT_MENTIONS(error_of([&] { writer.write_tensor(std::vector<uint8_t>(4)); }), "declared 8");
}

TEST(Gguf, RefusesBadMagicAndVersion) {
  TempDir dir;
  const auto path = dir.path() / "bad.gguf";
  Bytes bytes = one_tensor_file(0, 32);
  bytes[0] = 'X';
  write_bytes(path, bytes);
  EXPECT_MENTIONS(open_error(path), "bad magic");
  EXPECT_MENTIONS(open_error(path), path.string());
  bytes = one_tensor_file(0, 32);
  bytes[4] = 9;
  write_bytes(path, bytes);
  EXPECT_MENTIONS(open_error(path), "version 9");
  write_bytes(path, Bytes{'G', 'G'});
  EXPECT_MENTIONS(open_error(path), "bad magic");
  EXPECT_FALSE(is_gguf_file(path));
}

TEST(Gguf, EveryTruncationIsAnErrorNotACrash) {
  TempDir dir;
  const auto path = dir.path() / "cut.gguf";
  const Bytes whole = one_tensor_file(0, 32);
  for (size_t size = 4; size < whole.size(); ++size) {
    write_bytes(path, Bytes(whole.begin(), whole.begin() + size));
    const std::string message = open_error(path);
    EXPECT_TRUE(message.find("truncated") != std::string::npos) << size << ": " << message;
  }
}

TEST(Gguf, RefusesTensorDataPastTheEnd) {
  TempDir dir;
  const auto path = dir.path() / "past.gguf";
  write_bytes(path, one_tensor_file(32, 32));  // offset 32 + 32 bytes, but only 32 bytes of data
  const std::string message = open_error(path);
  EXPECT_MENTIONS(message, "tensor w");
  EXPECT_MENTIONS(message, "past the end");
}

TEST(Gguf, RefusesMisalignedOffsets) {
  TempDir dir;
  const auto path = dir.path() / "misaligned.gguf";
  write_bytes(path, one_tensor_file(4, 64));
  const std::string message = open_error(path);
  EXPECT_MENTIONS(message, "tensor w");
  EXPECT_MENTIONS(message, "not a multiple of the alignment 32");
}

TEST(Gguf, RefusesUnknownTypesAndPartialBlocks) {
  TempDir dir;
  const auto path = dir.path() / "types.gguf";
  write_bytes(path, one_tensor_file(0, 64, /*type=*/99));
  EXPECT_MENTIONS(open_error(path), "unsupported ggml type 99");
  write_bytes(path, one_tensor_file(0, 64, static_cast<uint32_t>(GgmlType::Q8_0)));  // rows of 4 < one block
  EXPECT_MENTIONS(open_error(path), "not a multiple of Q8_0's block of 32");
}

TEST(Gguf, RefusesAbsurdCountsWithoutAllocating) {
  TempDir dir;
  const auto path = dir.path() / "huge.gguf";
  ByteWriter w;
  w.put<uint32_t>(0x46554747).put<uint32_t>(3).put<uint64_t>(0).put<uint64_t>(1);
  w.str("tokens").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(uint64_t{1} << 40);
  write_bytes(path, w.bytes);
  EXPECT_MENTIONS(open_error(path), "truncated");
  ByteWriter v;
  v.put<uint32_t>(0x46554747).put<uint32_t>(3).put<uint64_t>(0).put<uint64_t>(1);
  v.str("key").put<uint32_t>(8).put<uint64_t>(uint64_t{1} << 62);
  write_bytes(path, v.bytes);
  EXPECT_MENTIONS(open_error(path), "truncated");
}

}  // namespace
}  // namespace ernie
