// Data-parallel training over c10d/Gloo, end to end through the CLI: the launcher, equivalence with
// one process, elastic resume on another number of ranks, a killed rank, a config that differs
// between ranks, and two hosts in network namespaces. Plus the pure parts (environment, partition).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/safetensors.h"
#include "dsforge/dist/env.h"
#include "dsforge/dist/zero.h"
#include "test_util.h"

using namespace dsforge;
namespace fs = std::filesystem;

namespace {

// Sets environment variables for one scope, restoring what was there.
struct EnvScope {
  std::vector<std::pair<std::string, std::optional<std::string>>> saved;
  explicit EnvScope(const std::vector<std::pair<std::string, std::string>>& vars) {
    for (const char* k : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                          "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE", "OMPI_COMM_WORLD_RANK",
                          "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE",
                          "TORCHELASTIC_USE_AGENT_STORE"}) {
      const char* v = std::getenv(k);
      saved.emplace_back(k, v ? std::optional<std::string>(v) : std::nullopt);
      unsetenv(k);
    }
    for (const auto& [k, v] : vars) setenv(k.c_str(), v.c_str(), 1);
  }
  ~EnvScope() {
    for (const auto& [k, v] : saved) {
      if (v) setenv(k.c_str(), v->c_str(), 1);
      else unsetenv(k.c_str());
    }
  }
};

int run_shell(const std::string& cmd) {
  const int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// One prepared run folder (corpus, tokenizer, shards) shared by the tests; each test trains in a copy.
class Dist : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new TempDir();
    write_file_atomic(path_join(root_->path, "corpus.txt"), definition_lines(600));
    config_ = path_join(root_->path, "tiny.toml");
    write_file_atomic(config_, fmt("[run]\nout_dir = \"", path_join(root_->path, "base"), "\"\nthreads = 1\n",
                                   "[data]\nsource = \"files\"\npaths = [\"", path_join(root_->path, "corpus.txt"),
                                   "\"]\nval_fraction = 0.1\n[tokenizer]\nvocab_size = 320\n[model]\nconfig = \"nano\"\n",
                                   "[train]\nseq_len = 32\nbatch_size = 6\nmax_steps = 6\nwarmup_steps = 0\n",
                                   "schedule = \"constant\"\nlr = 0.002\nlog_every = 1\neval_every = 100\ncheckpoint_every = 2\n",
                                   "fit_micro_batch = false\n[eval]\nbatches = 2\n"));
    const std::string cli = DSFORGE_CLI;
    for (const char* stage : {"data prepare", "tokenizer train", "tokenize"})
      ASSERT_EQ(run_shell(cli + " " + stage + " --config " + config_ + " >/dev/null 2>&1"), 0) << stage;
  }
  static void TearDownTestSuite() { delete root_; }

  // A fresh copy of the prepared run folder.
  static std::string fresh_run(const std::string& name) {
    const std::string dir = path_join(root_->path, name);
    fs::remove_all(dir);
    fs::create_directories(dir);
    for (const char* f : {"data", "tokenizer.json", "shards"})
      fs::copy(path_join(path_join(root_->path, "base"), f), path_join(dir, f), fs::copy_options::recursive);
    return dir;
  }
  // `dsforge [launch ... --] train` in `dir`; returns the exit code, output in dir/log.txt.
  static int train(const std::string& dir, const std::string& launch, const std::string& overrides = "",
                   const std::string& env = "") {
    const std::string cli = DSFORGE_CLI;
    const std::string prefix = launch.empty() ? cli + " " : cli + " launch " + launch + " -- ";
    return run_shell(env + " " + prefix + "train --config " + config_ + " --run.out_dir=" + dir + " " + overrides + " >" +
                     path_join(dir, "log.txt") + " 2>&1");
  }
  static std::string log_of(const std::string& dir) { return read_file(path_join(dir, "log.txt")); }
  // Largest absolute difference between the final models of two runs.
  static double max_param_diff(const std::string& a, const std::string& b) {
    auto ta = load_safetensors(path_join(a, "model/model.safetensors")).tensors;
    auto tb = load_safetensors(path_join(b, "model/model.safetensors")).tensors;
    EXPECT_EQ(ta.size(), tb.size());
    double diff = 0;
    for (const auto& [k, t] : ta) diff = std::max(diff, (t - tb.at(k)).abs().max().item<double>());
    return diff;
  }
  // step -> loss from metrics.jsonl (training records).
  static std::map<int64_t, double> losses(const std::string& dir) {
    std::map<int64_t, double> out;
    std::istringstream in(read_file(path_join(dir, "metrics.jsonl")));
    for (std::string line; std::getline(in, line);) {
      auto j = nlohmann::json::parse(line);
      if (j.value("kind", "") == "train") out[j.at("step").get<int64_t>()] = j.at("loss").get<double>();
    }
    return out;
  }

  static TempDir* root_;
  static std::string config_;
};
TempDir* Dist::root_ = nullptr;
constexpr double kTol = 2e-4;  // see TwoAndThreeRanksMatchOneProcess
std::string Dist::config_;

}  // namespace

