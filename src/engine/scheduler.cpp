#include "engine/scheduler.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/thread_pool.h"
#include "engine/prompt_check.h"

namespace ernie {
namespace detail {

// One request, shared by its handle (the submitter's thread) and the scheduler thread.
struct RequestState {
  using Clock = std::chrono::steady_clock;

  // Set at submission, read-only afterwards.
  std::vector<int32_t> prompt;
  GenerationOptions options;
  Clock::time_point submitted;

  std::atomic<bool> cancel_requested{false};
  // For a copy (try_submit_copies): the first request of its group, whose prefill it waits for. Scheduler thread.
  std::shared_ptr<RequestState> leader;
  bool prompt_done = false;  // the prompt has been prefilled (its first token sampled), or the request ended

  std::mutex mutex;  // guards the fields below
  std::condition_variable changed;
  std::string pending;  // text not yet taken by wait()
  std::vector<RequestHandle::TokenInfo> pending_logprobs;
  int generated = 0;  // tokens generated so far
  bool finished = false;
  RequestSummary summary;  // complete when finished

  // Scheduler thread: the `tokens`-th token was generated, making `text` final. Wakes the reader for new text, and
  // for the first token even without text, so that it can tell the client generation has started.
  void publish(std::string_view text, int tokens, Continuation::Step* logprobs = nullptr) {
    if (text.empty() && tokens != 1 && !logprobs) return;
    {
      std::lock_guard lock(mutex);
      pending += text;
      generated = tokens;
      if (logprobs) pending_logprobs.push_back({logprobs->token, logprobs->logprob, std::move(logprobs->top)});
    }
    changed.notify_all();
  }
  // Scheduler thread: the last text and how the request went.
  void end(std::string_view text, RequestSummary how) {
    {
      std::lock_guard lock(mutex);
      pending += text;
      summary = std::move(how);
      finished = true;
    }
    changed.notify_all();
  }
};

}  // namespace detail

namespace {

double seconds_between(std::chrono::steady_clock::time_point from, std::chrono::steady_clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

}  // namespace

// ---- RequestHandle -------------------------------------------------------------------------------------------------

RequestHandle::~RequestHandle() {
  cancel();
}

RequestHandle::Update RequestHandle::wait(std::chrono::milliseconds timeout) {
  std::unique_lock lock(state_->mutex);
  const int seen = seen_tokens_;
  state_->changed.wait_for(lock, timeout, [&] {
    return !state_->pending.empty() || !state_->pending_logprobs.empty() || state_->finished ||
           (seen == 0 && state_->generated > 0);
  });
  seen_tokens_ = state_->generated;
  Update update{std::move(state_->pending), state_->generated, state_->finished, std::move(state_->pending_logprobs)};
  state_->pending.clear();
  state_->pending_logprobs.clear();
  return update;
}

void RequestHandle::cancel() {
  state_->cancel_requested = true;
}

RequestSummary RequestHandle::summary() const {
  std::lock_guard lock(state_->mutex);
  return state_->summary;
}

// ---- Scheduler -----------------------------------------------------------------------------------------------------

namespace {

int capped_context(const Model& model, const SchedulerOptions& options) {
  if (options.context_length < 1) fail("context_length must be >= 1");
  return std::min(options.context_length, model.config().max_position_embeddings);
}

KvCacheOptions cache_options(const Model& model, const SchedulerOptions& options) {
  if (options.max_running < 1) fail("the scheduler needs at least one slot (max_running >= 1)");
  if (options.kv_tokens < 0 || options.kv_memory_bytes < 0) fail("the KV-cache size must be >= 0");
  const DType dtype = options.kv_dtype.value_or(default_kv_dtype(model));
  KvCache::check_dtype(dtype);
  int64_t blocks = KvCache::blocks_for(static_cast<int64_t>(options.max_running) * capped_context(model, options));
  if (options.kv_tokens > 0) blocks = KvCache::blocks_for(options.kv_tokens);
  if (options.kv_memory_bytes > 0) {
    blocks = options.kv_memory_bytes / static_cast<int64_t>(KvCache::block_bytes(model.config(), dtype));
    if (blocks < 1)
      fail("a KV cache of ", options.kv_memory_bytes, " bytes holds no block of ", kKvBlockPositions, " tokens (",
           KvCache::block_bytes(model.config(), dtype), " bytes)");
  }
  return KvCacheOptions{.blocks = blocks, .dtype = dtype, .prefix_reuse = options.prefix_cache};
}

}  // namespace

Scheduler::Scheduler(const Model& model, const Tokenizer& tokenizer, SchedulerOptions options)
    : model_(model),
      tokenizer_(tokenizer),
      options_(std::move(options)),
      context_length_(capped_context(model, options_)),
      vocab_size_(model.config().vocab_size),
      cache_(model.config(), cache_options(model, options_)),
      workspace_(model, options_.prefill_chunk + options_.max_running,
                 options_.prefill_chunk >= 1 ? options_.pool : (fail("prefill_chunk must be >= 1"), nullptr),
                 context_length_, options_.max_lora_rank) {
  if (options_.max_waiting < 0) fail("max_waiting must be >= 0");
  for (int i = 0; i < options_.max_running; ++i) slots_.push_back(std::make_unique<Slot>(context_length_));
  chunks_.reserve(slots_.size());
  chunk_slots_.reserve(slots_.size());
  prefill_order_.reserve(slots_.size());
  masked_.reserve(slots_.size());
  logits_.resize(slots_.size() * vocab_size_);
  kv_stats_ = cache_.stats();
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

std::unique_ptr<RequestHandle> Scheduler::try_submit(std::vector<int32_t> prompt, GenerationOptions options) {
  auto handles = try_submit_copies(std::move(prompt), std::move(options), 1);
  return handles.empty() ? nullptr : std::move(handles.front());
}

std::vector<std::unique_ptr<RequestHandle>> Scheduler::try_submit_copies(std::vector<int32_t> prompt,
                                                                         GenerationOptions options, int copies) {
  if (copies < 1) fail("at least one copy must be asked for");
  check_prompt(prompt, vocab_size_, 0, context_length_);
  if (options.max_new_tokens < 1) fail("max_new_tokens must be at least 1");
  options.sampling.validate();
  if (options.lora) {
    if (options.lora->max_rank() > options_.max_lora_rank)
      fail("the adapter ", options.lora_name, " has rank ", options.lora->max_rank(), ", over the ",
           options_.max_lora_rank, " this scheduler was sized for (--max-lora-rank)");
    if (options.lora->layers() != model_.config().num_hidden_layers)
      fail("the adapter ", options.lora_name, " is for a model of ", options.lora->layers(), " layers");
    if (!std::isfinite(options.lora_scale)) fail("the adapter's scale must be a finite number");
  }
  const int64_t cache_positions = cache_.total_blocks() * kKvBlockPositions;
  if (static_cast<int64_t>(prompt.size()) >= cache_positions) {
    fail("the prompt of ", prompt.size(), " tokens leaves no room to generate in the KV cache of ", cache_positions,
         " tokens (raise --kv-memory)");
  }

  std::vector<std::shared_ptr<detail::RequestState>> states;
  const auto now = Clock::now();
  for (int i = 0; i < copies; ++i) {
    auto state = std::make_shared<detail::RequestState>();
    state->prompt = prompt;
    state->options = options;
    state->options.sampling.seed = options.sampling.seed + static_cast<uint64_t>(i);
    state->submitted = now;
    if (i > 0 && options.cache_prompt) state->leader = states.front();
    states.push_back(std::move(state));
  }
  {
    std::lock_guard lock(mutex_);
    if (running_ + static_cast<int64_t>(waiting_.size()) + copies > options_.max_running + options_.max_waiting) {
      return {};
    }
    for (const auto& state : states) waiting_.push_back(state);
  }
  wake_.notify_all();
  std::vector<std::unique_ptr<RequestHandle>> handles;
  for (auto& state : states) handles.push_back(std::make_unique<RequestHandle>(std::move(state)));
  return handles;
}

void Scheduler::cancel_all() {
  std::lock_guard lock(mutex_);
  for (auto& request : waiting_) request->cancel_requested = true;
  cancel_running_ = true;
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard lock(mutex_);
  return SchedulerStats{.running = running_,
                        .waiting = static_cast<int>(waiting_.size()),
                        .kv_tokens = kv_tokens_,
                        .kv_capacity = kv_stats_.total_blocks * kKvBlockPositions,
                        .kv_bytes = cache_.bytes(),
                        .kv_dtype = cache_.dtype(),
                        .kv = kv_stats_};
}

void Scheduler::loop() {
  while (true) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || running_ > 0 || !waiting_.empty(); });
      if (stopping_) break;
    }
    step();
  }
  // Shutting down: whatever is left ends as cancelled, so no handle waits forever.
  for (auto& slot : slots_) {
    if (slot->request) finish(*slot, /*cancelled=*/true);
  }
  std::lock_guard lock(mutex_);
  for (auto& request : waiting_) end_unadmitted(*request);
  waiting_.clear();
}

