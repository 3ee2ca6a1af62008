#include "io/gguf.h"

#include <cstring>
#include <limits>

#include "core/error.h"

namespace ernie {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint32_t kVersion = 3;
constexpr uint32_t kMaxDims = 4;  // GGML_MAX_DIMS
constexpr int kMaxArrayNesting = 8;

// Reads the header and metadata sequentially, every read checked against what is left of the file.
class Cursor {
 public:
  Cursor(std::span<const uint8_t> bytes, std::string file) : bytes_(bytes), file_(std::move(file)) {}

  template <class T>
  T read(const char* what) {
    need(sizeof(T), what);
    T value;
    std::memcpy(&value, bytes_.data() + pos_, sizeof(T));  // the file is little-endian, as every supported target
    pos_ += sizeof(T);
    return value;
  }
  std::string read_string(const char* what) {
    const uint64_t length = read<uint64_t>(what);
    need(length, what);
    std::string s(reinterpret_cast<const char*>(bytes_.data() + pos_), length);
    pos_ += length;
    return s;
  }
  // Raises unless `n` more bytes exist: a count or length that runs past the end means truncation or corruption.
  void need(uint64_t n, const char* what) const {
    if (n > bytes_.size() - pos_) {
      fail(file_, ": truncated or corrupt: ", what, " at byte ", pos_, " needs ", n, " bytes but the file has ",
           bytes_.size() - pos_, " left");
    }
  }
  size_t position() const { return pos_; }
  const std::string& file() const { return file_; }

 private:
  std::span<const uint8_t> bytes_;
  std::string file_;
  size_t pos_ = 0;
};

// Smallest encoded size of one value of this type: checking count * this against the bytes left keeps a corrupt
// array count from allocating gigabytes before the truncation is noticed.
uint64_t min_encoded_bytes(GgufType t) {
  switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::BOOL: return 1;
    case GgufType::U16: case GgufType::I16: return 2;
    case GgufType::U32: case GgufType::I32: case GgufType::F32: return 4;
    case GgufType::U64: case GgufType::I64: case GgufType::F64: case GgufType::STRING: return 8;
    case GgufType::ARRAY: return 12;
  }
  return 1;
}

GgufValue read_value(Cursor& in, uint32_t type_number, const std::string& key, int depth) {
  if (type_number > static_cast<uint32_t>(GgufType::F64)) {
    fail(in.file(), ": metadata \"", key, "\" has unknown value type ", type_number);
  }
  switch (static_cast<GgufType>(type_number)) {
    case GgufType::U8: return in.read<uint8_t>("a u8 value");
    case GgufType::I8: return in.read<int8_t>("an i8 value");
    case GgufType::U16: return in.read<uint16_t>("a u16 value");
    case GgufType::I16: return in.read<int16_t>("an i16 value");
    case GgufType::U32: return in.read<uint32_t>("a u32 value");
    case GgufType::I32: return in.read<int32_t>("an i32 value");
    case GgufType::F32: return in.read<float>("an f32 value");
    case GgufType::BOOL: {
      const uint8_t b = in.read<uint8_t>("a bool value");
      if (b > 1) fail(in.file(), ": metadata \"", key, "\": bool value ", int{b}, " is neither 0 nor 1");
      return b == 1;
    }
    case GgufType::STRING: return in.read_string("a string value");
    case GgufType::U64: return in.read<uint64_t>("a u64 value");
    case GgufType::I64: return in.read<int64_t>("an i64 value");
    case GgufType::F64: return in.read<double>("an f64 value");
    case GgufType::ARRAY: {
      if (depth >= kMaxArrayNesting) fail(in.file(), ": metadata \"", key, "\": arrays nested too deeply");
      GgufArray array;
      const uint32_t element = in.read<uint32_t>("an array element type");
      if (element > static_cast<uint32_t>(GgufType::F64)) {
        fail(in.file(), ": metadata \"", key, "\" is an array of unknown value type ", element);
      }
      array.element_type = static_cast<GgufType>(element);
      const uint64_t count = in.read<uint64_t>("an array length");
      if (count > std::numeric_limits<uint64_t>::max() / 16) fail(in.file(), ": metadata \"", key, "\": absurd length");
      in.need(count * min_encoded_bytes(array.element_type), "the array's elements");
      array.items.reserve(count);
      for (uint64_t i = 0; i < count; ++i) array.items.push_back(read_value(in, element, key, depth + 1));
      return array;
    }
  }
  return uint8_t{0};  // unreachable: every type number was checked above
}

