#include "dsforge/serve/engine.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <random>

#include "dsforge/core/error.h"
#include "dsforge/kernels/platform.h"

namespace dsforge::serve {
namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// log softmax(logits)[id] of one float32 row: the cross-entropy loop's lse - x_id (float sums of exp,
// about 1e-6 from a double log_softmax) without the half-dozen tensor operations per token.
double log_probability(const at::Tensor& row, int64_t id) {
  const at::Tensor x = row.to(at::kFloat).contiguous();
  thread_local std::vector<float> scratch;
  scratch.resize(static_cast<size_t>(x.numel()));
  return -kernels::vector_loops().cross_entropy_row_f32(x.data_ptr<float>(), nullptr, scratch.data(), x.numel(), id,
                                                        0.0f, 1.0f);
}
}  // namespace

// ---- Request ----

void Request::wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return done_; });
}

bool Request::wait_for(double seconds) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, std::chrono::duration<double>(seconds), [&] { return done_; });
}

bool Request::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return done_;
}

// ---- Engine ----

struct Engine::Running {
  std::shared_ptr<Request> req;
  Clock::time_point submitted;
  std::mt19937_64 rng;
  std::vector<int64_t> history;
  int64_t next_input = 0;  // the token the next decode step feeds
  int64_t slot = 0;
  bool folded = false;     // its prompt (req->prompt) is fed by its first step beside the running rows
  bool prefilled = false;  // its prompt went through on its own this round: it sits the step out
};

struct Engine::Cohort {
  std::unique_ptr<model::DecodeState> state;  // batch = capacity rows
  int64_t capacity = 1;
  int64_t len = 0;  // the shared position: the next token of every row goes here
  std::vector<std::unique_ptr<Running>> rows;  // index = slot; nullptr = free
  int64_t running() const {
    int64_t n = 0;
    for (const auto& r : rows) n += r != nullptr;
    return n;
  }
  // Token rows of the next step: a running row's next token, a folded prompt's tokens.
  int64_t step_tokens() const {
    int64_t n = 0;
    for (const auto& r : rows)
      if (r) n += r->folded ? static_cast<int64_t>(r->req->prompt.size()) : !r->prefilled;
    return n;
  }
};

Engine::Engine(model::CausalLm model, EngineOptions opts) : model_(std::move(model)), opts_(opts) {
  if (opts_.max_batch < 1 || opts_.max_queue < 0 || opts_.prefill_budget < 1)
    throw ConfigError("serve: max_batch and prefill_budget must be at least 1, max_queue at least 0");
  model_->eval();
  const int64_t limit = model_->config().max_position_embeddings;
  context_ = opts_.context > 0 ? std::min(opts_.context, limit) : limit;
  // A probe: can this model's decode state share rows (relative positions)?
  // and can its step take a newcomer's prompt beside the running rows' tokens (decode_rows)?
  {
    at::NoGradGuard g;
    auto probe = model_->start_decode(1, 2, model::CacheMode::kLatentAbsorbed, at::Tensor());
    shares_rows_ = probe->rows_view(0, 1, 0) != nullptr;
    if (shares_rows_ && model_->decode_rows({0}, {{0}}, *probe).defined()) fold_rows_ = model_->decode_rows_batch_tokens();
  }
  thread_ = std::thread([this] { loop(); });
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool Engine::submit(std::shared_ptr<Request> r) {
  const int64_t P = static_cast<int64_t>(r->prompt.size());
  if (P == 0) throw ConfigError("the prompt is empty");
  if (P + r->sampling.max_new_tokens > context_)
    throw ConfigError(fmt("the prompt has ", P, " tokens and max_tokens is ", r->sampling.max_new_tokens, "; together they must fit the context of ",
                          context_, " tokens"));
  const int64_t V = model_->config().vocab_size;
  for (int64_t id : r->prompt)
    if (id < 0 || id >= V) throw ConfigError(fmt("token id ", id, " is outside the vocabulary of ", V));
  std::lock_guard<std::mutex> lock(mu_);
  if (static_cast<int64_t>(queue_.size()) >= opts_.max_queue && stats_.running >= opts_.max_batch) {
    ++stats_.refused;
    return false;
  }
  r->submitted_ = Clock::now();
  ++inflight_;
  queue_.push_back(std::move(r));
  cv_.notify_all();
  return true;
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  EngineStats s = stats_;
  s.queued = static_cast<int64_t>(queue_.size());
  return s;
}

void Engine::drain() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return inflight_ == 0; });
}

