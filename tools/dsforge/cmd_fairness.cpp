// `dsforge fairness weat|counterfactual|lm|train`: bias measurements and their mitigation.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>

#include "commands.h"
#include "dsforge/core/error.h"
#include "dsforge/data/counterfactual.h"
#include "dsforge/robust/fairness.h"
#include "dsforge/tasks/classify.h"

namespace dsforge::cli {
namespace {

constexpr const char* kPairs = "data/fairness/gender_pairs.txt";

void finish(const std::string& out, bool json, const nlohmann::ordered_json& j, const std::string& html) {
  if (!out.empty()) {
    robust::write_fairness_outputs(out, j, html);
    std::printf("wrote %s/fairness.json, fairness.html\n", out.c_str());
  }
  if (json) std::cout << j.dump(2) << "\n";
}

void add_weat(CLI::App* f, Context& ctx) {
  struct Args {
    std::string vectors, model, tests = "data/fairness/weat.txt", out;
    std::vector<std::string> only;
    int64_t permutations = 100000;
    uint64_t seed = 0;
    bool single_token = false, json = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = f->add_subcommand("weat", "Word Embedding Association Tests: effect size and permutation p-value");
  c->add_option("--vectors", a->vectors, "word vectors (word2vec text/binary, dsforge embed's safetensors)")->check(CLI::ExistingFile);
  c->add_option("--model", a->model, "or a language model: its input embeddings (mean over a word's tokens)")->check(CLI::ExistingDirectory);
  c->add_option("--tests", a->tests, "WEAT file")->capture_default_str();
  c->add_option("--test", a->only, "run only these tests (weat1, weat6, ...)");
  c->add_flag("--single-token", a->single_token, "--model: words that take more than one token count as missing");
  c->add_option("--permutations", a->permutations, "random splits when the exact test is too large")->capture_default_str();
  c->add_option("--seed", a->seed, "seed of the random splits")->capture_default_str();
  c->add_option("--out", a->out, "folder for fairness.json and fairness.html");
  c->add_flag("--json", a->json, "print the JSON");
  c->callback([&ctx, a]() {
    ctx.action = [&ctx, a]() {
      use_threads(ctx);
      if (a->vectors.empty() == a->model.empty()) throw ConfigError("fairness weat: give --vectors FILE or --model DIR");
      const robust::WordVectorLookup lookup =
          a->vectors.empty() ? robust::lm_embedding_lookup(a->model, a->single_token) : robust::vector_file_lookup(a->vectors);
      std::vector<robust::WeatResult> results;
      nlohmann::ordered_json skipped = nlohmann::ordered_json::array();
      std::printf("%-8s %8s %10s  %-13s %s\n", "test", "d", "p", "words X/Y/A/B", "targets / attributes");
      for (const auto& t : robust::read_weat_tests(data::repo_data_file(a->tests))) {
        if (!a->only.empty() && std::find(a->only.begin(), a->only.end(), t.name) == a->only.end()) continue;
        try {
          results.push_back(robust::run_weat(t, lookup, a->permutations, a->seed));
        } catch (const DataError& e) {
          // Running every test, one the vocabulary cannot serve is skipped and said; one asked for by name is an error.
          if (!a->only.empty()) throw;
          std::printf("%-8s skipped: %s\n", t.name.c_str(), e.what());
          skipped.push_back({{"test", t.name}, {"reason", e.what()}});
          continue;
        }
        const auto& r = results.back();
        std::printf("%-8s %8.3f %10.4g  %3lld/%lld/%lld/%lld  %s\n", r.name.c_str(), r.effect_size, r.p_value, static_cast<long long>(r.x),
                    static_cast<long long>(r.y), static_cast<long long>(r.a), static_cast<long long>(r.b), r.description.c_str());
      }
      if (results.empty() && !skipped.empty()) throw DataError(fmt("fairness weat: no test could run (", skipped[0]["reason"].get<std::string>(), ")"));
      if (results.empty()) throw ConfigError("fairness weat: no test matched --test");
      nlohmann::ordered_json j = {{"source", a->vectors.empty() ? a->model : a->vectors}, {"weat", robust::weat_json(results)}};
      if (!skipped.empty()) j["skipped"] = skipped;
      finish(a->out, a->json, j, robust::weat_html(results));
      return 0;
    };
  });
}

void add_counterfactual(CLI::App* f, Context& ctx) {
  struct Args {
    std::string model, data, pairs = kPairs, positive, out;
    bool groups = false, json = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = f->add_subcommand("counterfactual", "counterfactual token fairness of a text classifier (and group fairness with --groups)");
  c->add_option("--model", a->model, "a text classifier folder (dsforge finetune --out)")->required()->check(CLI::ExistingDirectory);
  c->add_option("--data", a->data, "test texts: text<TAB>label (with --groups: text<TAB>label<TAB>group)")->required()->check(CLI::ExistingFile);
  c->add_option("--pairs", a->pairs, "identity-term list")->capture_default_str();
  c->add_flag("--groups", a->groups, "the data has a group column: demographic parity and equalised-odds differences");
  c->add_option("--positive", a->positive, "--groups: the positive label (default: the classifier's last label)");
  c->add_option("--out", a->out, "folder for fairness.json and fairness.html");
  c->add_flag("--json", a->json, "print the JSON");
  c->callback([&ctx, a]() {
    ctx.action = [&ctx, a]() {
      use_threads(ctx);
      const robust::ClassifierFairness f =
          robust::classifier_fairness(a->model, a->data, data::TermSwapper::load(a->pairs), a->groups, a->positive);
      std::fputs(f.summary.c_str(), stdout);
      finish(a->out, a->json, f.json, f.html);
      return 0;
    };
  });
}

void add_lm(CLI::App* f, Context& ctx) {
  struct Args {
    std::string model, probe = "data/fairness/lm_probe.txt", out;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = f->add_subcommand("lm", "language-model probe: perplexity of template sentences per identity group");
  c->add_option("--model", a->model, "a language model folder")->required()->check(CLI::ExistingDirectory);
  c->add_option("--probe", a->probe, "groups and templates")->capture_default_str();
  c->add_option("--out", a->out, "folder for fairness.json and fairness.html");
  c->add_flag("--json", a->json, "print the JSON");
  c->callback([&ctx, a]() {
    ctx.action = [&ctx, a]() {
      use_threads(ctx);
      robust::LmProbe p = robust::read_lm_probe(data::repo_data_file(a->probe));
      robust::run_lm_probe(a->model, p);
      for (const auto& g : p.groups) std::printf("%-12s mean log-perplexity %.4f (perplexity %.2f)\n", g.name.c_str(), g.mean_log_perplexity, std::exp(g.mean_log_perplexity));
      std::printf("gap %.4f nats per token: '%s' sentences are %.3fx as perplexing as '%s' ones\n", p.gap, p.most.c_str(), p.ratio, p.least.c_str());
      finish(a->out, a->json, {{"model", a->model}, {"lm_probe", robust::lm_probe_json(p)}}, robust::lm_probe_html(p));
      return 0;
    };
  });
}

void add_mitigate(CLI::App* f, Context& ctx) {
  struct Args {
    std::string model, train, test, pairs = kPairs, out, method = "clp", baseline;
    double clp_weight = 1.0;
    int64_t max_train = 0, max_test = 0;
    tasks::FinetuneOptions opt;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = f->add_subcommand("train", "fine-tune a classifier with a mitigation (counterfactual augmentation or logit pairing); "
                                           "counterfactual fairness and accuracy before and after");
  c->add_option("--model", a->model, "the language model to fine-tune")->required()->check(CLI::ExistingDirectory);
  c->add_option("--train", a->train, "training file, text<TAB>label")->required()->check(CLI::ExistingFile);
  c->add_option("--test", a->test, "test file")->required()->check(CLI::ExistingFile);
  c->add_option("--pairs", a->pairs, "identity-term list")->capture_default_str();
  c->add_option("--mitigation", a->method, "cda or clp")->check(CLI::IsMember({"cda", "clp"}))->capture_default_str();
  c->add_option("--clp-weight", a->clp_weight, "clp: weight of the logit-pairing penalty")->capture_default_str();
  c->add_option("--baseline", a->baseline, "a classifier fine-tuned without mitigation, or 'none' (default: fine-tune one)");
  c->add_option("--max-train", a->max_train, "training examples (0 = all)")->capture_default_str();
  c->add_option("--max-test", a->max_test, "test examples (0 = all)")->capture_default_str();
  c->add_option("--epochs", a->opt.epochs, "epochs")->capture_default_str();
  c->add_option("--batch", a->opt.batch, "batch size")->capture_default_str();
  c->add_option("--lr", a->opt.lr, "peak learning rate")->capture_default_str();
  c->add_option("--seed", a->opt.seed, "seed")->capture_default_str();
  c->add_option("--out", a->out, "folder: baseline/, mitigated/, fairness.json, fairness.html")->required();
  c->callback([&ctx, a]() {
    ctx.action = [&ctx, a]() {
      use_threads(ctx);
      a->opt.overrides = ctx.overrides;
      tasks::ClassifyData d;
      d.name = "tsv:" + a->train;
      d.train = tasks::read_tsv_examples(a->train, a->max_train);
      d.test = tasks::read_tsv_examples(a->test, a->max_test);
      const data::TermSwapper swapper = data::TermSwapper::load(a->pairs);
      const robust::MitigationResult r = robust::mitigate_classifier(a->model, d, swapper, a->out, a->opt, a->method, a->clp_weight, a->baseline);
      std::printf("%-36s %9s %9s %9s %9s\n", "", "accuracy", "mean gap", "max gap", "flips");
      for (size_t i = 0; i < r.rows.size(); ++i)
        std::printf("%-36s %8.2f%% %9.4f %9.4f %8.2f%%\n", r.rows[i].first.c_str(), 100 * r.accuracy[i], r.rows[i].second.mean_gap,
                    r.rows[i].second.max_gap, 100 * r.rows[i].second.flip_rate);
      std::printf("wrote %s/fairness.json, fairness.html\n", a->out.c_str());
      return 0;
    };
  });
}

}  // namespace

void add_fairness_commands(CLI::App& app, Context& ctx) {
  CLI::App* f = app.add_subcommand("fairness", "bias measurement (WEAT, counterfactual and group fairness, LM probe) and mitigation");
  f->require_subcommand(1);
  add_weat(f, ctx);
  add_counterfactual(f, ctx);
  add_lm(f, ctx);
  add_mitigate(f, ctx);
}

}  // namespace dsforge::cli
