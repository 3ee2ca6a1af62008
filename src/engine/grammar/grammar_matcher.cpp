#include "engine/grammar/grammar_matcher.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <numeric>

#include "core/error.h"

namespace ernie {
namespace {

// Deeper stacks are dropped: nesting that deep (a JSON value inside 2000 arrays) is refused rather than grown
// without bound.
constexpr size_t kMaxStackDepth = 2000;
// A state with more parses than this keeps the first ones; only a pathologically ambiguous grammar gets here.
constexpr size_t kMaxStacks = 16384;
constexpr size_t kLinearDedupe = 32;
// The stacks one advance() has expanded are remembered up to this many elements (16 MiB); past it, further parses
// are dropped like those past kMaxStacks.
constexpr size_t kMaxExpandedElements = size_t{4} << 20;
constexpr size_t kMaxForkDepth = 2000;
// Distinct states whose masks a matcher keeps; past it the cache starts over.
constexpr size_t kMaxCachedMasks = 256;
// The interned-state table starts over before a walk once it holds this many states, and a walk that would take it
// past the hard bound (states or bytes of stacks) finishes without it: memory stays bounded whatever the grammar.
constexpr size_t kStatesBeforeReset = 8192;
constexpr size_t kMaxInternedBytes = 64u << 20;
constexpr int32_t kDead = -1;
constexpr int32_t kUnknown = -2;
constexpr int32_t kOverflow = -3;

}  // namespace

// ---- TokenTrie -----------------------------------------------------------------------------------------------------

TokenTrie::TokenTrie(const Tokenizer& tokenizer) : vocab_size_(tokenizer.vocab_size()) {
  static std::atomic<uint64_t> next_id{1};
  id_ = next_id++;
  offsets_.reserve(static_cast<size_t>(vocab_size_) + 1);
  std::vector<int32_t> ids;
  for (int32_t id = 0; id < vocab_size_; ++id) {
    offsets_.push_back(static_cast<uint32_t>(pool_.size()));
    if (tokenizer.is_special(id)) continue;
    const std::string bytes = tokenizer.token_bytes(id);
    if (bytes.empty()) continue;
    pool_ += bytes;
    ids.push_back(id);
  }
  offsets_.push_back(static_cast<uint32_t>(pool_.size()));
  std::sort(ids.begin(), ids.end(),
            [&](int32_t a, int32_t b) { return bytes(a) < bytes(b) || (bytes(a) == bytes(b) && a < b); });

  // In sorted order each token shares its longest prefix with the one before: close the nodes past that prefix,
  // open one per remaining byte. Depth-first order falls out, and a node's tokens are contiguous in `ids`.
  std::vector<uint32_t> path;  // open nodes, root's child first
  std::string_view previous;
  tokens_ = ids;
  for (uint32_t k = 0; k < ids.size(); ++k) {
    const std::string_view b = bytes(ids[k]);
    size_t common = 0;
    while (common < previous.size() && common < b.size() && previous[common] == b[common]) ++common;
    while (path.size() > common) {
      nodes_[path.back()].subtree_end = static_cast<uint32_t>(nodes_.size());
      path.pop_back();
    }
    for (size_t d = common; d < b.size(); ++d) {
      path.push_back(static_cast<uint32_t>(nodes_.size()));
      nodes_.push_back(
          Node{static_cast<uint8_t>(b[d]), static_cast<uint16_t>(std::min<size_t>(d + 1, UINT16_MAX)), 0, k, 0});
    }
    Node& end = nodes_[path.back()];
    if (end.token_count == 0) end.first_token = k;
    ++end.token_count;
    max_depth_ = std::max(max_depth_, b.size());
    previous = b;
  }
  while (!path.empty()) {
    nodes_[path.back()].subtree_end = static_cast<uint32_t>(nodes_.size());
    path.pop_back();
  }
  if (max_depth_ >= UINT16_MAX) fail("a token of ", max_depth_, " bytes is too long for constrained decoding");
}

std::string_view TokenTrie::bytes(int32_t id) const {
  if (id < 0 || id >= vocab_size_) return {};
  return std::string_view(pool_).substr(offsets_[id], offsets_[id + 1] - offsets_[id]);
}

// ---- GrammarMatcher ------------------------------------------------------------------------------------------------

GrammarMatcher::GrammarMatcher(std::shared_ptr<const Grammar> grammar, const TokenTrie& trie,
                               size_t max_interned_states)
    : grammar_(std::move(grammar)),
      trie_(trie),
      levels_(trie.max_depth() + 1),
      max_interned_states_(max_interned_states),
      level_ids_(trie.max_depth() + 1) {
  scratch_.resize(1);  // advance()'s stack; expand() adds one per fork depth
  expanded_.clear();
  for (const uint32_t start : grammar_->alternatives(grammar_->root())) {
    std::vector<uint32_t> stack{start};
    expand(stack, state_, 0);
  }
  mask_.assign((static_cast<size_t>(trie_.vocab_size()) + 63) / 64, 0);
}

// Pops finished alternatives and follows rule references until the top of `stack` is a byte set, adding each
// resulting stack to `out`; a reference with several alternatives forks the stack. A reference that ends its
// alternative replaces it (a tail call), so right recursion runs in constant depth. Modifies `stack`.
void GrammarMatcher::expand(std::vector<uint32_t>& stack, State& out, size_t depth) {
  const Grammar& g = *grammar_;
  while (true) {
    if (stack.empty()) {
      out.accepting = true;
      return;
    }
    const uint32_t position = stack.back();
    const Grammar::Element& e = g.element(position);
    if (e.kind == Grammar::Kind::End) {
      stack.pop_back();
      continue;
    }
    if (e.kind == Grammar::Kind::Bytes) {
      insert_stack(stack, out, out_index_, SIZE_MAX);
      return;
    }
    // What a stack expands to depends on the stack alone, so a stack met again is skipped: nullable alternatives
    // (`("a" | | | ){0,3}`) reach the same stack by exponentially many paths, and each is expanded once.
    if (!insert_stack(stack, expanded_, expanded_index_, kMaxExpandedElements)) return;
    stack.pop_back();
    if (g.element(position + 1).kind != Grammar::Kind::End) stack.push_back(position + 1);
    // Too deep a stack, or a chain of forks that long (thousands of rules each starting with the next): dropped, as
    // a parse the matcher will not follow, rather than recursing without bound.
    if (stack.size() >= kMaxStackDepth || depth >= kMaxForkDepth) return;
    const auto alternatives = g.alternatives(e.index);
    // One slot per depth: forks chain past the rule count when nullable alternatives return to a rule's caller.
    if (scratch_.size() <= depth) scratch_.resize(depth + 1);
    for (size_t i = 0; i + 1 < alternatives.size(); ++i) {
      std::vector<uint32_t>& fork = scratch_[depth];
      fork.assign(stack.begin(), stack.end());
      fork.push_back(alternatives[i]);
      expand(fork, out, depth + 1);
    }
    stack.push_back(alternatives.back());
  }
}

// Adds `stack` to `set` unless it is there already or the set is full (then returns false): a linear scan while
// the set is small, past that an index of the stacks' hashes (an object schema with a thousand optional properties
// has a stack per property that may come next).
bool GrammarMatcher::insert_stack(const std::vector<uint32_t>& stack, State& set, StackIndex& index,
                                  size_t max_elements) {
  if (set.ends.size() >= kMaxStacks || set.data.size() + stack.size() > max_elements) return false;
  const auto same = [&](uint32_t i) {
    const uint32_t begin = i == 0 ? 0 : set.ends[i - 1];
    return set.ends[i] - begin == stack.size() && std::equal(stack.begin(), stack.end(), set.data.begin() + begin);
  };
  const auto hash = [](const uint32_t* data, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; ++i) h = (h ^ data[i]) * 1099511628211ull;
    return h;
  };
  if (set.ends.size() < kLinearDedupe) {
    for (uint32_t i = 0; i < set.ends.size(); ++i) {
      if (same(i)) return false;
    }
    index.of = nullptr;  // the index, if any, is of another set (or of this object before it was cleared)
  } else {
    if (index.of != &set || index.count != set.ends.size()) {  // (re)build the index for this set
      index.hashes.clear();
      for (uint32_t i = 0, begin = 0; i < set.ends.size(); begin = set.ends[i++]) {
        index.hashes.emplace(hash(set.data.data() + begin, set.ends[i] - begin), i);
      }
      index.of = &set;
    }
    const uint64_t h = hash(stack.data(), stack.size());
    for (auto [it, end] = index.hashes.equal_range(h); it != end; ++it) {
      if (same(it->second)) return false;
    }
    index.hashes.emplace(h, static_cast<uint32_t>(set.ends.size()));
  }
  set.data.insert(set.data.end(), stack.begin(), stack.end());
  set.ends.push_back(static_cast<uint32_t>(set.data.size()));
  index.count = set.ends.size();
  return true;
}

