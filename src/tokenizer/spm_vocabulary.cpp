#include "tokenizer/spm_vocabulary.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string_view>

#include "core/error.h"

namespace ernie {
namespace {

// Protobuf wire format, just what ModelProto needs: varints, 32-bit floats and length-delimited fields.
class ProtoWriter {
 public:
  void varint_field(int field, uint64_t value) {
    tag(field, 0);
    varint(value);
  }
  void float_field(int field, float value) {
    tag(field, 5);
    char bytes[4];
    std::memcpy(bytes, &value, 4);
    out_.append(bytes, 4);
  }
  void bytes_field(int field, const std::string& value) {
    tag(field, 2);
    varint(value.size());
    out_ += value;
  }
  const std::string& bytes() const { return out_; }

 private:
  void tag(int field, int wire_type) { varint(static_cast<uint64_t>(field) << 3 | wire_type); }
  void varint(uint64_t v) {
    while (v >= 0x80) {
      out_ += static_cast<char>((v & 0x7F) | 0x80);
      v >>= 7;
    }
    out_ += static_cast<char>(v);
  }
  std::string out_;
};

// Reads the fields of one message: calls on_field(field, wire type, varint value or length-delimited bytes).
template <class OnField>
void read_proto(std::string_view bytes, OnField&& on_field) {
  size_t pos = 0;
  auto varint = [&]() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos >= bytes.size()) fail("sentencepiece model: truncated varint");
      const auto byte = static_cast<uint8_t>(bytes[pos++]);
      value |= uint64_t{byte & 0x7Fu} << shift;
      if (byte < 0x80) return value;
    }
    fail("sentencepiece model: overlong varint");
  };
  while (pos < bytes.size()) {
    const uint64_t tag = varint();
    const int field = static_cast<int>(tag >> 3), wire = static_cast<int>(tag & 7);
    uint64_t value = 0;
    std::string_view data;
    switch (wire) {
      case 0: value = varint(); break;
      case 1: case 5: {
        const size_t n = wire == 1 ? 8 : 4;
        if (bytes.size() - pos < n) fail("sentencepiece model: truncated field");
        pos += n;
        break;
      }
      case 2: {
        const uint64_t n = varint();
        if (n > bytes.size() - pos) fail("sentencepiece model: truncated field");
        data = bytes.substr(pos, n);
        pos += n;
        break;
      }
      default: fail("sentencepiece model: unsupported wire type ", wire);
    }
    on_field(field, wire, value, data);
  }
}

// Field numbers of sentencepiece_model.proto.
constexpr int kModelPieces = 1, kModelTrainerSpec = 2, kModelNormalizerSpec = 3;
constexpr int kPieceText = 1, kPieceScore = 2, kPieceType = 3;
constexpr int kTrainerModelType = 3, kTrainerByteFallback = 35;
constexpr int kTrainerModelTypeBpe = 2;
constexpr int kNormalizerName = 1, kNormalizerCharsmap = 2, kNormalizerAddDummyPrefix = 3,
              kNormalizerRemoveExtraWhitespaces = 4, kNormalizerEscapeWhitespaces = 5;

// llama.cpp's key for each named special token; its converter spells "separator" as below.
constexpr std::pair<const char*, const char*> kSpecialKeys[] = {
    {"bos_token", "tokenizer.ggml.bos_token_id"},     {"eos_token", "tokenizer.ggml.eos_token_id"},
    {"unk_token", "tokenizer.ggml.unknown_token_id"}, {"pad_token", "tokenizer.ggml.padding_token_id"},
    {"cls_token", "tokenizer.ggml.cls_token_id"},     {"sep_token", "tokenizer.ggml.seperator_token_id"},
    {"mask_token", "tokenizer.ggml.mask_token_id"},
};

std::string padding_token(size_t id) {
  return "[PAD" + std::to_string(id) + "]";
}

}  // namespace

