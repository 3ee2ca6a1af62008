// core/utf8.h against an independent reference: a byte sequence is well-formed UTF-8 exactly when it is the
// shortest encoding of a Unicode scalar value (not a surrogate, at most U+10FFFF).
#include "core/utf8.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

namespace ernie {
namespace {

// Encoding by the definition, written out separately from the code under test.
std::string encode_reference(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 + cp / 64);
    s += static_cast<char>(0x80 + cp % 64);
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 + cp / 4096);
    s += static_cast<char>(0x80 + cp / 64 % 64);
    s += static_cast<char>(0x80 + cp % 64);
  } else {
    s += static_cast<char>(0xF0 + cp / 262144);
    s += static_cast<char>(0x80 + cp / 4096 % 64);
    s += static_cast<char>(0x80 + cp / 64 % 64);
    s += static_cast<char>(0x80 + cp % 64);
  }
  return s;
}

bool scalar_value(uint32_t cp) {
  return cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
}

// Is `bytes` exactly one well-formed character? Reads the payload bits whatever the form and accepts only if the
// reference encoder gives back the same bytes.
std::optional<uint32_t> one_character_reference(const std::string& bytes) {
  const auto b0 = static_cast<unsigned char>(bytes[0]);
  const size_t n = b0 < 0x80 ? 1 : b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : b0 >= 0xC0 ? 2 : 0;
  if (n != bytes.size()) return std::nullopt;
  uint32_t cp = n == 1 ? b0 : b0 & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) {
    const auto b = static_cast<unsigned char>(bytes[k]);
    if (b < 0x80 || b > 0xBF) return std::nullopt;
    cp = cp * 64 + (b & 0x3F);
  }
  if (!scalar_value(cp) || encode_reference(cp) != bytes) return std::nullopt;
  return cp;
}

// Is `bytes` a concatenation of well-formed characters? By dynamic programming over every split, so that it
// assumes nothing about how a decoder should walk.
bool valid_reference(const std::string& bytes) {
  std::vector<bool> splits(bytes.size() + 1, false);
  splits[0] = true;
  for (size_t end = 1; end <= bytes.size(); ++end) {
    for (size_t n = 1; n <= 4 && n <= end && !splits[end]; ++n) {
      splits[end] = splits[end - n] && one_character_reference(bytes.substr(end - n, n)).has_value();
    }
  }
  return splits[bytes.size()];
}

void expect_agrees(const std::string& bytes) {
  ASSERT_EQ(utf8::is_valid(bytes), valid_reference(bytes)) << testing::PrintToString(bytes);
  // The first character, if the bytes start with one (at most one length can match: UTF-8 is prefix-free).
  std::optional<uint32_t> first;
  size_t first_length = 1;
  for (size_t n = 1; n <= bytes.size() && !first; ++n) {
    first = one_character_reference(bytes.substr(0, n));
    first_length = n;
  }
  const utf8::Decoded d = utf8::decode(bytes, 0);
  if (first) {
    EXPECT_TRUE(d.valid && d.code_point == *first && d.length == first_length) << testing::PrintToString(bytes);
  } else {
    EXPECT_TRUE(!d.valid && d.code_point == 0xFFFD && d.length == 1) << testing::PrintToString(bytes);
    EXPECT_EQ(utf8::first_invalid(bytes), 0u) << testing::PrintToString(bytes);
  }
}

TEST(Utf8, EveryOneAndTwoByteSequenceAgreesWithTheDefinition) {
  for (int a = 0; a < 256; ++a) {
    expect_agrees(std::string(1, static_cast<char>(a)));
    for (int b = 0; b < 256; ++b) expect_agrees(std::string{static_cast<char>(a), static_cast<char>(b)});
  }
}

TEST(Utf8, ThreeAndFourByteSequencesAgreeWithTheDefinition) {
  // Every lead byte E0..FF with every second byte, and third/fourth bytes at and around the continuation range's
  // edges: where overlongs, surrogates and the U+10FFFF limit are decided.
  const int edges[] = {0x00, 0x7F, 0x80, 0x81, 0x9F, 0xA0, 0xBF, 0xC0, 0xFF};
  for (int a = 0xE0; a < 256; ++a) {
    for (int b = 0; b < 256; ++b) {
      for (int c : edges) {
        expect_agrees(std::string{static_cast<char>(a), static_cast<char>(b), static_cast<char>(c)});
        for (int d : {0x7F, 0x80, 0xBF, 0xC0}) {
          expect_agrees(
              std::string{static_cast<char>(a), static_cast<char>(b), static_cast<char>(c), static_cast<char>(d)});
        }
      }
    }
  }
}

