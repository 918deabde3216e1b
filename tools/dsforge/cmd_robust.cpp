// `dsforge robust attack|train`: adversarial attacks on saved classifiers, and adversarial training as a
// before/after experiment.
#include <cstdio>
#include <iostream>

#include "commands.h"
#include "dsforge/core/error.h"
#include "dsforge/robust/attacks.h"
#include "dsforge/robust/defend.h"
#include "dsforge/tasks/classify.h"

namespace dsforge::cli {
namespace {

// The attack flags both subcommands share.
void add_attack_options(CLI::App* c, train::AttackOptions& a, bool& fixed_start) {
  c->add_option("--norm", a.norm, "linf or l2")->check(CLI::IsMember({"linf", "l2"}))->capture_default_str();
  c->add_option("--eps", a.eps, "perturbation budget (pixels in [0, 1]; embedding units for text)")->capture_default_str();
  c->add_option("--steps", a.steps, "PGD steps")->capture_default_str();
  c->add_option("--alpha", a.alpha, "PGD step size (0 = 2.5 eps / steps)")->capture_default_str();
  c->add_flag("--no-random-start", fixed_start, "PGD starts at the clean input");
  c->add_option("--attack-seed", a.seed, "seed of the random start")->capture_default_str();
}

void add_attack(CLI::App* robust, Context& ctx) {
  struct Args {
    std::string model, data, split = "val", out, wordnet_dir = "/usr/share/wordnet";
    std::vector<std::string> attacks{"pgd"};
    train::AttackOptions a;
    robust::SynonymAttackOptions s;
    int64_t examples = 0;
    bool fixed_start = false, any_pos = false, json = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = robust->add_subcommand("attack", "attack a trained image or text classifier; clean and robust accuracy, success rate, "
                                                 "perturbation and queries");
  c->add_option("--model", a->model, "an image model folder (image train's <out>/model) or a text classifier folder (finetune --out)")
      ->required()
      ->check(CLI::ExistingDirectory);
  c->add_option("--data", a->data, "images: a prepared image folder; text: a text<TAB>label file")->required()->check(CLI::ExistingPath);
  c->add_option("--split", a->split, "images: the split attacked")->check(CLI::IsMember({"train", "val", "test"}))->capture_default_str();
  c->add_option("--attack", a->attacks, "fgsm, pgd (images: pixels; text: token embeddings) or synonym (text), one or more")
      ->capture_default_str();
  add_attack_options(c, a->a, a->fixed_start);
  c->add_option("--examples", a->examples, "examples attacked, from the start (0 = all)")->capture_default_str();
  c->add_option("--budget", a->s.budget, "synonym: share of a text's words that may be substituted")->capture_default_str();
  c->add_option("--candidates", a->s.max_candidates, "synonym: synonyms tried per word")->capture_default_str();
  c->add_flag("--any-pos", a->any_pos, "synonym: allow synonyms of any part of speech");
  c->add_option("--wordnet-dir", a->wordnet_dir, "WordNet dict folder")->capture_default_str();
  c->add_option("--out", a->out, "folder for robust.json and robust.html");
  c->add_flag("--json", a->json, "print robust.json's content");
  c->callback([&ctx, a]() {
    ctx.action = [&ctx, a]() {
      use_threads(ctx);
      a->a.random_start = !a->fixed_start;
      a->s.keep_pos = !a->any_pos;
      const auto rows = robust::attack_saved_model(a->model, a->data, a->split, a->attacks, a->a, a->s, a->wordnet_dir, a->examples);
      std::fputs(robust::attack_table(rows).c_str(), stdout);
      if (!a->out.empty()) {
        robust::write_robust_outputs(a->out, "Adversarial attacks on " + a->model, rows, {{"model", a->model}, {"data", a->data}});
        std::printf("wrote %s/robust.json, robust.html\n", a->out.c_str());
      }
      if (a->json)
        for (const auto& [name, r] : rows) std::cout << robust::attack_json(r).dump(2) << "\n";
      return 0;
    };
  });
}

struct TrainArgs {
  std::string data, model, train_file, test_file, out, baseline, augment = "none";
  std::string attack = "pgd";
  robust::RobustImageOptions image;
  robust::RobustTextOptions text;
  train::AttackOptions a;
  int64_t epochs = 0, batch = 0, eval_steps = 0, max_train = 0, max_test = 0, examples = -1;
  double lr = 0, eval_eps = -1;
  uint64_t seed = 0;
  bool fixed_start = false, no_baseline = false;
};

// The flags image and text training share, into their options (Options: RobustImageOptions or
// RobustTextOptions; Training: its ImageTrainOptions or FinetuneOptions).
template <typename Options, typename Training>
void apply_common(const TrainArgs& a, const Context& ctx, Options& o, Training& t) {
  if (a.examples >= 0) o.examples = a.examples;
  if (a.epochs > 0) t.epochs = a.epochs;
  if (a.batch > 0) t.batch = a.batch;
  if (a.lr > 0) t.lr = a.lr;
  t.seed = a.seed;
  t.overrides = ctx.overrides;
  o.baseline = a.baseline;
  o.skip_baseline = a.no_baseline;
}

void add_train(CLI::App* robust, Context& ctx) {
  auto a = std::make_shared<TrainArgs>();
  CLI::App* c = robust->add_subcommand(
      "train", "adversarial training, before and after: images (--data) with PGD/FGSM; text classifiers (--model --train --test) with "
               "embedding PGD, FreeLB or synonym augmentation");
  c->add_option("--data", a->data, "images: a prepared image folder")->check(CLI::ExistingDirectory);
  c->add_option("--model", a->model, "text: the language model to fine-tune")->check(CLI::ExistingDirectory);
  c->add_option("--train", a->train_file, "text: training file, text<TAB>label")->check(CLI::ExistingFile);
  c->add_option("--test", a->test_file, "text: test file, attacked after training")->check(CLI::ExistingFile);
  c->add_option("--out", a->out, "folder: baseline/, adversarial/ or defended/, robust.json, robust.html")->required();
  c->add_option("--attack", a->attack, "images: the training attack, fgsm or pgd")->check(CLI::IsMember({"fgsm", "pgd"}))->capture_default_str();
  add_attack_options(c, a->a, a->fixed_start);
  c->add_option("--eval-steps", a->eval_steps, "steps of the evaluation PGD (0 = the training attack's)");
  c->add_option("--eval-eps", a->eval_eps, "budget of the evaluation attack (default: the training one)");
  c->add_option("--adversarial-weight", a->image.train.adversarial_weight, "images: weight of the attacked batch's loss (1 = Madry)")
      ->capture_default_str();
  c->add_option("--arch", a->image.train.arch, "images: cnn, mobilenet or vit")->check(CLI::IsMember({"cnn", "mobilenet", "vit"}))->capture_default_str();
  c->add_option("--augment", a->augment, "images: on-the-fly augmentation (as image train)")->capture_default_str();
  c->add_option("--defence", a->text.defence, "text: pgd, freelb (embeddings), synonym (random substitutions), synonym-attack (training on the attack's examples)")
      ->check(CLI::IsMember({"pgd", "freelb", "synonym", "synonym-attack"}))
      ->capture_default_str();
  c->add_option("--attack-train", a->text.attack_train, "text, synonym-attack: training texts attacked per round")->capture_default_str();
  c->add_option("--rounds", a->text.rounds, "text, synonym-attack: rounds of attacking the latest model and retraining")->capture_default_str();
  c->add_option("--synonym-prob", a->text.synonym_prob, "text, synonym defence: replacement probability per word")->capture_default_str();
  c->add_option("--max-train", a->max_train, "text: training examples (0 = all)");
  c->add_option("--max-test", a->max_test, "text: test examples (0 = all)");
  c->add_option("--examples", a->examples, "examples attacked (images: 0 = all; text: default 500)");
  c->add_option("--epochs", a->epochs, "epochs (default: image train's / finetune's)");
  c->add_option("--batch", a->batch, "batch size");
  c->add_option("--lr", a->lr, "peak learning rate");
  c->add_option("--seed", a->seed, "seed")->capture_default_str();
  c->add_option("--baseline", a->baseline, "a model trained without the defence, for the before row (default: train one)")
      ->check(CLI::ExistingDirectory);
  c->add_flag("--no-baseline", a->no_baseline, "no before row");
  c->add_option("--wordnet-dir", a->text.wordnet_dir, "WordNet dict folder")->capture_default_str();
  c->callback([&ctx, a]() {
    ctx.action = [&ctx, a]() {
      use_threads(ctx);
      a->a.random_start = !a->fixed_start;
      train::AttackOptions eval = a->a;
      eval.method = "pgd";
      if (a->eval_steps > 0) eval.steps = a->eval_steps, eval.alpha = 0;
      if (a->eval_eps >= 0) eval.eps = a->eval_eps;
      robust::DefenceResult r;
      if (!a->data.empty()) {
        if (!a->model.empty()) throw ConfigError("robust train: give --data (images) or --model with --train/--test (text), not both");
        robust::RobustImageOptions& o = a->image;
        o.train.adversarial = a->a;
        o.train.adversarial->method = a->attack;
        o.attack = eval;
        apply_common(*a, ctx, o, o.train);
        o.train.augment = vision::parse_augment(a->augment);
        r = robust::defend_image_model(a->data, a->out, o);
      } else {
        if (a->model.empty() || a->train_file.empty() || a->test_file.empty())
          throw ConfigError("robust train: give --data DIR (images), or --model, --train and --test (a text classifier)");
        robust::RobustTextOptions& o = a->text;
        o.training_attack = a->a;
        o.embedding_attack = eval;
        apply_common(*a, ctx, o, o.finetune);
        tasks::ClassifyData d;
        d.name = "tsv:" + a->train_file;
        d.train = tasks::read_tsv_examples(a->train_file, a->max_train);
        d.test = tasks::read_tsv_examples(a->test_file, a->max_test);
        r = robust::defend_text_classifier(a->model, d, a->out, o);
      }
      std::fputs(robust::attack_table(r.rows).c_str(), stdout);
      std::printf("wrote %s/robust.json, robust.html\n", a->out.c_str());
      return 0;
    };
  });
}

}  // namespace

void add_robust_commands(CLI::App& app, Context& ctx) {
  CLI::App* robust = app.add_subcommand("robust", "adversarial robustness: attacks and adversarial training");
  robust->require_subcommand(1);
  add_attack(robust, ctx);
  add_train(robust, ctx);
}

}  // namespace dsforge::cli
