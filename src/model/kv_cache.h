// The KV cache as a pool of fixed-size blocks shared by every sequence of a model, with automatic prefix reuse.
//
// A block holds the keys and values of kKvBlockPositions consecutive positions, for every layer. A Sequence is the
// state of one token stream: the list of blocks holding its positions (its block table) and how many positions are
// filled. Nothing else: the weights live in Model, the scratch of a step in Workspace.
//
// Prefix reuse (as vLLM's automatic prefix caching): a block that a sequence has filled can be published under a
// hash of the whole token prefix it ends. A later sequence whose prompt starts with the same tokens attaches those
// blocks, read-only, instead of computing them again. Blocks are reference-counted; a published block that no
// sequence holds stays cached until its memory is needed, and the least recently used one goes first. A sequence
// only ever writes to blocks it holds alone (truncating into a shared block copies it first), so sharing never
// changes what a sequence computes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "core/dtype.h"
#include "kernels/attention.h"
#include "model/config.h"

namespace ernie {

// The state of one sequence in a KvCache. KvCache adds and removes its blocks; forward() advances its position.
class Sequence {
 public:
  // max_positions bounds the block table, whose room is reserved here so that growing it never allocates.
  explicit Sequence(int max_positions);

  int position() const { return position_; }  // positions filled: the next token goes here
  int max_positions() const { return max_positions_; }
  int capacity() const { return static_cast<int>(blocks_.size()) * kKvBlockPositions; }  // positions with a block
  std::span<const int32_t> blocks() const { return blocks_; }

  // Bookkeeping for KvCache and forward(), each checking what it can: position <= capacity <= max_positions.
  void add_block(int32_t block);
  int32_t remove_last_block();
  void replace_block(int index, int32_t block);
  void set_position(int position);

 private:
  std::vector<int32_t> blocks_;
  int position_ = 0;
  int max_positions_;
};

struct KvCacheOptions {
  int64_t blocks = 0;        // pool size; blocks_for(tokens) converts from tokens
  DType dtype = DType::F16;  // F32, F16 or Q8_0 (per 32 values one F16 scale, as ggml's q8_0 KV cache)
  bool prefix_reuse = true;  // publish and attach blocks; off, every block is private and freed at release
};

struct KvCacheStats {
  int64_t total_blocks = 0;
  int64_t used_blocks = 0;          // held by at least one sequence
  int64_t cached_blocks = 0;        // held by none, kept for prefix reuse (evicted when memory is needed)
  int64_t prefix_query_tokens = 0;  // prompt tokens looked up by attach_prefix
  int64_t prefix_hit_tokens = 0;    // of which found cached
};

class KvCache {
 public:
  KvCache(const ModelConfig& config, const KvCacheOptions& options);
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;
  ~KvCache();

  static int64_t blocks_for(int64_t tokens) { return (tokens + kKvBlockPositions - 1) / kKvBlockPositions; }
  // Memory of one block (every layer's keys and values for kKvBlockPositions positions).
  static size_t block_bytes(const ModelConfig& config, DType dtype);
  // The types the cache can hold, for option parsing; raises ernie::Error naming the others.
  static void check_dtype(DType dtype);

  DType dtype() const { return dtype_; }
  bool prefix_reuse() const { return prefix_reuse_; }
  int64_t total_blocks() const { return static_cast<int64_t>(blocks_.size()); }
  int64_t available_blocks() const { return free_count_ + cached_count_; }  // free now or evictable
  size_t bytes() const { return bytes_; }  // reserved; pages become resident as blocks are first written
  KvCacheStats stats() const;

  // Gives `sequence` blocks until it has room for `positions` positions, taking free blocks first and then evicting
  // the least recently used cached ones. Returns false, changing nothing, when too few are available. Allocates
  // nothing.
  bool reserve(Sequence& sequence, int positions);
  // Drops every block of `sequence` (published ones stay cached for reuse) and sets its position to 0.
  void release(Sequence& sequence);
  // Forgets positions [n, position()) of `sequence`, freeing blocks past them. A kept partial block that is shared
  // or published is copied first, so that writing after n never changes another sequence. Raises ernie::Error when
  // that copy finds no block.
  void truncate(Sequence& sequence, int n);

  // For an empty sequence about to run `prompt`: attaches the longest run of cached blocks that hold the prompt's
  // first tokens, at most up to its second-to-last token (the last one must run to give logits), and sets the
  // position after them. Returns the number of tokens attached (a multiple of kKvBlockPositions). `key` names what
  // else the keys and values depend on (the sequence's adapters, lora_cache_key): blocks are found only under the
  // key they were published with.
  int attach_prefix(Sequence& sequence, std::span<const int32_t> prompt, uint64_t key = 0);
  // Publishes each full block of `sequence` not yet published, under `key`. tokens: the sequence's tokens at
  // positions [0, position()). Allocates nothing. Does nothing with prefix reuse off.
  void publish(const Sequence& sequence, std::span<const int32_t> tokens, uint64_t key = 0);

  // Layer `layer`'s keys and values as seen through `sequence`'s block table.
  KvCacheView view(int layer, const Sequence& sequence);

 private:
  struct Block {
    int32_t refs = 0;
    bool hashed = false;           // full, with hash and parent_hash computed (its contents no longer change)
    bool published = false;        // findable by hash: hashed, and no other block with the same prefix was first
    uint64_t hash = 0;             // of the token prefix this block ends
    int32_t prev = -1, next = -1;  // LRU list links, while cached
    int32_t tokens[kKvBlockPositions] = {};  // its tokens, when published (a hash match is then checked exactly)
    uint64_t parent_hash = 0;
  };

  int32_t take_block();  // a free block, else the least recently used cached one; -1 if none
  void drop_reference(int32_t block);
  void lru_remove(int32_t block);
  void lru_push(int32_t block);
  void unpublish(int32_t block);
  int32_t find(uint64_t hash, uint64_t parent_hash, const int32_t* tokens) const;
  void index_insert(uint64_t hash, int32_t block);
  void index_erase(uint64_t hash, int32_t block);
  uint8_t* key_block(int layer, int32_t block) const;
  uint8_t* value_block(int layer, int32_t block) const;

  DType dtype_;
  bool prefix_reuse_;
  int layers_;
  int row_elements_;
  size_t row_bytes_;       // one position's keys (or values) of one layer
  size_t kv_block_bytes_;  // kKvBlockPositions rows
  size_t bytes_ = 0;
  uint8_t* storage_ = nullptr;  // [layer][keys, values][block][position in block][row], calloc'ed (lazily zero)

  std::vector<Block> blocks_;
  std::vector<int32_t> free_;  // a stack: the most recently freed (resident) block is reused first
  int64_t free_count_ = 0;
  int64_t cached_count_ = 0;
  int32_t lru_oldest_ = -1, lru_newest_ = -1;
  // Published blocks by hash: open addressing with linear probing, sized to twice the pool, so publishing
  // allocates nothing. -1 marks an empty slot.
  std::vector<int32_t> index_;
  int64_t prefix_query_tokens_ = 0;
  int64_t prefix_hit_tokens_ = 0;
};

}  // namespace ernie
