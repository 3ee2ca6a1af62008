// Fuzzes the safetensors reader on one .safetensors file: the input is the whole file. Opening must either
// succeed, with every tensor view inside the mapped file and of the byte size its dtype and shape need, or raise
// ernie::Error.
#include <exception>

#include "core/error.h"
#include "fuzz_support.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ernie;
  const auto file = fuzz::scratch_dir() / "model.safetensors";
  fuzz::write_file(file, {reinterpret_cast<const char*>(data), size});
  try {
    const SafetensorsArchive archive = SafetensorsArchive::open(file);
    size_t mapped = archive.mapped_bytes();
    for (const auto& [name, view] : archive.tensors()) {
      if (view.name != name || view.nbytes > mapped) fuzz::violation("tensor view out of range", name);
      if (dtype_row_bytes(view.dtype, view.element_count()) != view.nbytes) {
        fuzz::violation("tensor byte size disagrees with dtype and shape", name);
      }
      // Touching the first and last byte lets ASan see a view that leaves the mapping.
      if (view.nbytes > 0) {
        volatile uint8_t sink = view.data[0] ^ view.data[view.nbytes - 1];
        (void)sink;
      }
      (void)view.shape_string();
    }
  } catch (const Error&) {
  } catch (const std::exception& e) {
    fuzz::violation("exception other than ernie::Error", e.what());
  }
  return 0;
}