TEST(DistEnv, ReadsTorchrunSlurmAndOpenMpiVariables) {
  {
    EnvScope e({});
    auto env = dist::dist_env_from_environment();
    EXPECT_EQ(env.world_size, 1);
    EXPECT_EQ(env.rank, 0);
  }
  {
    EnvScope e({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"},
                {"MASTER_ADDR", "10.0.0.7"}, {"MASTER_PORT", "29555"}, {"TORCHELASTIC_USE_AGENT_STORE", "True"}});
    auto env = dist::dist_env_from_environment();
    EXPECT_EQ(env.rank, 3);
    EXPECT_EQ(env.world_size, 4);
    EXPECT_EQ(env.local_rank, 1);
    EXPECT_EQ(env.local_world_size, 2);
    EXPECT_EQ(env.master_addr, "10.0.0.7");
    EXPECT_EQ(env.master_port, 29555);
    EXPECT_TRUE(env.agent_store);
  }
  {
    EnvScope e({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"}, {"SLURM_NTASKS_PER_NODE", "4(x2)"},
                {"MASTER_ADDR", "node01"}});
    auto env = dist::dist_env_from_environment();
    EXPECT_EQ(env.rank, 5);
    EXPECT_EQ(env.world_size, 8);
    EXPECT_EQ(env.local_rank, 1);
    EXPECT_EQ(env.local_world_size, 4);
    EXPECT_EQ(env.source, "Slurm");
  }
  {
    EnvScope e({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}});
    auto env = dist::dist_env_from_environment();
    EXPECT_EQ(env.rank, 1);
    EXPECT_EQ(env.local_world_size, 2);
    EXPECT_EQ(dist::threads_per_rank(env), std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / 2));
  }
  {
    EnvScope e({{"RANK", "2"}, {"WORLD_SIZE", "2"}});
    EXPECT_THROW_MSG(dist::dist_env_from_environment(), ConfigError, "RANK='2'");
  }
  {
    EnvScope e({{std::string("RANK"), std::string("0")}});
    EXPECT_THROW_MSG(dist::dist_env_from_environment(), ConfigError, "WORLD_SIZE is not");
  }
  {
    EnvScope e({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}, {"SLURM_NTASKS_PER_NODE", "2"}});
    EXPECT_THROW_MSG(dist::dist_env_from_environment(), ConfigError, "needs MASTER_ADDR");
  }
}