void Scheduler::step() {
  const auto start = Clock::now();
  reap_cancelled_running();
  admit();
  StepStats stats;
  plan_step(stats);
  const int64_t passes = workspace_.passes;
  run_step();
  stats.forward_passes = static_cast<int>(workspace_.passes - passes);

  int64_t kv_tokens = 0;
  for (const auto& slot : slots_) {
    if (slot->request) kv_tokens += slot->sequence.position();
  }
  {
    std::lock_guard lock(mutex_);
    kv_tokens_ = kv_tokens;
    kv_stats_ = cache_.stats();
    stats.running = running_;
    stats.waiting = static_cast<int>(waiting_.size());
  }
  stats.seconds = seconds_between(start, Clock::now());
  if (options_.on_step) options_.on_step(stats);
}

void Scheduler::reap_cancelled_running() {
  const bool all = cancel_running_.exchange(false);
  for (auto& slot : slots_) {
    if (slot->request && (all || slot->request->cancel_requested)) finish(*slot, /*cancelled=*/true);
  }
}

void Scheduler::admit() {
  while (true) {
    std::shared_ptr<detail::RequestState> request;
    {
      std::lock_guard lock(mutex_);
      std::erase_if(waiting_, [this](const auto& r) {
        if (!r->cancel_requested) return false;
        end_unadmitted(*r);
        return true;
      });
      if (waiting_.empty() || running_ >= static_cast<int>(slots_.size())) return;
      request = waiting_.front();
    }
    Slot* free_slot = nullptr;
    for (auto& slot : slots_) {
      if (!slot->request) {
        free_slot = slot.get();
        break;
      }
    }
    // A copy waits for its group's first request to finish prefilling, then attaches the prompt's cached blocks
    // instead of computing them again; a few steps at most, so those behind it wait too.
    if (request->leader && !request->leader->prompt_done && !request->leader->cancel_requested) return;
    // Oldest first: when the oldest cannot get its KV blocks yet, the others wait behind it, so a long request is
    // never starved by short ones.
    const Admission admission = start(*free_slot, request);
    if (admission == Admission::Waiting) return;
    std::lock_guard lock(mutex_);
    waiting_.pop_front();
    if (admission == Admission::Started) ++running_;
  }
}

