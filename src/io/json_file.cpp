#include "io/json_file.h"

#include <fstream>

#include "core/error.h"

namespace ernie {

nlohmann::json read_json_object(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) fail(path.string(), ": cannot open");
  nlohmann::json doc = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) fail(path.string(), ": not a valid JSON object");
  return doc;
}

}  // namespace ernie