TEST(DistZero, PartitionBalancesElementsDeterministically) {
  // Largest first to the least-loaded rank: 10 -> r0, 8 -> r1, 5 -> r1 (8 < 10), 4 -> r0, 1 -> r1 (13 < 14).
  EXPECT_EQ(dist::partition_params({4, 10, 1, 8, 5}, 2), (std::vector<int>{0, 0, 1, 1, 1}));
  auto owner = dist::partition_params({7, 7, 7}, 3);
  EXPECT_EQ(owner, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(dist::partition_params({3, 2}, 4), (std::vector<int>{0, 1}));
}

// N ranks with B/N rows each reach the parameters of one process with B rows (DeepSeek nano: MLA,
// MoE with the expert-bias update on the global loads, MTP), with gradient accumulation, and with
// ZeRO-1 on three ranks.
TEST_F(Dist, TwoAndThreeRanksMatchOneProcess) {
  const std::string one = fresh_run("one"), two = fresh_run("two"), three = fresh_run("three");
  const std::string accum = "--train.grad_accum_steps=2";
  ASSERT_EQ(train(one, "", accum), 0) << log_of(one);
  ASSERT_EQ(train(two, "--nproc-per-node 2 --master-port 0", accum + " --dist.bucket_mb=0.5"), 0) << log_of(two);
  ASSERT_EQ(train(three, "--nproc-per-node 3 --master-port 0", accum + " --dist.zero1=true"), 0) << log_of(three);
  const std::string log2 = log_of(two), log3 = log_of(three);
  EXPECT_NE(log2.find("dist: 2 ranks, 3 rows per rank"), std::string::npos) << log2;
  // Half-megabyte buckets: nano's 4 MB of gradients make several, and all but the last-filled start
  // while autograd is still producing the others.
  const auto pos = log2.find(" gradient buckets started their all-reduce during the backward pass");
  ASSERT_NE(pos, std::string::npos) << log2;
  const auto of = log2.rfind(" of ", pos), colon = log2.rfind("dist: ", of);
  const int started = std::stoi(log2.substr(colon + 6)), buckets = std::stoi(log2.substr(of + 4));
  EXPECT_GE(buckets, 4);
  EXPECT_GE(started, buckets / 2) << log2.substr(colon, 120);
  EXPECT_NE(log3.find("ZeRO-1; plain DDP would hold"), std::string::npos) << log3;
  // One AdamW step moves a parameter by up to lr = 2e-3; a rank's gradient lost or counted twice shows
  // at that scale (the control below: one process on half the batch). Summation order differs between
  // 6 rows and 3 x 2 rows, and Adam's normalisation amplifies that where gradients are near zero:
  // 1e-5 .. 1e-4 measured, the same as accumulating 3 + 3 rows in one process.
  EXPECT_LT(max_param_diff(one, two), kTol);
  EXPECT_LT(max_param_diff(one, three), kTol);
  const std::string half = fresh_run("half");
  ASSERT_EQ(train(half, "", "--train.batch_size=3"), 0) << log_of(half);
  EXPECT_GT(max_param_diff(one, half), 10 * kTol);
  auto l1 = losses(one), l2 = losses(two), l3 = losses(three);
  ASSERT_EQ(l1.size(), 6u);
  for (const auto& [s, v] : l1) {
    EXPECT_NEAR(l2.at(s), v, 1e-4) << "step " << s;
    EXPECT_NEAR(l3.at(s), v, 1e-4) << "step " << s;
  }
  // Sanity: training moved the parameters (the comparison is not between two untrained models).
  EXPECT_LT(l1.rbegin()->second, l1.begin()->second);
}

// A checkpoint written by 2 ranks under ZeRO-1 resumes on 3 ranks (shards and cursor re-partitioned)
// and on 1, landing where an uninterrupted single process lands.
TEST_F(Dist, ElasticResumeOnAnotherNumberOfRanks) {
  const std::string ref = fresh_run("ref"), a = fresh_run("elastic_a"), b = fresh_run("elastic_b");
  ASSERT_EQ(train(ref, "", "--train.max_steps=6"), 0) << log_of(ref);
  ASSERT_EQ(train(a, "--nproc-per-node 2 --master-port 0", "--train.max_steps=3 --dist.zero1=true"), 0) << log_of(a);
  ASSERT_EQ(train(a, "--nproc-per-node 3 --master-port 0", "--train.max_steps=6 --dist.zero1=true"), 0) << log_of(a);
  EXPECT_NE(log_of(a).find("resuming from"), std::string::npos) << log_of(a);
  EXPECT_NE(log_of(a).find("at step 3 on 3 ranks"), std::string::npos) << log_of(a);
  EXPECT_LT(max_param_diff(ref, a), kTol);
  ASSERT_EQ(train(b, "--nproc-per-node 3 --master-port 0", "--train.max_steps=4"), 0) << log_of(b);
  ASSERT_EQ(train(b, "", "--train.max_steps=6"), 0) << log_of(b);
  EXPECT_LT(max_param_diff(ref, b), kTol);
}

// SIGKILL one rank mid-run: the launcher names it and stops the other, which names the lost rank
// itself; the restarted job resumes from the last checkpoint and continues the same loss curve.
TEST_F(Dist, KilledRankStopsTheJobAndTheRestartResumes) {
  const std::string ref = fresh_run("fault_ref"), run = fresh_run("fault");
  ASSERT_EQ(train(ref, "--nproc-per-node 2 --master-port 0"), 0) << log_of(ref);
  const auto t0 = std::chrono::steady_clock::now();
  const int code = train(run, "--nproc-per-node 2 --master-port 0 --grace 20", "--dist.timeout_s=20",
                         "DSFORGE_KILL_RANK_AT=1:3");
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string log = log_of(run);
  EXPECT_EQ(code, 128 + SIGKILL) << log;
  EXPECT_LT(secs, 20.0) << log;
  EXPECT_NE(log.find("launch: rank 1 (pid"), std::string::npos) << log;
  EXPECT_NE(log.find("was killed by signal 9 (SIGKILL)"), std::string::npos) << log;
  EXPECT_NE(log.find("lost rank 1"), std::string::npos) << log;
  ASSERT_EQ(train(run, "--nproc-per-node 2 --master-port 0"), 0) << log_of(run);
  EXPECT_NE(log_of(run).find("resuming from"), std::string::npos) << log_of(run);
  EXPECT_NE(log_of(run).find("at step 2"), std::string::npos) << log_of(run);
  auto ref_l = losses(ref), run_l = losses(run);
  for (int64_t s = 1; s <= 6; ++s) EXPECT_NEAR(run_l.at(s), ref_l.at(s), 1e-5) << "step " << s;
  EXPECT_LT(max_param_diff(ref, run), 1e-5);
}

// SIGTERM to the launcher reaches every rank; they stop at the same step, rank 0 saves, exit 130,
// and the same command resumes there.
TEST_F(Dist, SigtermToTheLauncherCheckpointsAndResumes) {
  const std::string run = fresh_run("sigterm");
  const std::string log = path_join(run, "log.txt");
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    FILE* f = std::freopen(log.c_str(), "w", stdout);
    (void)f;
    const std::string out = "--run.out_dir=" + run;
    execl(DSFORGE_CLI, DSFORGE_CLI, "launch", "--nproc-per-node", "2", "--master-port", "0", "--", "train", "--config",
          config_.c_str(), out.c_str(), "--train.max_steps=100000", static_cast<char*>(nullptr));
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  const std::string ck = path_join(run, "checkpoints");
  while (std::chrono::steady_clock::now() < deadline && !(fs::exists(ck) && !fs::is_empty(ck)))
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(fs::exists(ck)) << read_file(log);
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 130) << read_file(log);
  const std::string text = read_file(log);
  EXPECT_NE(text.find("launch: all ranks stopped on the signal"), std::string::npos) << text;
  // The step saved on the signal: the newest complete checkpoint's trainer state (numbers from files, not logs).
  int64_t saved = -1;
  for (const auto& e : fs::directory_iterator(ck))
    if (fs::exists(e.path() / "DONE"))
      saved = std::max<int64_t>(saved, nlohmann::json::parse(read_file((e.path() / "trainer_state.json").string()))["step"]);
  ASSERT_GT(saved, 0) << text;
  ASSERT_EQ(train(run, "--nproc-per-node 2 --master-port 0", fmt("--train.max_steps=", saved + 2)), 0) << log_of(run);
  // The resumed run logged only the steps after the checkpoint, up to the new end.
  std::vector<int64_t> steps;
  std::ifstream in(path_join(run, "metrics.jsonl"));
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.value("kind", "train") == "train" && j.contains("loss")) steps.push_back(j["step"].get<int64_t>());
  }
  ASSERT_FALSE(steps.empty());
  EXPECT_EQ(steps.back(), saved + 2);
}

