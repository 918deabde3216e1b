// dsforge continue: keep a trained model learning on new data (EWC, online EWC, L2-SP, replay, LwF),
// and --sequence: measure forgetting over a sequence of domains.
#include <cstdio>
#include <memory>
#include <sstream>

#include "commands.h"
#include "dsforge/core/error.h"
#include "dsforge/pipeline/continue_stage.h"

namespace dsforge::cli {

void add_continue_command(CLI::App& app, Context& ctx) {
  struct Args {
    pipeline::ContinueOptions o;
    bool sequence = false;
    std::vector<std::string> domains;
    std::string strategies = "finetune,ewc,online-ewc,l2sp,replay,lwf";
    std::string out;
    int64_t eval_bytes = 100000;
    pipeline::WatchOptions w;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = app.add_subcommand(
      "continue", "continue training a model on new data without forgetting the old (continual.strategy: finetune, ewc, "
                  "online-ewc, l2sp, replay, lwf, or '+'-joined); --sequence measures forgetting over domains");
  c->add_option("--from", a->o.from, "model folder to continue (e.g. runs/quickstart/model)")->required();
  c->add_option("--config", a->o.config, "run config: the new data (data.*), training (train.*), [continual] keys")->required();
  c->add_option("--strategy", a->o.strategy, "overrides continual.strategy, e.g. ewc, replay+ewc");
  c->add_option("--old-data", a->o.old_data,
                "earlier-domain data when --from has no continual/ state: a text file, a token shard (.bin) or a run folder");
  c->add_option("--extend-tokenizer", a->o.extend_tokenizer,
                "learn N more BPE merges on the new data first (old ids unchanged; new rows from their bytes' rows)")
      ->capture_default_str();
  c->add_flag("--sequence", a->sequence, "train every --strategies through the --domain sequence and write the forgetting matrix");
  c->add_option("--domain", a->domains, "--sequence: NAME=TRAIN.txt:EVAL.txt, in order; the first is what --from was trained on");
  c->add_option("--strategies", a->strategies, "--sequence: comma-separated strategies")->capture_default_str();
  c->add_option("--out", a->out, "--sequence: output folder (default <run.out_dir>/sequence)");
  c->add_option("--eval-bytes", a->eval_bytes, "--sequence: each held-out text is cut to this many bytes")->capture_default_str();
  c->add_option("--watch", a->w.dir,
                "online mode: train in rounds on the text files dropped into this folder (the model of each round is the "
                "next round's start and anchor); SIGTERM stops, the same command resumes");
  c->add_option("--poll", a->w.poll_seconds, "--watch: seconds between scans of the folder")->capture_default_str();
  c->add_option("--settle", a->w.settle_seconds, "--watch: a file is taken once unmodified for this many seconds")
      ->capture_default_str();
  c->add_option("--rounds", a->w.max_rounds, "--watch: return after this many rounds (0 = keep watching)")->capture_default_str();
  c->add_flag("--exit-when-idle", a->w.exit_when_idle, "--watch: return once no new file is ready");
  c->add_option("--keep-rounds", a->w.keep_rounds, "--watch: round folders kept on disk")->capture_default_str();
  c->callback([&ctx, a]() {
    a->o.overrides = ctx.overrides;
    ctx.action = [a]() {
      if (!a->w.dir.empty()) {
        if (a->sequence) throw ConfigError("--watch and --sequence are separate modes: give one");
        if (a->o.extend_tokenizer != 0) throw ConfigError("--extend-tokenizer is not available with --watch");
        pipeline::WatchOptions w = a->w;
        w.from = a->o.from;
        w.config = a->o.config;
        w.overrides = a->o.overrides;
        w.strategy = a->o.strategy;
        w.old_data = a->o.old_data;
        return pipeline::watch_continue(w);
      }
      if (!a->sequence) {
        if (!a->domains.empty()) throw ConfigError("--domain is for --sequence");
        return pipeline::stage_continue(a->o);
      }
      pipeline::SequenceOptions s;
      s.from = a->o.from;
      s.config = a->o.config;
      s.overrides = a->o.overrides;
      for (const auto& d : a->domains) s.domains.push_back(pipeline::parse_sequence_domain(d));
      std::stringstream ss(a->strategies);
      for (std::string item; std::getline(ss, item, ',');)
        if (!item.empty()) s.strategies.push_back(item);
      s.out = a->out;
      s.eval_bytes = a->eval_bytes;
      std::fputs(pipeline::run_sequence(s).c_str(), stdout);
      return 0;
    };
  });
}

}  // namespace dsforge::cli
