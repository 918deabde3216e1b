#include "dsforge/search/study.h"

#include <sqlite3.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cmath>
#include <limits>

#include "dsforge/core/error.h"

namespace dsforge::search {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// A prepared statement that finalises itself.
class Stmt {
 public:
  Stmt(sqlite3* db, const std::string& sql, const std::function<void(const std::string&, int)>& fail) : db_(db), fail_(fail) {
    const int rc = sqlite3_prepare_v2(db, sql.c_str(), -1, &s_, nullptr);
    if (rc != SQLITE_OK) fail_(sql, rc);
  }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt& bind(int i, int64_t v) { sqlite3_bind_int64(s_, i, v); return *this; }
  Stmt& bind(int i, double v) {
    if (std::isfinite(v)) sqlite3_bind_double(s_, i, v);
    else sqlite3_bind_null(s_, i);
    return *this;
  }
  Stmt& bind(int i, const std::string& v) { sqlite3_bind_text(s_, i, v.c_str(), -1, SQLITE_TRANSIENT); return *this; }
  bool step() {
    const int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc != SQLITE_DONE) fail_(sqlite3_sql(s_), rc);
    return false;
  }
  int64_t i64(int c) const { return sqlite3_column_int64(s_, c); }
  double dbl(int c) const {
    return sqlite3_column_type(s_, c) == SQLITE_NULL ? std::numeric_limits<double>::quiet_NaN() : sqlite3_column_double(s_, c);
  }
  std::string text(int c) const {
    const auto* t = sqlite3_column_text(s_, c);
    return t ? reinterpret_cast<const char*>(t) : "";
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* s_ = nullptr;
  std::function<void(const std::string&, int)> fail_;
};

const char* kSchema = R"(
CREATE TABLE IF NOT EXISTS study (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
  number INTEGER PRIMARY KEY, state TEXT NOT NULL, params TEXT NOT NULL, value REAL, error TEXT NOT NULL DEFAULT '',
  pid INTEGER, host TEXT, heartbeat REAL, started REAL, finished REAL, attempts INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS intermediate (
  trial INTEGER NOT NULL, step INTEGER NOT NULL, value REAL, PRIMARY KEY (trial, step));
CREATE TABLE IF NOT EXISTS lineage (
  trial INTEGER PRIMARY KEY, member INTEGER NOT NULL, generation INTEGER NOT NULL, source INTEGER NOT NULL,
  exploited INTEGER NOT NULL);
)";

}  // namespace

std::string host_name() {
  char buf[256] = {0};
  ::gethostname(buf, sizeof buf - 1);
  return buf;
}