void GrammarMatcher::advance(const State& from, uint8_t byte, State& to) {
  to.clear();
  expanded_.clear();
  const Grammar& g = *grammar_;
  uint32_t begin = 0;
  for (const uint32_t end : from.ends) {
    const uint32_t top = from.data[end - 1];
    if (g.byte_set(g.element(top).index).has(byte)) {
      std::vector<uint32_t>& stack = scratch_[0];  // expand() forks into the deeper slots
      stack.assign(from.data.begin() + begin, from.data.begin() + end);
      stack.back() = top + 1;
      expand(stack, to, 1);
    }
    begin = end;
  }
}

bool GrammarMatcher::advance_bytes(const State& from, std::string_view bytes, State& out) {
  if (bytes.empty()) return false;
  const State* current = &from;
  for (size_t i = 0; i < bytes.size(); ++i) {
    State& next = i + 1 == bytes.size() ? out : (current == &step_a_ ? step_b_ : step_a_);
    advance(*current, static_cast<uint8_t>(bytes[i]), next);
    if (next.dead()) return false;
    if (next.ends.empty() && i + 1 < bytes.size()) return false;  // complete, yet bytes remain
    current = &next;
  }
  return true;
}

bool GrammarMatcher::allows(int32_t token) {
  return advance_bytes(state_, trie_.bytes(token), probe_);
}

