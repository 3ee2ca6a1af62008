#include "engine/lora_registry.h"

#include <cmath>

#include "core/error.h"

namespace ernie {

namespace {

void check_name(const std::string& name, const std::string& reserved) {
  if (name.empty() || name.size() > 128) fail("an adapter name must be 1 to 128 characters");
  for (unsigned char c : name) {
    if (c <= ' ' || c >= 127) fail("the adapter name \"", name, "\" may hold only printable ASCII without spaces");
  }
  if (name == reserved) fail("the adapter name \"", name, "\" is the base model's");
}

}  // namespace

void LoraRegistry::load(const std::string& name, const std::filesystem::path& dir, float scale,
                        const std::string& reserved) {
  check_name(name, reserved);
  if (find(name)) fail("an adapter named \"", name, "\" is already loaded");
  // Outside the lock: reading the files may take a while, and requests keep finding the other adapters meanwhile.
  add(Entry{name, LoraAdapter::load(dir, config_), scale}, reserved);
}

void LoraRegistry::add(Entry entry, const std::string& reserved) {
  check_name(entry.name, reserved);
  if (!std::isfinite(entry.scale)) fail("the adapter's scale must be a finite number");
  if (entry.adapter->layers() != config_.num_hidden_layers)
    fail(entry.adapter->path().string(), ": the adapter is for a model of ", entry.adapter->layers(), " layers");
  if (entry.adapter->max_rank() > max_rank_)
    fail(entry.adapter->path().string(), ": rank ", entry.adapter->max_rank(),
         " is over this server's --max-lora-rank ", max_rank_);
  std::lock_guard lock(mutex_);
  const std::string name = entry.name;
  if (!adapters_.emplace(name, std::move(entry)).second) fail("an adapter named \"", name, "\" is already loaded");
}

bool LoraRegistry::unload(const std::string& name) {
  std::lock_guard lock(mutex_);
  return adapters_.erase(name) > 0;
}

std::optional<LoraRegistry::Entry> LoraRegistry::find(const std::string& name) const {
  std::lock_guard lock(mutex_);
  const auto it = adapters_.find(name);
  if (it == adapters_.end()) return std::nullopt;
  return it->second;
}

std::vector<LoraRegistry::Entry> LoraRegistry::list() const {
  std::lock_guard lock(mutex_);
  std::vector<Entry> out;
  for (const auto& [name, entry] : adapters_) out.push_back(entry);
  return out;
}

}  // namespace ernie
