// Reading a small JSON configuration file (config.json, adapter_config.json, ...).
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>

namespace ernie {

// The file's top-level JSON object. A missing file, invalid JSON or a non-object raises ernie::Error naming the file.
nlohmann::json read_json_object(const std::filesystem::path& path);

}  // namespace ernie
