#include "model/kv_cache.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace ernie {

// ---- Sequence ------------------------------------------------------------------------------------------------------

Sequence::Sequence(int max_positions) : max_positions_(max_positions) {
  if (max_positions <= 0) fail("a sequence needs room for at least one position");
  blocks_.reserve(KvCache::blocks_for(max_positions));
}

void Sequence::add_block(int32_t block) {
  if (capacity() >= max_positions_) fail("a sequence of ", max_positions_, " positions needs no more blocks");
  blocks_.push_back(block);
}

int32_t Sequence::remove_last_block() {
  if (blocks_.empty()) fail("the sequence holds no block");
  const int32_t block = blocks_.back();
  blocks_.pop_back();
  position_ = std::min(position_, capacity());
  return block;
}

void Sequence::replace_block(int index, int32_t block) {
  blocks_.at(index) = block;
}

void Sequence::set_position(int position) {
  if (position < 0 || position > capacity())
    fail("position ", position, " is outside the sequence's ", capacity(), " reserved positions");
  position_ = position;
}

// ---- KvCache -------------------------------------------------------------------------------------------------------

namespace {

// splitmix64's finaliser: a cheap, well-mixed 64-bit hash step.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

constexpr uint64_t kRootHash = 0x6572'6e69'6500'0001ull;  // the parent of a sequence's first block

// The parent hash of a sequence's first block: a key's blocks chain from their own root.
uint64_t root_hash(uint64_t key) {
  return key == 0 ? kRootHash : mix(kRootHash ^ key);
}

// The hash of a block's token prefix: its parent's hash chained with its own tokens.
uint64_t block_hash(uint64_t parent_hash, const int32_t* tokens) {
  uint64_t h = mix(parent_hash);
  for (int i = 0; i < kKvBlockPositions; ++i) h = mix(h ^ static_cast<uint32_t>(tokens[i]));
  return h;
}

}  // namespace

void KvCache::check_dtype(DType dtype) {
  if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::Q8_0)
    fail("the KV cache holds f32, f16 or q8_0, not ", dtype_name(dtype));
}

size_t KvCache::block_bytes(const ModelConfig& config, DType dtype) {
  return 2 * dtype_row_bytes(dtype, config.kv_dim()) * kKvBlockPositions * config.num_hidden_layers;
}

KvCache::KvCache(const ModelConfig& config, const KvCacheOptions& options)
    : dtype_(options.dtype),
      prefix_reuse_(options.prefix_reuse),
      layers_(config.num_hidden_layers),
      row_elements_(config.kv_dim()) {
  check_dtype(dtype_);
  if (options.blocks <= 0 || options.blocks > (int64_t{1} << 30)) fail("the KV cache needs 1 to 2^30 blocks");
  if (dtype_ == DType::Q8_0 && config.head_dim % 32 != 0)
    fail("a q8_0 KV cache needs head_dim to be a multiple of 32, not ", config.head_dim);
  row_bytes_ = dtype_row_bytes(dtype_, row_elements_);
  kv_block_bytes_ = row_bytes_ * kKvBlockPositions;
  bytes_ = block_bytes(config, dtype_) * options.blocks;
  // calloc of a large block maps zero pages lazily: only blocks ever written become resident.
  storage_ = static_cast<uint8_t*>(std::calloc(bytes_, 1));
  if (!storage_) fail("cannot reserve ", bytes_ >> 20, " MiB for the KV cache (lower --kv-memory or --ctx)");
  blocks_.resize(options.blocks);
  free_.resize(options.blocks);
  for (int64_t i = 0; i < options.blocks; ++i) free_[i] = static_cast<int32_t>(options.blocks - 1 - i);
  free_count_ = options.blocks;
  if (prefix_reuse_) index_.assign(2 * options.blocks, -1);
}

KvCache::~KvCache() {
  std::free(storage_);
}

KvCacheStats KvCache::stats() const {
  const int64_t total = total_blocks();
  return KvCacheStats{.total_blocks = total,
                      .used_blocks = total - free_count_ - cached_count_,
                      .cached_blocks = cached_count_,
                      .prefix_query_tokens = prefix_query_tokens_,
                      .prefix_hit_tokens = prefix_hit_tokens_};
}

