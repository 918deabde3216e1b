// `dsforge continue --watch DIR`: rounds of continual training on the files dropped into a folder.
//
// The ledger (<run>/watch.json) is written atomically at each change: a round's files are copied into
// its folder and recorded as pending before it trains, so a stop at any point resumes the same round
// with the same files; a finished round moves its files to "rounds"; files that cannot be read as
// text go to "skipped" with the reason. A file is known by its name and a hash of its bytes: a file
// that changes is taken again, whole.
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/core/stop.h"
#include "dsforge/core/text.h"
#include "dsforge/data/ingest.h"
#include "dsforge/pipeline/continue_stage.h"
#include "dsforge/pipeline/stages.h"

namespace dsforge::pipeline {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

struct SeenFile {
  std::string name;  // path under the watched folder
  int64_t bytes = 0;
  std::string hash;  // fnv1a64 of the content
  Json record() const { return {{"name", name}, {"bytes", bytes}, {"fnv1a64", hash}}; }
  std::string key() const { return name + '\t' + hash; }
};

// Editors' and copiers' temporaries, hidden files: never taken.
bool ignored_name(const fs::path& rel) {
  for (const auto& part : rel) {
    const std::string p = part.string();
    if (!p.empty() && p[0] == '.') return true;
  }
  const std::string n = rel.filename().string();
  for (const char* suffix : {".tmp", ".part", ".partial", ".crdownload", ".swp", "~"})
    if (ends_with(n, suffix)) return true;
  return false;
}

double seconds_since(const fs::file_time_type& t) {
  return std::chrono::duration<double>(fs::file_time_type::clock::now() - t).count();
}

// The folder's files that have settled, hashed (the hash is cached while size and mtime stay).
class FolderScanner {
 public:
  FolderScanner(std::string dir, double settle) : dir_(std::move(dir)), settle_(settle) {}

  std::vector<SeenFile> ready() {
    std::vector<SeenFile> out;
    std::error_code ec;
    if (!fs::is_directory(dir_, ec)) throw IoError(fmt("continue --watch ", dir_, ": not a folder"));
    for (fs::recursive_directory_iterator it(dir_, fs::directory_options::skip_permission_denied, ec), end; it != end;
         it.increment(ec)) {
      if (ec) break;
      if (!it->is_regular_file(ec)) continue;
      const fs::path rel = fs::relative(it->path(), dir_, ec);
      if (ec || ignored_name(rel)) continue;
      const auto mtime = it->last_write_time(ec);
      const auto size = static_cast<int64_t>(it->file_size(ec));
      if (ec || seconds_since(mtime) < settle_) continue;  // still being written, perhaps
      Cached& c = cache_[rel.string()];
      if (c.hash.empty() || c.bytes != size || c.mtime != mtime) {
        try {
          c = {size, mtime, hex64(fnv1a64(read_file(it->path().string())))};
        } catch (const IoError&) {
          continue;  // vanished or unreadable between listing and reading: next scan
        }
      }
      out.push_back({rel.string(), size, c.hash});
    }
    std::sort(out.begin(), out.end(), [](const SeenFile& a, const SeenFile& b) { return a.name < b.name; });
    return out;
  }

 private:
  struct Cached {
    int64_t bytes = -1;
    fs::file_time_type mtime;
    std::string hash;
  };
  std::string dir_;
  double settle_;
  std::map<std::string, Cached> cache_;
};

// "" when `path` holds documents under the run's ingest options, else why not.
std::string unusable_reason(const RunConfig& cfg, const std::string& path) {
  int64_t docs = 0;
  try {
    const data::IngestCounts c = data::for_each_document({path}, data::ingest_options(cfg), [&](std::string&&) { ++docs; });
    if (c.binary_files_skipped > 0) return "not text (NUL bytes or mostly invalid UTF-8)";
  } catch (const Error& e) {
    return e.what();
  }
  return docs == 0 ? "no documents (empty or only whitespace)" : "";
}

class Ledger {
 public:
  Ledger(std::string run_dir, const WatchOptions& opts) : path_(path_join(run_dir, "watch.json")) {
    if (!file_exists(path_)) {
      j_ = {{"from", opts.from}, {"watch", opts.dir}, {"rounds", Json::array()}, {"pending", nullptr},
            {"skipped", Json::array()}};
      return;
    }
    try {
      j_ = Json::parse(read_file(path_));
      (void)j_.at("rounds").size(), (void)j_.at("skipped").size(), (void)j_.at("from").get<std::string>();
    } catch (const std::exception& e) {
      throw CheckpointError(fmt(path_, ": not a watch ledger (", e.what(), "); use another run.out_dir"));
    }
    if (j_["from"] != opts.from)
      throw ConfigError(fmt(path_, ": this run folder continues ", j_["from"].get<std::string>(), ", not ", opts.from,
                            "; use another run.out_dir"));
  }

