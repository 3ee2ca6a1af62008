// Continuous batching: concurrent generation requests share one model and advance together, step by step.
//
// One scheduler thread owns the KV cache, the workspace and every running sequence, and runs the model; any number
// of other threads submit requests and read their output through a RequestHandle. A step:
//   1. forgets requests cancelled since the last step: waiting ones leave the queue, running ones free their slot;
//   2. admits waiting requests, oldest first, while a slot is free and the KV cache can promise the request every
//      block it may need (prompt + max_new_tokens, capped by the context). A new request first attaches the longest
//      cached prefix of its prompt (blocks other requests filled, kv_cache.h) and prefills only the rest;
//   3. builds ONE list of chunks: a single token for every running request that is past its prompt, then prompt
//      chunks, the oldest prefilling request's first and others while the step's prompt tokens stay within
//      prefill_chunk; and runs them in ONE forward() pass over the weights;
//   4. samples each decoded request's next token, and the first token of each request whose prompt just completed.
// Chunking bounds the time of a step, so a long prompt delays the running streams by one chunk per step rather than
// by its whole prefill. A request's output never depends on what runs beside it, nor on whether its prefix came from
// the cache: forward() gives every row what it would compute alone, and each request has its own sampler and seed.
//
// Backpressure: at most max_running requests run and max_waiting wait; try_submit() refuses more at once, so the
// caller can answer "busy" instead of queueing without bound. A request waits for KV blocks rather than running the
// cache out of memory. Cancellation (RequestHandle::cancel(), or dropping the handle) takes effect at the next step.
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
#include "model/kv_cache.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace ernie {

// What one step did; handed to SchedulerOptions::on_step.
struct StepStats {
  int decoded = 0;         // sequences that got a one-token chunk in this step's pass
  int prefilled = 0;       // sequences that got a prompt chunk
  int prefill_tokens = 0;  // prompt tokens run through the model
  int forward_passes = 0;  // passes over the weights (1 for any step that ran the model)
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
  std::string lora_name;           // GenerationOptions::lora_name of the request
};

struct SchedulerOptions {
  int max_running = 8;        // requests generating at once
  int max_waiting = 64;       // requests queued beyond them; try_submit() refuses more
  int context_length = 4096;  // per request (capped at the model's max_position_embeddings)
  int prefill_chunk = 128;    // prompt tokens per model pass, and the most any step prefills
  // KV-cache size, shared by all requests: kv_memory_bytes if set, else kv_tokens if set, else max_running x
  // context_length tokens.
  int64_t kv_memory_bytes = 0;
  int64_t kv_tokens = 0;
  std::optional<DType> kv_dtype;  // nullopt: default_kv_dtype(model)
  bool prefix_cache = true;       // reuse cached prompt prefixes across requests
  ThreadPool* pool = nullptr;     // runs each step's matmuls and attention; null: the scheduler thread alone
  int max_lora_rank = 0;          // the largest adapter rank a request may bring (GenerationOptions::lora); 0: none
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