void Engine::finish(Running& r, const std::string& reason) {
  r.req->finish_reason = reason;
  r.req->total_s = since(r.submitted);
  {
    std::lock_guard<std::mutex> lock(mu_);  // counted before the waiter wakes: stats() then includes it
    if (reason == "cancelled") ++stats_.cancelled;
    else ++stats_.completed;
    --inflight_;
  }
  {
    std::lock_guard<std::mutex> lock(r.req->mu_);
    r.req->done_ = true;
  }
  r.req->cv_.notify_all();
  if (r.req->on_finish) r.req->on_finish();
  cv_.notify_all();
}

struct Engine::Draw {
  int64_t id = 0;
  double logprob = 0;
  std::vector<TokenLogprob> top;
};

Engine::Draw Engine::draw(Running& r, const at::Tensor& logits_row) const {
  const Request& q = *r.req;
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  Draw d;
  d.id = model::sample_token(logits_row, r.history, q.sampling, uniform(r.rng));
  if (q.top_logprobs > 0) {
    const at::Tensor lp = at::log_softmax(logits_row.to(at::kDouble), -1);
    auto [values, ids] = lp.topk(std::min<int64_t>(q.top_logprobs, lp.size(0)));
    for (int64_t i = 0; i < values.size(0); ++i) d.top.push_back({ids[i].item<int64_t>(), values[i].item<double>()});
  }
  d.logprob = log_probability(logits_row, d.id);
  return d;
}

bool Engine::deliver(Running& r, Draw d) {
  Request& q = *r.req;
  const int64_t id = d.id;
  if (q.output.empty()) q.first_token_s = since(r.submitted);
  q.output.push_back(id);
  r.history.push_back(id);
  r.next_input = id;
  bool go_on = !q.on_token || q.on_token(id, d.logprob, d.top);
  const auto& stops = q.sampling.stop_tokens;
  if (!go_on || std::find(stops.begin(), stops.end(), id) != stops.end()) {
    finish(r, "stop");
    return false;
  }
  if (static_cast<int64_t>(q.output.size()) >= q.sampling.max_new_tokens) {
    finish(r, "length");
    return false;
  }
  return true;
}