  bool seen(const SeenFile& f) const {
    auto in = [&](const Json& files) {
      for (const auto& r : files)
        if (r.at("name") == f.name && r.at("fnv1a64") == f.hash) return true;
      return false;
    };
    for (const auto& r : j_["rounds"])
      if (in(r["files"])) return true;
    return in(j_["skipped"]) || (!j_["pending"].is_null() && in(j_["pending"]["files"]));
  }
  int64_t finished_rounds() const { return static_cast<int64_t>(j_["rounds"].size()); }
  const Json& pending() const { return j_["pending"]; }
  // The model the next round continues: the last round's, or --from.
  std::string last_model(const std::string& run_dir) const {
    return j_["rounds"].empty() ? j_["from"].get<std::string>()
                                : path_join(run_dir, j_["rounds"].back()["folder"].get<std::string>() + "/model");
  }

  void skip(const SeenFile& f, const std::string& why) {
    Json r = f.record();
    r["error"] = why;
    j_["skipped"].push_back(r);
    save();
  }
  void set_pending(Json p) {
    j_["pending"] = std::move(p);
    save();
  }
  void finish(Json round) {
    j_["rounds"].push_back(std::move(round));
    j_["pending"] = nullptr;
    save();
  }

 private:
  void save() const { write_file_atomic(path_, j_.dump(2) + "\n"); }
  std::string path_;
  Json j_;
};

std::string round_folder(int64_t n) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "rounds/%04lld", static_cast<long long>(n));
  return buf;
}

// Sleeps up to `seconds`, waking early for a stop request.
void nap(double seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!stop_signal() && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
}

}  // namespace