TEST(Utf8, EveryScalarValueRoundTrips) {
  for (uint32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    if (!scalar_value(cp)) continue;
    std::string out;
    utf8::append(out, cp);
    ASSERT_EQ(out, encode_reference(cp)) << cp;
    const utf8::Decoded d = utf8::decode(out, 0);
    ASSERT_TRUE(d.valid && d.code_point == cp && d.length == out.size()) << cp;
  }
  std::string out;
  utf8::append(out, 0xD800);
  utf8::append(out, 0x110000);
  EXPECT_EQ(out, "\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(Utf8, FirstInvalidNamesTheOffendingByte) {
  EXPECT_FALSE(utf8::first_invalid("plain ascii"));
  EXPECT_FALSE(utf8::first_invalid("你好, café, 😀"));
  EXPECT_EQ(utf8::first_invalid("ab\xFF"), 2u);
  EXPECT_EQ(utf8::first_invalid("a\xC3"), 1u);             // truncated
  EXPECT_EQ(utf8::first_invalid("\xC0\xAF"), 0u);          // overlong
  EXPECT_EQ(utf8::first_invalid("x\xED\xA0\x80"), 1u);     // UTF-16 surrogate
  EXPECT_EQ(utf8::first_invalid("\xF4\x90\x80\x80"), 0u);  // past U+10FFFF
  EXPECT_EQ(utf8::first_invalid("é\x80"), 2u);             // stray continuation byte
  EXPECT_EQ(utf8::first_invalid(std::string("a\0b", 3)), std::nullopt);
}

TEST(Utf8, InvalidBytesDecodeOneAtATime) {
  const std::string s =
      "\xE4\xBD"
      "a";  // a 3-byte character cut short, then 'a'
  EXPECT_EQ(utf8::decode(s, 0).length, 1u);
  EXPECT_FALSE(utf8::decode(s, 0).valid);
  EXPECT_EQ(utf8::decode(s, 0).code_point, 0xFFFDu);
  EXPECT_FALSE(utf8::decode(s, 1).valid);
  EXPECT_EQ(utf8::decode(s, 2).code_point, U'a');
}

TEST(Utf8, IncompleteTailIsAWellFormedPrefixOfACharacter) {
  for (const std::string character : {"é", "你", "😀", "\xF4\x8F\xBF\xBF"}) {
    for (size_t cut = 1; cut < character.size(); ++cut) {
      const std::string text = "ab" + character.substr(0, cut);
      EXPECT_EQ(utf8::incomplete_tail(text), 2u) << testing::PrintToString(text);
    }
    EXPECT_EQ(utf8::incomplete_tail("ab" + character), 2 + character.size());
  }
  // Prefixes no character has are not waited for.
  for (const std::string text : {"ab\xE0\x80", "ab\xED\xA0", "ab\xF4\x90", "ab\xC0", "ab\xFF", "ab\x80"}) {
    EXPECT_EQ(utf8::incomplete_tail(text), text.size()) << testing::PrintToString(text);
  }
  EXPECT_EQ(utf8::incomplete_tail(""), 0u);
}

TEST(Utf8, CharacterStartFindsTheLeadByte) {
  const std::string text = "a你b😀";  // a=0, 你=1..3, b=4, 😀=5..8
  const size_t expected[] = {0, 1, 1, 1, 4, 5, 5, 5, 5};
  for (size_t pos = 0; pos < text.size(); ++pos) EXPECT_EQ(utf8::character_start(text, pos), expected[pos]) << pos;
  EXPECT_EQ(utf8::character_start(text, text.size()), text.size());
  // Continuation bytes that no lead byte owns stay where they are.
  EXPECT_EQ(utf8::character_start("a\x80\x80", 2), 2u);
  EXPECT_EQ(utf8::character_start("\xE0\x80\x80", 1), 1u);  // E0 80 is not a prefix of any character
}

}  // namespace
}  // namespace ernie
