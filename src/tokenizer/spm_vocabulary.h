// A SentencePiece vocabulary in the form llama.cpp's GGUF files keep it (tokenizer.ggml.model = "llama"), and the
// conversions to and from it: the serialized sentencepiece ModelProto that Tokenizer loads, and GGUF metadata.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "io/gguf.h"

namespace ernie {

// sentencepiece's ModelProto.SentencePiece.Type, which GGUF's tokenizer.ggml.token_type reuses number for number.
enum class PieceType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

struct SpmVocabulary {
  std::vector<std::string> tokens;  // by id
  std::vector<float> scores;
  std::vector<PieceType> types;
  // Named special tokens by their transformers attribute ("bos_token", "eos_token", "unk_token", "pad_token",
  // "cls_token", "sep_token", "mask_token") -> id.
  std::map<std::string, int32_t> special_ids;
  bool add_bos = false;
  bool add_eos = false;
  bool add_space_prefix = false;  // sentencepiece's add_dummy_prefix
  bool remove_extra_whitespaces = false;
  std::string precompiled_charsmap;  // the normalizer's rules; empty = identity
  std::string chat_template;
};

// The type of every piece of a serialized sentencepiece ModelProto, by id. Raises ernie::Error on malformed bytes.
std::vector<PieceType> read_spm_piece_types(const std::string& serialized);

// A sentencepiece BPE model (byte fallback when the vocabulary has byte pieces) with exactly these pieces, scores and
// types and the normalizer the flags describe, serialized as the protobuf that LoadFromSerializedProto reads.
std::string serialize_spm_model(const SpmVocabulary& vocabulary);

// Reads tokenizer.ggml.* and tokenizer.chat_template. Raises ernie::Error naming the file when the tokenizer model is
// not "llama" (SentencePiece), the arrays are missing, mistyped or of different lengths. Trailing "[PAD<id>]" unused
// entries, which converters add to reach the embedding's row count, are dropped.
SpmVocabulary read_gguf_vocabulary(const GgufFile& file);
// Writes the vocabulary as llama.cpp's converter does, padded with "[PAD<id>]" unused entries to `n_vocab`.
void write_gguf_vocabulary(GgufWriter& writer, const SpmVocabulary& vocabulary, int n_vocab);

// For a checkpoint without a tokenizer: <unk>, <s>, </s>, the 256 byte pieces <0x00>..<0xFF> that llama.cpp's SPM
// tokenizer falls back to, then filler pieces up to n_vocab. Enough for llama.cpp to load and run the file; it
// tokenizes text only into bytes.
SpmVocabulary placeholder_vocabulary(int n_vocab);

}  // namespace ernie
