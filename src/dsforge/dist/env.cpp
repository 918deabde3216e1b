#include "dsforge/dist/env.h"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <thread>

#include "dsforge/core/error.h"
#include "dsforge/core/platform.h"

namespace dsforge::dist {
namespace {

const char* get(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

int parse_int(const char* name, const char* text, int lo, int hi) {
  char* end = nullptr;
  const long v = std::strtol(text, &end, 10);
  if (end == text || *end != '\0' || v < lo || v > hi)
    throw ConfigError(fmt("environment variable ", name, "='", text, "': expected an integer in [", lo, ", ", hi, "]"));
  return static_cast<int>(v);
}

// The first of `names` that is set, parsed; `fallback` when none is.
int first_int(std::initializer_list<const char*> names, int fallback, int lo, int hi) {
  for (const char* n : names)
    if (const char* v = get(n)) return parse_int(n, v, lo, hi);
  return fallback;
}

}  // namespace

DistEnv dist_env_from_environment() {
  DistEnv env;
  constexpr int kMax = 1 << 20;
  if (get("WORLD_SIZE") || get("RANK")) {
    env.source = "torchrun-style RANK/WORLD_SIZE";
    if (!get("WORLD_SIZE") || !get("RANK"))
      throw ConfigError(fmt("environment: ", get("RANK") ? "RANK" : "WORLD_SIZE", " is set but ",
                            get("RANK") ? "WORLD_SIZE" : "RANK", " is not; a launcher sets both"));
  } else if (get("SLURM_PROCID") && get("SLURM_NTASKS")) {
    env.source = "Slurm";
  } else if (get("OMPI_COMM_WORLD_RANK") && get("OMPI_COMM_WORLD_SIZE")) {
    env.source = "Open MPI";
  } else {
    return env;
  }
  env.world_size = first_int({"WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"}, 1, 1, kMax);
  env.rank = first_int({"RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK"}, 0, 0, env.world_size - 1);
  env.local_rank = first_int({"LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK"}, 0, 0, kMax);
  // Slurm writes SLURM_NTASKS_PER_NODE as "4" or "4(x2)": the leading count is what we need.
  int slurm_per_node = 0;
  if (const char* v = get("SLURM_NTASKS_PER_NODE")) slurm_per_node = std::atoi(v);
  env.local_world_size = first_int({"LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE"},
                                   slurm_per_node > 0 ? slurm_per_node : 1, 1, kMax);
  if (env.local_rank >= env.local_world_size)
    throw ConfigError(fmt("environment: LOCAL_RANK ", env.local_rank, " is not below LOCAL_WORLD_SIZE ",
                          env.local_world_size));
  if (const char* a = get("MASTER_ADDR")) env.master_addr = a;
  else if (env.world_size > 1 && env.source != "torchrun-style RANK/WORLD_SIZE" && env.local_world_size < env.world_size)
    throw ConfigError(fmt("environment: ", env.source, " job over several hosts needs MASTER_ADDR (the host of rank 0)"));
  env.master_port = first_int({"MASTER_PORT"}, 29500, 1, 65535);
  if (const char* s = get("TORCHELASTIC_USE_AGENT_STORE")) env.agent_store = std::string(s) == "True" || std::string(s) == "1";
  return env;
}

int threads_per_rank(const DistEnv& env) {
  // The CPUs this process may use (affinity mask, cgroup quota), not the machine's.
  const int cores = usable_cpus().count;
  return std::max(1, cores / std::max(1, env.local_world_size));
}

}  // namespace dsforge::dist