// Admits `request` into `slot` if the KV cache can promise every block it may need; Waiting, changing nothing,
// otherwise. The sampler's scratch (and a constrained request's matcher) is allocated here, on the scheduler thread,
// rather than on the submitter's.
Scheduler::Admission Scheduler::start(Slot& slot, std::shared_ptr<detail::RequestState>& request) {
  const std::vector<int32_t>& prompt = request->prompt;
  if (request->options.grammar && !trie_) trie_ = std::make_unique<TokenTrie>(tokenizer_);
  std::optional<Continuation> continuation;
  try {
    continuation.emplace(tokenizer_, request->options, prompt, vocab_size_, trie_.get());
  } catch (const Error& e) {
    // Not expected for a request try_submit() accepted; the request ends with the error rather than the scheduler.
    RequestSummary how;
    how.prompt_tokens = static_cast<int>(prompt.size());
    how.lora_name = request->options.lora_name;
    how.error = e.what();
    how.total_seconds = seconds_between(request->submitted, Clock::now());
    request->prompt_done = true;
    if (options_.on_finish) options_.on_finish(how);
    request->end("", std::move(how));
    return Admission::Ended;
  }
  const int64_t cache_positions = cache_.total_blocks() * kKvBlockPositions;
  const int budget = static_cast<int>(std::min<int64_t>(
      {static_cast<int64_t>(prompt.size()) + request->options.max_new_tokens, context_length_, cache_positions}));
  // Keys and values computed under an adapter are found only by requests with the same adapter and scale.
  const LoraApplication lora{request->options.lora.get(), request->options.lora_scale};
  const uint64_t lora_key = lora.adapter ? lora_cache_key(std::span(&lora, 1)) : 0;
  if (request->options.cache_prompt) cache_.attach_prefix(slot.sequence, prompt, lora_key);
  const int64_t needed = KvCache::blocks_for(budget) - static_cast<int64_t>(slot.sequence.blocks().size());
  if (needed > cache_.available_blocks() - promised_blocks_) {
    cache_.release(slot.sequence);
    return Admission::Waiting;
  }
  promised_blocks_ += needed;
  slot.promised_blocks = needed;
  slot.budget = budget;
  slot.lora = lora;
  slot.lora_key = lora_key;
  slot.tokens.assign(prompt.begin(), prompt.end());
  slot.request = request;
  slot.continuation.reset();
  slot.continuation.emplace(std::move(*continuation));
  slot.admitted = admissions_++;
  slot.next_token = -1;
  slot.summary = RequestSummary{};
  slot.summary.prompt_tokens = static_cast<int>(prompt.size());
  slot.summary.lora_name = request->options.lora_name;
  slot.summary.queue_seconds = seconds_between(request->submitted, Clock::now());
  return Admission::Started;
}

