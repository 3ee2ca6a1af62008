// Text <-> token ids for a Hugging Face ERNIE-4.5 checkpoint, reproducing what transformers'
// AutoTokenizer (a TokenizersBackend built from tokenizer.model + tokenizer_config.json) produces, not what
// the bare sentencepiece library produces. The two differ in three places, all handled here:
//   * transformers splits the text on added/special tokens first (so a literal "<s>", "</s>" or "<unk>" in the
//     text becomes ids 1, 2, 0, which sentencepiece would spell out character by character);
//   * transformers decodes control/unknown pieces as their text ("<s>", "<unk>") where sentencepiece gives
//     "" and " ⁇ ";
//   * transformers turns a run of consecutive byte pieces that is not valid UTF-8 into one U+FFFD per byte of
//     the run, where sentencepiece keeps the valid characters of the run.
// Scope: SentencePiece models without a dummy prefix (add_dummy_prefix false, as ERNIE ships); added tokens'
// lstrip/rstrip are honoured, single_word is not (ERNIE sets none of them).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace ernie {

struct SpmVocabulary;
struct TokenConfig;
enum class PieceType : int32_t;

class Tokenizer {
 public:
  // Loads tokenizer.model (required) plus tokenizer_config.json, special_tokens_map.json, added_tokens.json and
  // chat_template.jinja when present. A missing or unreadable tokenizer.model, malformed JSON, or a field of
  // the wrong type raises ernie::Error naming the file.
  // A GGUF file (is_gguf_file) instead gives its tokenizer.ggml.* vocabulary, rebuilt as a SentencePiece model.
  static Tokenizer load(const std::filesystem::path& model_dir);
  // From a vocabulary as GGUF keeps it: its CONTROL pieces are special added tokens, USER_DEFINED ones added tokens,
  // as transformers treats the tokens of added_tokens_decoder. Errors name `source`.
  static Tokenizer from_vocabulary(SpmVocabulary vocabulary, const std::string& source);
  // This tokenizer's vocabulary in GGUF form; from_vocabulary(vocabulary()) tokenizes and decodes identically.
  SpmVocabulary vocabulary() const;

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Like transformers' tokenizer(text)["input_ids"]: added/special tokens written in the text become their id
  // (leftmost-longest match), the text between them goes through SentencePiece. bos is prepended when
  // add_bos (default: tokenizer_config's add_bos_token). Raises ernie::Error only if sentencepiece rejects the
  // input.
  std::vector<int32_t> encode(std::string_view text) const;
  std::vector<int32_t> encode(std::string_view text, bool add_bos) const;

  // Like transformers' decode(ids, skip_special_tokens). Special tokens render as their text unless skipped.
  // Ids the tokenizer does not know (negative, or the model's embedding padding rows past vocab_size()) render
  // as "", as transformers drops ids it cannot map. Never throws.
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  // The bytes one id stands for in decoded text: one byte for a byte-fallback piece ("<0xE4>" is "\xE4", which
  // alone is no valid UTF-8), the piece's text otherwise (special tokens as their text); "" for an unknown id.
  std::string token_bytes(int32_t id) const;

  // Resolved from the bos/eos/pad token strings of the config (falling back to the sentencepiece model's own
  // ids); -1 when the checkpoint defines none.
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t pad_id() const { return pad_id_; }

  // Number of ids the tokenizer can map: the sentencepiece pieces plus any added tokens numbered past them
  // (transformers' len(tokenizer)). The model's embedding may have more rows than this.
  int vocab_size() const { return static_cast<int>(entries_.size()); }
  bool add_bos_token() const { return add_bos_token_; }
  bool is_special(int32_t id) const;
  // Exact lookup of a piece or added token's text; nullopt when there is none.
  std::optional<int32_t> token_id(std::string_view token_text) const;
  // The raw Jinja source (chat_template.jinja, else tokenizer_config.json "chat_template"); "" if absent.
  const std::string& chat_template() const { return chat_template_; }
  // Named special tokens (bos_token, eos_token, unk_token, pad_token, cls_token, sep_token, mask_token, and
  // named extra special tokens) as strings: the variables transformers hands the chat template.
  const std::map<std::string, std::string>& special_token_strings() const { return special_token_strings_; }

 private:
  friend class StreamDecoder;

  // What one id decodes to: either one byte of a byte-fallback run, or a text fragment in text_pool_.
  struct Entry {
    uint32_t text_offset = 0;
    uint32_t text_size = 0;
    int16_t byte = -1;  // 0..255 for "<0xNN>" tokens, -1 otherwise
    bool known = false;
    bool special = false;
  };
  struct AddedToken {
    int32_t id;
    bool lstrip;
    bool rstrip;
  };

  Tokenizer();
  static Tokenizer assemble(std::unique_ptr<sentencepiece::SentencePieceProcessor> sp,
                            std::vector<PieceType> piece_types, TokenConfig config);
  std::string_view text_of(const Entry& entry) const {
    return std::string_view(text_pool_).substr(entry.text_offset, entry.text_size);
  }
  const Entry* visible_entry(int32_t id, bool skip_special_tokens) const;
  void encode_segment(std::string_view segment, std::vector<int32_t>& ids) const;

  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::vector<PieceType> piece_types_;  // by piece id, as the model file gives them (the library has no getter)
  std::vector<Entry> entries_;
  std::string text_pool_;
  struct TextHash {
    using is_transparent = void;
    size_t operator()(std::string_view text) const { return std::hash<std::string_view>{}(text); }
  };
  std::unordered_map<std::string, AddedToken, TextHash, std::equal_to<>> added_;
  std::vector<size_t> added_lengths_;  // distinct content lengths, longest first
  bool added_first_byte_[256] = {};
  std::map<std::string, std::string> special_token_strings_;
  std::string chat_template_;
  bool add_bos_token_ = false;
  bool clean_up_tokenization_spaces_ = false;
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
  int32_t pad_id_ = -1;
};

// Incremental decoding for streaming: feed generated ids one at a time, get back only text that is final.
// The concatenation of every push() result and flush() equals tokenizer.decode(all ids, skip_special_tokens)
// (except that transformers' optional clean_up_tokenization_spaces, off for ERNIE, is not applied here).
// Because transformers decodes a whole run of byte-fallback tokens at once (an invalid run becomes one U+FFFD
// per byte, valid characters included), a run is held until the next visible non-byte token or flush(); every
// returned chunk is therefore whole UTF-8. Skipped special tokens and unknown ids do not end a run, as in
// transformers. The tokenizer must outlive the decoder.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = true);
  std::string push(int32_t id);
  // Emits what is held (U+FFFD per byte of an incomplete or invalid run) and starts afresh.
  std::string flush();
  void reset();

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_tokens_;
  std::string pending_bytes_;
};

}  // namespace ernie
