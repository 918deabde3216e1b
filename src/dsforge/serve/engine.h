// The generation engine behind `dsforge serve`: continuous batching over the models' decode caches.
//
// Requests join and leave between decode steps. Running requests live in cohorts: one batched decode
// state (the latent KV cache for DeepSeek) whose rows share a time axis. A newcomer takes a free row
// of a cohort whose position is at least its prompt length: its prompt is prefilled into that row,
// right-aligned to end at the cohort's position, the positions before it marked as padding (RoPE is
// relative, so the result is the one the request would get alone). Every step then decodes one token
// for every running row of every cohort in one batched call per cohort. A model without relative
// positions (GPT-2, LSTM) gets one cohort per request.
//
// Prefill policy: newcomers join between two decode steps, up to `prefill_budget` prompt tokens in all
// per round (one prompt longer than that alone). Where the model's step takes rows with different token
// counts (decode_rows: DeepSeek's fused step), a newcomer's prompt is folded into the next step beside
// the running rows' tokens, ending at the step's position, so the weights are read once for both (a
// 9-token prompt alone cost about as much as a 16-row step); the step then holds at most the model's
// decode_rows_batch_tokens() token rows, each computed alone, so what a row gets does not depend on what
// shares its step. A prompt that does not fit is prefilled on its own first, and so is every prompt of
// the other models. Running streams wait at most one round's prefills. Beyond `max_batch` running
// requests, new ones wait in a queue of `max_queue`; beyond that submit() refuses. A cancelled request
// (client gone) leaves at the next step and its row is free for the next newcomer; an empty cohort
// frees its cache.
//
//   Engine engine(model, tokenizer, {});
//   auto req = std::make_shared<Request>(); req->prompt = ids; req->sampling.max_new_tokens = 16;
//   req->on_token = [](int64_t id, double logprob) { ... };   // the engine's threads
//   engine.submit(req); req->wait();
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dsforge/model/causal_lm.h"
#include "dsforge/model/generate.h"

namespace dsforge::serve {

struct TokenLogprob {
  int64_t id = 0;
  double logprob = 0;
};

struct Request {
  std::vector<int64_t> prompt;
  model::SampleOptions sampling;  // max_new_tokens, temperature, top_k, top_p, seed, stop_tokens
  int64_t top_logprobs = 0;       // alternatives reported per token (0 = just the chosen token's)
  // Called on one of the engine's threads for each generated token (one call of a request at a time);
  // return false to stop (a stop string matched).
  std::function<bool(int64_t id, double logprob, const std::vector<TokenLogprob>& top)> on_token;
  // Called by the engine's threads once the request has ended (finished() is then true): a consumer that
  // waits on its own condition for tokens is woken here, since no token may follow the last one.
  std::function<void()> on_finish;
  std::atomic<bool> cancelled{false};

  // Set by the engine.
  std::vector<int64_t> output;
  std::string finish_reason;  // "stop" (stop token or string), "length", "cancelled", "error"
  std::string error;
  double queued_s = 0, first_token_s = 0, total_s = 0;  // from submit()

  void wait();
  bool wait_for(double seconds);
  bool finished() const;

 private:
  friend class Engine;
  std::chrono::steady_clock::time_point submitted_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
};

struct EngineOptions {
  int64_t max_batch = 16;        // running requests at once
  int64_t max_queue = 64;        // waiting beyond that; more are refused
  int64_t prefill_budget = 512;  // prompt tokens prefilled between two decode steps
  int64_t context = 0;           // cache positions per cohort (0 = the model's max_position_embeddings)
  int64_t join_floor = 128;      // a new cohort starts at max(prompt, join_floor) so later prompts fit
  // Called on the engine thread after each round's tokens are delivered (newcomers' first tokens and
  // every step's): a server wakes its streams' writers here once, not at every token.
  std::function<void()> after_round;
};

// What /metrics reports; read with Engine::stats().
struct EngineStats {
  int64_t running = 0, queued = 0, cohorts = 0;
  int64_t steps = 0, generated_tokens = 0, prompt_tokens = 0, completed = 0, cancelled = 0, refused = 0;
  double occupancy_sum = 0;  // sum over steps of running rows / max_batch
  // The engine thread's time: prompts prefilled on their own, decode steps (the model's batched call,
  // folded prompts included), and the steps' sampling and delivery of tokens to the requests.
  double prefill_s = 0, decode_s = 0, sample_s = 0;
};

class Engine {
 public:
  Engine(model::CausalLm model, EngineOptions opts);
  ~Engine();  // stops the thread; unfinished requests end "cancelled"
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues `r`; false when the queue is full (the caller answers 429). Throws ConfigError for a prompt
  // that cannot fit the context with its max_new_tokens.
  bool submit(std::shared_ptr<Request> r);
  EngineStats stats() const;
  int64_t context() const { return context_; }
  // Waits until nothing is queued or running (SIGTERM drain).
  void drain();

 private:
  struct Cohort;
  struct Running;
  void loop();
  bool admit(std::shared_ptr<Request> r, int64_t& budget);
  void step(Cohort& c);
  void finish(Running& r, const std::string& reason);
  // A row's next token: drawn (sampling, its log-probability, the top alternatives asked for) by
  // draw(), then handed to the request by deliver(); both touch only that request's state (the callers
  // count the tokens; finish() at its end takes mu_), so they run for several rows at once; false when
  // the request is done.
  struct Draw;
  Draw draw(Running& r, const at::Tensor& logits_row) const;
  bool deliver(Running& r, Draw d);

  model::CausalLm model_;
  EngineOptions opts_;
  int64_t context_;
  bool shares_rows_;
  // The most token rows a step computes row by row (model::CausalLmImpl::decode_rows_batch_tokens), where
  // the model's step takes prompts beside running rows (decode_rows); 0 where it does not.
  int64_t fold_rows_ = 0;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Request>> queue_;
  std::vector<std::unique_ptr<Cohort>> cohorts_;
  // The last cohort that emptied, kept with its cache for the next newcomer: allocating and zeroing a
  // cache (tens of MB at a 2048-token context) on every request cost a lone client more than its prefill.
  std::unique_ptr<Cohort> spare_;
  EngineStats stats_;
  int64_t inflight_ = 0;  // submitted and not yet finished
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace dsforge::serve
