// `dsforge search` end to end on a tiny recipe: three trials through the trainer, the outputs, a resume
// that finds nothing left to do, the report, and a bad space file.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <set>
#include <nlohmann/json.hpp>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/run_config.h"
#include "dsforge/model/config.h"
#include "test_util.h"

using namespace dsforge;

namespace {

std::string tiny_recipe(const std::string& dir) {
  make_dirs(path_join(dir, "corpus"));
  std::string text;
  for (int i = 0; i < 300; ++i) text += "w" + std::to_string(i) + ": a small thing that is " + std::to_string(i % 7) + " old\n";
  write_file_atomic(path_join(dir, "corpus/c.txt"), text);
  const std::string cfg = path_join(dir, "tiny.toml");
  write_file_atomic(cfg, fmt("[run]\nout_dir = \"", path_join(dir, "run"), "\"\nthreads = 1\n",
                             "[data]\nsource = \"files\"\npaths = [\"corpus/c.txt\"]\nval_fraction = 0.1\n",
                             "[tokenizer]\nvocab_size = 300\n[model]\nconfig = \"nano\"\n",
                             "[train]\nseq_len = 16\nbatch_size = 2\nmax_steps = 4\nwarmup_steps = 1\nlog_every = 2\n",
                             "eval_every = 2\ncheckpoint_every = 100\npeak_gflops = 1\n[eval]\nbatches = 1\n"));
  return cfg;
}

}  // namespace

TEST(SlowSearchCli, ThreeTinyTrialsThenResumeAndReport) {
  TempDir dir;
  const std::string cfg = tiny_recipe(dir.path), space = path_join(dir.path, "space.toml");
  write_file_atomic(space, "[\"train.lr\"]\ntype = \"float\"\nlow = 1e-4\nhigh = 1e-2\nlog = true\n"
                           "[\"model.n_routed_experts\"]\ntype = \"categorical\"\nchoices = [4, 8]\n");
  const std::string out = path_join(dir.path, "search");
  const std::string args = "search --config " + cfg + " --space " + space + " --trials 3 --pruner median --out " + out;
  CliRun r = run_cli(args, dir.path);
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  const auto trials = nlohmann::json::parse(read_file(path_join(out, "trials.json")));
  ASSERT_EQ(trials.size(), 3u);
  for (const auto& t : trials) {
    EXPECT_EQ(t["state"], "COMPLETE") << t.dump();
    EXPECT_TRUE(t["intermediate"].contains("2") && t["intermediate"].contains("4")) << t.dump();
  }
  // The best config trains as it is: its run folder links the shared data, its model config the trial's.
  const RunConfig best = load_run_config(path_join(out, "best.toml"));
  EXPECT_EQ(best.run.out_dir, path_join(out, "best"));
  EXPECT_TRUE(file_exists(path_join(out, "best/shards/manifest.json")));
  EXPECT_EQ(best.model.config, path_join(out, "best_model.json"));
  EXPECT_TRUE(file_exists(path_join(out, "trial_0002/model/model.safetensors")));
  // Rerunning the command resumes the study: nothing left, the outputs again.
  r = run_cli(args, dir.path);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(read_file(path_join(out, "trials.json"))).size(), 3u);
  r = run_cli("search report --study " + path_join(out, "study.db"), dir.path);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("optimisation history"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("trials: 3, 3 COMPLETE"), std::string::npos) << r.out;
  // A search killed in the middle of a trial (SIGKILL at step 3, after the step-2 checkpoint) resumes
  // when the same command runs again: the dead worker's trial is re-queued and continues from its checkpoint.
  const std::string out2 = path_join(dir.path, "search2");
  const std::string args2 = "search --config " + cfg + " --space " + space + " --trials 2 --out " + out2 +
                            " --train.checkpoint_every=2";
  r = run_cli(args2, dir.path, "env DSFORGE_KILL_RANK_AT=0:3 ");
  EXPECT_NE(r.code, 0);
  r = run_cli(args2, dir.path);
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  EXPECT_NE((r.out + r.err).find("trial_0000/checkpoints/step_0000002 at step 2"), std::string::npos) << r.out << r.err;
  const auto resumed = nlohmann::json::parse(read_file(path_join(out2, "trials.json")));
  ASSERT_EQ(resumed.size(), 2u);
  for (const auto& t : resumed) EXPECT_EQ(t["state"], "COMPLETE") << t.dump();
  // Another space on the same study, and a bad key: clear errors, exit code 2.
  write_file_atomic(space, "[\"train.lr\"]\ntype = \"float\"\nlow = 1e-4\nhigh = 1e-1\nlog = true\n");
  r = run_cli(args, dir.path);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("created with another search space"), std::string::npos) << r.err;
  write_file_atomic(space, "[\"train.lrr\"]\ntype = \"float\"\nlow = 1e-4\nhigh = 1e-1\n");
  r = run_cli(args, dir.path);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("parameter 'train.lrr': unknown key"), std::string::npos) << r.err;
}

