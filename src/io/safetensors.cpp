#include "io/safetensors.h"

#include <fstream>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/error.h"

namespace ernie {
namespace {

using nlohmann::json;

// A header larger than this is not a real checkpoint (the 0.3B model's is ~30 KB); refusing it early keeps a
// corrupt length field from making us parse gigabytes.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::vector<int64_t> parse_shape(const json& entry, const std::string& where) {
  const auto it = entry.find("shape");
  if (it == entry.end() || !it->is_array()) fail(where, ": missing or non-array \"shape\"");
  std::vector<int64_t> shape;
  for (const auto& dim : *it) {
    if (!dim.is_number_integer() || dim.get<int64_t>() < 0) fail(where, ": shape has a non-integer or negative dim");
    shape.push_back(dim.get<int64_t>());
  }
  return shape;
}

}  // namespace

int64_t TensorView::element_count() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorView::shape_string() const {
  std::ostringstream s;
  s << '[';
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << ']';
  return s.str();
}

SafetensorsArchive SafetensorsArchive::open(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  SafetensorsArchive archive;
  if (!fs::is_directory(path)) {
    archive.add_file(path);
    return archive;
  }
  const fs::path single = path / "model.safetensors";
  const fs::path index = path / "model.safetensors.index.json";
  if (fs::exists(single)) {
    archive.add_file(single);
    return archive;
  }
  if (!fs::exists(index)) fail(path.string(), ": no model.safetensors or model.safetensors.index.json");

  std::ifstream in(index);
  json index_json = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (index_json.is_discarded() || !index_json.is_object()) fail(index.string(), ": not valid JSON");
  const auto map_it = index_json.find("weight_map");
  if (map_it == index_json.end() || !map_it->is_object()) fail(index.string(), ": missing \"weight_map\" object");

  std::set<std::string> shard_names;
  for (const auto& [tensor, shard] : map_it->items()) {
    if (!shard.is_string()) fail(index.string(), ": tensor ", tensor, ": shard name is not a string");
    const std::string name = shard.get<std::string>();
    // Shards must sit beside the index: a path that leaves the directory is refused, not followed.
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") {
      fail(index.string(), ": tensor ", tensor, ": invalid shard file name \"", name, "\"");
    }
    shard_names.insert(name);
  }
  for (const auto& name : shard_names) archive.add_file(path / name);

  for (const auto& [tensor, shard] : map_it->items()) {
    const TensorView* view = archive.find(tensor);
    if (!view) fail(index.string(), ": tensor ", tensor, " is listed for ", shard.get<std::string>(), " but not in it");
    if (view->file->filename() != shard.get<std::string>()) {
      fail(index.string(), ": tensor ", tensor, " is listed for ", shard.get<std::string>(), " but found in ",
           view->file->filename().string());
    }
  }
  // A shard may not hold more than the index says either: a tensor the index does not list means the shards and
  // the index come from different exports (a stale shard), whichever of its copies would win.
  for (const auto& [tensor, view] : archive.tensors_) {
    if (!map_it->contains(tensor)) {
      fail(index.string(), ": ", view.file->filename().string(), " holds tensor ", tensor,
           ", which the index does not list");
    }
  }
  return archive;
}

void SafetensorsArchive::add_file(const std::filesystem::path& file) {
  files_.push_back(std::make_unique<MappedFile>(MappedFile::open(file)));
  const MappedFile& mapped = *files_.back();
  const std::string fname = file.string();
  const auto bytes = mapped.bytes();

  if (bytes.size() < 8) fail(fname, ": truncated: ", bytes.size(), " bytes, too short for a safetensors header");
  const uint64_t header_len = read_u64_le(bytes.data());
  if (header_len > kMaxHeaderBytes || header_len > bytes.size() - 8) {
    fail(fname, ": header length ", header_len, " exceeds the file size (", bytes.size(),
         " bytes): truncated or not a safetensors file");
  }
  const auto* header_begin = reinterpret_cast<const char*>(bytes.data() + 8);
  json header = json::parse(header_begin, header_begin + header_len, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) fail(fname, ": header is not a valid JSON object");

  const uint8_t* data_block = bytes.data() + 8 + header_len;
  const uint64_t data_size = bytes.size() - 8 - header_len;

  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    const std::string where = fname + ": tensor " + name;
    if (!entry.is_object()) fail(where, ": entry is not an object");
    const auto dtype_it = entry.find("dtype");
    if (dtype_it == entry.end() || !dtype_it->is_string()) fail(where, ": missing \"dtype\"");
    const auto dtype = parse_dtype(dtype_it->get<std::string>());
    if (!dtype) fail(where, ": unsupported dtype ", dtype_it->get<std::string>(), " (supported: F32, BF16, F16)");
    std::vector<int64_t> shape = parse_shape(entry, where);

    const auto off_it = entry.find("data_offsets");
    if (off_it == entry.end() || !off_it->is_array() || off_it->size() != 2 || !(*off_it)[0].is_number_unsigned() ||
        !(*off_it)[1].is_number_unsigned()) {
      fail(where, ": \"data_offsets\" must be two non-negative integers");
    }
    const uint64_t begin = (*off_it)[0].get<uint64_t>();
    const uint64_t end = (*off_it)[1].get<uint64_t>();
    if (begin > end) fail(where, ": data offsets [", begin, ", ", end, ") are reversed");
    if (end > data_size) {
      fail(where, ": data offsets [", begin, ", ", end, ") lie outside the data block of ", data_size,
           " bytes (file truncated?)");
    }
    uint64_t expected = dtype_block_bytes(*dtype);
    for (int64_t d : shape) {
      if (d != 0 && expected > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(d)) {
        fail(where, ": shape is too large");
      }
      expected *= static_cast<uint64_t>(d);
    }
    if (end - begin != expected) {
      fail(where, ": holds ", end - begin, " bytes but dtype and shape need ", expected);
    }
    if (tensors_.count(name)) fail(where, ": tensor appears in more than one file");
    tensors_.emplace(name, TensorView{name, *dtype, std::move(shape), data_block + begin, end - begin, &mapped.path()});
  }
}

const TensorView* SafetensorsArchive::find(const std::string& name) const {
  const auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

size_t SafetensorsArchive::mapped_bytes() const {
  size_t total = 0;
  for (const auto& f : files_) total += f->bytes().size();
  return total;
}

std::vector<std::filesystem::path> SafetensorsArchive::files() const {
  std::vector<std::filesystem::path> paths;
  for (const auto& f : files_) paths.push_back(f->path());
  return paths;
}

void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    int64_t count = 1;
    for (int64_t d : t.shape) count *= d;
    const uint64_t bytes = dtype_row_bytes(t.dtype, count);
    header[t.name] = {
        {"dtype", std::string(dtype_name(t.dtype))}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data block 8-byte aligned, as the reference writer does
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail(path.string(), ": cannot create file");
  const uint64_t header_size = text.size();
  out.write(reinterpret_cast<const char*>(&header_size), 8);  // little-endian on every supported target
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  std::vector<uint8_t> buffer;
  for (const TensorToWrite& t : tensors) {
    int64_t count = 1;
    for (int64_t d : t.shape) count *= d;
    buffer.resize(dtype_row_bytes(t.dtype, count));
    t.fill(buffer.data());
    out.write(reinterpret_cast<const char*>(buffer.data()), static_cast<std::streamsize>(buffer.size()));
  }
  out.close();
  if (!out) fail(path.string(), ": write failed (disk full?)");
}

}  // namespace ernie
