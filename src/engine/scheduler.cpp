#include "engine/scheduler.h"

#include <algorithm>

#include "core/error.h"
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

  std::mutex mutex;  // guards the fields below
  std::condition_variable changed;
  std::string pending;  // text not yet taken by wait()
  int generated = 0;    // tokens generated so far
  bool finished = false;
  RequestSummary summary;  // complete when finished

  // Scheduler thread: the `tokens`-th token was generated, making `text` final. Wakes the reader for new text, and
  // for the first token even without text, so that it can tell the client generation has started.
  void publish(std::string_view text, int tokens) {
    if (text.empty() && tokens != 1) return;
    {
      std::lock_guard lock(mutex);
      pending += text;
      generated = tokens;
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
    return !state_->pending.empty() || state_->finished || (seen == 0 && state_->generated > 0);
  });
  seen_tokens_ = state_->generated;
  Update update{std::move(state_->pending), state_->generated, state_->finished};
  state_->pending.clear();
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

Scheduler::Scheduler(const Model& model, const Tokenizer& tokenizer, SchedulerOptions options)
    : model_(model), tokenizer_(tokenizer), options_(std::move(options)), vocab_size_(model.config().vocab_size) {
  if (options_.max_running < 1) fail("the scheduler needs at least one slot (max_running >= 1)");
  if (options_.max_waiting < 0) fail("max_waiting must be >= 0");
  if (options_.prefill_chunk < 1) fail("prefill_chunk must be >= 1");
  // A slot's buffers serve prefill chunks and, for the lead slot, the whole decode batch.
  const SessionOptions session_options{.context_length = options_.context_length,
                                       .max_batch_tokens = std::max(options_.prefill_chunk, options_.max_running),
                                       .kv_dtype = options_.kv_dtype,
                                       .pool = options_.pool};
  slots_.resize(options_.max_running);
  for (Slot& slot : slots_) slot.session = std::make_unique<Session>(model_, session_options);
  context_length_ = slots_[0].session->context_length();
  batch_sessions_.reserve(slots_.size());
  batch_tokens_.reserve(slots_.size());
  batch_slots_.reserve(slots_.size());
  prefill_order_.reserve(slots_.size());
  admitted_.reserve(slots_.size());
  batch_logits_.resize(slots_.size() * vocab_size_);
  prefill_logits_.resize(vocab_size_);
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
  check_prompt(prompt, vocab_size_, 0, context_length_);
  if (options.max_new_tokens < 1) fail("max_new_tokens must be at least 1");
  options.sampling.validate();

  auto state = std::make_shared<detail::RequestState>();
  state->prompt = std::move(prompt);
  state->options = std::move(options);
  state->submitted = Clock::now();
  {
    std::lock_guard lock(mutex_);
    if (running_ + static_cast<int64_t>(waiting_.size()) >= options_.max_running + options_.max_waiting) {
      return nullptr;
    }
    waiting_.push_back(state);
  }
  wake_.notify_all();
  return std::make_unique<RequestHandle>(std::move(state));
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
                        .kv_capacity = static_cast<int64_t>(slots_.size()) * context_length_,
                        .kv_bytes = slots_.size() * slots_[0].session->kv_cache_bytes()};
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
  for (Slot& slot : slots_) {
    if (slot.request) finish(slot, /*cancelled=*/true);
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
  // Decode before prefill: running streams get their token without waiting for this step's prompt chunk.
  batch_slots_.clear();
  for (Slot& slot : slots_) {
    if (slot.request && slot.next_token >= 0) batch_slots_.push_back(&slot);
  }
  stats.decoded = static_cast<int>(batch_slots_.size());
  decode();
  stats.prefill_tokens = prefill();

  int64_t kv_tokens = 0;
  for (const Slot& slot : slots_) {
    if (slot.request) kv_tokens += slot.session->position();
  }
  {
    std::lock_guard lock(mutex_);
    kv_tokens_ = kv_tokens;
    stats.running = running_;
    stats.waiting = static_cast<int>(waiting_.size());
  }
  stats.seconds = seconds_between(start, Clock::now());
  if (options_.on_step) options_.on_step(stats);
}

void Scheduler::reap_cancelled_running() {
  const bool all = cancel_running_.exchange(false);
  for (Slot& slot : slots_) {
    if (slot.request && (all || slot.request->cancel_requested)) finish(slot, /*cancelled=*/true);
  }
}

