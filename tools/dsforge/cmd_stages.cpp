// dsforge pipeline | data prepare | tokenize | train | eval | generate
#include <fstream>
#include <iostream>
#include <memory>

#include "commands.h"
#include "dsforge/vision/multimodal.h"
#include "dsforge/core/error.h"
#include "dsforge/pipeline/stages.h"

namespace dsforge::cli {
namespace {

struct StageArgs {
  std::string config;
};

RunConfig resolve(const StageArgs& a, const Context& ctx) {
  RunConfig cfg;
  if (!a.config.empty()) return load_run_config(a.config, ctx.overrides);
  for (const auto& o : ctx.overrides) apply_override(cfg, o);
  validate(cfg);
  return cfg;
}

CLI::App* stage(CLI::App& parent, const std::string& name, const std::string& help, StageArgs& args) {
  CLI::App* c = parent.add_subcommand(name, help);
  c->add_option("-c,--config", args.config, "run config (TOML); --section.key=value overrides any key")
      ->check(CLI::ExistingFile);
  return c;
}

}  // namespace

void add_stage_commands(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<StageArgs>();

  stage(app, "pipeline", "run every stage: prepare, tokenizer, tokenize, train, eval, generate", *args)
      ->callback([&ctx, args]() {
        ctx.action = [&ctx, args]() { return pipeline::run_pipeline(resolve(*args, ctx)); };
      });

  CLI::App* data = app.add_subcommand("data", "corpus stages");
  data->require_subcommand(1);
  stage(*data, "prepare", "read, clean (NFKC), deduplicate and split the corpus; write statistics", *args)
      ->callback([&ctx, args]() {
        ctx.action = [&ctx, args]() {
          auto cfg = resolve(*args, ctx);
          pipeline::configure_threads(cfg);
          pipeline::stage_prepare(cfg);
          return 0;
        };
      });

  auto aug = std::make_shared<std::pair<std::string, std::string>>();
  CLI::App* augment = stage(*data, "augment",
                            "EDA (WordNet synonym replacement, random insertion, swap, deletion), counterfactual copies and "
                            "back-translation paraphrases (augment.* keys): the run's training split, or --input to --output; "
                            "each kind counted in the manifest", *args);
  augment->add_option("-i,--input", aug->first, "documents: *.jsonl records (data.jsonl_field), else one per line")->check(CLI::ExistingFile);
  augment->add_option("-o,--output", aug->second, "augmented copies: JSONL when the name ends in .jsonl, else one per line");
  augment->callback([&ctx, args, aug]() {
    ctx.action = [&ctx, args, aug]() {
      auto cfg = resolve(*args, ctx);
      if (aug->first.empty() != aug->second.empty()) throw ConfigError("data augment: give both --input and --output, or neither");
      if (!aug->first.empty()) pipeline::augment_file(cfg, aug->first, aug->second);
      else pipeline::stage_augment(cfg);
      return 0;
    };
  });

  struct StatsArgs {
    std::vector<std::string> inputs;
    bool json = false;
  };
  auto sa = std::make_shared<StatsArgs>();
  CLI::App* stats = stage(*data, "stats", "corpus quality report: of --input files, or of the run's prepared corpus", *args);
  stats->add_option("-i,--input", sa->inputs, "files, folders or globs (*.jsonl records; other files cut per data.txt_documents)");
  stats->add_flag("--json", sa->json, "print JSON instead of a table");
  stats->callback([&ctx, args, sa]() {
    ctx.action = [&ctx, args, sa]() {
      std::cout << pipeline::data_stats_report(resolve(*args, ctx), sa->inputs, sa->json);
      return 0;
    };
  });

  stage(app, "tokenize", "encode the prepared corpus into token shards", *args)->callback([&ctx, args]() {
    ctx.action = [&ctx, args]() {
      auto cfg = resolve(*args, ctx);
      pipeline::configure_threads(cfg);
      pipeline::stage_tokenize(cfg);
      return 0;
    };
  });

  stage(app, "train", "train the model on the token shards (resumes from the latest checkpoint)", *args)
      ->callback([&ctx, args]() {
        ctx.action = [&ctx, args]() {
          auto cfg = resolve(*args, ctx);
          pipeline::configure_threads(cfg);
          return pipeline::stage_train(cfg);
        };
      });

  struct EvalArgs {
    std::string model, text;
    int64_t seq_len = 0, stride = 0, batch = 8;
    bool json = false;
  };
  auto ea = std::make_shared<EvalArgs>();
  CLI::App* ev = stage(app, "eval",
                       "validation loss and perplexity of the run's model beside the unigram baseline; or, with --text, "
                       "of any model folder on any text file", *args);
  ev->add_option("-m,--model", ea->model, "model folder (default <run>/model)");
  ev->add_option("--text", ea->text, "score this UTF-8 file (read as one stream) instead of the run's validation split")
      ->check(CLI::ExistingFile);
  ev->add_option("--seq-len", ea->seq_len, "window length (default: the seq_len the model was trained with)");
  ev->add_option("--stride", ea->stride, "windows start every N tokens; N < seq-len gives each target more context "
                                         "(default: seq-len, non-overlapping)");
  ev->add_option("--batch", ea->batch, "windows per forward pass")->capture_default_str();
  ev->add_flag("--json", ea->json, "print JSON");
  ev->callback([&ctx, args, ea]() {
    ctx.action = [&ctx, args, ea]() {
      auto cfg = resolve(*args, ctx);
      pipeline::configure_threads(cfg);
      if (ea->text.empty()) {
        if (!ea->model.empty() || ea->seq_len || ea->stride || ea->json)
          throw ConfigError("eval: --model, --seq-len, --stride and --json go with --text FILE (without it, eval scores "
                            "the run folder's validation split)");
        pipeline::stage_eval(cfg);
        return 0;
      }
      if (ea->model.empty() && args->config.empty())
        throw ConfigError("eval --text: give --model DIR (a model folder), or --config RUN.toml for the run's model");
      const std::string model = ea->model.empty() ? cfg.run.out_dir + "/model" : ea->model;
      if (ea->batch < 1) throw ConfigError("--batch: must be at least 1");
      std::cout << pipeline::eval_text(model, ea->text, ea->seq_len, ea->stride, ea->batch, ea->json);
      return 0;
    };
  });

  struct GenArgs {
    std::string model, prompt_file, image, audio;
    std::vector<std::string> prompts, stop;
  };
  auto gen = std::make_shared<GenArgs>();
  CLI::App* g = stage(app, "generate", "sample text from a trained model (all prompts decode as one batch)", *args);
  g->add_option("-m,--model", gen->model, "model folder (config.json, model.safetensors, tokenizer.json); default <run>/model");
  g->add_option("-p,--prompt", gen->prompts, "prompt (repeatable); default: generate.prompts of the config");
  g->add_option("--prompt-file", gen->prompt_file, "file with one prompt per line")->check(CLI::ExistingFile);
  g->add_option("--stop", gen->stop, "extra stop string, one token (repeatable)");
  g->add_option("--image", gen->image, "an image to ask about (a `dsforge multimodal train` model; greedy answers)")->check(CLI::ExistingFile);
  g->add_option("--audio", gen->audio, "an audio clip to ask about (a multimodal model with audio; with --image for both)")->check(CLI::ExistingFile);
  g->footer("Sampling: --generate.temperature=0.8 --generate.top_k=40 --generate.top_p=0.9 "
            "--generate.repetition_penalty=1.2 --generate.max_new_tokens=64 --run.seed=7 (temperature 0 = greedy)");
  g->callback([&ctx, args, gen]() {
    ctx.action = [&ctx, args, gen]() {
      auto cfg = resolve(*args, ctx);
      std::vector<std::string> prompts = gen->prompts;
      if (!gen->prompt_file.empty()) {
        std::ifstream in(gen->prompt_file);
        for (std::string line; std::getline(in, line);)
          if (!line.empty()) prompts.push_back(line);
        if (prompts.empty()) throw ConfigError(fmt(gen->prompt_file, ": no prompts (one per line)"));
      }
      if (!prompts.empty()) cfg.generate.prompts = prompts;
      for (const auto& s : gen->stop) cfg.generate.stop.push_back(s);
      pipeline::configure_threads(cfg);
      if (!gen->image.empty() || !gen->audio.empty()) {
        const std::string flag = gen->image.empty() ? "--audio" : "--image";
        if (gen->model.empty()) throw ConfigError(fmt("generate ", flag, ": give --model DIR (a multimodal model folder)"));
        if (prompts.empty()) throw ConfigError(fmt("generate ", flag, ": give --prompt, e.g. \"Q: what number is shown? A:\""));
        for (const auto& p : prompts)
          std::cout << p << " " << vision::answer_about(gen->model, gen->image, gen->audio, p, cfg.generate.max_new_tokens) << "\n";
        return 0;
      }
      pipeline::stage_generate(cfg, gen->model);
      return 0;
    };
  });
}

}  // namespace dsforge::cli
