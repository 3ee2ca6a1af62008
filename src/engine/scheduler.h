// Continuous batching: concurrent generation requests share one model and advance together, step by step.
//
// One scheduler thread owns every Session and runs the model; any number of other threads submit requests and read
// their output through a RequestHandle. A step:
//   1. forgets requests cancelled since the last step: waiting ones leave the queue, running ones free their slot;
//   2. admits waiting requests, oldest first, into free slots (a slot is a Session allocated at start-up, reset and
//      reused, so serving allocates no KV cache);
//   3. decodes one token for every running request that is past its prompt, all in ONE decode_batch() call, and
//      samples each one's next token;
//   4. prefills prompts in chunks of prefill_chunk tokens: the oldest prefilling request's next chunk, then other
//      prefilling requests' next chunks while the step's prompt tokens stay within prefill_chunk. A request whose
//      prompt is complete samples its first token from the last chunk's logits.
// Chunking bounds the time of a step, so a long prompt delays the running streams by one chunk per token rather
// than by its whole prefill. A request's output never depends on what runs beside it: its chunk boundaries depend
// only on its own prompt, decode_batch gives each session what Session::forward would, and each request has its
// own sampler and seed.
//
// Backpressure: at most max_running requests run and max_waiting wait; try_submit() refuses more at once, so the
// caller can answer "busy" instead of queueing without bound. Cancellation (RequestHandle::cancel(), or dropping
// the handle) takes effect at the next step.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/continuation.h"
#include "engine/generator.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace ernie {

// What one step did; handed to SchedulerOptions::on_step.
struct StepStats {
  int decoded = 0;         // sequences that got a token from this step's decode_batch() call (the batch size)
  int prefill_tokens = 0;  // prompt tokens run through the model
  int running = 0;         // requests holding a slot after the step
  int waiting = 0;         // requests queued after the step
  double seconds = 0;      // wall time of the step
};

// How a request went, complete once RequestHandle::wait() has reported it finished.
struct RequestSummary {
  int prompt_tokens = 0;
  int completion_tokens = 0;  // generated ids, including a final end-of-sequence id
  FinishReason finish_reason = FinishReason::Length;
  bool cancelled = false;
  std::string error;               // non-empty if the model raised an error (not expected for a validated request)
  double queue_seconds = 0;        // submission -> admission into a slot
  double first_token_seconds = 0;  // submission -> first token sampled (time to first token); 0 if none
  double total_seconds = 0;        // submission -> finished
};

struct SchedulerOptions {
  int max_running = 8;        // slots: requests generating at once, one preallocated Session each
  int max_waiting = 64;       // requests queued beyond the slots; try_submit() refuses more
  int context_length = 4096;  // per slot (capped at the model's max_position_embeddings)
  int prefill_chunk = 128;    // prompt tokens per model pass, and the most any step prefills
  std::optional<DType> kv_dtype;  // KV-cache type of every slot; nullopt: the Session default
  ThreadPool* pool = nullptr;     // runs each step's matmuls and attention; null: the scheduler thread alone
  // Called on the scheduler thread after every step (metrics). It must not call into the scheduler; while it runs
  // no step runs, which tests use to hold the scheduler at a known point.
  std::function<void(const StepStats&)> on_step;
  // Called on the scheduler thread when a request ends, however it ends (metrics). It must not call into the
  // scheduler.
  std::function<void(const RequestSummary&)> on_finish;
};

namespace detail {
struct RequestState;
}

// The submitter's side of a request. wait(), cancel() and summary() may be called from any one thread at a time.
// Destroying the handle cancels the request if it has not finished.
class RequestHandle {
 public:
  explicit RequestHandle(std::shared_ptr<detail::RequestState> state) : state_(std::move(state)) {}
  RequestHandle(const RequestHandle&) = delete;
  RequestHandle& operator=(const RequestHandle&) = delete;
  ~RequestHandle();

