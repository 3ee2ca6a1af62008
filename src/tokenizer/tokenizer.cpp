#include "tokenizer/tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/utf8.h"
#include "tokenizer/spm_vocabulary.h"

namespace ernie {

// Everything the JSON files say about tokens, before it is resolved against the sentencepiece vocabulary.
struct AddedSpec {
  std::string content;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
};

struct TokenConfig {
  int64_t id_limit = 0;  // added token ids at or past this are taken for a corrupt file
  std::map<int64_t, AddedSpec> added_by_id;
  std::map<std::string, std::string> named;  // bos_token -> "<s>", ...
  std::vector<std::string> extra_special;    // additional_special_tokens / extra_special_tokens
  std::optional<bool> add_bos_token;
  bool clean_up_tokenization_spaces = false;
  std::string chat_template;
};

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr std::string_view kMetaSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's space

// The attributes transformers calls SPECIAL_TOKENS_ATTRIBUTES (minus the lists), in the order it knows them.
constexpr std::string_view kNamedSpecialTokens[] = {"bos_token", "eos_token", "unk_token", "pad_token",
                                                    "cls_token", "sep_token", "mask_token"};

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path.string(), ": cannot be read");
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) fail(path.string(), ": read error");
  return contents.str();
}

json read_json_object(const fs::path& path) {
  const std::string text = read_file(path);
  json parsed;
  try {
    parsed = json::parse(text);
  } catch (const json::exception& e) {
    fail(path.string(), ": malformed JSON (", e.what(), ")");
  }
  if (!parsed.is_object()) fail(path.string(), ": expected a JSON object at the top level");
  return parsed;
}

// A token in the configs is either a plain string or a serialized AddedToken {"content": ..., ...}; null
// means "not set".
std::optional<std::string> token_text(const json& value, const fs::path& file, std::string_view field) {
  if (value.is_null()) return std::nullopt;
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object()) {
    const auto content = value.find("content");
    if (content != value.end() && content->is_string()) return content->get<std::string>();
  }
  fail(file.string(), ": \"", field, "\" must be a string or an object with a string \"content\"");
}

bool optional_bool(const json& object, std::string_view key, bool fallback, const fs::path& file,
                   std::string_view context = {}) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) fail(file.string(), ": ", context, "\"", key, "\" must be true or false");
  return it->get<bool>();
}

