// ERNIE-4.5 dense in GGUF, as llama.cpp names it (arch "ernie4_5", see its convert_hf_to_gguf.py and
// llama-arch.cpp): tensor names, hyper-parameter keys, and our own sampling defaults. Both directions live here so
// that the loader and `ernie quantize` cannot drift apart.
//
// llama.cpp's converter stores ERNIE's tensors untransformed (no Q/K permutation: ERNIE's RoPE already rotates
// adjacent pairs, llama.cpp's "NORM" rope), so a GGUF matrix is the Hugging Face matrix with its shape reversed.
#pragma once

#include <string>

#include "io/gguf.h"
#include "model/config.h"

namespace ernie {

inline constexpr const char* kGgufArchitecture = "ernie4_5";

// "model.layers.3.self_attn.q_proj.weight" -> "blk.3.attn_q.weight", "model.embed_tokens.weight" ->
// "token_embd.weight", ...; names outside the ERNIE layout are returned unchanged.
std::string gguf_tensor_name(const std::string& hf_name);

// Reads the hyper-parameters (ernie4_5.* keys, tokenizer ids; tied embeddings = no output.weight; biases = present
// bias tensors) and checks them as config.json is checked. A file of another architecture, or with a key missing or
// mistyped, raises ernie::Error naming the file and key.
ModelConfig config_from_gguf(const GgufFile& file);
// Our sampling defaults (ernie.generation.*); a foreign file has none, so the engine's defaults apply.
GenerationDefaults generation_defaults_from_gguf(const GgufFile& file);

// Writes general.architecture and the ernie4_5.* hyper-parameters with the key types llama.cpp requires (u32
// counts, f32 reals), and the sampling defaults under ernie.generation.*.
void write_gguf_config(GgufWriter& writer, const ModelConfig& config);
void write_gguf_generation_defaults(GgufWriter& writer, const GenerationDefaults& defaults);

}  // namespace ernie