uint64_t checked_element_count(const std::vector<int64_t>& ne, const std::string& where) {
  uint64_t n = 1;
  for (int64_t d : ne) {
    if (d < 0) fail(where, ": negative dimension ", d);
    if (d != 0 && n > std::numeric_limits<uint64_t>::max() / 1024 / static_cast<uint64_t>(d)) {
      fail(where, ": dimensions too large");
    }
    n *= static_cast<uint64_t>(d);
  }
  return n;
}

template <class T>
void put(std::ofstream& out, T value) {
  out.write(reinterpret_cast<const char*>(&value), sizeof value);
}
void put_string(std::ofstream& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out.write(s.data(), static_cast<std::streamsize>(s.size()));
}

void put_value(std::ofstream& out, const GgufValue& value) {
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) {
          put_string(out, v);
        } else if constexpr (std::is_same_v<T, GgufArray>) {
          put<uint32_t>(out, static_cast<uint32_t>(v.element_type));
          put<uint64_t>(out, v.items.size());
          for (const GgufValue& item : v.items) put_value(out, item);
        } else if constexpr (std::is_same_v<T, bool>) {
          put<uint8_t>(out, v ? 1 : 0);
        } else {
          put<T>(out, v);
        }
      },
      static_cast<const GgufVariant&>(value));
}

}  // namespace

std::string_view gguf_type_name(GgufType type) {
  static constexpr std::string_view kNames[] = {"u8",     "i8",    "u16",   "i16", "u32", "i32", "f32",
                                                "bool",   "string", "array", "u64", "i64", "f64"};
  const auto i = static_cast<uint32_t>(type);
  return i < std::size(kNames) ? kNames[i] : "?";
}

bool operator==(const GgufArray& a, const GgufArray& b) {
  return a.element_type == b.element_type && a.items == b.items;
}

int64_t GgufTensor::element_count() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

GgufFile GgufFile::open(const std::filesystem::path& path) {
  GgufFile file;
  file.file_ = std::make_unique<MappedFile>(MappedFile::open(path));
  file.parse();
  return file;
}