// transformers' ByteFallback decoder: a run of byte tokens that is valid UTF-8 is kept, otherwise every byte
// of the run becomes U+FFFD (it does not salvage the valid characters inside an invalid run).
void append_byte_run(std::string_view run, std::string& out) {
  if (utf8::is_valid(run)) {
    out += run;
    return;
  }
  for (size_t i = 0; i < run.size(); ++i) out += utf8::kReplacementCharacter;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Byte tokens are recognised by their spelling "<0xNN>", as transformers' decoder does, not by piece type.
int byte_token_value(std::string_view token) {
  if (token.size() != 6 || !token.starts_with("<0x") || token.back() != '>') return -1;
  const int high = hex_digit(token[3]);
  const int low = hex_digit(token[4]);
  return high < 0 || low < 0 ? -1 : high * 16 + low;
}

// Builds a fresh string rather than calling std::string::replace, which trips a GCC 12 -Wrestrict false alarm.
void replace_all(std::string& text, std::string_view from, std::string_view to) {
  if (text.find(from) == std::string::npos) return;
  std::string replaced;
  replaced.reserve(text.size());
  size_t start = 0;
  for (size_t at; (at = text.find(from, start)) != std::string::npos; start = at + from.size()) {
    replaced.append(text, start, at - start);
    replaced += to;
  }
  replaced.append(text, start);
  text = std::move(replaced);
}

// transformers' clean_up_tokenization, applied in the same order.
void clean_up_tokenization(std::string& text) {
  static constexpr std::pair<std::string_view, std::string_view> kRules[] = {
      {" .", "."},     {" ?", "?"},   {" !", "!"},   {" ,", ","},     {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : kRules) replace_all(text, from, to);
}

bool is_ascii_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

void read_special_token_fields(const json& object, const fs::path& file, TokenConfig& config) {
  for (const std::string_view name : kNamedSpecialTokens) {
    const auto it = object.find(name);
    if (it == object.end()) continue;
    if (auto text = token_text(*it, file, name)) {
      config.named[std::string(name)] = *text;
    } else {
      config.named.erase(std::string(name));
    }
  }
  // A file that lists extra special tokens replaces the list as a whole, as special_tokens_map.json does in
  // transformers.
  std::optional<std::vector<std::string>> listed;
  for (const std::string_view list_name : {"additional_special_tokens", "extra_special_tokens"}) {
    const auto it = object.find(list_name);
    if (it == object.end() || it->is_null()) continue;
    if (!listed) listed.emplace();
    if (it->is_array()) {
      for (const auto& item : *it) {
        if (auto text = token_text(item, file, list_name)) listed->push_back(*text);
      }
    } else if (it->is_object()) {
      // transformers 4.x model-specific named extras, e.g. {"image_token": "<|IMAGE_PLACEHOLDER|>"}.
      for (const auto& [name, item] : it->items()) {
        if (auto text = token_text(item, file, name)) {
          config.named[name] = *text;
          listed->push_back(*text);
        }
      }
    } else {
      fail(file.string(), ": \"", list_name, "\" must be a list");
    }
  }
  if (listed) config.extra_special = std::move(*listed);
}

void read_tokenizer_config(const fs::path& file, TokenConfig& config) {
  const json object = read_json_object(file);
  if (const auto it = object.find("added_tokens_decoder"); it != object.end() && !it->is_null()) {
    if (!it->is_object()) fail(file.string(), ": \"added_tokens_decoder\" must be an object");
    for (const auto& [key, value] : it->items()) {
      int64_t id = -1;
      const auto [end, error] = std::from_chars(key.data(), key.data() + key.size(), id);
      if (error != std::errc() || end != key.data() + key.size() || id < 0 || id >= config.id_limit) {
        fail(file.string(), ": \"added_tokens_decoder\" key \"", key, "\" is not a plausible token id");
      }
      const std::string context = "added_tokens_decoder[\"" + key + "\"] ";
      if (!value.is_object()) fail(file.string(), ": ", context, "must be an object");
      const auto content = value.find("content");
      if (content == value.end() || !content->is_string()) {
        fail(file.string(), ": ", context, "has no string \"content\"");
      }
      config.added_by_id[id] = AddedSpec{
          content->get<std::string>(), optional_bool(value, "special", false, file, context),
          optional_bool(value, "lstrip", false, file, context), optional_bool(value, "rstrip", false, file, context)};
    }
  }
  if (object.contains("add_bos_token")) config.add_bos_token = optional_bool(object, "add_bos_token", false, file);
  config.clean_up_tokenization_spaces = optional_bool(object, "clean_up_tokenization_spaces", false, file);
  read_special_token_fields(object, file, config);

  if (const auto it = object.find("chat_template"); it != object.end() && !it->is_null()) {
    if (it->is_string()) {
      config.chat_template = it->get<std::string>();
    } else if (it->is_array()) {
      // Several named templates: transformers uses the one called "default".
      for (const auto& entry : *it) {
        if (!entry.is_object() || !entry.contains("name") || !entry.contains("template") ||
            !entry["name"].is_string() || !entry["template"].is_string()) {
          fail(file.string(), ": \"chat_template\" list entries need string \"name\" and \"template\"");
        }
        if (entry["name"] == "default") config.chat_template = entry["template"].get<std::string>();
      }
    } else {
      fail(file.string(), ": \"chat_template\" must be a string");
    }
  }
}

void read_added_tokens_json(const fs::path& file, TokenConfig& config) {
  const json object = read_json_object(file);
  for (const auto& [content, id] : object.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= config.id_limit) {
      fail(file.string(), ": the id of \"", content, "\" is not a plausible token id");
    }
    // added_tokens_decoder is the newer, richer record of the same tokens: it wins.
    config.added_by_id.try_emplace(id.get<int64_t>(), AddedSpec{content});
  }
}

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

namespace {

std::unique_ptr<sentencepiece::SentencePieceProcessor> load_sentencepiece(const std::string& serialized,
                                                                          const std::string& source) {
  auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
  if (const auto status = sp->LoadFromSerializedProto(serialized); !status.ok()) {
    fail(source, ": not a valid SentencePiece model (", status.ToString(), ")");
  }
  if (sp->GetPieceSize() <= 0) fail(source, ": the SentencePiece model has no pieces");
  return sp;
}

}  // namespace

Tokenizer Tokenizer::load(const fs::path& path) {
  if (is_gguf_file(path)) return from_vocabulary(read_gguf_vocabulary(GgufFile::open(path)), path.string());
  const fs::path& model_dir = path;
  const fs::path model_file = model_dir / "tokenizer.model";
  std::error_code ec;
  if (!fs::is_regular_file(model_file, ec)) fail(model_file.string(), ": tokenizer.model not found");
  // Read the bytes ourselves so that an unreadable file and a file that is not a model get distinct messages.
  const std::string serialized = read_file(model_file);
  auto sp = load_sentencepiece(serialized, model_file.string());
  const int n_pieces = sp->GetPieceSize();

  TokenConfig config;
  // Ids this far past the pieces are surely a corrupt file, and would make the id table absurdly large.
  config.id_limit = n_pieces + (int64_t{1} << 20);
  if (const auto file = model_dir / "tokenizer_config.json"; fs::exists(file, ec)) read_tokenizer_config(file, config);
  // special_tokens_map.json overrides tokenizer_config.json, as in transformers' from_pretrained.
  if (const auto file = model_dir / "special_tokens_map.json"; fs::exists(file, ec)) {
    read_special_token_fields(read_json_object(file), file, config);
  }
  if (const auto file = model_dir / "added_tokens.json"; fs::exists(file, ec)) read_added_tokens_json(file, config);
  if (const auto file = model_dir / "chat_template.jinja"; fs::exists(file, ec)) {
    config.chat_template = read_file(file);  // transformers prefers the separate file when both exist
  }
  return assemble(std::move(sp), read_spm_piece_types(serialized), std::move(config));
}

Tokenizer Tokenizer::from_vocabulary(SpmVocabulary vocabulary, const std::string& source) {
  // A converter that marks every added token CONTROL leaves the unknown piece without its type, which sentencepiece
  // requires: the unk_token id gets it back.
  const bool has_unknown =
      std::find(vocabulary.types.begin(), vocabulary.types.end(), PieceType::kUnknown) != vocabulary.types.end();
  if (const auto unk = vocabulary.special_ids.find("unk_token"); !has_unknown && unk != vocabulary.special_ids.end()) {
    vocabulary.types[unk->second] = PieceType::kUnknown;
  }
  TokenConfig config;
  // What transformers reads from added_tokens_decoder, GGUF keeps as piece types: CONTROL pieces are special added
  // tokens, USER_DEFINED ones plain added tokens.
  for (size_t id = 0; id < vocabulary.tokens.size(); ++id) {
    const PieceType type = vocabulary.types[id];
    if (type == PieceType::kControl || type == PieceType::kUserDefined) {
      config.added_by_id[static_cast<int64_t>(id)] = AddedSpec{vocabulary.tokens[id], type == PieceType::kControl};
    }
  }
  for (const auto& [name, id] : vocabulary.special_ids) config.named[name] = vocabulary.tokens[id];
  config.add_bos_token = vocabulary.add_bos;
  config.chat_template = vocabulary.chat_template;
  auto sp = load_sentencepiece(serialize_spm_model(vocabulary), source);
  return assemble(std::move(sp), std::move(vocabulary.types), std::move(config));
}

SpmVocabulary Tokenizer::vocabulary() const {
  SpmVocabulary v;
  const int n_pieces = sp_->GetPieceSize();
  for (int id = 0; id < n_pieces; ++id) {
    v.tokens.push_back(sp_->IdToPiece(id));
    v.scores.push_back(sp_->GetScore(id));
    v.types.push_back(piece_types_[id]);
  }
  // Added tokens as llama.cpp's converter records them: special ones CONTROL, others USER_DEFINED; the unknown
  // piece keeps its type, which sentencepiece needs.
  for (const auto& [content, token] : added_) {
    const auto id = static_cast<size_t>(token.id);
    // An added id past the pieces leaves a gap: unused entries named as converters name their padding.
    while (v.tokens.size() <= id) {
      v.tokens.push_back("[PAD" + std::to_string(v.tokens.size()) + "]");
      v.scores.push_back(0.0f);
      v.types.push_back(PieceType::kUnused);
    }
    v.tokens[id] = content;
    if (v.types[id] != PieceType::kUnknown) {
      v.types[id] = entries_[id].special ? PieceType::kControl : PieceType::kUserDefined;
    }
  }
  for (const auto& [name, text] : special_token_strings_) {
    if (const auto id = token_id(text)) v.special_ids[name] = *id;
  }
  v.add_bos = add_bos_token_;
  // Tokenizer supports SentencePiece models without a dummy prefix and with the identity normalizer (see the header),
  // which is what ERNIE ships.
  v.add_space_prefix = false;
  v.chat_template = chat_template_;
  return v;
}

Tokenizer Tokenizer::assemble(std::unique_ptr<sentencepiece::SentencePieceProcessor> sp,
                              std::vector<PieceType> piece_types, TokenConfig config) {
  Tokenizer tokenizer;
  tokenizer.sp_ = std::move(sp);
  tokenizer.piece_types_ = std::move(piece_types);
  const int n_pieces = tokenizer.sp_->GetPieceSize();
  int64_t n_ids = n_pieces;
  for (const auto& [id, spec] : config.added_by_id) n_ids = std::max(n_ids, id + 1);

  // Raw token strings, as transformers' vocabulary spells them: added tokens override pieces.
  std::vector<std::optional<std::string>> raw(static_cast<size_t>(n_ids));
  for (int id = 0; id < n_pieces; ++id) raw[id] = tokenizer.sp_->IdToPiece(id);
  std::vector<bool> special(static_cast<size_t>(n_ids), false);
  auto add_token = [&](int64_t id, const AddedSpec& spec) {
    if (spec.content.empty()) return;  // transformers ignores empty added tokens
    raw[id] = spec.content;
    special[id] = special[id] || spec.special;
    tokenizer.added_.try_emplace(spec.content, AddedToken{static_cast<int32_t>(id), spec.lstrip, spec.rstrip});
  };
  for (const auto& [id, spec] : config.added_by_id) add_token(id, spec);

  // Every named or listed special token is special and split out of the text, even when only the
  // sentencepiece model knows its id (e.g. pad_token "<unk>").
  std::set<std::string> special_texts(config.extra_special.begin(), config.extra_special.end());
  for (const auto& [name, text] : config.named) special_texts.insert(text);
  for (const auto& text : special_texts) {
    if (const auto id = tokenizer.token_id(text)) add_token(*id, AddedSpec{text, true});
    // A special token in no vocabulary would get a fresh id from transformers; ERNIE has none, so it is ignored.
  }

  for (const auto& [content, token] : tokenizer.added_) {
    tokenizer.added_first_byte_[static_cast<uint8_t>(content[0])] = true;
    if (std::find(tokenizer.added_lengths_.begin(), tokenizer.added_lengths_.end(), content.size()) ==
        tokenizer.added_lengths_.end()) {
      tokenizer.added_lengths_.push_back(content.size());
    }
  }
  std::sort(tokenizer.added_lengths_.rbegin(), tokenizer.added_lengths_.rend());

  tokenizer.entries_.resize(static_cast<size_t>(n_ids));
  for (size_t id = 0; id < raw.size(); ++id) {
    if (!raw[id]) continue;  // a gap between the pieces and a higher added id: decodes to ""
    Entry& entry = tokenizer.entries_[id];
    entry.known = true;
    entry.special = special[id];
    entry.byte = static_cast<int16_t>(byte_token_value(*raw[id]));
    if (entry.byte >= 0) continue;
    std::string text = *raw[id];
    replace_all(text, kMetaSpace, " ");
    entry.text_offset = static_cast<uint32_t>(tokenizer.text_pool_.size());
    entry.text_size = static_cast<uint32_t>(text.size());
    tokenizer.text_pool_ += text;
  }

  tokenizer.special_token_strings_ = config.named;
  tokenizer.chat_template_ = std::move(config.chat_template);
  tokenizer.add_bos_token_ = config.add_bos_token.value_or(false);
  tokenizer.clean_up_tokenization_spaces_ = config.clean_up_tokenization_spaces;
  auto resolve = [&](const char* name, int fallback) -> int32_t {
    if (const auto it = config.named.find(name); it != config.named.end()) {
      if (const auto id = tokenizer.token_id(it->second)) return *id;
    }
    return fallback;
  };
  tokenizer.bos_id_ = resolve("bos_token", tokenizer.sp_->bos_id());
  tokenizer.eos_id_ = resolve("eos_token", tokenizer.sp_->eos_id());
  tokenizer.pad_id_ = resolve("pad_token", tokenizer.sp_->pad_id());
  return tokenizer;
}

std::optional<int32_t> Tokenizer::token_id(std::string_view token_text) const {
  if (const auto it = added_.find(token_text); it != added_.end()) return it->second.id;
  if (token_text.empty()) return std::nullopt;
  const int id = sp_->PieceToId(token_text);
  // PieceToId answers unk for anything it does not know.
  if (id < 0 || (id == sp_->unk_id() && sp_->IdToPiece(id) != token_text)) return std::nullopt;
  return id;
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < vocab_size() && entries_[static_cast<size_t>(id)].special;
}

void Tokenizer::encode_segment(std::string_view segment, std::vector<int32_t>& ids) const {
  if (segment.empty()) return;
  std::vector<int> pieces;
  if (const auto status = sp_->Encode(segment, &pieces); !status.ok()) {
    fail("tokenizer: sentencepiece could not encode the text (", status.ToString(), ")");
  }
  ids.insert(ids.end(), pieces.begin(), pieces.end());
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  return encode(text, add_bos_token_);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos) const {
  std::vector<int32_t> ids;
  if (add_bos && bos_id_ >= 0) ids.push_back(bos_id_);
  size_t segment_start = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    const AddedToken* match = nullptr;
    size_t match_size = 0;
    if (added_first_byte_[static_cast<uint8_t>(text[pos])]) {
      for (const size_t size : added_lengths_) {  // longest first: leftmost-longest, as transformers matches
        if (size > text.size() - pos) continue;
        if (const auto it = added_.find(text.substr(pos, size)); it != added_.end()) {
          match = &it->second;
          match_size = size;
          break;
        }
      }
    }
    if (!match) {
      ++pos;
      continue;
    }
    size_t segment_end = pos;
    size_t next = pos + match_size;
    if (match->lstrip) {
      while (segment_end > segment_start && is_ascii_space(text[segment_end - 1])) --segment_end;
    }
    if (match->rstrip) {
      while (next < text.size() && is_ascii_space(text[next])) ++next;
    }
    encode_segment(text.substr(segment_start, segment_end - segment_start), ids);
    ids.push_back(match->id);
    segment_start = pos = next;
  }
  encode_segment(text.substr(segment_start), ids);
  return ids;
}

