// dsforge model info | logits
#include <iostream>
#include <memory>
#include <sstream>

#include "commands.h"
#include "dsforge/core/error.h"
#include "dsforge/pipeline/doctor.h"
#include "dsforge/pipeline/model_tools.h"
#include "dsforge/pipeline/stages.h"
#include "dsforge/report/html_report.h"

namespace dsforge::cli {

void add_model_commands(CLI::App& app, Context& ctx) {
  CLI::App* m = app.add_subcommand("model", "inspect models: parameter/FLOP/KV-cache figures, logits export");
  m->require_subcommand(1);

  struct InfoArgs {
    std::string source;
    int64_t seq_len = 4096;
    bool json = false;
  };
  auto ia = std::make_shared<InfoArgs>();
  CLI::App* info = m->add_subcommand("info", "parameters, activated parameters, training FLOPs/token, KV cache per token");
  info->add_option("source", ia->source, "config.json, a model folder, or a preset (nano, micro, mini)")->required();
  info->add_option("--seq-len", ia->seq_len, "sequence length for the attention FLOPs")->capture_default_str();
  info->add_flag("--json", ia->json, "print JSON");
  info->callback([&ctx, ia]() {
    ctx.action = [ia]() {
      std::cout << pipeline::model_info_report(ia->source, ia->seq_len, ia->json);
      return 0;
    };
  });

  struct LogitsArgs {
    std::string checkpoint, tokens, out;
  };
  auto la = std::make_shared<LogitsArgs>();
  CLI::App* lg = m->add_subcommand("logits", "write the logits of a token sequence to a safetensors file");
  lg->add_option("--checkpoint", la->checkpoint, "model folder (config.json + model.safetensors)")->required()
      ->check(CLI::ExistingDirectory);
  lg->add_option("--tokens", la->tokens, "space-separated token ids, e.g. \"1 2 3\"")->required();
  lg->add_option("--out", la->out, "output .safetensors (tensor 'logits' [T, V]; 'mtp_logits' with MTP)")->required();
  lg->callback([&ctx, la]() {
    ctx.action = [la]() {
      std::vector<int64_t> ids;
      std::istringstream in(la->tokens);
      std::string w;
      while (in >> w) {
        try {
          size_t pos = 0;
          ids.push_back(std::stoll(w, &pos));
          if (pos != w.size()) throw std::invalid_argument(w);
        } catch (const std::exception&) {
          throw ConfigError(fmt("--tokens: '", w, "' is not an integer token id"));
        }
      }
      pipeline::export_logits(la->checkpoint, ids, la->out);
      std::cout << "wrote " << la->out << " (" << ids.size() << " positions)\n";
      return 0;
    };
  });
}

void add_report_command(CLI::App& app, Context& ctx) {
  struct ReportArgs {
    std::string run_dir, out;
  };
  auto ra = std::make_shared<ReportArgs>();
  CLI::App* r = app.add_subcommand("report", "write a self-contained HTML report of a run folder (charts, config, metrics, samples)");
  r->add_option("run_dir", ra->run_dir, "the run folder (run.out_dir)")->required()->check(CLI::ExistingDirectory);
  r->add_option("--out", ra->out, "output file (default RUN_DIR/report.html)");
  r->callback([&ctx, ra]() {
    ctx.action = [ra]() {
      const std::string written = report::write_run_report(ra->run_dir, ra->out);  // may throw: print after
      std::cout << "wrote " << written << "\n";
      return 0;
    };
  });
}

void add_doctor_command(CLI::App& app, Context& ctx) {
  auto json = std::make_shared<bool>(false);
  CLI::App* d = app.add_subcommand("doctor", "libtorch build, BLAS and its speed, CPUs and threads, and which fast paths are on");
  d->add_flag("--json", *json, "print JSON");
  d->callback([&ctx, json]() {
    ctx.action = [&ctx, json]() {
      RunConfig cfg;
      for (const auto& o : ctx.overrides) apply_override(cfg, o);
      validate(cfg);
      pipeline::configure_threads(cfg);
      std::cout << pipeline::doctor_report(*json);
      return 0;
    };
  });
}

}  // namespace dsforge::cli
