// `dsforge continue` end to end on a tiny model: every strategy through the CLI, the continual state a
// later stage reuses, L2-SP's pull toward the starting weights, the error without old data, and a
// three-domain --sequence whose forgetting figures are recomputed from the written matrix, and the
// online mode (--watch) through bad files, a SIGTERM in a round and one between rounds.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ATen/ATen.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <thread>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dsforge/continual/forgetting.h"
#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/safetensors.h"
#include "test_util.h"
#include "tiny_model.h"

using namespace dsforge;

namespace {

std::string lines(const std::string& stem, int n) {
  std::string t;
  for (int i = 0; i < n; ++i) t += stem + " " + std::to_string(i) + " " + std::to_string(i * 7 % 13) + "\n";
  return t;
}

// A tiny model (nano, 300-token BPE) "trained" on old.txt, the new domain, and a recipe for 4 steps.
struct Fixture {
  TempDir dir;
  std::string model, old_text, new_text, config;
  Fixture() {
    std::vector<std::string> docs;
    for (int i = 0; i < 50; ++i) docs.push_back("the old river runs to the sea " + std::to_string(i));
    model = save_tiny_model(dir.path, docs);
    old_text = path_join(dir.path, "old.txt");
    new_text = path_join(dir.path, "new.txt");
    write_file_atomic(old_text, lines("the old river runs to the sea", 120));
    write_file_atomic(new_text, lines("a new story of a cat and a dog", 120));
    config = path_join(dir.path, "new.toml");
    write_file_atomic(config, fmt("[run]\nthreads = 1\n[data]\nsource = \"files\"\npaths = [\"new.txt\"]\nval_fraction = 0.1\n"
                                  "near_dedup = false\n[train]\nseq_len = 16\nbatch_size = 4\nmax_steps = 4\nwarmup_steps = 1\n"
                                  "lr = 1e-2\nlog_every = 1\neval_every = 100\ncheckpoint_every = 100\npeak_gflops = 1\n"
                                  "fit_micro_batch = false\n[eval]\nbatches = 1\n[continual]\nfisher_samples = 4\n"
                                  "replay_capacity = 64\n"));
  }
  CliRun run(const std::string& strategy, const std::string& out, const std::string& from, const std::string& extra = "") {
    return run_cli(fmt("continue --from ", from, " --config ", config, " --strategy ", strategy, " --run.out_dir=", out,
                           " ", extra),
                       dir.path);
  }
};

double last_metric(const std::string& metrics_path, const std::string& key) {
  double v = NAN;
  std::stringstream ss(read_file(metrics_path));
  for (std::string line; std::getline(ss, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.contains(key)) v = j[key].get<double>();
  }
  return v;
}

double distance(const std::string& a_dir, const std::string& b_dir) {
  const auto a = load_safetensors(path_join(a_dir, "model.safetensors")).tensors;
  const auto b = load_safetensors(path_join(b_dir, "model.safetensors")).tensors;
  double d = 0;
  for (const auto& [k, t] : a) d += (t.to(at::kDouble) - b.at(k).to(at::kDouble)).square().sum().item<double>();
  return std::sqrt(d);
}

}  // namespace