void GgufFile::parse() {
  const std::string fname = path().string();
  const auto bytes = file_->bytes();
  Cursor in(bytes, fname);
  if (bytes.size() < 4 || in.read<uint32_t>("the magic") != kMagic) fail(fname, ": not a GGUF file (bad magic)");
  version_ = in.read<uint32_t>("the version");
  // Version 2 differs from 3 only in allowing big-endian files, which would fail the magic check above.
  if (version_ != 2 && version_ != kVersion) fail(fname, ": unsupported GGUF version ", version_, " (supported: 2, 3)");
  const uint64_t n_tensors = in.read<uint64_t>("the tensor count");
  const uint64_t n_metadata = in.read<uint64_t>("the metadata count");
  // Each entry takes at least its key length, a type and one byte; each tensor at least 8+4+4+8 bytes.
  in.need(n_metadata > bytes.size() ? bytes.size() + 1 : n_metadata * 13, "the metadata entries");

  for (uint64_t i = 0; i < n_metadata; ++i) {
    std::string key = in.read_string("a metadata key");
    const uint32_t type = in.read<uint32_t>("a metadata value type");
    GgufValue value = read_value(in, type, key, 0);
    if (metadata_.count(key)) fail(fname, ": metadata key \"", key, "\" appears twice");
    metadata_.emplace(std::move(key), std::move(value));
  }
  if (const GgufValue* a = find("general.alignment")) {
    const auto* v = std::get_if<uint32_t>(a);
    if (!v || *v == 0 || (*v & (*v - 1)) != 0) {
      fail(fname, ": general.alignment must be a u32 power of two");
    }
    alignment_ = *v;
  }

  in.need(n_tensors > bytes.size() ? bytes.size() + 1 : n_tensors * 24, "the tensor index");
  std::vector<uint64_t> offsets;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    std::string name = in.read_string("a tensor name");
    const std::string where = fname + ": tensor " + name;
    const uint32_t n_dims = in.read<uint32_t>("a tensor's dimension count");
    if (n_dims == 0 || n_dims > kMaxDims) fail(where, ": ", n_dims, " dimensions (supported: 1 to ", kMaxDims, ")");
    std::vector<int64_t> ne(n_dims);
    for (auto& d : ne) d = static_cast<int64_t>(in.read<uint64_t>("a tensor dimension"));
    const uint32_t type = in.read<uint32_t>("a tensor type");
    const auto traits = ggml_type_traits(type);
    if (!traits) fail(where, ": unsupported ggml type ", type);
    const uint64_t elements = checked_element_count(ne, where);
    if (ne[0] % traits->block_elements != 0) {
      fail(where, ": row length ", ne[0], " is not a multiple of ", traits->name, "'s block of ",
           traits->block_elements);
    }
    offsets.push_back(in.read<uint64_t>("a tensor offset"));
    if (tensor_index_.count(name)) fail(where, ": tensor appears twice");
    tensor_index_.emplace(name, tensors_.size());
    tensors_.push_back(GgufTensor{std::move(name), static_cast<GgmlType>(type), std::move(ne), nullptr,
                                  elements / traits->block_elements * traits->block_bytes});
  }

  const uint64_t data_start = (in.position() + alignment_ - 1) / alignment_ * alignment_;
  if (data_start > bytes.size() && !tensors_.empty()) {
    fail(fname, ": truncated: the tensor data block would start at byte ", data_start, " past the end of the file (",
         bytes.size(), " bytes)");
  }
  for (size_t i = 0; i < tensors_.size(); ++i) {
    GgufTensor& t = tensors_[i];
    const uint64_t offset = offsets[i];
    if (offset % alignment_ != 0) {
      fail(fname, ": tensor ", t.name, ": data offset ", offset, " is not a multiple of the alignment ", alignment_);
    }
    if (offset > bytes.size() - data_start || t.nbytes > bytes.size() - data_start - offset) {
      fail(fname, ": tensor ", t.name, ": data [", data_start + offset, ", ", data_start + offset + t.nbytes,
           ") runs past the end of the file (", bytes.size(), " bytes): truncated?");
    }
    t.data = bytes.data() + data_start + offset;
  }
}

const GgufValue* GgufFile::find(const std::string& key) const {
  const auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

std::optional<int64_t> GgufFile::get_int(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  return std::visit(
      [&](const auto& x) -> int64_t {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
          if constexpr (std::is_same_v<T, uint64_t>) {
            if (x > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
              fail(path().string(), ": metadata \"", key, "\" is out of range");
            }
          }
          return static_cast<int64_t>(x);
        } else {
          fail(path().string(), ": metadata \"", key, "\" is a ", gguf_type_name(v->type()), ", expected an integer");
        }
      },
      static_cast<const GgufVariant&>(*v));
}

std::optional<double> GgufFile::get_float(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (const auto* f = std::get_if<float>(v)) return *f;
  if (const auto* d = std::get_if<double>(v)) return *d;
  fail(path().string(), ": metadata \"", key, "\" is a ", gguf_type_name(v->type()), ", expected a float");
}

std::optional<bool> GgufFile::get_bool(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (const auto* b = std::get_if<bool>(v)) return *b;
  fail(path().string(), ": metadata \"", key, "\" is a ", gguf_type_name(v->type()), ", expected a bool");
}

std::optional<std::string> GgufFile::get_string(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (const auto* s = std::get_if<std::string>(v)) return *s;
  fail(path().string(), ": metadata \"", key, "\" is a ", gguf_type_name(v->type()), ", expected a string");
}

const GgufArray* GgufFile::get_array(const std::string& key, GgufType element_type) const {
  const GgufValue* v = find(key);
  if (!v) return nullptr;
  const auto* a = std::get_if<GgufArray>(v);
  if (!a || a->element_type != element_type) {
    fail(path().string(), ": metadata \"", key, "\" must be an array of ", gguf_type_name(element_type));
  }
  return a;
}