// Takes blocks for the slot's sequence to hold `positions`, out of what was promised to it.
bool Scheduler::reserve(Slot& slot, int positions) {
  const size_t before = slot.sequence.blocks().size();
  if (!cache_.reserve(slot.sequence, positions)) return false;
  const int64_t taken = static_cast<int64_t>(slot.sequence.blocks().size() - before);
  slot.promised_blocks -= taken;
  promised_blocks_ -= taken;
  return true;
}

// This step's chunks: decode tokens first (running streams get their token without waiting for a prompt), then
// prompt chunks, oldest admission first.
void Scheduler::plan_step(StepStats& stats) {
  chunks_.clear();
  chunk_slots_.clear();
  const auto add = [&](Slot& slot, std::span<const int32_t> tokens, Logits logits) {
    if (!reserve(slot, slot.sequence.position() + static_cast<int>(tokens.size()))) {
      // Cannot happen while promises are kept; ending the request beats corrupting another.
      finish(slot, /*cancelled=*/false, "the KV cache ran out of blocks");
      return false;
    }
    chunks_.push_back(
        Chunk{&slot.sequence, tokens, logits, slot.lora.adapter ? LoraStack(&slot.lora, 1) : LoraStack()});
    chunk_slots_.push_back(&slot);
    return true;
  };
  for (auto& slot : slots_) {
    if (!slot->request || slot->next_token < 0) continue;
    slot->tokens.push_back(slot->next_token);
    if (add(*slot, std::span(slot->tokens).last(1), Logits::kLast)) ++stats.decoded;
  }

  std::vector<Slot*>& order = prefill_order_;
  order.clear();
  for (auto& slot : slots_) {
    if (slot->request && slot->continuation->tokens().empty()) order.push_back(slot.get());
  }
  std::sort(order.begin(), order.end(), [](const Slot* a, const Slot* b) { return a->admitted < b->admitted; });
  for (Slot* slot : order) {
    const int done = slot->sequence.position();
    const int prompt = static_cast<int>(slot->request->prompt.size());
    const int chunk = std::min(prompt - done, options_.prefill_chunk);
    // The oldest always gets its chunk; others only while the step stays within one chunk's worth of tokens.
    if (stats.prefill_tokens > 0 && stats.prefill_tokens + chunk > options_.prefill_chunk) break;
    const Logits logits = done + chunk == prompt ? Logits::kLast : Logits::kNone;
    if (!add(*slot, std::span(slot->tokens).subspan(done, chunk), logits)) continue;
    ++stats.prefilled;
    stats.prefill_tokens += chunk;
  }
}

