#include "dsforge/pipeline/continue_stage.h"

#include <ATen/ATen.h>

#include <filesystem>

#include "dsforge/continual/continual_task.h"
#include "dsforge/continual/continue.h"
#include "dsforge/continual/forgetting.h"
#include "dsforge/continual/state.h"
#include "dsforge/continual/vocab_growth.h"
#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/core/text.h"
#include "dsforge/data/shards.h"
#include "dsforge/data/splits.h"
#include "dsforge/model/io.h"
#include "dsforge/pipeline/run_folder.h"
#include "dsforge/pipeline/stages.h"
#include "dsforge/report/html_report.h"
#include "dsforge/tokenizer/bpe.h"
#include "dsforge/tokenizer/encode_corpus.h"

namespace dsforge::pipeline {
namespace {

// The earlier domain's token shard: a run folder's training shard, a .bin shard, or a text file encoded
// with the model's tokenizer into <run>/old/old_000.bin. "" when there is none.
std::string old_shard(const RunConfig& cfg, const std::string& old_data, const std::string& tokenizer_json) {
  if (old_data.empty()) return "";
  if (std::filesystem::is_directory(old_data)) {
    const std::string manifest = path_join(path_join(old_data, "shards"), "manifest.json");
    if (!file_exists(manifest))
      throw ConfigError(fmt("--old-data ", old_data, ": a folder must be a run folder with shards/manifest.json"));
    return path_join(path_join(old_data, "shards"), data::read_manifest(manifest).train.files.at(0));
  }
  if (!file_exists(old_data)) throw ConfigError(fmt("--old-data ", old_data, ": not found"));
  if (ends_with(old_data, ".bin")) return old_data;
  const std::string shard = path_join(path_join(cfg.run.out_dir, "old"), "old_000.bin");
  make_dirs(path_join(cfg.run.out_dir, "old"));
  const tok::BpeTokenizer tok = tok::BpeTokenizer::load(tokenizer_json);
  {
    data::ShardWriter writer(shard, tok.vocab_size());
    tok::encode_text_stream(old_data, tok, writer);
    writer.finish(1);
  }
  log_info("continue: encoded ", old_data, " -> ", shard, " (", data::TokenShard(shard).size(), " tokens)");
  return shard;
}

double bits_per_byte(const std::string& model_dir, const std::string& text, int64_t seq_len) {
  return nlohmann::json::parse(eval_text(model_dir, text, seq_len, 0, 16, true)).at("bits_per_byte").get<double>();
}

// The first whole lines of `src` up to `max_bytes` -> `dst` (bounded evaluation cost).
void cut_text(const std::string& src, const std::string& dst, int64_t max_bytes) {
  const std::string text = read_file(src);
  size_t end = text.size();
  if (max_bytes > 0 && static_cast<int64_t>(text.size()) > max_bytes) {
    end = text.rfind('\n', static_cast<size_t>(max_bytes));
    end = end == std::string::npos ? static_cast<size_t>(max_bytes) : end + 1;
  }
  write_file_atomic(dst, std::string_view(text).substr(0, end));
}

}  // namespace

continual::ContinueOutcome continue_in_folder(const RunConfig& cfg, const std::string& from, const std::string& old_data,
                                              int64_t extend, const nlohmann::json& domain) {
  check_model_dir(from);
  continual::parse_strategy(cfg.continual.strategy);
  claim_run_folder(cfg, "continue");
  stage_prepare(cfg);
  std::string base = from;
  const std::string tpath = path_join(cfg.run.out_dir, "tokenizer.json");
  if (extend > 0) {
    // The grown tokenizer and the model with its new rows: <run>/grown/, what this stage continues.
    base = path_join(cfg.run.out_dir, "grown");
    continual::grow_model_folder(from, base, data::split_path(cfg.run.out_dir, "train"), extend,
                                 static_cast<uint64_t>(cfg.run.seed));
  }
  const std::string tok_text = read_file(path_join(base, "tokenizer.json"));
  if (!file_exists(tpath) || read_file(tpath) != tok_text) write_file_atomic(tpath, tok_text);
  stage_tokenize(cfg);
  const std::string manifest_path = path_join(path_join(cfg.run.out_dir, "shards"), "manifest.json");
  const data::Manifest manifest = data::read_manifest(manifest_path);

  continual::ContinueSpec spec;
  spec.cfg = cfg;
  spec.from = base;
  spec.train_shard = path_join(path_join(cfg.run.out_dir, "shards"), manifest.train.files.at(0));
  if (!manifest.val.files.empty() && manifest.val.tokens > cfg.train.seq_len + 1) spec.val_manifest = manifest_path;
  if (!continual::has_state(base)) spec.old_shard = old_shard(cfg, old_data, path_join(base, "tokenizer.json"));
  spec.out_model = path_join(cfg.run.out_dir, "model");
  spec.domain = domain;
  const continual::ContinueOutcome r = continual::continue_training(spec);
  if (r.interrupted) {
    log_info("continue: interrupted at step ", r.final_step, "; run the same command again to resume");
    return r;
  }
  log_info("continue: ", r.strategy, " trained steps ", r.start_step, "..", r.final_step, " (last mean loss ", r.last_loss,
           "), Fisher estimation ", r.fisher_seconds, " s; model in ", spec.out_model);
  return r;
}

void check_continue_start(const std::string& from, const std::string& strategy, const std::string& old_data) {
  check_model_dir(from);
  continual::check_earlier_domain(strategy, from, !old_data.empty());
}

int stage_continue(const ContinueOptions& opts) {
  RunConfig cfg = load_run_config(opts.config, opts.overrides);
  if (!opts.strategy.empty()) cfg.continual.strategy = opts.strategy;
  if (opts.extend_tokenizer < 0) throw ConfigError(fmt("--extend-tokenizer ", opts.extend_tokenizer, ": must be >= 0"));
  configure_threads(cfg);
  return continue_in_folder(cfg, opts.from, opts.old_data, opts.extend_tokenizer,
                            {{"data", cfg.data.paths}, {"config", opts.config}})
                 .interrupted
             ? kInterrupted
             : kOk;
}

SequenceDomain parse_sequence_domain(const std::string& arg) {
  const size_t eq = arg.find('='), colon = arg.rfind(':');
  if (eq == std::string::npos || eq == 0 || colon == std::string::npos || colon < eq)
    throw ConfigError(fmt("--domain ", arg, ": expected NAME=TRAIN.txt:EVAL.txt"));
  SequenceDomain d{arg.substr(0, eq), arg.substr(eq + 1, colon - eq - 1), arg.substr(colon + 1)};
  for (const auto* p : {&d.train, &d.eval})
    if (!file_exists(*p)) throw ConfigError(fmt("--domain ", arg, ": ", *p, " not found"));
  return d;
}

std::string run_sequence(const SequenceOptions& opts) {
  const RunConfig base_cfg = load_run_config(opts.config, opts.overrides);
  configure_threads(base_cfg);
  check_model_dir(opts.from);
  const size_t t = opts.domains.size();
  if (t < 3) throw ConfigError(fmt("--sequence: ", t, " domains; give at least 3 (--domain, the base model's first)"));
  if (opts.strategies.empty()) throw ConfigError("--sequence: no --strategies");
  for (const auto& s : opts.strategies) continual::parse_strategy(s);
  const std::string out = opts.out.empty() ? path_join(base_cfg.run.out_dir, "sequence") : opts.out;
  make_dirs(path_join(out, "eval"));
  const int64_t seq_len = base_cfg.train.seq_len;

  std::vector<std::string> names, eval_paths;
  for (const auto& d : opts.domains) {
    names.push_back(d.name);
    eval_paths.push_back(path_join(path_join(out, "eval"), d.name + ".txt"));
    cut_text(d.eval, eval_paths.back(), opts.eval_bytes);
  }
  auto row = [&](const std::string& model_dir) {
    std::vector<double> r;
    for (const auto& e : eval_paths) r.push_back(bits_per_byte(model_dir, e, seq_len));
    return r;
  };

  // b: a randomly initialised model of the base's architecture (run.seed, train.init_std).
  const std::string random_dir = path_join(out, "random_init");
  if (!file_exists(path_join(random_dir, "tokenizer.json"))) {
    model::CausalLm m = model::build_model(model::load_pretrained(opts.from)->config());
    m->init_weights(base_cfg.train.init_std, static_cast<uint64_t>(base_cfg.run.seed));
    model::save_pretrained(random_dir, *m);
    model::save_training_info(random_dir, {seq_len, 0});
    write_file_atomic(path_join(random_dir, "tokenizer.json"), read_file(path_join(opts.from, "tokenizer.json")));
  }
  const std::vector<double> b = row(random_dir);
  const std::vector<double> row0 = row(opts.from);

  std::vector<continual::StrategyRun> runs;
  for (const auto& strategy : opts.strategies) {
    continual::StrategyRun run;
    run.strategy = continual::parse_strategy(strategy).name;
    run.r.push_back(row0);
    std::string prev = opts.from;
    for (size_t i = 1; i < t; ++i) {
      RunConfig cfg = base_cfg;
      cfg.run.out_dir = path_join(path_join(out, run.strategy), fmt(i, "_", names[i]));
      cfg.data.source = "files";
      cfg.data.paths = {opts.domains[i].train};
      cfg.data.val_paths.clear();
      cfg.data.test_paths.clear();
      cfg.continual.strategy = run.strategy;
      const std::string model_dir = path_join(cfg.run.out_dir, "model");
      if (continual::has_state(model_dir)) {
        log_info("sequence: ", run.strategy, " stage ", i, " (", names[i], ") done before: ", model_dir);
      } else {
        log_info("sequence: ", run.strategy, " stage ", i, " of ", t - 1, ": ", names[i]);
        if (continue_in_folder(cfg, prev, i == 1 ? opts.domains[0].train : "", 0,
                               {{"name", names[i]}, {"data", opts.domains[i].train}})
                .interrupted)
          throw Error(fmt("sequence: interrupted in ", cfg.run.out_dir, "; run the same command again to resume"));
      }
      prev = model_dir;
      run.r.push_back(row(prev));
    }
    run.summary = continual::summarize_forgetting(run.r, b);
    runs.push_back(run);
  }

  const std::string table = continual::forgetting_table(names, b, runs);
  write_file_atomic(path_join(out, "forgetting.json"), continual::forgetting_json(names, b, runs).dump(2) + "\n");
  write_file_atomic(path_join(out, "forgetting.md"), table);
  std::string html = "<!doctype html><html><head><meta charset=\"utf-8\"><title>dsforge continual learning</title>"
                     "<style>body{font-family:sans-serif;margin:2em}pre{background:#f6f6f6;padding:1em}"
                     ".title{font-weight:bold}.tick,.axis{font-size:11px}</style></head><body>"
                     "<h1>Forgetting across domains</h1><pre>" + table + "</pre>";
  std::string columns;
  for (size_t j = 0; j < names.size(); ++j) columns += (j ? ", " : "") + names[j];
  for (const auto& run : runs) {
    double mean = 0;  // the colour scale's centre: the matrix's mean
    for (const auto& r : run.r)
      for (double v : r) mean += v / static_cast<double>(t * t);
    html += report::svg_heatmap(fmt("R (bits per byte) with ", run.strategy, ": row = after learning that domain"), run.r,
                                names, "on domain: " + columns, mean);
  }
  html += "</body></html>\n";
  write_file_atomic(path_join(out, "forgetting.html"), html);
  log_info("sequence: wrote ", path_join(out, "forgetting.json"), ", forgetting.md, forgetting.html");
  return table;
}

}  // namespace dsforge::pipeline