void Scheduler::admit() {
  std::vector<std::shared_ptr<detail::RequestState>>& admitted = admitted_;
  admitted.clear();
  {
    std::lock_guard lock(mutex_);
    std::erase_if(waiting_, [this](const auto& request) {
      if (!request->cancel_requested) return false;
      end_unadmitted(*request);
      return true;
    });
    const int free_slots = static_cast<int>(slots_.size()) - running_;
    while (static_cast<int>(admitted.size()) < free_slots && !waiting_.empty()) {
      admitted.push_back(std::move(waiting_.front()));
      waiting_.pop_front();
    }
    running_ += static_cast<int>(admitted.size());
  }
  // The sampler's scratch is allocated here, on the scheduler thread, rather than on the submitter's.
  auto next = admitted.begin();
  for (Slot& slot : slots_) {
    if (next == admitted.end()) break;
    if (slot.request) continue;
    slot.request = std::move(*next++);
    const detail::RequestState& request = *slot.request;
    slot.continuation.emplace(tokenizer_, request.options, request.prompt, vocab_size_);
    slot.admitted = admissions_++;
    slot.next_token = -1;
    slot.summary = RequestSummary{};
    slot.summary.prompt_tokens = static_cast<int>(request.prompt.size());
    slot.summary.queue_seconds = seconds_between(request.submitted, Clock::now());
    slot.session->reset();
  }
}

void Scheduler::decode() {
  if (batch_slots_.empty()) return;
  batch_sessions_.clear();
  batch_tokens_.clear();
  for (Slot* slot : batch_slots_) {
    batch_sessions_.push_back(slot->session.get());
    batch_tokens_.push_back(slot->next_token);
  }
  const std::span<float> logits(batch_logits_.data(), batch_slots_.size() * vocab_size_);
  try {
    decode_batch(batch_sessions_, batch_tokens_, logits);
  } catch (const std::exception& e) {
    for (Slot* slot : batch_slots_) finish(*slot, /*cancelled=*/false, e.what());
    return;
  }
  for (size_t i = 0; i < batch_slots_.size(); ++i) take(*batch_slots_[i], logits.subspan(i * vocab_size_, vocab_size_));
}

int Scheduler::prefill() {
  // Prefilling slots, oldest admission first.
  std::vector<Slot*>& order = prefill_order_;
  order.clear();
  for (Slot& slot : slots_) {
    if (slot.request && slot.continuation->tokens().empty()) order.push_back(&slot);
  }
  std::sort(order.begin(), order.end(), [](const Slot* a, const Slot* b) { return a->admitted < b->admitted; });

  int tokens = 0;
  for (Slot* slot : order) {
    const int remaining = static_cast<int>(slot->request->prompt.size()) - slot->session->position();
    const int chunk = std::min(remaining, options_.prefill_chunk);
    // The oldest always gets its chunk; others only while the step stays within one chunk's worth of tokens.
    if (tokens > 0 && tokens + chunk > options_.prefill_chunk) break;
    prefill_chunk(*slot);
    tokens += chunk;
  }
  return tokens;
}

// Runs the slot's next prompt chunk: positions position() .. position()+chunk-1 of its prompt.
void Scheduler::prefill_chunk(Slot& slot) {
  const std::vector<int32_t>& prompt = slot.request->prompt;
  const int done = slot.session->position();
  const int chunk = std::min(static_cast<int>(prompt.size()) - done, options_.prefill_chunk);
  std::span<const float> logits;
  try {
    logits = slot.session->forward(std::span<const int32_t>(prompt).subspan(done, chunk));
  } catch (const std::exception& e) {
    finish(slot, /*cancelled=*/false, e.what());
    return;
  }
  if (slot.session->position() < static_cast<int>(prompt.size())) return;
  std::copy(logits.begin(), logits.end(), prefill_logits_.begin());
  take(slot, prefill_logits_);
}

// Samples the slot's next token from its logits, publishes the text it makes final, and ends the request when
// the continuation is done or the context is full.
void Scheduler::take(Slot& slot, std::span<float> logits) {
  const auto step = slot.continuation->next(logits);
  if (slot.continuation->tokens().size() == 1) {
    slot.summary.first_token_seconds = seconds_between(slot.request->submitted, Clock::now());
  }
  slot.request->publish(step.emit ? step.text : "", static_cast<int>(slot.continuation->tokens().size()));
  if (step.done || slot.session->position() >= context_length_) {
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
  slot.continuation.reset();
  slot.next_token = -1;
  slot.session->reset();
  {
    // The slot is free before the submitter hears of the end, so whoever it tells may submit again at once.
    std::lock_guard lock(mutex_);
    --running_;
  }
  if (options_.on_finish) options_.on_finish(how);
  request->end(rest, std::move(how));
}

// A request that never got a slot: cancelled while waiting, or left over at shutdown.
void Scheduler::end_unadmitted(detail::RequestState& request) {
  RequestSummary how;
  how.prompt_tokens = static_cast<int>(request.prompt.size());
  how.cancelled = true;
  how.total_seconds = seconds_between(request.submitted, Clock::now());
  if (options_.on_finish) options_.on_finish(how);
  request.end("", std::move(how));
}

}  // namespace ernie