const Tokenizer::Entry* Tokenizer::visible_entry(int32_t id, bool skip_special_tokens) const {
  // Unknown ids (the model's embedding padding rows among them) are dropped, as transformers drops ids its
  // vocabulary cannot map; skipped specials vanish without ending a byte run, also as in transformers.
  if (id < 0 || id >= vocab_size()) return nullptr;
  const Entry& entry = entries_[static_cast<size_t>(id)];
  if (!entry.known || (skip_special_tokens && entry.special)) return nullptr;
  return &entry;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::string out;
  std::string run;
  for (const int32_t id : ids) {
    const Entry* entry = visible_entry(id, skip_special_tokens);
    if (!entry) continue;
    if (entry->byte >= 0) {
      run.push_back(static_cast<char>(entry->byte));
      continue;
    }
    if (!run.empty()) {
      append_byte_run(run, out);
      run.clear();
    }
    out += text_of(*entry);
  }
  if (!run.empty()) append_byte_run(run, out);
  if (clean_up_tokenization_spaces_) clean_up_tokenization(out);
  return out;
}

std::string Tokenizer::token_bytes(int32_t id) const {
  const Entry* entry = visible_entry(id, /*skip_special_tokens=*/false);
  if (!entry) return {};
  if (entry->byte >= 0) return std::string(1, static_cast<char>(entry->byte));
  return std::string(text_of(*entry));
}

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(&tokenizer), skip_special_tokens_(skip_special_tokens) {
  pending_bytes_.reserve(16);
}

std::string StreamDecoder::push(int32_t id) {
  const Tokenizer::Entry* entry = tokenizer_->visible_entry(id, skip_special_tokens_);
  if (!entry) return {};
  if (entry->byte >= 0) {
    pending_bytes_.push_back(static_cast<char>(entry->byte));
    return {};
  }
  std::string out;
  if (!pending_bytes_.empty()) {
    append_byte_run(pending_bytes_, out);
    pending_bytes_.clear();
  }
  out += tokenizer_->text_of(*entry);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out;
  if (!pending_bytes_.empty()) append_byte_run(pending_bytes_, out);
  pending_bytes_.clear();
  return out;
}

void StreamDecoder::reset() {
  pending_bytes_.clear();
}

}  // namespace ernie
