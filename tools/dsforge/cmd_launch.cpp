// dsforge launch --nproc-per-node N [--nnodes M --node-rank R --master-addr A --master-port P] -- <dsforge args>
#include <memory>

#include "commands.h"
#include "dsforge/dist/launch.h"

namespace dsforge::cli {

void add_launch_command(CLI::App& app, Context& ctx) {
  auto opts = std::make_shared<dist::LaunchOptions>();
  CLI::App* c = app.add_subcommand(
      "launch", "run dsforge data-parallel: start the local ranks with torchrun's environment, stop all when one fails");
  c->add_option("--nproc-per-node", opts->nproc_per_node, "ranks on this host")->capture_default_str();
  c->add_option("--nnodes", opts->nnodes, "hosts in the job")->capture_default_str();
  c->add_option("--node-rank", opts->node_rank, "this host's index, 0 .. nnodes-1 (node 0 hosts the rendezvous store)")
      ->capture_default_str();
  c->add_option("--master-addr", opts->master_addr, "address of node 0, reachable from every host")->capture_default_str();
  c->add_option("--master-port", opts->master_port, "rendezvous port on node 0 (0 = any free port, one node only)")
      ->capture_default_str();
  c->add_option("--grace", opts->grace_s, "seconds the other ranks get to exit after one fails, then SIGKILL")
      ->capture_default_str();
  c->footer("Everything after -- is the dsforge command each rank runs, e.g.\n"
            "  dsforge launch --nproc-per-node 2 -- train --config configs/run/quickstart.toml");
  c->callback([&ctx, opts]() {
    if (!ctx.overrides.empty())
      throw CLI::ValidationError("--" + ctx.overrides.front(), "run-config overrides belong after --, to the ranks' command");
    std::vector<std::string> args = ctx.passthrough;
    ctx.action = [opts, args]() { return dist::launch(*opts, args); };
  });
}

}  // namespace dsforge::cli