uint8_t* KvCache::key_block(int layer, int32_t block) const {
  return storage_ + ((2 * static_cast<size_t>(layer)) * blocks_.size() + block) * kv_block_bytes_;
}

uint8_t* KvCache::value_block(int layer, int32_t block) const {
  return storage_ + ((2 * static_cast<size_t>(layer) + 1) * blocks_.size() + block) * kv_block_bytes_;
}

KvCacheView KvCache::view(int layer, const Sequence& sequence) {
  return KvCacheView{dtype_, key_block(layer, 0), value_block(layer, 0), sequence.blocks().data(), row_elements_};
}

int32_t KvCache::take_block() {
  int32_t block = -1;
  if (free_count_ > 0) {
    block = free_[--free_count_];
  } else if (lru_oldest_ >= 0) {
    block = lru_oldest_;
    lru_remove(block);
    unpublish(block);
  }
  if (block >= 0) blocks_[block] = Block{.refs = 1};
  return block;
}

bool KvCache::reserve(Sequence& sequence, int positions) {
  if (positions > sequence.max_positions()) return false;
  const int64_t needed = blocks_for(positions) - static_cast<int64_t>(sequence.blocks().size());
  if (needed <= 0) return true;
  if (needed > available_blocks()) return false;
  for (int64_t i = 0; i < needed; ++i) sequence.add_block(take_block());
  return true;
}

void KvCache::drop_reference(int32_t block) {
  Block& b = blocks_[block];
  if (--b.refs > 0) return;
  if (b.published) {
    lru_push(block);
  } else {
    free_[free_count_++] = block;
  }
}

void KvCache::release(Sequence& sequence) {
  while (!sequence.blocks().empty()) drop_reference(sequence.remove_last_block());
  sequence.set_position(0);
}

void KvCache::truncate(Sequence& sequence, int n) {
  if (n < 0 || n > sequence.position())
    fail("cannot truncate a sequence of ", sequence.position(), " positions to ", n);
  while (sequence.capacity() - kKvBlockPositions >= n && !sequence.blocks().empty()) {
    drop_reference(sequence.remove_last_block());
  }
  sequence.set_position(n);
  const int partial = n % kKvBlockPositions;
  if (partial == 0) return;
  const int index = n / kKvBlockPositions;
  const int32_t old_block = sequence.blocks()[index];
  if (blocks_[old_block].refs == 1 && !blocks_[old_block].published) {
    blocks_[old_block].hashed = false;  // its positions from n on will change
    return;
  }
  // Positions from n on will be written: this block must become the sequence's own.
  const int32_t copy = take_block();
  if (copy < 0) fail("the KV cache has no free block to copy a shared block into (raise --kv-memory)");
  for (int layer = 0; layer < layers_; ++layer) {
    std::memcpy(key_block(layer, copy), key_block(layer, old_block), partial * row_bytes_);
    std::memcpy(value_block(layer, copy), value_block(layer, old_block), partial * row_bytes_);
  }
  sequence.replace_block(index, copy);
  drop_reference(old_block);
}

int KvCache::attach_prefix(Sequence& sequence, std::span<const int32_t> prompt, uint64_t key) {
  if (!sequence.blocks().empty() || sequence.position() != 0) fail("attach_prefix needs an empty sequence");
  if (!prefix_reuse_ || prompt.empty()) return 0;
  prefix_query_tokens_ += static_cast<int64_t>(prompt.size());
  const int64_t candidates = std::min<int64_t>((static_cast<int64_t>(prompt.size()) - 1) / kKvBlockPositions,
                                               sequence.max_positions() / kKvBlockPositions);
  uint64_t parent = root_hash(key);
  int attached = 0;
  for (int64_t i = 0; i < candidates; ++i) {
    const int32_t* tokens = prompt.data() + i * kKvBlockPositions;
    const uint64_t hash = block_hash(parent, tokens);
    const int32_t block = find(hash, parent, tokens);
    if (block < 0) break;
    if (blocks_[block].refs++ == 0) lru_remove(block);
    sequence.add_block(block);
    attached += kKvBlockPositions;
    parent = hash;
  }
  sequence.set_position(attached);
  prefix_hit_tokens_ += attached;
  return attached;
}