TEST(CliContinue, EveryStrategyRunsAndWritesTheStateAStageReuses) {
  Fixture f;
  for (const std::string s : {"finetune", "ewc", "online-ewc", "l2sp", "replay", "lwf", "replay+ewc"}) {
    const std::string out = path_join(f.dir.path, "run_" + s);
    const CliRun r = f.run(s, out, f.model, "--old-data " + f.old_text);
    ASSERT_EQ(r.code, 0) << s << "\n" << r.err << r.out;
    const std::string model = path_join(out, "model");
    const auto state = nlohmann::json::parse(read_file(path_join(model, "continual/state.json")));
    EXPECT_EQ(state["domains"].size(), 2u) << s;  // the old data, then this stage
    for (const char* file : {"ewc.safetensors", "online_ewc.safetensors", "replay.safetensors"})
      EXPECT_TRUE(file_exists(path_join(model, std::string("continual/") + file))) << s << " " << file;
    const std::string metrics = path_join(out, "metrics.jsonl");
    if (s.find("ewc") != std::string::npos || s == "l2sp") {
      EXPECT_GT(last_metric(metrics, "penalty"), 0) << s;
    }
    if (s == "lwf") {
      EXPECT_GT(last_metric(metrics, "lwf_kl"), 0);
    }
    if (s == "finetune") {
      EXPECT_TRUE(std::isnan(last_metric(metrics, "penalty")));
    }
  }
  // A second stage from a continued folder needs no --old-data: two EWC terms, three domains.
  const std::string out2 = path_join(f.dir.path, "stage2");
  const CliRun r2 = f.run("ewc", out2, path_join(f.dir.path, "run_ewc/model"));
  ASSERT_EQ(r2.code, 0) << r2.err;
  EXPECT_NE(r2.out.find("ewc (strength 1000), ewc (strength 1000)"), std::string::npos) << r2.out;
  EXPECT_EQ(nlohmann::json::parse(read_file(path_join(out2, "model/continual/state.json")))["domains"].size(), 3u);
  // Without any old data, EWC cannot know what to protect: a clear error naming --old-data.
  const CliRun bad = f.run("ewc", path_join(f.dir.path, "bad"), f.model);
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.err.find("--old-data"), std::string::npos) << bad.err;
}

TEST(CliContinue, L2spPullsTowardTheStartingWeights) {
  Fixture f;
  const std::string ft = path_join(f.dir.path, "ft"), sp = path_join(f.dir.path, "sp");
  ASSERT_EQ(f.run("finetune", ft, f.model, "--train.weight_decay=0").code, 0);
  ASSERT_EQ(f.run("l2sp", sp, f.model, "--train.weight_decay=0 --continual.l2sp_alpha=200").code, 0);
  const double d_ft = distance(f.model, path_join(ft, "model")), d_sp = distance(f.model, path_join(sp, "model"));
  EXPECT_GT(d_ft, 0);
  EXPECT_LT(d_sp, 0.8 * d_ft) << "finetune moved " << d_ft << ", l2sp " << d_sp;
}

TEST(CliContinue, SequenceWritesTheMatrixAndItsSummary) {
  Fixture f;
  const std::string c = path_join(f.dir.path, "third.txt");
  write_file_atomic(c, lines("zebra quartz jumps over violet fox", 120));
  const std::string out = path_join(f.dir.path, "seq");
  const CliRun r = run_cli(fmt("continue --sequence --from ", f.model, " --config ", f.config, " --domain old=", f.old_text, ":",
                                   f.old_text, " --domain new=", f.new_text, ":", f.new_text, " --domain third=", c, ":", c,
                                   " --strategies finetune,replay --out ", out, " --train.max_steps=3"),
                               f.dir.path);
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  const auto j = nlohmann::json::parse(read_file(path_join(out, "forgetting.json")));
  ASSERT_EQ(j["runs"].size(), 2u);
  const std::vector<double> b = j["random_init"].get<std::vector<double>>();
  for (const auto& run : j["runs"]) {
    const auto m = run["R"].get<std::vector<std::vector<double>>>();
    ASSERT_EQ(m.size(), 3u);
    // Recomputed from the written matrix by the paper's formulas.
    const double bwt = ((m[2][0] - m[0][0]) + (m[2][1] - m[1][1])) / 2, fwt = ((m[0][1] - b[1]) + (m[1][2] - b[2])) / 2;
    EXPECT_NEAR(run["bwt"].get<double>(), bwt, 1e-9);
    EXPECT_NEAR(run["fwt"].get<double>(), fwt, 1e-9);
    EXPECT_NEAR(run["acc"].get<double>(), (m[2][0] + m[2][1] + m[2][2]) / 3, 1e-9);
    // Training on a domain lowers its bits per byte.
    EXPECT_LT(m[1][1], m[0][1]);
  }
  EXPECT_TRUE(file_exists(path_join(out, "forgetting.html")));
  EXPECT_NE(r.out.find("| replay |"), std::string::npos) << r.out;
}