std::vector<PieceType> read_spm_piece_types(const std::string& serialized) {
  std::vector<PieceType> types;
  read_proto(serialized, [&](int field, int wire, uint64_t, std::string_view piece) {
    if (field != kModelPieces || wire != 2) return;
    PieceType type = PieceType::kNormal;  // the proto's default
    read_proto(piece, [&](int f, int w, uint64_t value, std::string_view) {
      if (f == kPieceType && w == 0) type = static_cast<PieceType>(value);
    });
    types.push_back(type);
  });
  return types;
}

std::string serialize_spm_model(const SpmVocabulary& v) {
  ProtoWriter model;
  bool has_bytes = false;
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    ProtoWriter piece;
    piece.bytes_field(kPieceText, v.tokens[i]);
    piece.float_field(kPieceScore, v.scores[i]);
    piece.varint_field(kPieceType, static_cast<uint64_t>(v.types[i]));
    model.bytes_field(kModelPieces, piece.bytes());
    has_bytes |= v.types[i] == PieceType::kByte;
  }
  // llama.cpp's SPM tokenizer merges pieces by score, which is sentencepiece's BPE.
  ProtoWriter trainer;
  trainer.varint_field(kTrainerModelType, kTrainerModelTypeBpe);
  trainer.varint_field(kTrainerByteFallback, has_bytes);
  model.bytes_field(kModelTrainerSpec, trainer.bytes());
  ProtoWriter normalizer;
  normalizer.bytes_field(kNormalizerName, v.precompiled_charsmap.empty() ? "identity" : "precompiled");
  if (!v.precompiled_charsmap.empty()) normalizer.bytes_field(kNormalizerCharsmap, v.precompiled_charsmap);
  normalizer.varint_field(kNormalizerAddDummyPrefix, v.add_space_prefix);
  normalizer.varint_field(kNormalizerRemoveExtraWhitespaces, v.remove_extra_whitespaces);
  normalizer.varint_field(kNormalizerEscapeWhitespaces, 1);
  model.bytes_field(kModelNormalizerSpec, normalizer.bytes());
  return model.bytes();
}

SpmVocabulary read_gguf_vocabulary(const GgufFile& file) {
  const std::string fname = file.path().string();
  const auto model = file.get_string("tokenizer.ggml.model");
  if (model != "llama") {
    fail(fname, ": tokenizer.ggml.model is \"", model.value_or("(missing)"),
         "\"; only \"llama\" (SentencePiece) vocabularies are supported");
  }
  const GgufArray* tokens = file.get_array("tokenizer.ggml.tokens", GgufType::STRING);
  if (!tokens) fail(fname, ": missing tokenizer.ggml.tokens");
  const GgufArray* scores = file.get_array("tokenizer.ggml.scores", GgufType::F32);
  const GgufArray* types = file.get_array("tokenizer.ggml.token_type", GgufType::I32);
  const size_t n = tokens->items.size();
  if ((scores && scores->items.size() != n) || (types && types->items.size() != n)) {
    fail(fname, ": tokenizer.ggml.tokens, scores and token_type have different lengths");
  }
  SpmVocabulary v;
  for (size_t i = 0; i < n; ++i) {
    v.tokens.push_back(std::get<std::string>(tokens->items[i]));
    v.scores.push_back(scores ? std::get<float>(scores->items[i]) : 0.0f);
    const int32_t type = types ? std::get<int32_t>(types->items[i]) : 1;
    if (type < 1 || type > 6) fail(fname, ": tokenizer.ggml.token_type[", i, "] = ", type, " is not a piece type");
    v.types.push_back(static_cast<PieceType>(type));
  }
  while (!v.tokens.empty() && v.types.back() == PieceType::kUnused && v.tokens.back() == padding_token(v.tokens.size() - 1)) {
    v.tokens.pop_back();
    v.scores.pop_back();
    v.types.pop_back();
  }
  for (const auto& [name, key] : kSpecialKeys) {
    if (const auto id = file.get_int(key); id && *id >= 0 && *id < static_cast<int64_t>(v.tokens.size())) {
      v.special_ids[name] = static_cast<int32_t>(*id);
    }
  }
  v.add_bos = file.get_bool("tokenizer.ggml.add_bos_token").value_or(false);
  v.add_eos = file.get_bool("tokenizer.ggml.add_eos_token").value_or(false);
  // llama.cpp's defaults for an SPM vocabulary that does not say.
  v.add_space_prefix = file.get_bool("tokenizer.ggml.add_space_prefix").value_or(true);
  v.remove_extra_whitespaces = file.get_bool("tokenizer.ggml.remove_extra_whitespaces").value_or(false);
  if (const GgufArray* charsmap = file.get_array("tokenizer.ggml.precompiled_charsmap", GgufType::U8)) {
    for (const GgufValue& b : charsmap->items) v.precompiled_charsmap += static_cast<char>(std::get<uint8_t>(b));
  }
  v.chat_template = file.get_string("tokenizer.chat_template").value_or("");
  return v;
}

