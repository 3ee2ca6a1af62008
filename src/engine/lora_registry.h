// The LoRA adapters a server offers by name (`ernie serve --lora NAME=DIR`, POST /v1/load_lora_adapter): a
// thread-safe table from name to a loaded adapter. Requests take a shared reference to the adapter they name, so
// unloading one removes the name at once but frees the adapter only when its last request ends.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/lora.h"

namespace ernie {

class LoraRegistry {
 public:
  struct Entry {
    std::string name;
    std::shared_ptr<const LoraAdapter> adapter;
    float scale = 1.0f;
  };

  // Adapters must fit a model of `config` and have no module of rank over max_rank (what the server's workspace
  // was sized for).
  LoraRegistry(ModelConfig config, int max_rank) : config_(std::move(config)), max_rank_(max_rank) {}

  // Reads and checks the adapter (LoraAdapter::load) on the calling thread, then offers it as `name`. Raises
  // ernie::Error for a bad name (empty, over 128 bytes, not printable ASCII, or `reserved`), a name already taken,
  // a rank over max_rank, or bad files.
  void load(const std::string& name, const std::filesystem::path& dir, float scale, const std::string& reserved);
  // Offers an adapter loaded already (ernie serve --lora), with the checks load() makes.
  void add(Entry entry, const std::string& reserved);
  // Stops offering `name`; false if nothing had it.
  bool unload(const std::string& name);
  std::optional<Entry> find(const std::string& name) const;
  std::vector<Entry> list() const;  // by name
  int max_rank() const { return max_rank_; }

 private:
  ModelConfig config_;
  int max_rank_;
  mutable std::mutex mutex_;
  std::map<std::string, Entry> adapters_;
};

}  // namespace ernie