// Without a launcher (ranks started by hand, as torchrun or Slurm would, rank 0 hosting the store):
// a SIGKILLed rank 1 makes rank 0 exit with a message naming it; a rank with another config is
// refused on every rank.
TEST_F(Dist, RanksWithoutLauncherNameTheLostRankAndRefuseDifferentConfigs) {
  const std::string run = fresh_run("manual");
  const std::string cli = DSFORGE_CLI;
  const int port = free_port(), port2 = free_port();
  auto rank_cmd = [&](int r, const std::string& extra, const std::string& env) {
    return fmt("(env ", env, " RANK=", r, " WORLD_SIZE=2 LOCAL_RANK=", r,
               " LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=", port, " ", cli, " train --config ", config_,
               " --run.out_dir=", run, " --dist.timeout_s=15 --train.max_steps=200 ", extra, " >", run, "/log", r,
               ".txt 2>&1; echo $? >", run, "/code", r, ".txt)");
  };
  const auto t0 = std::chrono::steady_clock::now();
  run_shell(rank_cmd(0, "", "") + " & " + rank_cmd(1, "", "DSFORGE_KILL_RANK_AT=1:2") + " & wait");
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string log0 = read_file(path_join(run, "log0.txt"));
  EXPECT_EQ(std::stoi(read_file(path_join(run, "code0.txt"))), 1) << log0;
  EXPECT_NE(log0.find("lost rank 1"), std::string::npos) << log0;
  EXPECT_LT(secs, 30.0);

  const std::string mismatch = fresh_run("mismatch");
  auto cmd = [&](int r, const std::string& lr) {
    return fmt("(RANK=", r, " WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=", port2, " ", cli, " train --config ", config_,
               " --run.out_dir=", mismatch, " --dist.timeout_s=15 --train.lr=", lr, " >", mismatch, "/log", r,
               ".txt 2>&1; echo $? >", mismatch, "/code", r, ".txt)");
  };
  run_shell(cmd(0, "0.002") + " & " + cmd(1, "0.003") + " & wait");
  for (int r = 0; r < 2; ++r) {
    const std::string log = read_file(path_join(mismatch, fmt("log", r, ".txt")));
    EXPECT_EQ(std::stoi(read_file(path_join(mismatch, fmt("code", r, ".txt")))), 2) << log;
    EXPECT_NE(log.find("run config of rank(s) 1 differs from rank 0's"), std::string::npos) << log;
  }
  EXPECT_FALSE(fs::exists(path_join(mismatch, "checkpoints")));
}

