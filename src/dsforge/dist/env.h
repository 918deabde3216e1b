// Where this process sits in a data-parallel job, read from the environment launchers set.
//
// The contract is torchrun's (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT), so `torchrun --no-python`, `dsforge launch`, Slurm (SLURM_PROCID, SLURM_NTASKS,
// SLURM_LOCALID, SLURM_NTASKS_PER_NODE) and Open MPI's mpirun (OMPI_COMM_WORLD_*) all start dsforge.
// torchrun's own variables win over Slurm's and MPI's when several are present.
//
//   DistEnv env = dist_env_from_environment();
//   if (env.world_size > 1) { auto comm = Comm::connect(env, timeout); ... }
#pragma once
#include <string>

namespace dsforge::dist {

struct DistEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // The launcher hosts the rendezvous store (torchrun's TORCHELASTIC_USE_AGENT_STORE, and `dsforge
  // launch`): every rank connects as a client. Otherwise rank 0 hosts it.
  bool agent_store = false;
  std::string source = "single process";  // which launcher's variables were read, for messages
};

// Throws ConfigError naming the variable when one is malformed or out of range.
DistEnv dist_env_from_environment();

// Intra-op threads for one rank: the machine's cores shared by the ranks on this host (at least 1).
int threads_per_rank(const DistEnv& env);

}  // namespace dsforge::dist
