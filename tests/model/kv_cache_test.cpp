// The block KV cache's bookkeeping: blocks are shared by prefix, reference-counted and freed; cached blocks are
// evicted least recently used first and never while a sequence holds them; truncating into a shared block copies it;
// and eviction under memory pressure never changes what a running sequence computes.
#include "model/kv_cache.h"

#include <gtest/gtest.h>

#include <map>
#include <random>

#include "core/error.h"
#include "model/session.h"
#include "test_support.h"

namespace ernie {
namespace {

using ernie::testing::fixture;

constexpr int B = kKvBlockPositions;

// A config with a small KV row; the cache's bookkeeping does not depend on the sizes.
ModelConfig small_config() {
  ModelConfig c;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 32;
  c.hidden_size = 64;
  return c;
}

// n distinct token ids for each seed (below `vocab`, as a model needs them).
std::vector<int32_t> tokens(int n, int seed, int vocab = 1 << 30) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = (seed * 7919 + i * 31) % vocab;
  return t;
}

// Fills a sequence's positions without a model: what forward() does to the bookkeeping.
void fill(KvCache& cache, Sequence& s, std::span<const int32_t> all) {
  ASSERT_TRUE(cache.reserve(s, static_cast<int>(all.size())));
  s.set_position(static_cast<int>(all.size()));
  cache.publish(s, all);
}

TEST(KvCache, SharesPublishedBlocksByPrefixAndCountsReferences) {
  KvCache cache(small_config(), KvCacheOptions{.blocks = 8, .dtype = DType::F16});
  const auto prompt = tokens(3 * B + 5, 1);
  Sequence a(128), b(128), c(128);
  fill(cache, a, prompt);
  EXPECT_EQ(cache.stats().used_blocks, 4);

  // b asks with the same prompt: the three full blocks are attached, not copied.
  EXPECT_EQ(cache.attach_prefix(b, prompt), 3 * B);
  EXPECT_EQ(b.position(), 3 * B);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(b.blocks()[i], a.blocks()[i]);
  EXPECT_EQ(cache.stats().used_blocks, 4);

  // A prompt that differs inside block 1 shares only block 0.
  auto other = prompt;
  other[B + 3] = -7;
  EXPECT_EQ(cache.attach_prefix(c, other), B);
  EXPECT_EQ(cache.stats().prefix_query_tokens, 2 * static_cast<int64_t>(prompt.size()));
  EXPECT_EQ(cache.stats().prefix_hit_tokens, 4 * B);

  // Released by everyone, the published blocks stay cached; the partial one is freed.
  cache.release(a);
  EXPECT_EQ(cache.stats().used_blocks, 3);  // still held by b and c
  cache.release(b);
  cache.release(c);
  EXPECT_EQ(cache.stats().used_blocks, 0);
  EXPECT_EQ(cache.stats().cached_blocks, 3);
  EXPECT_EQ(cache.available_blocks(), 8);

  // Never the whole prompt: its last token must run to give logits.
  Sequence d(128);
  EXPECT_EQ(cache.attach_prefix(d, std::span(prompt).first(2 * B)), B);
}

TEST(KvCache, EvictsTheLeastRecentlyUsedCachedBlockAndNeverAHeldOne) {
  KvCache cache(small_config(), KvCacheOptions{.blocks = 4, .dtype = DType::F32});
  const auto p1 = tokens(B + 1, 1), p2 = tokens(B + 1, 2);
  Sequence a(64), b(64);
  fill(cache, a, p1);
  cache.release(a);  // p1's block cached (older)
  fill(cache, b, p2);
  cache.release(b);  // p2's block cached (newer)
  EXPECT_EQ(cache.stats().cached_blocks, 2);

  // A sequence that holds p2's block: eviction must take p1's.
  Sequence holder(64), hungry(64);
  EXPECT_EQ(cache.attach_prefix(holder, p2), B);
  EXPECT_TRUE(cache.reserve(hungry, 3 * B));  // 2 free + p1's cached block
  EXPECT_EQ(cache.stats().cached_blocks, 0);
  EXPECT_FALSE(cache.reserve(hungry, 4 * B)) << "p2's block is held and must not be evicted";
  EXPECT_EQ(hungry.capacity(), 3 * B);  // a refused reserve changes nothing
  Sequence probe(64);
  EXPECT_EQ(cache.attach_prefix(probe, p1), 0) << "p1 was evicted";
  EXPECT_THROW(cache.attach_prefix(holder, p2), Error) << "only an empty sequence attaches a prefix";
}

TEST(KvCache, TruncatingIntoASharedBlockCopiesItFirst) {
  KvCache cache(small_config(), KvCacheOptions{.blocks = 8, .dtype = DType::F32});
  const auto prompt = tokens(2 * B + 1, 3);
  Sequence a(64), b(64);
  fill(cache, a, prompt);
  EXPECT_EQ(cache.attach_prefix(b, prompt), 2 * B);
  const int32_t shared = b.blocks()[1];
  cache.truncate(b, B + 4);  // into the shared second block
  EXPECT_EQ(b.position(), B + 4);
  EXPECT_EQ(b.blocks()[0], a.blocks()[0]);
  EXPECT_NE(b.blocks()[1], shared) << "writing after position B + 4 would change a's block";
  EXPECT_EQ(a.blocks()[1], shared);
  // A private block is kept in place.
  const int32_t own = b.blocks()[1];
  cache.truncate(b, B + 2);
  EXPECT_EQ(b.blocks()[1], own);
  cache.truncate(b, B);
  EXPECT_EQ(b.blocks().size(), 1u);
  EXPECT_THROW(cache.truncate(b, B + 1), Error);
}

// The hash index against a plain map, through many publish / evict cycles (deletion by backward shift included).
TEST(KvCache, PrefixIndexSurvivesManyEvictions) {
  KvCache cache(small_config(), KvCacheOptions{.blocks = 16, .dtype = DType::F16});
  std::mt19937 rng(5);
  std::map<int, bool> maybe_cached;  // prompt seed -> published at some point
  for (int round = 0; round < 400; ++round) {
    const int seed = static_cast<int>(rng() % 40);
    const auto prompt = tokens(B * (1 + seed % 3) + 1, seed);
    Sequence s(256);
    const int hit = cache.attach_prefix(s, prompt);
    ASSERT_EQ(hit % B, 0);
    if (!maybe_cached.count(seed)) {
      ASSERT_EQ(hit, 0) << "a prompt never published was found";
    }
    fill(cache, s, prompt);
    maybe_cached[seed] = true;
    // While s holds them, every full block of the prompt is found (s's own, or an older block of the same prefix
    // that s could not attach because an earlier block had been evicted).
    Sequence again(256);
    ASSERT_EQ(cache.attach_prefix(again, prompt), static_cast<int>(prompt.size() - 1) / B * B) << "round " << round;
    cache.release(again);
    cache.release(s);
  }
  EXPECT_EQ(cache.stats().used_blocks, 0);
}

// Memory pressure while a sequence runs: other requests fill and evict the rest of the cache around it, and its
// logits stay exactly what they are with the cache to itself.
TEST(KvCache, EvictionUnderPressureNeverChangesARunningSequence) {
  const auto model = Model::load(fixture("tiny-ernie/model"));
  const int vocab = model->config().vocab_size;
  const auto prompt = tokens(2 * B + 3, 1, vocab);
  Session reference(*model, SessionOptions{.context_length = 128});
  reference.forward(prompt);
  std::vector<std::vector<float>> expected;
  for (int32_t t : {5, 6, 7, 8}) {
    const auto l = reference.forward(std::span(&t, 1));
    expected.emplace_back(l.begin(), l.end());
  }

  KvCache cache(model->config(), KvCacheOptions{.blocks = 10, .dtype = DType::F32});
  Workspace ws(*model, 64, nullptr, 128);
  Sequence running(128);
  ASSERT_TRUE(cache.reserve(running, static_cast<int>(prompt.size())));
  const Chunk first{&running, prompt, Logits::kNone};
  forward(*model, cache, ws, std::span(&first, 1), {});
  cache.publish(running, prompt);
  int i = 0;
  for (int32_t t : {5, 6, 7, 8}) {
    // Another request takes every block left, publishes, and goes: its blocks are cached, then evicted by the next.
    Sequence other(128);
    const auto noise = tokens(static_cast<int>(cache.available_blocks()) * B, 10 + i, vocab);
    ASSERT_TRUE(cache.reserve(other, static_cast<int>(noise.size())));
    for (size_t done = 0; done < noise.size(); done += 64) {
      const Chunk chunk{&other, std::span(noise).subspan(done, std::min<size_t>(64, noise.size() - done)),
                        Logits::kNone};
      forward(*model, cache, ws, std::span(&chunk, 1), {});
    }
    cache.publish(other, noise);
    cache.release(other);

    ASSERT_TRUE(cache.reserve(running, running.position() + 1));
    std::vector<float> logits(vocab);
    const Chunk step{&running, std::span(&t, 1)};
    forward(*model, cache, ws, std::span(&step, 1), logits);
    EXPECT_EQ(logits, expected[i]) << "token " << i;
    ++i;
  }
}

TEST(Sequence, KeepsPositionWithinItsBlocks) {
  Sequence s(40);
  EXPECT_THROW(s.set_position(1), Error);
  s.add_block(3);
  s.set_position(B);
  EXPECT_THROW(s.set_position(B + 1), Error);
  s.add_block(4);
  s.add_block(5);
  EXPECT_THROW(s.add_block(6), Error) << "40 positions need three blocks";
  EXPECT_EQ(s.remove_last_block(), 5);
  EXPECT_THROW(Sequence(0), Error);
}

}  // namespace
}  // namespace ernie