// `--workers 2`: two worker processes share the study; together they run exactly the requested trials,
// each number once, every trial complete.
TEST(SlowSearchCli, TwoWorkersShareTheStudy) {
  TempDir dir;
  const std::string cfg = tiny_recipe(dir.path), space = path_join(dir.path, "space.toml");
  write_file_atomic(space, "[\"train.lr\"]\ntype = \"float\"\nlow = 1e-4\nhigh = 1e-2\nlog = true\n");
  const std::string out = path_join(dir.path, "search");
  CliRun r = run_cli("search --config " + cfg + " --space " + space + " --trials 4 --workers 2 --out " + out, dir.path);
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  const auto trials = nlohmann::json::parse(read_file(path_join(out, "trials.json")));
  ASSERT_EQ(trials.size(), 4u) << trials.dump();
  std::set<int64_t> numbers;
  for (const auto& t : trials) {
    EXPECT_EQ(t["state"], "COMPLETE") << t.dump();
    numbers.insert(t["number"].get<int64_t>());
  }
  EXPECT_EQ(numbers, (std::set<int64_t>{0, 1, 2, 3}));
  EXPECT_TRUE(file_exists(path_join(out, "best.toml")));
}

// Population-based training end to end: 3 members x 3 generations of 2 steps; each segment starts from
// the checkpoint it continues or exploits (the step it resumes at is the generation's start), the
// lineage and the schedules are in pbt.json and the report, and a search killed in the middle resumes to
// exactly the losses of an uninterrupted one.
TEST(SlowSearchCli, PopulationBasedTrainingExploitsResumesAndPlotsSchedules) {
  TempDir dir;
  const std::string cfg = tiny_recipe(dir.path), space = path_join(dir.path, "space.toml");
  write_file_atomic(space, "[\"train.lr\"]\ntype = \"float\"\nlow = 1e-4\nhigh = 1e-2\nlog = true\n"
                           "[\"train.weight_decay\"]\ntype = \"float\"\nlow = 0.0\nhigh = 0.3\n");
  const std::string base = "search --config " + cfg + " --space " + space + " --strategy pbt --population 3 --interval 2 " +
                           "--train.max_steps=6 --train.eval_every=1";
  CliRun r = run_cli(base + " --out " + path_join(dir.path, "a"), dir.path);
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  const auto pbt = nlohmann::json::parse(read_file(path_join(dir.path, "a/pbt.json")));
  EXPECT_EQ(pbt["population"], 3);
  EXPECT_EQ(pbt["generations"], 3);
  EXPECT_EQ(pbt["training_steps"], 3 * 6);
  int exploited = 0;
  for (const auto& m : pbt["members"]) {
    ASSERT_EQ(m["schedule"].size(), 3u) << m.dump();
    for (size_t g = 1; g < 3; ++g) {
      const auto& seg = m["schedule"][g];
      EXPECT_EQ(seg["steps"], (nlohmann::json{2 * static_cast<int>(g), 2 * static_cast<int>(g) + 2})) << seg.dump();
      exploited += seg.contains("exploited");
      // Each segment resumed from a checkpoint at its generation's first step.
      EXPECT_NE((r.out + r.err).find(fmt("trial_", fmt(seg["trial"].get<int>() < 10 ? "000" : "00", seg["trial"].get<int>()),
                                         "/checkpoints/step_000000", 2 * g, " at step ", 2 * g)),
                std::string::npos)
          << seg.dump();
    }
  }
  EXPECT_EQ(exploited, 2);  // the worst of three, once per generation after the first
  EXPECT_FALSE(file_exists(path_join(dir.path, "a/best.toml")));
  EXPECT_TRUE(file_exists(path_join(dir.path, fmt("a/trial_000", 6 + pbt["best_member"].get<int>(), "/model/model.safetensors"))));
  const std::string html = read_file(path_join(dir.path, "a/report.html"));
  EXPECT_NE(html.find("train.lr schedule"), std::string::npos);
  EXPECT_NE(html.find("Lineage"), std::string::npos);

  // Killed at step 3 of a segment (SIGKILL after the generation-1 checkpoint at step 2), then resumed.
  r = run_cli(base + " --out " + path_join(dir.path, "b"), dir.path, "env DSFORGE_KILL_RANK_AT=0:3 ");
  EXPECT_NE(r.code, 0);
  r = run_cli(base + " --out " + path_join(dir.path, "b"), dir.path);
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  const auto resumed = nlohmann::json::parse(read_file(path_join(dir.path, "b/pbt.json")));
  for (size_t m = 0; m < 3; ++m)
    EXPECT_EQ(resumed["members"][m]["final_value"], pbt["members"][m]["final_value"]) << m;
  // Other PBT settings on the same study, and a key that cannot change mid-training: clear errors.
  std::string other = base;
  other.replace(other.find("--population 3"), 14, "--population 4");
  r = run_cli(other + " --out " + path_join(dir.path, "b"), dir.path);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("made with other search settings"), std::string::npos) << r.err;
  write_file_atomic(space, "[\"train.batch_size\"]\ntype = \"int\"\nlow = 2\nhigh = 4\n");
  r = run_cli(base + " --out " + path_join(dir.path, "c"), dir.path);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("'train.batch_size' cannot change in the middle of a training"), std::string::npos) << r.err;
}