  // A generated token's log-probability, for requests with top_logprobs >= 0.
  struct TokenInfo {
    int32_t token;
    float logprob;
    std::vector<TokenLogprob> top;
  };
  struct Update {
    std::string text;  // text made final since the previous wait(); special tokens and stop strings never appear
    int tokens = 0;    // tokens generated so far (text may lag: a partial character or stop-string prefix waits)
    bool finished = false;
    std::vector<TokenInfo> logprobs;  // of the tokens shown since the previous wait() (not a final end-of-sequence)
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
  int64_t kv_tokens = 0;    // positions filled in the running requests' sequences (as of the last step)
  int64_t kv_capacity = 0;  // positions the KV cache holds
  size_t kv_bytes = 0;      // memory reserved for the KV cache
  DType kv_dtype = DType::F16;
  KvCacheStats kv;  // blocks and prefix-cache counters (as of the last step)
};

class Scheduler {
 public:
  // Allocates the KV cache and workspace and starts the scheduler thread. The model and tokenizer must outlive the
  // scheduler.
  Scheduler(const Model& model, const Tokenizer& tokenizer, SchedulerOptions options);
  // Cancels whatever is still waiting or running (their handles report finished, cancelled) and joins the thread.
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a generation of `options.max_new_tokens` tokens at most after `prompt`. Raises ernie::Error if the
  // request is invalid: empty prompt, an id outside the vocabulary, a prompt leaving no room to generate in the
  // context or the whole KV cache, max_new_tokens < 1, sampling params out of range. Returns nullptr, queueing nothing,
  // when max_running + max_waiting requests are already in. Thread-safe.
  std::unique_ptr<RequestHandle> try_submit(std::vector<int32_t> prompt, GenerationOptions options);
  // `copies` generations of one prompt (OpenAI's n), the i-th sampling with options.sampling.seed + i. They are
  // queued together or not at all (empty when they do not all fit). When the prompt may be cached (cache_prompt),
  // the copies after the first wait for its prefill and then attach its KV blocks, so the prompt is computed once.
  std::vector<std::unique_ptr<RequestHandle>> try_submit_copies(std::vector<int32_t> prompt, GenerationOptions options,
                                                                int copies);

  // Cancels every request waiting or running now (e.g. on a forced shutdown). Thread-safe.
  void cancel_all();

  SchedulerStats stats() const;  // thread-safe
  const SchedulerOptions& options() const { return options_; }
  int context_length() const { return context_length_; }

 private:
  using Clock = std::chrono::steady_clock;
  struct Slot {
    explicit Slot(int context_length) : sequence(context_length) { tokens.reserve(context_length); }
    Sequence sequence;
    std::vector<int32_t> tokens;  // the prompt, then each generated token as it is fed: sequence's positions
    int budget = 0;               // positions the request may fill (prompt + max_new_tokens, capped)
    LoraApplication lora;         // the request's adapter (none: adapter null), and the key of its cached blocks
    uint64_t lora_key = 0;
    int64_t promised_blocks = 0;                    // blocks promised at admission and not yet taken
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
  enum class Admission { Waiting, Started, Ended };
  Admission start(Slot& slot, std::shared_ptr<detail::RequestState>& request);
  void plan_step(StepStats& stats);
  bool reserve(Slot& slot, int positions);
  void run_step();
  void take(Slot& slot, std::span<float> logits);
  void finish(Slot& slot, bool cancelled, const std::string& error = {});
  void end_unadmitted(detail::RequestState& request);

  const Model& model_;
  const Tokenizer& tokenizer_;
  const SchedulerOptions options_;
  int context_length_;
  int vocab_size_;
  // Touched only by the scheduler thread.
  KvCache cache_;
  Workspace workspace_;  // for prefill_chunk + max_running rows: the largest step
  std::vector<std::unique_ptr<Slot>> slots_;
  int64_t promised_blocks_ = 0;  // sum of the slots' promised_blocks
  uint64_t admissions_ = 0;
  // One step's chunks, their slots and logits, sized for every slot at start-up: steps do not allocate.
  std::vector<Chunk> chunks_;
  std::vector<Slot*> chunk_slots_;
  std::vector<float> logits_;
  std::vector<Slot*> prefill_order_;   // plan_step()'s scratch
  std::unique_ptr<TokenTrie> trie_;    // the vocabulary's, built at the first constrained request
  std::vector<Continuation*> masked_;  // run_step()'s scratch: the sequences whose masks are computed in parallel

  mutable std::mutex mutex_;  // guards the fields below
  std::condition_variable wake_;
  std::deque<std::shared_ptr<detail::RequestState>> waiting_;
  int running_ = 0;
  int64_t kv_tokens_ = 0;
  KvCacheStats kv_stats_;
  bool stopping_ = false;
  std::atomic<bool> cancel_running_{false};

  std::thread thread_;  // last: started once everything above exists
};

}  // namespace ernie