  struct Update {
    std::string text;  // text made final since the previous wait(); special tokens and stop strings never appear
    int tokens = 0;    // tokens generated so far (text may lag: a partial character or stop-string prefix waits)
    bool finished = false;
  };
  // Returns as soon as there is new text, the first token (even if it shows no text yet), or the end; or after
  // `timeout` with none of them.
  Update wait(std::chrono::milliseconds timeout);
  // Asks the scheduler to drop the request at its next step; its slot and KV cache are freed then.
  void cancel();
  RequestSummary summary() const;

 private:
  std::shared_ptr<detail::RequestState> state_;
  int seen_tokens_ = 0;  // `tokens` of the previous wait()
};

struct SchedulerStats {
  int running = 0;
  int waiting = 0;
  int64_t kv_tokens = 0;    // tokens held in the running requests' KV caches (as of the last step)
  int64_t kv_capacity = 0;  // slots x context length
  size_t kv_bytes = 0;      // memory of all slots' KV caches
};

class Scheduler {
 public:
  // Allocates the slots and starts the scheduler thread. The model and tokenizer must outlive the scheduler.
  Scheduler(const Model& model, const Tokenizer& tokenizer, SchedulerOptions options);
  // Cancels whatever is still waiting or running (their handles report finished, cancelled) and joins the thread.
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a generation of `options.max_new_tokens` tokens at most after `prompt`. Raises ernie::Error if the
  // request is invalid: empty prompt, an id outside the vocabulary, a prompt leaving no room to generate in the
  // context, max_new_tokens < 1, sampling params out of range. Returns nullptr, queueing nothing, when
  // max_running + max_waiting requests are already in. Thread-safe.
  std::unique_ptr<RequestHandle> try_submit(std::vector<int32_t> prompt, GenerationOptions options);

  // Cancels every request waiting or running now (e.g. on a forced shutdown). Thread-safe.
  void cancel_all();

  SchedulerStats stats() const;  // thread-safe
  const SchedulerOptions& options() const { return options_; }
  int context_length() const { return context_length_; }

 private:
  using Clock = std::chrono::steady_clock;
  struct Slot {
    std::unique_ptr<Session> session;
    std::shared_ptr<detail::RequestState> request;  // null while the slot is free
    std::optional<Continuation> continuation;
    uint64_t admitted = 0;    // admission order, for first-come-first-served prefill
    int32_t next_token = -1;  // sampled and not yet fed; >= 0 marks a slot ready to decode
    RequestSummary summary;   // filled in as the request runs, handed over when it ends
  };

  void loop();
  void step();
  void reap_cancelled_running();
  void admit();
  void decode();
  int prefill();
  void prefill_chunk(Slot& slot);
  void take(Slot& slot, std::span<float> logits);
  void finish(Slot& slot, bool cancelled, const std::string& error = {});
  void end_unadmitted(detail::RequestState& request);

  const Model& model_;
  const Tokenizer& tokenizer_;
  const SchedulerOptions options_;
  int context_length_;
  int vocab_size_;
  std::vector<Slot> slots_;  // touched only by the scheduler thread
  uint64_t admissions_ = 0;
  // decode_batch() arguments and per-step scratch, sized for every slot at start-up: steps do not allocate.
  std::vector<Session*> batch_sessions_;
  std::vector<int32_t> batch_tokens_;
  std::vector<Slot*> batch_slots_;
  std::vector<float> batch_logits_;
  std::vector<float> prefill_logits_;
  std::vector<Slot*> prefill_order_;                             // prefill()'s scratch
  std::vector<std::shared_ptr<detail::RequestState>> admitted_;  // admit()'s scratch

  mutable std::mutex mutex_;  // guards the fields below
  std::condition_variable wake_;
  std::deque<std::shared_ptr<detail::RequestState>> waiting_;
  int running_ = 0;
  int64_t kv_tokens_ = 0;
  bool stopping_ = false;
  std::atomic<bool> cancel_running_{false};

  std::thread thread_;  // last: started once everything above exists
};

}  // namespace ernie
