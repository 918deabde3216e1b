// `dsforge launch`: start the ranks of one host the way torchrun does, and stop them all when one fails.
//
// Each local rank is this executable run with `args` and torchrun's variables (RANK, WORLD_SIZE,
// LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT). The launcher of node 0 hosts the c10d
// rendezvous store (TORCHELASTIC_USE_AGENT_STORE=True tells the ranks to connect as clients), so the
// store outlives any rank and survivors can ask it who is gone. OMP_NUM_THREADS is set to the cores
// per local rank unless the caller set it. SIGINT/SIGTERM are forwarded to every rank (they save a
// checkpoint and exit). When a rank dies or exits non-zero, the launcher names it, sends SIGTERM to
// the others, SIGKILLs whoever is left after `grace_s`, and returns that rank's exit code (128 + signal
// for a signal).
//
//   dsforge launch --nproc-per-node 2 -- train --config configs/run/quickstart.toml
#pragma once
#include <string>
#include <vector>

namespace dsforge::dist {

struct LaunchOptions {
  int nproc_per_node = 1;
  int nnodes = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;  // 0 = any free port (single node only)
  double grace_s = 30;      // after a failure, how long the other ranks get to exit before SIGKILL
};

// Returns the job's exit code: 0 when every rank exited 0.
int launch(const LaunchOptions& opts, const std::vector<std::string>& args);

}  // namespace dsforge::dist