bool process_alive(int64_t pid) {
  if (pid <= 0) return false;
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

Study::Study(std::string path, StudyOptions opts) : path_(std::move(path)), opts_(opts) {}

Study::~Study() {
  if (db_) sqlite3_close(db_);
}

void Study::fail(const std::string& what, int rc) {
  const int code = rc & 0xff;
  const std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
  if (code == SQLITE_NOTADB || code == SQLITE_CORRUPT)
    throw IoError(fmt(path_, ": not a study database, or a corrupt one (SQLite: ", msg,
                      "); move it away or pass another --study"));
  if (code == SQLITE_BUSY || code == SQLITE_LOCKED)
    throw IoError(fmt(path_, ": the study database stayed locked by another process for more than ", opts_.busy_timeout_s,
                      " s (SQLite: ", msg, "); is a process holding it stuck?"));
  throw IoError(fmt(path_, ": SQLite error ", rc, " (", msg, ") in: ", what));
}

void Study::exec(const std::string& sql) {
  char* err = nullptr;
  const int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
  if (err) sqlite3_free(err);
  if (rc != SQLITE_OK) fail(sql, rc);
}

std::unique_ptr<Study> Study::open(const std::string& path, const SearchSpace& space, StudyOptions opts) {
  std::unique_ptr<Study> s(new Study(path, opts));
  const int rc = sqlite3_open_v2(path.c_str(), &s->db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) s->fail("open", rc);
  sqlite3_busy_timeout(s->db_, static_cast<int>(opts.busy_timeout_s * 1000));
  s->exec("BEGIN IMMEDIATE");
  try {
    s->exec(kSchema);
    auto fail = [&](const std::string& w, int c) { s->fail(w, c); };
    Stmt q(s->db_, "SELECT value FROM study WHERE key = 'space'", fail);
    const std::string want = space.to_json().dump();
    if (q.step()) {
      const std::string have = q.text(0);
      if (have != want) {
        const SearchSpace old = space_from_json(nlohmann::json::parse(have), path);
        std::string names;
        for (const auto& p : old.params) names += (names.empty() ? "" : ", ") + p.name;
        throw ConfigError(fmt(path, ": this study was created with another search space (", names, "; hash ", old.hash(),
                              ") than ", space.source, " (hash ", space.hash(),
                              "); pass the original space file, or another --study for the new space"));
      }
    } else {
      Stmt ins(s->db_, "INSERT INTO study (key, value) VALUES ('space', ?), ('created', ?)", fail);
      ins.bind(1, want).bind(2, std::to_string(now_s())).step();
    }
    s->exec("COMMIT");
  } catch (...) {
    sqlite3_exec(s->db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
  s->space_ = space;
  return s;
}

std::unique_ptr<Study> Study::open_existing(const std::string& path) {
  std::unique_ptr<Study> s(new Study(path, {}));
  const int rc = sqlite3_open_v2(path.c_str(), &s->db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    if (s->db_) sqlite3_close(s->db_), s->db_ = nullptr;
    throw IoError(fmt(path, ": cannot open the study database (", sqlite3_errstr(rc), ")"));
  }
  sqlite3_busy_timeout(s->db_, 60000);
  auto fail = [&](const std::string& w, int c) { s->fail(w, c); };
  Stmt q(s->db_, "SELECT value FROM study WHERE key = 'space'", fail);
  if (!q.step()) throw IoError(fmt(path, ": a SQLite file without a study (no search space recorded)"));
  s->space_ = space_from_json(nlohmann::json::parse(q.text(0)), path);
  return s;
}

std::vector<TrialRecord> Study::read_trials() {
  auto fail = [&](const std::string& w, int c) { this->fail(w, c); };
  std::vector<TrialRecord> out;
  std::map<int64_t, size_t> index;
  Stmt q(db_, "SELECT number, state, params, value, error FROM trials ORDER BY number", fail);
  while (q.step()) {
    TrialRecord t;
    t.number = q.i64(0);
    t.state = state_from_name(q.text(1));
    t.params = space_.params_from_json(nlohmann::json::parse(q.text(2)));
    t.value = q.dbl(3);
    t.error = q.text(4);
    index[t.number] = out.size();
    out.push_back(std::move(t));
  }
  Stmt iq(db_, "SELECT trial, step, value FROM intermediate ORDER BY trial, step", fail);
  while (iq.step())
    if (auto it = index.find(iq.i64(0)); it != index.end()) out[it->second].intermediate[iq.i64(1)] = iq.dbl(2);
  return out;
}

std::vector<TrialRecord> Study::trials() {
  std::lock_guard<std::mutex> lock(mu_);
  exec("BEGIN");
  try {
    auto t = read_trials();
    exec("COMMIT");
    return t;
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

void Study::requeue_dead(double now) {
  auto fail = [&](const std::string& w, int c) { this->fail(w, c); };
  const std::string host = host_name();
  std::vector<std::pair<int64_t, int64_t>> dead;  // number, attempts
  {
    Stmt q(db_, "SELECT number, pid, host, heartbeat, attempts FROM trials WHERE state = 'RUNNING'", fail);
    while (q.step()) {
      const bool gone = (q.text(2) == host && !process_alive(q.i64(1))) || now - q.dbl(3) > opts_.stale_after_s;
      if (gone) dead.emplace_back(q.i64(0), q.i64(4));
    }
  }
  for (const auto& [number, attempts] : dead) {
    if (attempts >= opts_.max_attempts) {
      Stmt u(db_, "UPDATE trials SET state = 'FAIL', error = ?, finished = ? WHERE number = ?", fail);
      u.bind(1, fmt("its worker died ", attempts, " times (killed, or no heartbeat for ", opts_.stale_after_s, " s)"))
          .bind(2, now).bind(3, number).step();
    } else {
      Stmt u(db_, "UPDATE trials SET state = 'WAITING' WHERE number = ?", fail);
      u.bind(1, number).step();
    }
  }
}

std::optional<TrialRecord> Study::claim(int64_t n_trials, const SampleFn& sample) {
  std::lock_guard<std::mutex> lock(mu_);
  auto fail = [&](const std::string& w, int c) { this->fail(w, c); };
  exec("BEGIN IMMEDIATE");  // the write lock now: claims are serialised across processes
  try {
    const double now = now_s();
    requeue_dead(now);
    std::vector<TrialRecord> all = read_trials();
    std::optional<TrialRecord> got;
    for (auto& t : all)
      if (t.state == TrialState::kWaiting) {
        got = t;
        break;
      }
    if (got) {
      Stmt u(db_, "UPDATE trials SET state = 'RUNNING', pid = ?, host = ?, heartbeat = ?, attempts = attempts + 1 WHERE number = ?", fail);
      u.bind(1, static_cast<int64_t>(::getpid())).bind(2, host_name()).bind(3, now).bind(4, got->number).step();
    } else if (static_cast<int64_t>(all.size()) < n_trials) {
      TrialRecord t;
      t.number = all.empty() ? 0 : all.back().number + 1;
      t.params = sample(all, t.number);
      Stmt ins(db_, "INSERT INTO trials (number, state, params, pid, host, heartbeat, started) VALUES (?, 'RUNNING', ?, ?, ?, ?, ?)", fail);
      ins.bind(1, t.number).bind(2, space_.params_json(t.params).dump()).bind(3, static_cast<int64_t>(::getpid()))
          .bind(4, host_name()).bind(5, now).bind(6, now).step();
      got = std::move(t);
    }
    exec("COMMIT");
    if (got) got->state = TrialState::kRunning;
    return got;
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

void Study::report(int64_t number, int64_t step, double value) {
  std::lock_guard<std::mutex> lock(mu_);
  auto fail = [&](const std::string& w, int c) { this->fail(w, c); };
  Stmt s(db_, "INSERT OR REPLACE INTO intermediate (trial, step, value) VALUES (?, ?, ?)", fail);
  s.bind(1, number).bind(2, step).bind(3, value).step();
  Stmt h(db_, "UPDATE trials SET heartbeat = ? WHERE number = ?", fail);
  h.bind(1, now_s()).bind(2, number).step();
}

void Study::heartbeat(int64_t number) {
  std::lock_guard<std::mutex> lock(mu_);
  auto fail = [&](const std::string& w, int c) { this->fail(w, c); };
  Stmt h(db_, "UPDATE trials SET heartbeat = ? WHERE number = ? AND state = 'RUNNING'", fail);
  h.bind(1, now_s()).bind(2, number).step();
}

void Study::finish(int64_t number, TrialState state, double value, const std::string& error) {
  std::lock_guard<std::mutex> lock(mu_);
  auto fail = [&](const std::string& w, int c) { this->fail(w, c); };
  Stmt u(db_, "UPDATE trials SET state = ?, value = ?, error = ?, finished = ? WHERE number = ?", fail);
  u.bind(1, std::string(state_name(state))).bind(2, value).bind(3, error).bind(4, now_s()).bind(5, number).step();
}

std::string Study::setting(const std::string& key, const std::string& value_if_absent) {
  std::lock_guard<std::mutex> lock(mu_);
  auto fail = [&](const std::string& w, int c) { this->fail(w, c); };
  exec("BEGIN IMMEDIATE");
  try {
    Stmt q(db_, "SELECT value FROM study WHERE key = ?", fail);
    q.bind(1, key);
    std::string value = value_if_absent;
    if (q.step()) {
      value = q.text(0);
    } else {
      Stmt ins(db_, "INSERT INTO study (key, value) VALUES (?, ?)", fail);
      ins.bind(1, key).bind(2, value_if_absent).step();
    }
    exec("COMMIT");
    return value;
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

void Study::record_lineage(const LineageRecord& r) {
  std::lock_guard<std::mutex> lock(mu_);
  auto fail = [&](const std::string& w, int c) { this->fail(w, c); };
  Stmt s(db_, "INSERT OR REPLACE INTO lineage (trial, member, generation, source, exploited) VALUES (?, ?, ?, ?, ?)", fail);
  s.bind(1, r.trial).bind(2, r.member).bind(3, r.generation).bind(4, r.source).bind(5, static_cast<int64_t>(r.exploited)).step();
}

std::vector<LineageRecord> Study::lineage() {
  std::lock_guard<std::mutex> lock(mu_);
  auto fail = [&](const std::string& w, int c) { this->fail(w, c); };
  std::vector<LineageRecord> out;
  Stmt q(db_, "SELECT trial, member, generation, source, exploited FROM lineage ORDER BY trial", fail);
  while (q.step()) out.push_back({q.i64(0), q.i64(1), q.i64(2), q.i64(3), q.i64(4) != 0});
  return out;
}

}  // namespace dsforge::search