// Two hosts: network namespaces joined by a veth pair, one rank in each, TCP over that link only.
TEST_F(Dist, TwoHostsInNetworkNamespaces) {
  const std::string tag = std::to_string(getpid() % 100000);
  const std::string a = "dsfa" + tag, b = "dsfb" + tag;
  const std::string setup = fmt("ip netns add ", a, " && ip netns add ", b, " && ip link add va", tag,
                                " type veth peer name vb", tag, " && ip link set va", tag, " netns ", a,
                                " && ip link set vb", tag, " netns ", b, " && ip -n ", a, " addr add 10.231.0.1/24 dev va", tag,
                                " && ip -n ", b, " addr add 10.231.0.2/24 dev vb", tag, " && ip -n ", a, " link set va", tag,
                                " up && ip -n ", b, " link set vb", tag, " up && ip -n ", a, " link set lo up && ip -n ", b,
                                " link set lo up");
  const std::string teardown = fmt("ip netns del ", a, " 2>/dev/null; ip netns del ", b, " 2>/dev/null");
  if (run_shell("(" + setup + ") >/dev/null 2>&1") != 0) {
    run_shell(teardown);
    GTEST_SKIP() << "cannot create network namespaces here (needs root and CAP_SYS_ADMIN)";
  }
  const std::string ref = fresh_run("netns_ref"), run = fresh_run("netns");
  ASSERT_EQ(train(ref, "", "--train.max_steps=4"), 0) << log_of(ref);
  const std::string cli = DSFORGE_CLI;
  auto host = [&](const std::string& ns, int node) {
    return fmt("(ip netns exec ", ns, " ", cli, " launch --nnodes 2 --node-rank ", node,
               " --nproc-per-node 1 --master-addr 10.231.0.1 --master-port 29617 -- train --config ", config_,
               " --run.out_dir=", run, " --train.max_steps=4 --dist.timeout_s=30 >", run, "/host", node, ".txt 2>&1; echo $? >",
               run, "/code", node, ".txt)");
  };
  run_shell(host(a, 0) + " & sleep 0.5; " + host(b, 1) + " & wait");
  run_shell(teardown);
  const std::string log0 = read_file(path_join(run, "host0.txt")), log1 = read_file(path_join(run, "host1.txt"));
  ASSERT_EQ(std::stoi(read_file(path_join(run, "code0.txt"))), 0) << log0 << log1;
  ASSERT_EQ(std::stoi(read_file(path_join(run, "code1.txt"))), 0) << log0 << log1;
  EXPECT_NE(log1.find("gloo on 10.231.0.2"), std::string::npos) << log1;
  EXPECT_LT(max_param_diff(ref, run), kTol);
}

// The whole pipeline under a launcher would have every rank write the same data files: refused.
TEST_F(Dist, PipelineUnderALauncherIsRefused) {
  const std::string run = fresh_run("pipeline");
  const int code = run_shell(fmt("RANK=0 WORLD_SIZE=2 ", DSFORGE_CLI, " pipeline --config ", config_, " --run.out_dir=", run,
                                 " >", run, "/log.txt 2>&1"));
  EXPECT_EQ(code, 2);
  EXPECT_NE(log_of(run).find("Run the data stages once"), std::string::npos) << log_of(run);
}