int watch_continue(const WatchOptions& opts) {
  RunConfig cfg = load_run_config(opts.config, opts.overrides);
  if (!opts.strategy.empty()) cfg.continual.strategy = opts.strategy;
  if (opts.poll_seconds <= 0 || opts.settle_seconds < 0)
    throw ConfigError(fmt("continue --watch: --poll must be > 0 and --settle >= 0 (got ", opts.poll_seconds, ", ",
                          opts.settle_seconds, ")"));
  if (opts.keep_rounds < 1) throw ConfigError(fmt("continue --watch: --keep-rounds ", opts.keep_rounds, ": must be >= 1"));
  if (!fs::is_directory(opts.dir)) throw ConfigError(fmt("continue --watch ", opts.dir, ": not a folder"));
  configure_threads(cfg);
  const std::string run_dir = cfg.run.out_dir;
  make_dirs(run_dir);
  Ledger ledger(run_dir, opts);
  check_continue_start(ledger.last_model(run_dir), cfg.continual.strategy, ledger.finished_rounds() == 0 ? opts.old_data : "");

  StopSignals signals;
  FolderScanner scanner(opts.dir, opts.settle_seconds);
  int64_t rounds_here = 0;
  log_info("continue --watch: watching ", opts.dir, " (every ", opts.poll_seconds, " s; strategy ", cfg.continual.strategy,
           "; ", ledger.finished_rounds(), " rounds done before)");
  while (true) {
    if (stop_signal()) {
      log_info("continue --watch: ", stop_signal() == SIGINT ? "SIGINT" : "SIGTERM", " between rounds; stopping");
      clear_stop();
      return kOk;
    }
    // A round recorded as pending was stopped part way: it resumes with its own files first.
    Json round = ledger.pending();
    if (round.is_null()) {
      std::vector<SeenFile> fresh;
      for (const SeenFile& f : scanner.ready()) {
        if (ledger.seen(f)) continue;
        const std::string why = unusable_reason(cfg, path_join(opts.dir, f.name));
        if (why.empty()) {
          fresh.push_back(f);
        } else {
          log_info("warning: continue --watch: skipping ", path_join(opts.dir, f.name), ": ", why);
          ledger.skip(f, why);
        }
      }
      if (fresh.empty()) {
        if (opts.exit_when_idle) {
          log_info("continue --watch: nothing new in ", opts.dir, "; ", ledger.finished_rounds(), " rounds done");
          return kOk;
        }
        nap(opts.poll_seconds);
        continue;
      }
      const int64_t n = ledger.finished_rounds() + 1;
      const std::string folder = round_folder(n), inputs = path_join(path_join(run_dir, folder), "inputs");
      remove_all(path_join(run_dir, folder));  // a folder left by a stop before its round was recorded
      round = {{"round", n}, {"folder", folder}, {"files", Json::array()}};
      for (const SeenFile& f : fresh) {
        const std::string dst = path_join(inputs, f.name);
        make_dirs(fs::path(dst).parent_path().string());
        fs::copy_file(path_join(opts.dir, f.name), dst, fs::copy_options::overwrite_existing);
        round["files"].push_back(f.record());
      }
      ledger.set_pending(round);
    }

    const int64_t n = round["round"].get<int64_t>();
    const std::string folder = path_join(run_dir, round["folder"].get<std::string>());
    RunConfig rc = cfg;
    rc.run.out_dir = folder;
    rc.data.source = "files";
    rc.data.paths = {path_join(folder, "inputs")};
    std::vector<std::string> names;
    for (const auto& f : round["files"]) names.push_back(f["name"].get<std::string>());
    log_info("continue --watch: round ", n, ": ", names.size(), " file(s), from ", ledger.last_model(run_dir));
    const auto t0 = std::chrono::steady_clock::now();
    continual::ContinueOutcome r;
    try {
      r = continue_in_folder(rc, ledger.last_model(run_dir), n == 1 ? opts.old_data : "", 0,
                             {{"name", fmt("round ", n)}, {"data", names}});
    } catch (const DataError& e) {
      // The round's text cannot be trained on (e.g. too few tokens for one row): its files are skipped.
      log_info("warning: continue --watch: round ", n, " failed: ", e.what(), "; its files are recorded as skipped");
      for (const auto& f : round["files"])
        ledger.skip({f["name"].get<std::string>(), f["bytes"].get<int64_t>(), f["fnv1a64"].get<std::string>()},
                    fmt("round ", n, ": ", e.what()));
      ledger.set_pending(nullptr);
      remove_all(folder);
      continue;
    }
    if (r.interrupted) {
      log_info("continue --watch: round ", n, " stopped at step ", r.final_step,
               "; the same command resumes it before taking new files");
      return kInterrupted;
    }
    round["steps"] = r.final_step;
    round["loss"] = r.last_loss;
    round["strategy"] = r.strategy;
    round["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    // Recorded first (a stop after this point never trains the round again), then the newest model for
    // readers (serve, eval): a copy swapped in whole.
    ledger.finish(round);
    const std::string stage = path_join(run_dir, "model.next");
    remove_all(stage);
    fs::copy(path_join(folder, "model"), stage, fs::copy_options::recursive);
    replace_dir(stage, path_join(run_dir, "model"), "newest round's model");
    remove_all(path_join(folder, "checkpoints"));  // only a stopped round needs them
    if (n > opts.keep_rounds) remove_all(path_join(run_dir, round_folder(n - opts.keep_rounds)));
    log_info("continue --watch: round ", n, " done (", r.strategy, ", steps ", r.start_step, "..", r.final_step,
             ", last loss ", r.last_loss, "); newest model in ", path_join(run_dir, "model"));
    if (opts.max_rounds > 0 && ++rounds_here >= opts.max_rounds) return kOk;
  }
}

}  // namespace dsforge::pipeline
