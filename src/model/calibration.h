// Activation statistics for calibrated quantization (ernie calibrate, ernie quantize --calibration). For the input
// of every weight matrix, per input channel: the sum of squares over the calibration tokens (llama.cpp's
// "importance matrix": a column's rounding error costs in proportion to the energy of the input it multiplies) and
// the largest magnitude seen (what a static int8 activation scale must cover).
//
// Stored as llama.cpp's imatrix GGUF (general.type "imatrix"; "<tensor>.in_sum2" [width] and "<tensor>.counts" [1]
// under the GGUF tensor names; imatrix.datasets, imatrix.chunk_count, imatrix.chunk_size), so that llama-quantize
// --imatrix reads our files and we read its. Ours add "<tensor>.in_max" [width], which llama.cpp's reader skips.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/model.h"

namespace ernie {

struct ChannelStats {
  std::vector<double> sum_squares;  // [width]
  std::vector<float> max_abs;       // [width]; empty when the file had none (llama.cpp's)
  int64_t rows = 0;                 // token rows added

  // sum_squares / rows, the mean squared activation of each channel (the weights of the quantization objective).
  std::vector<float> mean_squares() const;
};

class ActivationStats {
 public:
  // Empty statistics for every matrix of a model of this config.
  explicit ActivationStats(const ModelConfig& config);

  // Adds one pass's rows of one matrix input, [rows.size() / width, width]: the Workspace observer's signature.
  void add(int layer, ActivationSite site, std::span<const float> rows, int width);
  // An observer that adds to these statistics (which must outlive the workspace it is attached to).
  ActivationObserver observer();

  // The statistics of the input of the weight matrix of this Hugging Face name ("model.layers.0.mlp.down_proj.weight";
  // the LM head is "lm_head.weight", or "model.embed_tokens.weight" when the embedding is tied to it), or null for
  // a tensor that multiplies no activations (an untied embedding, a norm) or that no row reached.
  const ChannelStats* of(const std::string& matrix) const;
  // Token rows the statistics cover (those of the first layer's attention input).
  int64_t tokens() const;

  // Where the statistics came from, stored in the file as llama-imatrix stores it.
  struct Provenance {
    std::vector<std::string> datasets;  // calibration text files
    uint32_t chunks = 0;                // passes of up to chunk_size tokens
    uint32_t chunk_size = 0;
    std::string file;  // the statistics file, once loaded
  };
  Provenance& provenance() { return provenance_; }
  const Provenance& provenance() const { return provenance_; }
  // Matrices that have statistics (every one but, in llama.cpp's files, the LM head).
  int matrices_with_stats() const;

  void save(const std::filesystem::path& path) const;
  // Reads our file or llama.cpp's (GGUF imatrix). Every matrix of the config's layers must be there with its input's
  // width and a positive count, the LM head's may be missing (llama-imatrix records it only when asked); anything
  // else raises ernie::Error naming the file and tensor.
  static ActivationStats load(const std::filesystem::path& path, const ModelConfig& config);

 private:
  struct Matrix {
    std::string name;  // Hugging Face name
    int layer;         // -1: the LM head
    ActivationSite site;
    ChannelStats stats;
  };
  std::vector<Matrix> matrices_;  // by layer and projection, then the LM head
  Provenance provenance_;
};

}  // namespace ernie
