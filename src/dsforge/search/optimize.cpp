#include "dsforge/search/optimize.h"

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <exception>
#include <thread>

#include "dsforge/core/error.h"

namespace dsforge::search {
namespace {

std::mt19937_64 trial_rng(uint64_t seed, int64_t number) {
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), static_cast<uint32_t>(number)};
  return std::mt19937_64(seq);
}

// Updates the trial's heartbeat every `period` seconds while it lives.
class Heartbeat {
 public:
  Heartbeat(Study& study, int64_t number, double period) {
    thread_ = std::thread([this, &study, number, period]() {
      std::unique_lock<std::mutex> lock(mu_);
      while (!done_) {
        cv_.wait_for(lock, std::chrono::duration<double>(period), [this] { return done_; });
        if (done_) break;
        try {
          study.heartbeat(number);
        } catch (...) {  // a busy database: the next beat tries again
        }
      }
    });
  }
  ~Heartbeat() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

}  // namespace

OptimizeSummary optimize(Study& study, const Objective& objective, const OptimizeOptions& o) {
  const SearchSpace& space = study.space();
  auto sampler = make_sampler(o.sampler);
  auto pruner = make_pruner(o.pruner);
  OptimizeSummary summary;
  while (true) {
    auto trial = study.claim(o.n_trials, [&](const std::vector<TrialRecord>& trials, int64_t number) {
      auto rng = trial_rng(o.seed, number);
      return sampler->sample(space, trials, rng);
    });
    if (!trial) break;
    // A re-queued trial keeps the intermediate values it reported before its worker died.
    for (const auto& t : study.trials())
      if (t.number == trial->number) trial->intermediate = t.intermediate;
    TrialRecord current = *trial;
    Reporter report = [&](int64_t step, double value) {
      study.report(current.number, step, value);
      current.intermediate[step] = value;
      if (o.pruner.name == "none") return false;
      return pruner->should_prune(study.trials(), current);
    };
    ObjectiveResult r;
    std::string error;
    {
      Heartbeat beat(study, current.number, o.heartbeat_s);
      try {
        r = objective(*trial, report);
      } catch (const std::exception& e) {
        error = e.what();
      }
    }
    if (r.interrupted) {
      study.finish(current.number, TrialState::kWaiting, NAN, "");
      summary.interrupted = true;
      break;
    }
    if (error.empty() && !std::isfinite(r.value)) error = fmt("the objective is not finite (", r.value, ")");
    current.state = !error.empty() ? TrialState::kFail : r.pruned ? TrialState::kPruned : TrialState::kComplete;
    current.value = error.empty() ? r.value : NAN;
    current.error = error;
    study.finish(current.number, current.state, current.value, error);
    ++summary.ran;
    if (o.on_finish) o.on_finish(current);
  }
  return summary;
}

std::vector<TrialRecord> optimize_in_memory(const SearchSpace& space, const std::function<double(const Params&)>& f,
                                            int64_t n_trials, uint64_t seed, const SamplerOptions& so,
                                            std::vector<double>* sampler_seconds) {
  auto sampler = make_sampler(so);
  std::vector<TrialRecord> trials;
  for (int64_t i = 0; i < n_trials; ++i) {
    auto rng = trial_rng(seed, i);
    const auto t0 = std::chrono::steady_clock::now();
    TrialRecord t;
    t.number = i;
    t.params = sampler->sample(space, trials, rng);
    if (sampler_seconds)
      sampler_seconds->push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    t.value = f(t.params);
    t.state = std::isfinite(t.value) ? TrialState::kComplete : TrialState::kFail;
    trials.push_back(std::move(t));
  }
  return trials;
}

}  // namespace dsforge::search
