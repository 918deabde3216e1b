#include "dsforge/dist/launch.h"

#include <signal.h>
#include <sys/wait.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <thread>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "dsforge/core/error.h"
#include "dsforge/core/log.h"

extern char** environ;

namespace dsforge::dist {
namespace {

std::atomic<int> g_forward{0};
extern "C" void on_launcher_signal(int sig) { g_forward = sig; }

std::string describe(int status) {
  if (WIFEXITED(status)) return fmt("exited with code ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    return fmt("was killed by signal ", sig, " (", sig == SIGKILL ? "SIGKILL" : strsignal(sig), ")");
  }
  return "stopped";
}

int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

// The launcher hosts the store's server thread, so the child of fork() may only call async-signal-safe
// functions until it execs: argv and the environment are built here, before the fork.
pid_t spawn(const std::vector<std::string>& args, const std::map<std::string, std::string>& env) {
  static const std::string self = "/proc/self/exe";
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(self.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<std::string> entries;
  for (char** e = environ; *e; ++e) {
    const std::string kv = *e;
    if (!env.count(kv.substr(0, kv.find('=')))) entries.push_back(kv);
  }
  for (const auto& [k, v] : env) entries.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& kv : entries) envp.push_back(kv.data());
  envp.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) throw Error(fmt("dsforge launch: fork failed: ", std::strerror(errno)));
  if (pid == 0) {
    // A rank dies with its launcher (even one killed by SIGKILL), releasing its ports, instead of
    // training on as an orphan. The check after prctl closes the race with a launcher that already died.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(137);
    execve(self.c_str(), argv.data(), envp.data());
    static const char msg[] = "dsforge launch: exec /proc/self/exe failed\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(127);
  }
  return pid;
}

}  // namespace

int launch(const LaunchOptions& o, const std::vector<std::string>& args) {
  if (o.nproc_per_node < 1) throw ConfigError("dsforge launch: --nproc-per-node must be >= 1");
  if (o.nnodes < 1 || o.node_rank < 0 || o.node_rank >= o.nnodes)
    throw ConfigError(fmt("dsforge launch: --node-rank ", o.node_rank, " must be in [0, ", o.nnodes, ")"));
  if (o.master_port == 0 && o.nnodes > 1)
    throw ConfigError("dsforge launch: --master-port 0 (any free port) works on one node only; give the port all nodes use");
  if (args.empty()) throw ConfigError("dsforge launch: nothing to run; give the dsforge arguments after --, e.g. -- train --config X");

  // Node 0 hosts the rendezvous store for the whole job.
  c10::intrusive_ptr<c10d::TCPStore> store;
  int port = o.master_port;
  if (o.node_rank == 0) {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(o.master_port);
    so.isServer = true;
    so.waitWorkers = false;
    try {
      store = c10::make_intrusive<c10d::TCPStore>(o.master_addr, so);
    } catch (const std::exception& e) {
      throw Error(fmt("dsforge launch: cannot host the rendezvous store on port ", o.master_port, ": ", e.what()));
    }
    port = store->getPort();
  }
  const int world = o.nproc_per_node * o.nnodes;
  const char* omp = std::getenv("OMP_NUM_THREADS");
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const std::string threads = omp ? std::string(omp) : std::to_string(std::max(1, cores / o.nproc_per_node));
  log_info("launch: node ", o.node_rank, "/", o.nnodes, ", ranks ", o.node_rank * o.nproc_per_node, "..",
           (o.node_rank + 1) * o.nproc_per_node - 1, " of ", world, ", store ", o.master_addr, ":", port, ", ", threads,
           " threads per rank");

  struct sigaction sa {}, old_int {}, old_term {};
  sa.sa_handler = on_launcher_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  g_forward = 0;

  std::map<pid_t, int> running;  // pid -> global rank
  for (int local = 0; local < o.nproc_per_node; ++local) {
    const int rank = o.node_rank * o.nproc_per_node + local;
    const std::map<std::string, std::string> env = {
        {"RANK", std::to_string(rank)},
        {"WORLD_SIZE", std::to_string(world)},
        {"LOCAL_RANK", std::to_string(local)},
        {"LOCAL_WORLD_SIZE", std::to_string(o.nproc_per_node)},
        {"GROUP_RANK", std::to_string(o.node_rank)},
        {"MASTER_ADDR", o.master_addr},
        {"MASTER_PORT", std::to_string(port)},
        {"TORCHELASTIC_USE_AGENT_STORE", "True"},
        {"OMP_NUM_THREADS", threads}};
    running[spawn(args, env)] = rank;
  }

  int result = 0;
  bool failing = false, forwarded = false;
  constexpr int kInterrupted = 130;  // a rank that saved a checkpoint on SIGINT/SIGTERM
  std::chrono::steady_clock::time_point deadline;
  auto signal_all = [&](int sig) {
    for (const auto& [pid, rank] : running) kill(pid, sig);
  };
  while (!running.empty()) {
    if (const int sig = g_forward.exchange(0)) {
      log_info("launch: forwarding ", sig == SIGINT ? "SIGINT" : "SIGTERM", " to ", running.size(), " rank(s)");
      signal_all(sig);
      forwarded = true;
    }
    int status = 0;
    const pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid > 0 && running.count(pid)) {
      const int rank = running[pid];
      running.erase(pid);
      const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      if (forwarded && !failing && WIFEXITED(status) && WEXITSTATUS(status) == kInterrupted) {
        result = kInterrupted;  // stopped as asked, checkpoint saved
        continue;
      }
      if (!ok && !failing) {
        failing = true;
        result = exit_code(status);
        log_info("launch: rank ", rank, " (pid ", pid, ") ", describe(status), "; stopping the other ",
                  running.size(), " rank(s) on this node");
        signal_all(SIGTERM);
        deadline = std::chrono::steady_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(o.grace_s * 1000));
      } else if (!ok) {
        log_info("launch: rank ", rank, " (pid ", pid, ") ", describe(status));
      }
      continue;
    }
    if (pid < 0 && errno == ECHILD) break;
    if (failing && std::chrono::steady_clock::now() > deadline) {
      log_info("launch: ", running.size(), " rank(s) still running ", o.grace_s, " s after the failure; killing them");
      signal_all(SIGKILL);
      deadline = std::chrono::steady_clock::now() + std::chrono::hours(1);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  if (result == 0) log_info("launch: all ", o.nproc_per_node, " rank(s) on this node finished");
  if (result == kInterrupted && !failing) log_info("launch: all ranks stopped on the signal; run the same command to resume");
  return result;
}

}  // namespace dsforge::dist