// Places `r` in a cohort and prefills its prompt; false when it must wait (no room now).
bool Engine::admit(std::shared_ptr<Request> req, int64_t& budget) {
  const int64_t P = static_cast<int64_t>(req->prompt.size()), N = req->sampling.max_new_tokens;
  int64_t running = 0;
  for (const auto& c : cohorts_) running += c->running();
  if (running >= opts_.max_batch) return false;
  if (P > budget && budget < opts_.prefill_budget) return false;  // a long prompt waits for a fresh budget

  Cohort* home = nullptr;
  int64_t slot = -1;
  if (shares_rows_)
    for (auto& c : cohorts_) {
      if (c->len < P || c->len + N > context_) continue;
      for (int64_t s = 0; s < c->capacity; ++s)
        if (!c->rows[s]) {
          home = c.get();
          slot = s;
          break;
        }
      if (home) break;
    }
  if (!home) {
    std::unique_ptr<Cohort> c;
    if (spare_ && shares_rows_) {  // its rows' old keys are hidden by each newcomer's padding
      c = std::move(spare_);
    } else {
      c = std::make_unique<Cohort>();
      c->capacity = shares_rows_ ? opts_.max_batch : 1;
      c->state = model_->start_decode(c->capacity, context_, model::CacheMode::kLatentAbsorbed, at::Tensor());
      c->rows.resize(static_cast<size_t>(c->capacity));
    }
    // Start late enough that later, longer prompts can join, while leaving room for this one's tokens.
    c->len = shares_rows_ ? std::max(P, std::min(opts_.join_floor, context_ - N)) : P;
    home = c.get();
    slot = 0;
    std::lock_guard<std::mutex> lock(mu_);
    cohorts_.push_back(std::move(c));
  }

  auto run = std::make_unique<Running>();
  run->submitted = req->submitted_;
  run->req = std::move(req);
  run->rng.seed(run->req->sampling.seed);
  run->history = run->req->prompt;
  run->slot = slot;
  budget -= P;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.prompt_tokens += P;
  }
  Running& r = *run;
  home->rows[static_cast<size_t>(slot)] = std::move(run);
  // The prompt ends at the step's position where the step takes it (folded, or on its own: the row then
  // sits the step out), else just before it (the step feeds every row its next token).
  const int64_t end = home->len + (fold_rows_ > 0);
  if (shares_rows_) home->state->set_row_padding(slot, end - P);
  // Folded: fed by this round's step beside the running rows, while the step's rows stay within what it
  // computes row by row.
  if (fold_rows_ > 0 && home->step_tokens() - 1 + P <= fold_rows_) {  // this row counted one token so far
    r.folded = true;
    return true;
  }
  // On its own: a prompt that does not fit the step, or a model without decode_rows.
  const at::Tensor prompt = at::tensor(r.req->prompt, at::kLong).unsqueeze(0);
  const auto t0 = Clock::now();
  at::Tensor logits;
  if (shares_rows_) {
    auto view = home->state->rows_view(slot, 1, end - P);
    logits = model_->decode(prompt, *view);
    r.prefilled = fold_rows_ > 0;
  } else {
    logits = model_->decode(prompt, *home->state);  // a fresh single-row cohort: positions 0..P-1
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.prefill_s += since(t0);
    ++stats_.generated_tokens;  // the first token, handed over next
  }
  if (!deliver(r, draw(r, logits[0][P - 1].to(at::kFloat)))) home->rows[static_cast<size_t>(slot)].reset();
  return true;
}

void Engine::step(Cohort& c) {
  // The rows this step feeds, and what: a running row's next token, a folded newcomer's prompt (a row
  // prefilled on its own this round has its first token and sits the step out).
  std::vector<int64_t> live;
  std::vector<std::vector<int64_t>> feed;
  for (int64_t s = 0; s < c.capacity; ++s) {
    Running* r = c.rows[static_cast<size_t>(s)].get();
    if (!r) continue;
    if (r->prefilled) {
      r->prefilled = false;
      continue;
    }
    live.push_back(s);
    feed.push_back(r->folded ? r->req->prompt : std::vector<int64_t>{r->next_input});
    r->folded = false;
  }
  const auto t0 = Clock::now();
  at::Tensor logits;  // [live, V]: each live row's next-token logits
  if (fold_rows_ > 0) {
    if (!live.empty()) {
      c.state->len = c.len;
      logits = model_->decode_rows(live, feed, *c.state);
      if (!logits.defined()) throw Error("serve: the model's batched step no longer applies (decode_rows)");
    }
  } else {
    int64_t hi = 0;
    for (int64_t s : live) hi = s + 1;
    if (hi > 0) {
      std::vector<int64_t> input(static_cast<size_t>(hi), 0);
      for (size_t t = 0; t < live.size(); ++t) input[static_cast<size_t>(live[t])] = feed[t][0];
      const at::Tensor tokens = at::tensor(input, at::kLong).unsqueeze(1);
      if (shares_rows_) {
        auto view = c.state->rows_view(0, hi, c.len);
        logits = model_->decode(tokens, *view);
      } else {
        logits = model_->decode(tokens, *c.state);
      }
      logits = logits.select(1, 0).index_select(0, at::tensor(live, at::kLong));
    }
  }
  ++c.len;
  if (live.empty()) return;
  logits = logits.to(at::kFloat).contiguous();
  const auto t1 = Clock::now();
  // Each row's draw and delivery (its request's own state; on_token is called on the engine's threads,
  // one token of a request at a time) share the threads: one after another, the 16 rows of a full step
  // took 0.8 ms beside the step's 1.6 ms. They take no lock in common (the token count is added after:
  // a contended mutex puts the second thread to sleep). Rows whose request ended leave afterwards, on
  // this thread.
  std::vector<char> go_on(live.size());
  kernels::run_tasks(static_cast<int64_t>(live.size()), at::get_num_threads(), [&](int64_t t, int64_t) {
    Running& r = *c.rows[static_cast<size_t>(live[static_cast<size_t>(t)])];
    go_on[static_cast<size_t>(t)] = deliver(r, draw(r, logits[t]));
  });
  for (size_t t = 0; t < live.size(); ++t)
    if (!go_on[t]) c.rows[static_cast<size_t>(live[t])].reset();
  std::lock_guard<std::mutex> lock(mu_);
  stats_.generated_tokens += static_cast<int64_t>(live.size());
  stats_.decode_s += std::chrono::duration<double>(t1 - t0).count();
  stats_.sample_s += since(t1);
  ++stats_.steps;
  stats_.occupancy_sum += static_cast<double>(c.running()) / static_cast<double>(opts_.max_batch);
}