void KvCache::publish(const Sequence& sequence, std::span<const int32_t> tokens, uint64_t key) {
  if (!prefix_reuse_) return;
  if (static_cast<int>(tokens.size()) < sequence.position()) fail("publish needs the sequence's tokens");
  const int full = sequence.position() / kKvBlockPositions;
  // Skip the leading blocks hashed already (each chains from the one before).
  int i = 0;
  uint64_t parent = root_hash(key);
  while (i < full && blocks_[sequence.blocks()[i]].hashed) parent = blocks_[sequence.blocks()[i++]].hash;
  for (; i < full; ++i) {
    Block& b = blocks_[sequence.blocks()[i]];
    const int32_t* block_tokens = tokens.data() + static_cast<size_t>(i) * kKvBlockPositions;
    b.hashed = true;
    b.hash = block_hash(parent, block_tokens);
    b.parent_hash = parent;
    std::copy(block_tokens, block_tokens + kKvBlockPositions, b.tokens);
    // When another sequence computed the same prefix at the same time, its block stays the one found, and this one
    // stays private (freed when the sequence ends); blocks after it still chain by hash and are published.
    if (find(b.hash, parent, block_tokens) < 0) {
      b.published = true;
      index_insert(b.hash, sequence.blocks()[i]);
    }
    parent = b.hash;
  }
}

// ---- The LRU list of cached blocks ---------------------------------------------------------------------------------

void KvCache::lru_push(int32_t block) {
  Block& b = blocks_[block];
  b.prev = lru_newest_;
  b.next = -1;
  if (lru_newest_ >= 0) blocks_[lru_newest_].next = block;
  lru_newest_ = block;
  if (lru_oldest_ < 0) lru_oldest_ = block;
  ++cached_count_;
}

void KvCache::lru_remove(int32_t block) {
  Block& b = blocks_[block];
  if (b.prev >= 0)
    blocks_[b.prev].next = b.next;
  else
    lru_oldest_ = b.next;
  if (b.next >= 0)
    blocks_[b.next].prev = b.prev;
  else
    lru_newest_ = b.prev;
  b.prev = b.next = -1;
  --cached_count_;
}

// ---- The hash index of published blocks ----------------------------------------------------------------------------

void KvCache::unpublish(int32_t block) {
  Block& b = blocks_[block];
  if (!b.published) return;
  index_erase(b.hash, block);
  b.published = false;
}

int32_t KvCache::find(uint64_t hash, uint64_t parent_hash, const int32_t* tokens) const {
  const size_t mask_size = index_.size();
  for (size_t slot = hash % mask_size;; slot = (slot + 1) % mask_size) {
    const int32_t block = index_[slot];
    if (block < 0) return -1;
    const Block& b = blocks_[block];
    if (b.hash == hash && b.parent_hash == parent_hash && std::equal(tokens, tokens + kKvBlockPositions, b.tokens))
      return block;
  }
}

void KvCache::index_insert(uint64_t hash, int32_t block) {
  size_t slot = hash % index_.size();
  while (index_[slot] >= 0) slot = (slot + 1) % index_.size();
  index_[slot] = block;
}

// Linear probing's deletion by backward shift: later entries of the probe run move up into the hole, so lookups
// never need tombstones.
void KvCache::index_erase(uint64_t hash, int32_t block) {
  const size_t n = index_.size();
  size_t hole = hash % n;
  while (index_[hole] != block) hole = (hole + 1) % n;
  for (size_t next = (hole + 1) % n; index_[next] >= 0; next = (next + 1) % n) {
    const size_t home = blocks_[index_[next]].hash % n;
    // Move the entry at `next` into the hole unless its home lies cyclically in (hole, next].
    const bool home_after_hole = hole <= next ? (home > hole && home <= next) : (home > hole || home <= next);
    if (!home_after_hole) {
      index_[hole] = index_[next];
      hole = next;
    }
  }
  index_[hole] = -1;
}

}  // namespace ernie