namespace {

// Starts the CLI with `args` (stdout and stderr to `log`); returns its pid.
pid_t spawn_cli(const std::vector<std::string>& args, const std::string& log) {
  const pid_t pid = fork();
  if (pid == 0) {
    FILE* f = std::freopen(log.c_str(), "w", stdout);
    (void)f;
    dup2(fileno(stdout), fileno(stderr));
    std::vector<char*> argv{const_cast<char*>(DSFORGE_CLI)};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(DSFORGE_CLI, argv.data());
    _exit(127);
  }
  return pid;
}

bool wait_for(const std::function<bool()>& done, int seconds = 120) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

int exit_code(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void write_settled(const std::string& path, const std::string& text) {
  make_dirs(std::filesystem::path(path).parent_path().string());
  write_file_atomic(path, text);
  std::filesystem::last_write_time(path, std::filesystem::file_time_type::clock::now() - std::chrono::hours(1));
}

std::vector<std::string> names_of(const nlohmann::json& files) {
  std::vector<std::string> n;
  for (const auto& f : files) n.push_back(f["name"].get<std::string>());
  return n;
}

}  // namespace

TEST(CliContinue, WatchTrainsRoundsSkipsBadFilesAndResumesAfterSigterm) {
  Fixture f;
  const std::string in = path_join(f.dir.path, "inbox"), run = path_join(f.dir.path, "watch_run");
  write_settled(path_join(in, "a.txt"), lines("a new story of a cat and a dog", 120));
  write_settled(path_join(in, "bad.jsonl"), "{\"text\": \"fine\"}\n{\"text\": broken\n");
  write_settled(path_join(in, "image.bin"), std::string("\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16) + std::string(200, '\0'));
  write_settled(path_join(in, ".hidden.txt"), lines("never read", 50));
  write_settled(path_join(in, "upload.txt.part"), lines("still uploading", 50));
  write_file_atomic(path_join(in, "fresh.txt"), lines("a fresh file still being written", 120));  // mtime: now
  const std::vector<std::string> base{"continue", "--from", f.model, "--config", f.config, "--strategy", "online-ewc",
                                      "--watch", in, "--settle", "30", "--poll", "0.1", "--run.out_dir=" + run,
                                      "--continual.ewc_max_terms=1"};
  auto cli = [&](std::vector<std::string> extra) {
    std::string args;
    for (auto a : base) args += "'" + a + "' ";
    for (auto a : extra) args += "'" + a + "' ";
    return run_cli(args, f.dir.path);
  };

  // Round 1: a.txt only. The bad files are recorded with their reason; hidden, partial and unsettled
  // files are not touched.
  CliRun r1 = cli({"--old-data", f.old_text, "--exit-when-idle"});
  ASSERT_EQ(r1.code, 0) << r1.err << r1.out;
  auto ledger = [&] { return nlohmann::json::parse(read_file(path_join(run, "watch.json"))); };
  nlohmann::json j = ledger();
  ASSERT_EQ(j["rounds"].size(), 1u);
  EXPECT_EQ(names_of(j["rounds"][0]["files"]), std::vector<std::string>{"a.txt"});
  EXPECT_EQ(j["rounds"][0]["steps"], 4);
  EXPECT_TRUE(j["pending"].is_null());
  EXPECT_EQ(names_of(j["skipped"]), (std::vector<std::string>{"bad.jsonl", "image.bin"}));
  EXPECT_NE(j["skipped"][0]["error"].get<std::string>().find("bad.jsonl:2"), std::string::npos) << j.dump(2);
  EXPECT_NE(j["skipped"][1]["error"].get<std::string>().find("not text"), std::string::npos) << j.dump(2);
  EXPECT_EQ(read_file(path_join(run, "model/model.safetensors")), read_file(path_join(run, "rounds/0001/model/model.safetensors")));
  EXPECT_FALSE(std::filesystem::exists(path_join(run, "rounds/0001/checkpoints")));

  // Round 2 (fresh.txt has settled, b.txt arrives) is stopped by SIGTERM part way: exit 130, a
  // checkpoint, the round pending with its files.
  std::filesystem::last_write_time(path_join(in, "fresh.txt"), std::filesystem::file_time_type::clock::now() - std::chrono::hours(1));
  write_settled(path_join(in, "sub/b.txt"), lines("zebra quartz jumps over violet fox", 120));
  std::vector<std::string> args = base;
  args.push_back("--train.max_steps=1000000");
  const std::string log = path_join(f.dir.path, "watch2.log");
  pid_t pid = spawn_cli(args, log);
  ASSERT_TRUE(wait_for([&] { return file_exists(path_join(run, "rounds/0002/metrics.jsonl")) &&
                                    read_file(path_join(run, "rounds/0002/metrics.jsonl")).find("\"step\":3") != std::string::npos; }))
      << read_file(log);
  kill(pid, SIGTERM);
  ASSERT_EQ(exit_code(pid), 130) << read_file(log);
  j = ledger();
  ASSERT_FALSE(j["pending"].is_null()) << j.dump(2);
  EXPECT_EQ(names_of(j["pending"]["files"]), (std::vector<std::string>{"fresh.txt", "sub/b.txt"}));
  int64_t saved = -1;
  for (const auto& e : std::filesystem::directory_iterator(path_join(run, "rounds/0002/checkpoints")))
    if (std::filesystem::exists(e.path() / "DONE"))
      saved = std::max<int64_t>(saved, nlohmann::json::parse(read_file((e.path() / "trainer_state.json").string()))["step"]);
  ASSERT_GT(saved, 0) << read_file(log);

  // A file arriving meanwhile waits for the next round: the rerun finishes round 2 from its checkpoint
  // with its own files, then trains round 3 on the new one.
  write_settled(path_join(in, "c.txt"), lines("the third inbox file about cold winter nights", 120));
  CliRun r3 = cli({"--exit-when-idle", "--train.max_steps=" + std::to_string(saved + 3)});
  ASSERT_EQ(r3.code, 0) << r3.err << r3.out;
  EXPECT_NE(r3.out.find("resuming from " + path_join(run, "rounds/0002/checkpoints/step_")), std::string::npos) << r3.out;
  j = ledger();
  ASSERT_EQ(j["rounds"].size(), 3u) << j.dump(2);
  EXPECT_EQ(names_of(j["rounds"][1]["files"]), (std::vector<std::string>{"fresh.txt", "sub/b.txt"}));
  EXPECT_EQ(j["rounds"][1]["steps"], saved + 3);
  EXPECT_EQ(names_of(j["rounds"][2]["files"]), std::vector<std::string>{"c.txt"});
  EXPECT_EQ(j["skipped"].size(), 2u);

  // The anchor rolled forward: the newest model's online-EWC and (one kept) EWC anchors are its own
  // weights; each round recorded itself in the chain of domains.
  const std::string newest = path_join(run, "model");
  const auto weights = load_safetensors(path_join(newest, "model.safetensors")).tensors;
  const auto online = load_safetensors(path_join(newest, "continual/online_ewc.safetensors")).tensors;
  const auto ewc = load_safetensors(path_join(newest, "continual/ewc.safetensors")).tensors;
  int64_t compared = 0;
  for (const auto& [name, w] : weights) {
    auto it = online.find("anchor." + name);
    if (it == online.end()) continue;
    EXPECT_TRUE(at::equal(it->second, w)) << name;
    EXPECT_TRUE(at::equal(ewc.at("0.anchor." + name), w)) << name;
    EXPECT_EQ(ewc.count("1.anchor." + name), 0u) << "continual.ewc_max_terms = 1 keeps one term";
    ++compared;
  }
  EXPECT_GT(compared, 0);
  EXPECT_EQ(nlohmann::json::parse(read_file(path_join(newest, "continual/state.json")))["domains"].size(), 4u);

  // SIGTERM while idle ends the watch at once with exit 0; nothing is pending.
  const std::string log4 = path_join(f.dir.path, "watch4.log");
  pid = spawn_cli(base, log4);
  ASSERT_TRUE(wait_for([&] { return file_exists(log4) && read_file(log4).find("watching") != std::string::npos; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  kill(pid, SIGTERM);
  EXPECT_EQ(exit_code(pid), 0) << read_file(log4);
  EXPECT_TRUE(ledger()["pending"].is_null());
  EXPECT_EQ(ledger()["rounds"].size(), 3u);
}