// The one pass of the step, then the next token of every chunk that asked for logits.
void Scheduler::run_step() {
  if (chunks_.empty()) return;
  const std::span<float> logits(logits_.data(), logit_rows(chunks_) * vocab_size_);
  try {
    forward(model_, cache_, workspace_, chunks_, logits);
  } catch (const std::exception& e) {
    for (Slot* slot : chunk_slots_) finish(*slot, /*cancelled=*/false, e.what());
    return;
  }
  // Constrained sequences whose sampler needs the grammar's full mask get it computed on all threads at once, before
  // the sampling below (which runs on this thread); the masks are per sequence, the vocabulary's trie shared.
  if (trie_ && options_.pool && options_.pool->size() > 1) {
    masked_.clear();
    for (size_t i = 0; i < chunks_.size(); ++i) {
      if (chunks_[i].logits != Logits::kNone) masked_.push_back(&*chunk_slots_[i]->continuation);
    }
    if (masked_.size() > 1) {
      options_.pool->run(static_cast<int>(masked_.size()), [&](int task) { masked_[task]->prepare_mask(); });
    }
  }
  size_t row = 0;
  for (size_t i = 0; i < chunks_.size(); ++i) {
    Slot& slot = *chunk_slots_[i];
    cache_.publish(slot.sequence, slot.tokens, slot.lora_key);
    if (chunks_[i].logits == Logits::kNone) continue;
    take(slot, logits.subspan(row++ * vocab_size_, vocab_size_));
  }
}

// Samples the slot's next token from its logits, publishes the text it makes final, and ends the request when
// the continuation is done or its budget of positions is used up.
void Scheduler::take(Slot& slot, std::span<float> logits) {
  Continuation::Step step;
  try {
    step = slot.continuation->next(logits);
  } catch (const Error& e) {
    finish(slot, /*cancelled=*/false, e.what());
    return;
  }
  if (slot.continuation->tokens().size() == 1) {
    slot.summary.first_token_seconds = seconds_between(slot.request->submitted, Clock::now());
    slot.request->prompt_done = true;
  }
  const bool logprobs = step.emit && slot.request->options.top_logprobs >= 0;
  slot.request->publish(step.emit ? step.text : "", static_cast<int>(slot.continuation->tokens().size()),
                        logprobs ? &step : nullptr);
  if (step.done || slot.sequence.position() >= slot.budget) {
    finish(slot, /*cancelled=*/false);
    return;
  }
  slot.next_token = step.token;
}

void Scheduler::finish(Slot& slot, bool cancelled, const std::string& error) {
  RequestSummary how = std::move(slot.summary);
  how.completion_tokens = static_cast<int>(slot.continuation->tokens().size());
  how.finish_reason = slot.continuation->finish_reason();
  how.cancelled = cancelled;
  how.error = error;
  how.total_seconds = seconds_between(slot.request->submitted, Clock::now());
  const std::string rest = cancelled || !error.empty() ? "" : slot.continuation->flush();
  const auto request = std::move(slot.request);
  request->prompt_done = true;
  request->leader.reset();
  slot.continuation.reset();
  slot.next_token = -1;
  promised_blocks_ -= slot.promised_blocks;
  slot.promised_blocks = 0;
  cache_.release(slot.sequence);  // published blocks stay cached for later requests
  {
    // The slot is free before the submitter hears of the end, so whoever it tells may submit again at once.
    std::lock_guard lock(mutex_);
    --running_;
    kv_stats_ = cache_.stats();  // as the submitter, told of the end next, may read it
  }
  if (options_.on_finish) options_.on_finish(how);
  request->end(rest, std::move(how));
}

// A request that never got a slot: cancelled while waiting, or left over at shutdown.
void Scheduler::end_unadmitted(detail::RequestState& request) {
  request.prompt_done = true;
  request.leader.reset();
  RequestSummary how;
  how.prompt_tokens = static_cast<int>(request.prompt.size());
  how.lora_name = request.options.lora_name;
  how.cancelled = true;
  how.total_seconds = seconds_between(request.submitted, Clock::now());
  if (options_.on_finish) options_.on_finish(how);
  request.end("", std::move(how));
}

}  // namespace ernie
