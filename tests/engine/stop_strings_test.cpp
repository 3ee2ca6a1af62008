#include "engine/stop_strings.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

namespace ernie {
namespace {

using Result = StopStringMatcher::Result;

void expect_result(const Result& result, const std::string& text, bool stopped) {
  EXPECT_EQ(result.text, text);
  EXPECT_EQ(result.stopped, stopped);
}

// True if `text` is a sequence of complete, well-formed UTF-8 characters (no check for overlongs/surrogates,
// which do not matter for splitting).
bool complete_utf8(const std::string& text) {
  for (size_t i = 0; i < text.size();) {
    const auto lead = static_cast<unsigned char>(text[i]);
    const size_t length = lead < 0x80             ? 1
                          : (lead & 0xE0) == 0xC0 ? 2
                          : (lead & 0xF0) == 0xE0 ? 3
                          : (lead & 0xF8) == 0xF0 ? 4
                                                  : 0;
    if (length == 0 || i + length > text.size()) return false;
    for (size_t j = 1; j < length; ++j) {
      if ((static_cast<unsigned char>(text[i + j]) & 0xC0) != 0x80) return false;
    }
    i += length;
  }
  return true;
}

// Found by stop_strings_fuzz: a complete match must wait while a stop string that starts before it may still
// complete, since the one that starts first wins.
TEST(StopStrings, AnEarlierStopStringStillGrowingDecidesTheCut) {
  {
    StopStringMatcher matcher({"bcd", "c"});
    expect_result(matcher.push("xb"), "x", false);
    expect_result(matcher.push("c"), "", false);  // "c" is complete, but "bc" may become "bcd"
    expect_result(matcher.push("d"), "", true);   // it did: the cut is before "b"
  }
  {
    StopStringMatcher matcher({"bcd", "c"});
    expect_result(matcher.push("xb"), "x", false);
    expect_result(matcher.push("c"), "", false);
    expect_result(matcher.push("e"), "b", true);  // it did not: "c" decides
  }
  {
    StopStringMatcher matcher({"bcd", "c"});
    expect_result(matcher.push("xb"), "x", false);
    expect_result(matcher.push("c"), "", false);
    EXPECT_EQ(matcher.flush(), "b");  // the stream ended first: "c" still cuts what was held
  }
  {
    // The fuzzer's case, in one push and byte by byte: the earliest start among abc, bcd and c is bcd's.
    const std::string text = "xxa\xFE" "bcd";
    StopStringMatcher whole({"abc", "bcd", "c"});
    expect_result(whole.push(text), "xxa\xFE", true);
    StopStringMatcher bytes({"abc", "bcd", "c"});
    std::string out;
    bool stopped = false;
    for (const char c : text) {
      const Result r = bytes.push(std::string(1, c));
      out += r.text;
      stopped = r.stopped;
      if (stopped) break;
    }
    EXPECT_TRUE(stopped);
    EXPECT_EQ(out, "xxa\xFE");
  }
}

TEST(StopStrings, NoStopStringsPassesTextThrough) {
  StopStringMatcher matcher({});
  expect_result(matcher.push("Hello, "), "Hello, ", false);
  expect_result(matcher.push("world"), "world", false);
  EXPECT_EQ(matcher.flush(), "");
}

TEST(StopStrings, EmptyStopStringIsIgnored) {
  StopStringMatcher matcher({""});
  expect_result(matcher.push("abc"), "abc", false);
}

TEST(StopStrings, MatchInsideOnePush) {
  StopStringMatcher matcher({"END"});
  expect_result(matcher.push("abcENDxyz"), "abc", true);
}

TEST(StopStrings, SplitAcrossPushes) {
  StopStringMatcher matcher({"llo"});
  // "l" could begin "llo", so it waits; "He" is safe.
  expect_result(matcher.push("Hel"), "He", false);
  expect_result(matcher.push("lo"), "", true);
}

TEST(StopStrings, SplitOverManySingleBytePushes) {
  StopStringMatcher matcher({"<|end|>"});
  std::string emitted;
  const std::string text = "ok<|end|>tail";
  bool stopped = false;
  for (const char c : text) {
    const auto result = matcher.push(std::string(1, c));
    emitted += result.text;
    if (result.stopped) {
      stopped = true;
      break;
    }
  }
  EXPECT_TRUE(stopped);
  EXPECT_EQ(emitted, "ok");
}

TEST(StopStrings, FalseStartIsReleasedWhenItStopsMatching) {
  StopStringMatcher matcher({"<end>"});
  expect_result(matcher.push("a<e"), "a", false);
  expect_result(matcher.push("n"), "", false);       // "<en" still a prefix
  expect_result(matcher.push("x<"), "<enx", false);  // broken; the new "<" may start again
  expect_result(matcher.push("end>"), "", true);
}

TEST(StopStrings, OverlappingFalseStart) {
  // "aaa" then "b": the stop "aab" starts at the second "a", so only the first "a" is text.
  StopStringMatcher matcher({"aab"});
  expect_result(matcher.push("aaa"), "a", false);
  expect_result(matcher.push("b"), "", true);
}

TEST(StopStrings, SeveralStopStrings) {
  StopStringMatcher matcher({"STOP", "\n\n", "###"});
  expect_result(matcher.push("hello\n"), "hello", false);
  expect_result(matcher.push("#"), "\n", false);  // "\n#" no longer starts "\n\n", but "#" may start "###"
  expect_result(matcher.push("#"), "", false);
  expect_result(matcher.push("#rest"), "", true);
}

TEST(StopStrings, EarliestStopStringWins) {
  // The later-listed stop string occurs first in the text.
  StopStringMatcher matcher({"STOP", "###"});
  expect_result(matcher.push("x ### y STOP z"), "x ", true);
  // A stop string that is a prefix of another: both start at the same place.
  StopStringMatcher nested({"abc", "ab"});
  expect_result(nested.push("xxabq"), "xx", true);
}

TEST(StopStrings, StopAtTheVeryFirstByte) {
  StopStringMatcher matcher({"<"});
  expect_result(matcher.push("<|end|>"), "", true);
  StopStringMatcher longer({"Human:"});
  expect_result(longer.push("Hu"), "", false);
  expect_result(longer.push("man: hi"), "", true);
}

TEST(StopStrings, AfterStopNothingMoreIsEmitted) {
  StopStringMatcher matcher({"x"});
  expect_result(matcher.push("abxcd"), "ab", true);
  expect_result(matcher.push("more"), "", true);
  EXPECT_EQ(matcher.flush(), "");
}

TEST(StopStrings, FlushReleasesHeldTextAndStartsOver) {
  StopStringMatcher matcher({"</s>"});
  expect_result(matcher.push("abc</"), "abc", false);
  EXPECT_EQ(matcher.held_bytes(), 2u);
  EXPECT_EQ(matcher.flush(), "</");
  EXPECT_EQ(matcher.held_bytes(), 0u);
  // A new stream: nothing from the previous one leaks into matching.
  expect_result(matcher.push("s>"), "s>", false);
  expect_result(matcher.push("x</s>"), "x", true);
  EXPECT_EQ(matcher.flush(), "");
  expect_result(matcher.push("again"), "again", false);
}

TEST(StopStrings, MultibyteTextBeforeAHeldPrefixIsWhole) {
  StopStringMatcher matcher({"</s>"});
  expect_result(matcher.push("日本<"), "日本", false);
  expect_result(matcher.push("/x"), "</x", false);
}

TEST(StopStrings, StopStringStartingWithAMultibyteCharacter) {
  // "。" is E3 80 82.
  StopStringMatcher matcher({"。END"});
  expect_result(matcher.push("好。E"), "好", false);
  expect_result(matcher.push("x"), "。Ex", false);
  // The stop string's first character arrives split across pushes.
  expect_result(matcher.push("好\xE3\x80"), "好", false);
  expect_result(matcher.push("\x82"
                             "EN"),
                "", false);
  expect_result(matcher.push("D!"), "", true);
}

TEST(StopStrings, CharacterSplitByTheTokenizerIsHeldUntilComplete) {
  // "本" is E6 9C AC; a token ended after its second byte.
  StopStringMatcher matcher({"</s>"});
  expect_result(matcher.push("日\xE6\x9C"), "日", false);
  expect_result(matcher.push("\xAC<"), "本", false);
  EXPECT_EQ(matcher.flush(), "<");
  // Flush hands over an incomplete character too: nothing more is coming.
  expect_result(matcher.push("a\xE6"), "a", false);
  EXPECT_EQ(matcher.flush(), "\xE6");
}

TEST(StopStrings, HeldPrefixStartingMidCharacterHoldsTheWholeCharacter) {
  // A byte-level stop string beginning with "日"'s last byte (A5): holding only that byte would split "日"
  // (E6 97 A5), so the whole character waits.
  StopStringMatcher matcher({"\xA5!"});
  expect_result(matcher.push("a日"), "a", false);
  EXPECT_EQ(matcher.held_bytes(), 3u);
  expect_result(matcher.push("?"), "日?", false);
}

TEST(StopStrings, MalformedBytesAreNotHeldForever) {
  StopStringMatcher matcher({"</s>"});
  // A stray continuation byte and an invalid lead byte complete nothing; they pass straight through.
  expect_result(matcher.push("a\x80"), "a\x80", false);
  expect_result(matcher.push("\xFF"), "\xFF", false);
  // A lead byte followed by ASCII is broken, not incomplete.
  expect_result(matcher.push("\xE6x"), "\xE6x", false);
}

TEST(StopStrings, RandomSplitsMatchTheDefinition) {
  // Whatever the chunking, the emitted text is the input up to the first stop string (or all of it, after
  // flush), every emitted chunk is whole UTF-8 characters, and little is held back.
  const std::vector<std::string> pieces{"a", "b", "<", "/", "s", ">", "日", "本", "。", "E", "N", "D", " ", "é"};
  const std::vector<std::string> stops{"</s>", "。END", "本日", "ab<"};
  size_t longest_stop = 0;
  for (const auto& s : stops) longest_stop = std::max(longest_stop, s.size());
  std::mt19937 gen(3);
  int stopped_runs = 0;
  for (int run = 0; run < 2000; ++run) {
    std::string text;
    const int length = std::uniform_int_distribution<int>(0, 30)(gen);
    for (int i = 0; i < length; ++i) text += pieces[std::uniform_int_distribution<size_t>(0, pieces.size() - 1)(gen)];
    size_t first = std::string::npos;
    for (const auto& s : stops) first = std::min(first, text.find(s));
    const std::string expected = first == std::string::npos ? text : text.substr(0, first);

    StopStringMatcher matcher(stops);
    std::string emitted;
    bool stopped = false;
    for (size_t at = 0; at < text.size() && !stopped;) {
      const size_t chunk = std::uniform_int_distribution<size_t>(1, 5)(gen);
      const auto result = matcher.push(std::string_view(text).substr(at, chunk));
      at += chunk;
      ASSERT_TRUE(complete_utf8(result.text)) << "run " << run;
      ASSERT_LE(matcher.held_bytes(), longest_stop - 1 + 3) << "run " << run;
      emitted += result.text;
      stopped = result.stopped;
    }
    if (!stopped) emitted += matcher.flush();
    ASSERT_EQ(stopped, first != std::string::npos) << text;
    ASSERT_EQ(emitted, expected) << text;
    stopped_runs += stopped;
  }
  EXPECT_GT(stopped_runs, 100);
  EXPECT_LT(stopped_runs, 1900);
}

}  // namespace
}  // namespace ernie