const GgufTensor* GgufFile::find_tensor(const std::string& name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

bool is_gguf_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

// ---- GgufWriter --------------------------------------------------------------------------------------------------

GgufWriter::GgufWriter(const std::filesystem::path& path, uint32_t alignment)
    : path_(path), out_(path, std::ios::binary | std::ios::trunc), alignment_(alignment) {
  if (!out_) fail(path.string(), ": cannot create file");
  if (alignment == 0 || (alignment & (alignment - 1)) != 0) fail("GGUF alignment must be a power of two");
  if (alignment != 32) set("general.alignment", alignment);
}

void GgufWriter::set(const std::string& key, GgufValue value) {
  if (header_written_) fail(path_.string(), ": metadata \"", key, "\" set after tensor data was written");
  if (!metadata_.count(key)) metadata_order_.push_back(key);
  metadata_[key] = std::move(value);
}

void GgufWriter::declare_tensor(const std::string& name, GgmlType type, const std::vector<int64_t>& shape) {
  if (header_written_) fail(path_.string(), ": tensor ", name, " declared after tensor data was written");
  const GgmlTypeTraits traits = ggml_type_traits(type);
  std::vector<int64_t> ne(shape.rbegin(), shape.rend());
  const uint64_t elements = checked_element_count(ne, path_.string() + ": tensor " + name);
  if (ne.empty() || ne[0] % traits.block_elements != 0) {
    fail(path_.string(), ": tensor ", name, ": rows of ", ne.empty() ? 0 : ne[0], " elements cannot be stored as ",
         traits.name);
  }
  const uint64_t nbytes = elements / traits.block_elements * traits.block_bytes;
  tensors_.push_back(Declared{name, type, std::move(ne), data_bytes_, nbytes});
  data_bytes_ += (nbytes + alignment_ - 1) / alignment_ * alignment_;
}

void GgufWriter::pad_to_alignment() {
  static const char kZeros[256] = {};
  const auto position = static_cast<uint64_t>(out_.tellp());
  out_.write(kZeros, static_cast<std::streamsize>((alignment_ - position % alignment_) % alignment_));
}

void GgufWriter::write_header() {
  put<uint32_t>(out_, kMagic);
  put<uint32_t>(out_, kVersion);
  put<uint64_t>(out_, tensors_.size());
  put<uint64_t>(out_, metadata_.size());
  for (const std::string& key : metadata_order_) {
    const GgufValue& value = metadata_.at(key);
    put_string(out_, key);
    put<uint32_t>(out_, static_cast<uint32_t>(value.type()));
    put_value(out_, value);
  }
  for (const Declared& t : tensors_) {
    put_string(out_, t.name);
    put<uint32_t>(out_, static_cast<uint32_t>(t.ne.size()));
    for (int64_t d : t.ne) put<uint64_t>(out_, static_cast<uint64_t>(d));
    put<uint32_t>(out_, static_cast<uint32_t>(t.type));
    put<uint64_t>(out_, t.offset);
  }
  pad_to_alignment();
  header_written_ = true;
}

void GgufWriter::write_tensor(std::span<const uint8_t> bytes) {
  if (!header_written_) write_header();
  if (next_tensor_ >= tensors_.size()) fail(path_.string(), ": more tensors written than declared");
  const Declared& t = tensors_[next_tensor_++];
  if (bytes.size() != t.nbytes) {
    fail(path_.string(), ": tensor ", t.name, " written with ", bytes.size(), " bytes, declared ", t.nbytes);
  }
  out_.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  pad_to_alignment();
  if (!out_) fail(path_.string(), ": write failed (disk full?)");
}

void GgufWriter::finish() {
  if (!header_written_) write_header();
  if (next_tensor_ != tensors_.size()) {
    fail(path_.string(), ": ", tensors_.size() - next_tensor_, " declared tensors were never written");
  }
  out_.close();
  if (!out_) fail(path_.string(), ": write failed (disk full?)");
}

}  // namespace ernie