void write_gguf_vocabulary(GgufWriter& w, const SpmVocabulary& v, int n_vocab) {
  GgufArray tokens{GgufType::STRING, {}}, scores{GgufType::F32, {}}, types{GgufType::I32, {}};
  const size_t total = std::max<size_t>(v.tokens.size(), static_cast<size_t>(n_vocab));
  for (size_t i = 0; i < total; ++i) {
    const bool real = i < v.tokens.size();
    tokens.items.emplace_back(real ? v.tokens[i] : padding_token(i));
    scores.items.emplace_back(real ? v.scores[i] : -10000.0f);
    types.items.emplace_back(static_cast<int32_t>(real ? v.types[i] : PieceType::kUnused));
  }
  w.set("tokenizer.ggml.model", std::string("llama"));
  w.set("tokenizer.ggml.pre", std::string("default"));
  w.set("tokenizer.ggml.tokens", std::move(tokens));
  w.set("tokenizer.ggml.scores", std::move(scores));
  w.set("tokenizer.ggml.token_type", std::move(types));
  for (const auto& [name, key] : kSpecialKeys) {
    if (const auto it = v.special_ids.find(name); it != v.special_ids.end()) {
      w.set(key, static_cast<uint32_t>(it->second));
    }
  }
  w.set("tokenizer.ggml.add_bos_token", v.add_bos);
  w.set("tokenizer.ggml.add_eos_token", v.add_eos);
  w.set("tokenizer.ggml.add_space_prefix", v.add_space_prefix);
  w.set("tokenizer.ggml.remove_extra_whitespaces", v.remove_extra_whitespaces);
  if (!v.precompiled_charsmap.empty()) {
    GgufArray charsmap{GgufType::U8, {}};
    for (char c : v.precompiled_charsmap) charsmap.items.emplace_back(static_cast<uint8_t>(c));
    w.set("tokenizer.ggml.precompiled_charsmap", std::move(charsmap));
  }
  if (!v.chat_template.empty()) w.set("tokenizer.chat_template", v.chat_template);
}

SpmVocabulary placeholder_vocabulary(int n_vocab) {
  SpmVocabulary v;
  auto add = [&](std::string text, PieceType type) {
    v.tokens.push_back(std::move(text));
    v.scores.push_back(0.0f);
    v.types.push_back(type);
  };
  add("<unk>", PieceType::kUnknown);
  add("<s>", PieceType::kControl);
  add("</s>", PieceType::kControl);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    add(name, PieceType::kByte);
  }
  // Distinct texts: a vocabulary with duplicate pieces is refused by sentencepiece (and confuses llama.cpp).
  for (int id = static_cast<int>(v.tokens.size()); id < n_vocab; ++id) add("<filler" + std::to_string(id) + ">", PieceType::kNormal);
  v.special_ids = {{"unk_token", 0}, {"bos_token", 1}, {"eos_token", 2}, {"pad_token", 0}};
  return v;
}

}  // namespace ernie
