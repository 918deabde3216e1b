// `dsforge continue` end to end on a tiny model: every strategy through the CLI, the continual state a
// later stage reuses, L2-SP's pull toward the starting weights, the error without old data, and a
// three-domain --sequence whose forgetting figures are recomputed from the written matrix.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <ATen/ATen.h>

#include <cmath>
#include <cstdlib>
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