void Engine::loop() {
  at::NoGradGuard no_grad;
  for (;;) {
    std::deque<std::shared_ptr<Request>> waiting;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] {
        if (stop_ || !queue_.empty()) return true;
        for (const auto& c : cohorts_)
          if (c->running() > 0) return true;
        return false;
      });
      if (stop_) break;
      waiting.swap(queue_);
    }
    // Leavers first: cancelled requests free their rows.
    for (auto& c : cohorts_)
      for (auto& r : c->rows)
        if (r && r->req->cancelled.load()) {
          finish(*r, "cancelled");
          r.reset();
        }
    // Newcomers, in arrival order, within this round's prefill budget.
    int64_t budget = opts_.prefill_budget;
    std::deque<std::shared_ptr<Request>> later;
    while (!waiting.empty()) {
      auto req = std::move(waiting.front());
      waiting.pop_front();
      if (req->cancelled.load()) {
        Running gone{req, req->submitted_, {}, {}, 0, 0};
        finish(gone, "cancelled");
        continue;
      }
      bool placed = false;
      try {
        placed = admit(req, budget);
      } catch (const std::exception& e) {
        req->error = e.what();
        Running failed{req, req->submitted_, {}, {}, 0, 0};
        finish(failed, "error");
        continue;
      }
      if (!placed) later.push_back(std::move(req));
    }
    // One decode step for every cohort.
    for (auto& c : cohorts_) {
      try {
        step(*c);
      } catch (const std::exception& e) {
        for (auto& r : c->rows)
          if (r) {
            r->req->error = e.what();
            finish(*r, "error");
            r.reset();
          }
      }
    }
    if (opts_.after_round) opts_.after_round();
    std::lock_guard<std::mutex> lock(mu_);
    // Empty cohorts free their caches but one, kept for the next newcomer; requests that could not be
    // placed keep their place in line.
    for (auto& c : cohorts_)
      if (c->running() == 0 && !spare_ && shares_rows_) spare_ = std::move(c);
    cohorts_.erase(std::remove_if(cohorts_.begin(), cohorts_.end(), [](const auto& c) { return !c || c->running() == 0; }),
                   cohorts_.end());
    while (!later.empty()) {
      queue_.push_front(std::move(later.back()));
      later.pop_back();
    }
    stats_.running = 0;
    for (const auto& c : cohorts_) stats_.running += c->running();
    stats_.cohorts = static_cast<int64_t>(cohorts_.size());
    cv_.notify_all();
  }
  // Shutting down: whatever is left ends cancelled.
  for (auto& c : cohorts_)
    for (auto& r : c->rows)
      if (r) finish(*r, "cancelled");
  for (auto& q : queue_) {
    Running gone{q, q->submitted_, {}, {}, 0, 0};
    finish(gone, "cancelled");
  }
}

}  // namespace dsforge::serve
