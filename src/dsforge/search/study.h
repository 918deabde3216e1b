// A study in SQLite: the search space, and every trial with its parameters, state, objective,
// intermediate validation losses and error. Several processes (the workers of `--workers K`, or
// separate commands, on one machine or on machines sharing the file) use one database file:
//
//   - a trial is claimed inside a BEGIN IMMEDIATE transaction (busy_timeout waits for the writer), so
//     no two workers take the same trial and the sampler sees every trial finished before the claim;
//   - a running trial records its worker's pid, host and a heartbeat; a RUNNING trial whose worker is
//     gone (same host, pid not alive) or whose heartbeat is older than `stale_after_s` is re-queued
//     (WAITING, same number and parameters, so its trial folder's checkpoint resumes), at most
//     `max_attempts` times, then recorded FAIL;
//   - a database created with another space, a corrupt file or a lock held past the timeout is a clear
//     error.
//
//   Study study = Study::open("study.db", space);
//   while (auto t = study.claim(n_trials, [&](const auto& trials) { return sampler->sample(space, trials, rng); })) {
//     study.report(t->number, step, val_loss);        // intermediate values, for the pruner
//     study.finish(t->number, TrialState::kComplete, value);
//   }
//
// Free of libtorch.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "dsforge/search/sampler.h"

struct sqlite3;

namespace dsforge::search {

struct StudyOptions {
  double busy_timeout_s = 60;   // how long a claim waits for another worker's transaction
  double stale_after_s = 120;   // a RUNNING trial's heartbeat older than this is a dead worker's
  int64_t max_attempts = 3;     // re-queues of a trial whose worker died, before it is FAIL
};

// Population-based training: which member and generation a trial is, and the trial whose checkpoint it
// started from (-1 = a fresh start); `exploited` when that was a better member's (search/pbt.h).
struct LineageRecord {
  int64_t trial = 0, member = 0, generation = 0, source = -1;
  bool exploited = false;
};

class Study {
 public:
  // Creates the file and its tables, or opens it and checks that it was made with `space`.
  static std::unique_ptr<Study> open(const std::string& path, const SearchSpace& space, StudyOptions opts = {});
  // Opens an existing study for reading (the report); the space is read from the file.
  static std::unique_ptr<Study> open_existing(const std::string& path);
  ~Study();

  using SampleFn = std::function<Params(const std::vector<TrialRecord>& trials, int64_t number)>;
  // Re-queues dead workers' trials, then takes a WAITING trial, or a new one (numbered in order,
  // parameters from `sample`) while the study has fewer than `n_trials`; nullopt when there is none.
  std::optional<TrialRecord> claim(int64_t n_trials, const SampleFn& sample);
  void report(int64_t number, int64_t step, double value);
  void heartbeat(int64_t number);
  void finish(int64_t number, TrialState state, double value, const std::string& error = "");
  std::vector<TrialRecord> trials();
  // A study-wide setting: the stored value, or `value_if_absent` stored now (how a search strategy
  // records its options so that a resumed search can refuse other ones).
  std::string setting(const std::string& key, const std::string& value_if_absent);
  void record_lineage(const LineageRecord& r);
  std::vector<LineageRecord> lineage();  // by trial

  const SearchSpace& space() const { return space_; }
  const std::string& path() const { return path_; }

 private:
  Study(std::string path, StudyOptions opts);
  void exec(const std::string& sql);
  void requeue_dead(double now);
  std::vector<TrialRecord> read_trials();
  [[noreturn]] void fail(const std::string& what, int rc);

  std::string path_;
  StudyOptions opts_;
  sqlite3* db_ = nullptr;
  SearchSpace space_;
  std::mutex mu_;  // the heartbeat thread shares the connection
};

// This machine's host name, and whether a process of this host is alive.
std::string host_name();
bool process_alive(int64_t pid);

}  // namespace dsforge::search