bool GrammarMatcher::accept(int32_t token) {
  return accept_bytes(trie_.bytes(token));
}

bool GrammarMatcher::accept_bytes(std::string_view bytes) {
  if (!advance_bytes(state_, bytes, probe_)) return false;
  std::swap(state_, probe_);
  return true;
}

std::string GrammarMatcher::key(const State& state) {
  std::string k(1, state.accepting ? '1' : '0');
  const auto append = [&](const std::vector<uint32_t>& v) {
    const size_t at = k.size();
    k.resize(at + v.size() * sizeof(uint32_t) + sizeof(uint32_t));
    const uint32_t n = static_cast<uint32_t>(v.size());
    std::memcpy(k.data() + at, &n, sizeof n);
    if (!v.empty()) std::memcpy(k.data() + at + sizeof n, v.data(), v.size() * sizeof(uint32_t));
  };
  append(state.ends);
  append(state.data);
  return k;
}

int32_t GrammarMatcher::intern(const State& state) {
  std::string k = key(state);
  if (const auto it = interned_ids_.find(k); it != interned_ids_.end()) return it->second;
  const auto id = static_cast<int32_t>(interned_.size());
  interned_bytes_ += k.size() * 2 + sizeof(State) + sizeof(void*);
  interned_.push_back(state);
  transitions_.emplace_back();
  interned_open_.push_back(!state.ends.empty());
  interned_ids_.emplace(std::move(k), id);
  return id;
}

// The walk's slow path: a transition not computed yet.
int32_t GrammarMatcher::transition(int32_t from, uint8_t byte) {
  auto& next = transitions_[from];
  if (!next) {
    next = std::make_unique<Transitions>();
    next->fill(kUnknown);
    interned_bytes_ += sizeof(Transitions);
  }
  int32_t& to = (*next)[byte];  // in its own allocation: stays valid while transitions_ grows
  if (to != kUnknown) return to;
  if (interned_.size() >= max_interned_states_ || interned_bytes_ >= kMaxInternedBytes) return kOverflow;
  advance(interned_[from], byte, next_);
  to = next_.dead() ? kDead : intern(next_);
  return to;
}

void GrammarMatcher::mark(const TokenTrie::Node& node) {
  for (const int32_t t : trie_.tokens(node)) mask_[static_cast<size_t>(t) >> 6] |= uint64_t{1} << (t & 63);
}

// Nothing can follow a prefix no stack survives, nor one that completed the grammar with no stack left: both skip
// the node's subtree.
bool GrammarMatcher::walk_interned() {
  const auto nodes = trie_.nodes();
  level_ids_[0] = intern(state_);
  for (uint32_t i = 0; i < nodes.size();) {
    const TokenTrie::Node& node = nodes[i];
    const int32_t from = level_ids_[node.depth - 1];
    const Transitions* row = transitions_[from].get();
    int32_t id = row ? (*row)[node.byte] : kUnknown;
    if (id == kUnknown) id = transition(from, node.byte);
    if (id == kOverflow) return false;
    if (id == kDead) {
      i = node.subtree_end;
      continue;
    }
    mark(node);
    level_ids_[node.depth] = id;
    i = interned_open_[id] ? i + 1 : node.subtree_end;
  }
  return true;
}

void GrammarMatcher::walk_direct() {
  const auto nodes = trie_.nodes();
  levels_[0] = state_;
  for (uint32_t i = 0; i < nodes.size();) {
    const TokenTrie::Node& node = nodes[i];
    State& here = levels_[node.depth];
    advance(levels_[node.depth - 1], node.byte, here);
    if (!here.dead()) mark(node);
    i = here.ends.empty() ? node.subtree_end : i + 1;
  }
}

const std::vector<uint64_t>& GrammarMatcher::allowed_tokens() {
  std::string k = key(state_);
  if (const auto it = masks_.find(k); it != masks_.end()) return it->second;
  if (masks_.size() >= kMaxCachedMasks) masks_.clear();
  // Another request with the same grammar may have been here.
  const uint64_t vocabulary = trie_.id();
  std::string shared_key(reinterpret_cast<const char*>(&vocabulary), sizeof vocabulary);
  shared_key += k;
  MaskCache& shared = grammar_->shared_masks();
  if (const auto mask = shared.find(shared_key)) return masks_.emplace(std::move(k), *mask).first->second;
  const auto reset_table = [&] {
    interned_.clear();
    transitions_.clear();
    interned_ids_.clear();
    interned_open_.clear();
    interned_bytes_ = 0;
  };
  if (interned_.size() > std::min(kStatesBeforeReset, max_interned_states_ / 4)) reset_table();
  std::fill(mask_.begin(), mask_.end(), 0);
  if (!walk_interned()) {
    reset_table();
    std::fill(mask_.begin(), mask_.end(), 0);
    walk_direct();
  }
  shared.insert(std::move(shared_key), std::make_shared<const std::vector<uint64_t>>(mask_));
  return masks_.emplace(std::move(k), mask_).first->second;
}

}  // namespace ernie
