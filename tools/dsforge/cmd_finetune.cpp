// dsforge finetune (classification, regression, generation) | data back-translate
#include <iostream>
#include <memory>

#include "commands.h"
#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/tasks/back_translate.h"
#include "dsforge/tasks/classify.h"
#include "dsforge/tasks/regress.h"
#include "dsforge/tasks/seq2seq.h"

namespace dsforge::cli {

namespace {

// dsforge data back-translate: synthetic parallel pairs from monolingual target-language text.
void add_back_translate(CLI::App& data, Context& ctx) {
  struct Args {
    std::string model, input, out;
    tasks::BackTranslateOptions opt;
    std::string mode = "sample";
  };
  auto a = std::make_shared<Args>();
  a->opt.decode.temperature = 1.0;
  CLI::App* c = data.add_subcommand(
      "back-translate", "translate monolingual target-language text into the source language with a reverse model "
                        "(finetune --task parallel --out DIR: DIR/model), filter, and write synthetic pairs");
  c->add_option("--model", a->model, "the reverse (target -> source) model folder")->required()->check(CLI::ExistingDirectory);
  c->add_option("-i,--input", a->input, "target-language text, one sentence per line")->required()->check(CLI::ExistingFile);
  c->add_option("-o,--out", a->out, "folder for source.txt, target.txt, dropped.tsv and back_translate.json")->required();
  c->add_option("--decode", a->mode, "sample (Edunov et al. 2018), greedy or beam")
      ->check(CLI::IsMember({"sample", "greedy", "beam"}))
      ->capture_default_str();
  c->add_option("--beam", a->opt.decode.beam, "beam width (--decode beam)")->check(CLI::PositiveNumber);
  c->add_option("--temperature", a->opt.decode.temperature, "sampling temperature")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--top-p", a->opt.decode.top_p, "sampling: nucleus")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  c->add_option("--top-k", a->opt.decode.top_k, "sampling: 0 = no limit")->capture_default_str();
  c->add_option("--batch", a->opt.decode.batch, "sentences decoded together")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--max-source", a->opt.decode.max_source, "tokens of each input line kept")->capture_default_str();
  c->add_option("--max-target", a->opt.decode.max_target, "tokens generated at most")->capture_default_str();
  c->add_option("--seed", a->opt.decode.seed, "sampling seed")->capture_default_str();
  c->add_option("--max-lines", a->opt.max_lines, "input lines translated (0 = all)")->capture_default_str();
  c->add_option("--max-ratio", a->opt.max_ratio, "drop pairs whose word counts differ by more than this factor (0 = keep all)")
      ->capture_default_str();
  c->add_option("--round-trip-model", a->opt.round_trip_model,
                "the forward (source -> target) model: synthetic sources are translated back (greedy) and scored by chrF")
      ->check(CLI::ExistingDirectory);
  c->add_option("--tag", a->opt.tag, "tagged back-translation: prefix every synthetic source with this text and a space");
  c->add_option("--min-chrf", a->opt.min_chrf, "drop pairs whose round-trip sentence chrF is below this (0..100)")->capture_default_str();
  c->callback([&ctx, a, c]() {
    ctx.action = [&ctx, a, c]() {
      use_threads(ctx);
      if (a->mode != "beam" && c->get_option("--beam")->count() > 0)
        throw ConfigError("data back-translate: --beam goes with --decode beam");
      if (a->mode != "sample")
        for (const char* flag : {"--temperature", "--top-p", "--top-k"})
          if (c->get_option(flag)->count() > 0) throw ConfigError(fmt("data back-translate: ", flag, " goes with --decode sample"));
      if (a->mode == "greedy") a->opt.decode.temperature = 0;
      if (a->mode == "beam") {
        a->opt.decode.temperature = 0;
        if (c->get_option("--beam")->count() == 0) a->opt.decode.beam = 4;
      }
      a->opt.round_trip.max_source = a->opt.decode.max_target;
      a->opt.round_trip.batch = a->opt.decode.batch;
      const tasks::BackTranslateStats s = tasks::back_translate(a->model, a->input, a->out, a->opt);
      std::cout << fmt("back-translate: ", s.lines, " lines -> ", s.kept, " pairs kept (dropped: ", s.empty_output, " empty, ",
                       s.dropped_ratio, " length ratio, ", s.dropped_chrf, " round-trip chrF)");
      if (!a->opt.round_trip_model.empty()) std::cout << fmt("; mean round-trip chrF ", s.mean_round_trip_chrf);
      std::cout << fmt(" in ", s.seconds, " s -> ", a->out, "/source.txt, target.txt\n");
      return 0;
    };
  });
}

}  // namespace

void add_finetune_command(CLI::App& app, Context& ctx) {
  struct Args {
    std::string model, task = "wordnet-lexname", train, test, out, wordnet_dir = "/usr/share/wordnet";
    std::vector<std::string> train_source, train_target;
    std::string test_source, test_target, test_references;
    bool ref_id_column = false;
    int64_t max_train = 4000, max_test = 1000;
    bool no_stem = false, json = false;
    tasks::FinetuneOptions opt;
    tasks::Seq2SeqOptions gen;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = app.add_subcommand(
      "finetune", "fine-tune a pretrained model: a classification head (accuracy/F1 vs the majority class) or source -> "
                  "target generation (BLEU/chrF/ROUGE, greedy and beam search, vs copy-source)");
  c->add_option("--model", a->model, "model folder (config.json, model.safetensors, tokenizer.json), e.g. runs/quickstart/model")
      ->required()
      ->check(CLI::ExistingDirectory);
  c->add_option("--task", a->task,
                "classification: wordnet-lexname (gloss -> lexicographer file), tsv (--train/--test files); generation: "
                "wordnet-define (word -> gloss), parallel (--train-source/--train-target/--test-source/--test-target)")
      ->check(CLI::IsMember({"wordnet-lexname", "tsv", "wordnet-define", "parallel"}))
      ->capture_default_str();
  c->add_option("--train", a->train, "tsv task: training file, text<TAB>label per line; wordnet-lexname: replaces the built-in training split");
  c->add_option("--test", a->test, "tsv task: test file");
  c->add_option("--out", a->out, "folder for finetune.json and classifier.safetensors");
  c->add_option("--wordnet-dir", a->wordnet_dir, "WordNet dict folder")->capture_default_str();
  c->add_option("--max-train", a->max_train, "training examples (0 = all)")->capture_default_str();
  c->add_option("--max-test", a->max_test, "test examples (0 = all)")->capture_default_str();
  c->add_option("--epochs", a->opt.epochs, "epochs")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--batch", a->opt.batch, "batch size")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--lr", a->opt.lr, "peak learning rate")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--max-len", a->opt.max_len, "tokens per text")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--seed", a->opt.seed, "seed")->capture_default_str();
  c->add_option("--train-source", a->train_source,
                "parallel task: training sources, one per line (repeat with --train-target to add files, e.g. "
                "back-translated pairs)");
  c->add_option("--train-target", a->train_target, "parallel task: training targets, line-aligned with their --train-source");
  c->add_option("--test-source", a->test_source, "parallel task: test sources");
  c->add_option("--test-target", a->test_target, "parallel task: test references");
  c->add_option("--test-references", a->test_references,
                "generation: several references per test pair, tab-separated on one line (scores use all of them)");
  c->add_flag("--references-id-column", a->ref_id_column, "the first field of each --test-references line is an id");
  c->add_option("--beam", a->gen.beam, "generation: beam width (greedy is always decoded too; 1 = greedy only)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  c->add_option("--max-source", a->gen.max_source, "generation: source tokens kept")->capture_default_str();
  c->add_option("--max-target", a->gen.max_target, "generation: target tokens trained and generated")->capture_default_str();
  c->add_option("--length-penalty", a->gen.length_penalty, "generation: beam score = log p / length^this")->capture_default_str();
  c->add_flag("--no-stem", a->no_stem, "generation: ROUGE without the (English) Porter stemmer, for other target languages");
  c->add_flag("--json", a->json, "print the full JSON result after the table (it is always written to --out)");
  c->footer("The training loop's settings come from the run config: --train.beta2=0.98 --train.precision=bf16 "
            "--train.grad_clip=0.5 --train.schedule=cosine ... (fine-tuning defaults: betas 0.9/0.999, clip 1, "
            "5% warmup then linear decay to 0)");
  c->callback([&ctx, a, c]() {
    ctx.action = [&ctx, a, c]() {
      a->opt.overrides = ctx.overrides;
      a->gen.overrides = ctx.overrides;
      // Flags of another task are refused, not ignored: a user who passes them expects them to act.
      const std::vector<std::string> seq2seq_only = {"--train-source", "--train-target", "--test-source", "--test-target",
                                                     "--test-references", "--references-id-column", "--beam",
                                                     "--max-source", "--max-target", "--length-penalty", "--no-stem"};
      std::vector<std::string> refused;
      if (a->task == "wordnet-lexname") refused = {"--test"};
      if (a->task == "tsv") refused = {"--wordnet-dir"};
      if (a->task == "wordnet-lexname" || a->task == "tsv") refused.insert(refused.end(), seq2seq_only.begin(), seq2seq_only.end());
      if (a->task == "wordnet-define") refused = {"--train", "--test", "--max-len", "--train-source", "--train-target",
                                                  "--test-source", "--test-target"};
      if (a->task == "parallel") refused = {"--train", "--test", "--max-len", "--wordnet-dir"};
      for (const auto& flag : refused)
        if (c->get_option(flag)->count() > 0)
          throw ConfigError(fmt("finetune --task ", a->task, ": ", flag, " belongs to another task (see dsforge finetune --help)"));
      if (a->task == "wordnet-define" || a->task == "parallel") {
        tasks::Seq2SeqData data;
        if (a->task == "wordnet-define") {
          data = tasks::wordnet_define_task(a->wordnet_dir, a->max_train, a->max_test, a->opt.seed);
        } else {
          if (a->train_source.empty() || a->train_target.empty() || a->test_source.empty() || a->test_target.empty())
            throw ConfigError("finetune --task parallel: needs --train-source, --train-target, --test-source and --test-target");
          if (a->train_source.size() != a->train_target.size())
            throw ConfigError(fmt("finetune --task parallel: ", a->train_source.size(), " --train-source files but ",
                                  a->train_target.size(), " --train-target files; give them in pairs"));
          data.name = "parallel:" + a->train_source[0];
          // --max-train limits the first pair of files (the real parallel data); added files come whole.
          for (size_t f = 0; f < a->train_source.size(); ++f) {
            auto pairs = tasks::read_parallel(a->train_source[f], a->train_target[f], f == 0 ? a->max_train : 0);
            if (f > 0) data.name += "+" + a->train_source[f];
            data.train.insert(data.train.end(), pairs.begin(), pairs.end());
          }
          data.test = tasks::read_parallel(a->test_source, a->test_target, a->max_test);
        }
        data.english_target = !a->no_stem;
        if (!a->test_references.empty()) {
          data.test_references = tasks::read_references(a->test_references, a->ref_id_column, a->max_test);
          if (data.test_references.size() != data.test.size())
            throw DataError(fmt(a->test_references, ": ", data.test_references.size(), " lines for ", data.test.size(),
                                " test pairs"));
        }
        tasks::Seq2SeqOptions gen = a->gen;
        gen.epochs = a->opt.epochs;
        gen.batch = a->opt.batch;
        gen.lr = a->opt.lr;
        gen.seed = a->opt.seed;
        const tasks::Seq2SeqResult r = tasks::finetune_seq2seq(a->model, data, gen, a->out);
        std::cout << tasks::seq2seq_table(r);
        if (a->json) std::cout << tasks::seq2seq_json(data, r) << "\n";
        return 0;
      }
      tasks::ClassifyData data;
      if (a->task == "wordnet-lexname") {
        data = tasks::wordnet_lexname_task(a->wordnet_dir, a->max_train, a->max_test, a->opt.seed);
        if (!a->train.empty()) {  // e.g. the re-weighted file of `dsforge analyze --mine-hard`
          data.name += " (train: " + a->train + ")";
          data.train = tasks::read_tsv_examples(a->train);
        }
      } else {
        if (a->train.empty() || a->test.empty()) throw ConfigError("finetune --task tsv: needs --train FILE and --test FILE");
        data.name = "tsv:" + a->train;
        data.train = tasks::read_tsv_examples(a->train, a->max_train);
        data.test = tasks::read_tsv_examples(a->test, a->max_test);
      }
      const tasks::FinetuneResult r = tasks::finetune_classifier(a->model, data, a->opt, a->out);
      std::cout << tasks::finetune_table(r);
      if (a->json) std::cout << tasks::finetune_json(data, r) << "\n";
      return 0;
    };
  });
  add_back_translate(*app.get_subcommand("data"), ctx);  // registered by add_stage_commands
}

void add_regress_command(CLI::App& app, Context& ctx) {
  struct Args {
    std::string features, target, out;
    bool json = false;
    tasks::RegressOptions opt;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = app.add_subcommand("regress", "tabular regression with an MLP; MSE/MAE/RMSE/R^2 beside least squares and the mean");
  c->add_option("--features", a->features, "rows of numbers (space, tab or comma separated)")->required()->check(CLI::ExistingFile);
  c->add_option("--target", a->target, "one target per line (default: the last column of --features)")->check(CLI::ExistingFile);
  c->add_option("--hidden", a->opt.hidden, "width of the two hidden layers")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--epochs", a->opt.epochs, "epochs")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--batch", a->opt.batch, "batch size")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--lr", a->opt.lr, "peak learning rate (cosine to 0)")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--weight-decay", a->opt.weight_decay, "AdamW weight decay")->capture_default_str();
  c->add_option("--test-fraction", a->opt.test_fraction, "share of rows held out")->capture_default_str()->check(CLI::Range(0.05, 0.5));
  c->add_option("--seed", a->opt.seed, "seed (split and initialisation)")->capture_default_str();
  c->add_option("--out", a->out, "folder for regress.json");
  c->add_flag("--json", a->json, "print the JSON result after the table");
  c->callback([&ctx, a]() {
    ctx.action = [&ctx, a]() {
      a->opt.overrides = ctx.overrides;
      const tasks::RegressionData data = tasks::read_regression_files(a->features, a->target);
      for (const auto& h : data.header_lines) std::cerr << "regress: " << h << ": header row skipped\n";
      const tasks::RegressResult r = tasks::train_regressor(data, a->opt);
      const std::string j = tasks::regress_json(r);
      if (!a->out.empty()) {
        make_dirs(a->out);
        write_file_atomic(path_join(a->out, "regress.json"), j + "\n");
      }
      std::cout << tasks::regress_table(r);
      if (a->json) std::cout << j << "\n";
      return 0;
    };
  });
}

}  // namespace dsforge::cli
