// GGUF v3, the llama.cpp ecosystem's single-file model format: a header, typed key/value metadata, a tensor index,
// then the tensor data, each tensor at an offset aligned to general.alignment (default 32).
//
// GgufFile reads one by memory map: tensors are views into the mapped file, nothing is copied. Every count, length,
// offset and size is checked against the file size while parsing, so a truncated or corrupt file raises
// ernie::Error naming the file and what is wrong, never reads out of bounds.
//
// GgufWriter writes one streaming: metadata and the tensor index first, then each tensor's bytes in turn, so a
// converter holds only one tensor in memory.
//
// Layout (all little-endian): "GGUF", u32 version, u64 tensor count, u64 metadata count; each metadata entry is a
// string key, u32 value type, value; each tensor entry is a string name, u32 n_dims, u64 ne[n_dims] (ne[0] the
// fastest-varying dimension, i.e. the reverse of a row-major shape), u32 ggml type, u64 offset into the data block.
// Strings are a u64 length and bytes; arrays a u32 element type, u64 count and elements.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/dtype.h"
#include "core/ggml_type.h"
#include "core/mapped_file.h"

namespace ernie {

// Metadata value types, numbered as in the file.
enum class GgufType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8, ARRAY = 9, U64 = 10, I64 = 11,
  F64 = 12,
};
std::string_view gguf_type_name(GgufType type);

struct GgufValue;
struct GgufArray {
  GgufType element_type = GgufType::U8;
  std::vector<GgufValue> items;  // all of element_type

  friend bool operator==(const GgufArray& a, const GgufArray& b);
};
// The alternatives are in GgufType's order, so index() is the type number.
using GgufVariant = std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool, std::string,
                                 GgufArray, uint64_t, int64_t, double>;
struct GgufValue : GgufVariant {
  using GgufVariant::GgufVariant;
  GgufType type() const { return static_cast<GgufType>(index()); }
};

struct GgufTensor {
  std::string name;
  GgmlType type;
  std::vector<int64_t> ne;  // GGUF order: ne[0] is the row length (columns)
  const uint8_t* data;      // into the mapped file; aligned to the file's alignment relative to the data block
  size_t nbytes;

  // The row-major shape ([rows, cols] for a matrix): ne reversed.
  std::vector<int64_t> shape() const { return {ne.rbegin(), ne.rend()}; }
  int64_t element_count() const;
};

class GgufFile {
 public:
  // Maps and parses `path`; raises ernie::Error naming the file on anything malformed.
  static GgufFile open(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return file_->path(); }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }

  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const GgufValue* find(const std::string& key) const;
  // Typed look-ups that raise ernie::Error naming the file and key when the value has another type. The integer
  // ones accept any integer type whose value fits.
  std::optional<int64_t> get_int(const std::string& key) const;
  std::optional<double> get_float(const std::string& key) const;  // F32 or F64
  std::optional<bool> get_bool(const std::string& key) const;
  std::optional<std::string> get_string(const std::string& key) const;
  const GgufArray* get_array(const std::string& key, GgufType element_type) const;

  const std::vector<GgufTensor>& tensors() const { return tensors_; }  // in file order
  const GgufTensor* find_tensor(const std::string& name) const;

 private:
  void parse();

  std::unique_ptr<MappedFile> file_;  // stable address for views and paths
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// True when the file at `path` starts with the GGUF magic: the one test that decides which loader a --model path
// takes (a directory is a Hugging Face checkpoint).
bool is_gguf_file(const std::filesystem::path& path);

// Writes a GGUF v3 file in three steps: set metadata and declare every tensor (name, type, shape), then call
// write_tensor once per declared tensor in declaration order, then finish(). The header goes out with the first
// tensor (or at finish); each tensor's bytes go straight to the file. Raises ernie::Error on a write failure, a
// tensor written out of order or with the wrong size, or a shape whose row is not whole blocks of its type.
class GgufWriter {
 public:
  explicit GgufWriter(const std::filesystem::path& path, uint32_t alignment = 32);

  void set(const std::string& key, GgufValue value);  // general.alignment is written by the writer itself
  // `shape` is row-major ([rows, cols]); it is stored reversed, as GGUF wants.
  void declare_tensor(const std::string& name, GgmlType type, const std::vector<int64_t>& shape);
  void write_tensor(std::span<const uint8_t> bytes);
  void finish();

 private:
  struct Declared {
    std::string name;
    GgmlType type;
    std::vector<int64_t> ne;
    uint64_t offset;
    uint64_t nbytes;
  };
  void write_header();
  void pad_to_alignment();

  std::filesystem::path path_;
  std::ofstream out_;
  uint32_t alignment_;
  std::map<std::string, GgufValue> metadata_;
  std::vector<std::string> metadata_order_;  // keys in the order they were first set
  std::vector<Declared> tensors_;
  uint64_t data_bytes_ = 0;
  size_t next_tensor_ = 0;
  bool header_written_ = false;
};

}  // namespace ernie
