#include "dsforge/robust/defend.h"

#include <algorithm>
#include <memory>
#include <optional>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/core/shuffle.h"
#include "dsforge/data/augment.h"
#include "dsforge/report/html_report.h"
#include "dsforge/tasks/text_classifier.h"
#include "dsforge/vision/images.h"

namespace dsforge::robust {
namespace {

nlohmann::ordered_json rows_json(const std::vector<std::pair<std::string, AttackReport>>& rows) {
  nlohmann::ordered_json j = nlohmann::ordered_json::array();
  for (const auto& [name, r] : rows) {
    nlohmann::ordered_json row = {{"name", name}};
    row.update(attack_json(r));
    j.push_back(row);
  }
  return j;
}

bool is_image_model(const std::string& dir) {
  const std::string cfg = path_join(dir, "config.json");
  if (!file_exists(cfg)) return false;
  try {
    return nlohmann::json::parse(read_file(cfg)).value("model_type", "") == "image_classifier";
  } catch (const nlohmann::json::exception&) {
    return false;
  }
}

}  // namespace

void write_robust_outputs(const std::string& out_dir, const std::string& title, const std::vector<std::pair<std::string, AttackReport>>& rows,
                          const nlohmann::ordered_json& extra) {
  make_dirs(out_dir);
  nlohmann::ordered_json j = extra.is_object() ? extra : nlohmann::ordered_json::object();
  j["results"] = rows_json(rows);
  write_file_atomic(path_join(out_dir, "robust.json"), j.dump(2) + "\n");
  std::string body = attack_html_section(title, rows);
  body += "<p>Clean: accuracy without attack. Robust: accuracy under attack (an example already misclassified counts as "
          "not robust). Success rate: of the examples classified correctly, the share the attack flips. Perturbation: the "
          "attack's norm of the change (synonyms: the share of words substituted).</p>\n";
  write_file_atomic(path_join(out_dir, "robust.html"), report::html_page(title, body));
}

DefenceResult defend_image_model(const std::string& data_dir, const std::string& out_dir, const RobustImageOptions& o) {
  if (!o.train.adversarial) throw ConfigError("robust train: images need a training attack (fgsm or pgd)");
  train::validate(*o.train.adversarial, "robust train: training attack");
  train::validate(o.attack, "robust train: evaluation attack");
  const std::string split = vision::held_out_split(vision::read_dataset_info(data_dir), data_dir);
  DefenceResult r;
  std::string baseline = o.baseline;
  if (baseline.empty() && !o.skip_baseline) {
    vision::ImageTrainOptions plain = o.train;
    plain.adversarial.reset();
    log_info("robust train: the baseline (no adversarial training) -> ", path_join(out_dir, "baseline"));
    vision::train_image_model(data_dir, path_join(out_dir, "baseline"), plain);
    baseline = path_join(out_dir, "baseline/model");
  }
  log_info("robust train: adversarial training (", o.train.adversarial->describe(), ") -> ", path_join(out_dir, "adversarial"));
  vision::train_image_model(data_dir, path_join(out_dir, "adversarial"), o.train);
  if (!baseline.empty()) r.rows.push_back({"baseline", attack_image_model(baseline, data_dir, split, o.attack, o.examples)});
  r.rows.push_back({"adversarial training", attack_image_model(path_join(out_dir, "adversarial/model"), data_dir, split, o.attack, o.examples)});
  r.json = {{"data", data_dir},
            {"split", split},
            {"training_attack", o.train.adversarial->describe()},
            {"adversarial_weight", o.train.adversarial_weight},
            {"evaluation_attack", o.attack.describe()}};
  write_robust_outputs(out_dir, "Adversarial training: before and after", r.rows, r.json);
  r.json["results"] = rows_json(r.rows);
  return r;
}

DefenceResult defend_text_classifier(const std::string& model_dir, const tasks::ClassifyData& data, const std::string& out_dir,
                                     const RobustTextOptions& o) {
  tasks::FinetuneOptions defended = o.finetune;
  std::shared_ptr<data::WordNet> wn = std::make_shared<data::WordNet>(o.wordnet_dir);
  if (o.defence == "pgd" || o.defence == "freelb") {
    defended.adversarial = o.training_attack;
    defended.adversarial_mode = o.defence;
  } else if (o.defence == "synonym") {
    if (!(o.synonym_prob > 0 && o.synonym_prob <= 1))
      throw ConfigError(fmt("robust train: synonym probability ", o.synonym_prob, ": expected a value in (0, 1]"));
    const double p = o.synonym_prob;
    defended.augment_text = [wn, p](const std::string& text, uint64_t seed) { return random_synonym_substitution(text, *wn, p, seed); };
  } else if (o.defence == "synonym-attack") {
    if (o.skip_baseline) throw ConfigError("robust train: the synonym-attack defence attacks the baseline; it cannot skip it");
    if (o.attack_train < 1) throw ConfigError(fmt("robust train: --attack-train ", o.attack_train, ": expected at least 1"));
    if (o.rounds < 1) throw ConfigError(fmt("robust train: --rounds ", o.rounds, ": expected at least 1"));
  } else {
    throw ConfigError(fmt("robust train: defence '", o.defence, "': expected pgd, freelb, synonym or synonym-attack"));
  }
  train::validate(o.embedding_attack, "robust train: evaluation attack");
  std::string baseline = o.baseline;
  if (baseline.empty() && !o.skip_baseline) {
    baseline = path_join(out_dir, "baseline");
    log_info("robust train: the baseline (plain fine-tuning) -> ", baseline);
    tasks::finetune_classifier(model_dir, data, o.finetune, baseline);
  }
  const std::string defended_dir = path_join(out_dir, "defended");
  nlohmann::ordered_json attack_rounds = nlohmann::ordered_json::array();
  if (o.defence == "synonym-attack") {
    // Round r attacks round r-1's model (the baseline first) on a fresh sample of training texts; the
    // successes accumulate and each round fine-tunes the language model on train + all of them.
    tasks::ClassifyData train_data = data;
    std::string attacked = baseline;
    for (int64_t round = 0; round < o.rounds; ++round) {
      std::vector<tasks::Example> sample = data.train, found;
      shuffle_in_place(sample, o.finetune.seed ^ (0x5eedULL + static_cast<uint64_t>(round)));
      if (static_cast<int64_t>(sample.size()) > o.attack_train) sample.resize(static_cast<size_t>(o.attack_train));
      const AttackReport a = synonym_attack(tasks::load_text_classifier(attacked), sample, *wn, o.synonym, &found);
      log_info("robust train: round ", round + 1, ": the synonym attack flipped ", found.size(), " of ", sample.size(), " training texts (",
               100 * a.success_rate, "% of those classified right); training on them too");
      train_data.train.insert(train_data.train.end(), found.begin(), found.end());
      attack_rounds.push_back({{"round", round + 1}, {"model_attacked", attacked}, {"training_texts_attacked", sample.size()},
                               {"adversarial_examples_added", found.size()}, {"success_rate_on_training_texts", a.success_rate}});
      train_data.name = fmt(data.name, "+", train_data.train.size() - data.train.size(), " adversarial");
      attacked = round + 1 < o.rounds ? path_join(out_dir, fmt("round", round + 1)) : defended_dir;
      log_info("robust train: fine-tuning on ", train_data.train.size(), " texts -> ", attacked);
      tasks::finetune_classifier(model_dir, train_data, defended, attacked);
    }
  } else {
    log_info("robust train: fine-tuning with the ", o.defence, " defence -> ", defended_dir);
    tasks::finetune_classifier(model_dir, data, defended, defended_dir);
  }

  std::vector<tasks::Example> test = data.test;
  if (o.examples > 0 && static_cast<int64_t>(test.size()) > o.examples) test.resize(static_cast<size_t>(o.examples));
  DefenceResult r;
  auto attack_both = [&](const std::string& name, const std::string& dir) {
    const tasks::TextClassifier c = tasks::load_text_classifier(dir);
    AttackReport s = synonym_attack(c, test, *wn, o.synonym);
    s.model = dir;
    r.rows.push_back({name + " / synonyms", s});
    if (c.module().backbone->config().model_type == "deepseek_v3") {
      AttackReport e = embedding_attack(c, test, o.embedding_attack);
      e.model = dir;
      r.rows.push_back({name + " / embeddings", e});
    }
  };
  if (!baseline.empty()) attack_both("baseline", baseline);
  attack_both(o.defence + " defence", defended_dir);
  const std::string training_attack = o.defence == "synonym"          ? fmt("random synonym substitution p=", o.synonym_prob)
                                      : o.defence == "synonym-attack" ? "the synonym attack on the baseline's training texts"
                                                                      : fmt(o.defence, ": ", o.training_attack.describe());
  r.json = {{"task", data.name}, {"defence", o.defence}, {"training_attack", training_attack}, {"test_examples_attacked", test.size()}};
  if (!attack_rounds.empty()) r.json["attack_rounds"] = attack_rounds;
  write_robust_outputs(out_dir, "Adversarial training of a text classifier: before and after", r.rows, r.json);
  r.json["results"] = rows_json(r.rows);
  return r;
}

std::vector<std::pair<std::string, AttackReport>> attack_saved_model(const std::string& model_dir, const std::string& data,
                                                                     const std::string& split, const std::vector<std::string>& attacks,
                                                                     const train::AttackOptions& a, const SynonymAttackOptions& s,
                                                                     const std::string& wordnet_dir, int64_t examples) {
  train::validate(a, "robust attack");
  std::vector<std::pair<std::string, AttackReport>> rows;
  const bool image = is_image_model(model_dir);
  if (!image && !file_exists(path_join(model_dir, "classifier.safetensors")))
    throw ConfigError(fmt(model_dir, ": not a model robust attack supports (an image classifier from `dsforge image train`, or a text "
                          "classifier from `dsforge finetune --task tsv --out`); language models have no label to attack"));
  for (const std::string& name : attacks) {
    if (name != "fgsm" && name != "pgd" && name != "synonym") throw ConfigError(fmt("robust attack: '", name, "': expected fgsm, pgd or synonym"));
    if (image && name == "synonym") throw ConfigError("robust attack: the synonym attack is for text classifiers; images take fgsm or pgd");
  }
  // A text classifier, its examples and WordNet are read once for all the attacks.
  std::optional<tasks::TextClassifier> c;
  std::vector<tasks::Example> test;
  std::unique_ptr<data::WordNet> wn;
  if (!image) {
    c.emplace(tasks::load_text_classifier(model_dir));
    test = tasks::read_tsv_examples(data, examples);
    if (std::find(attacks.begin(), attacks.end(), "synonym") != attacks.end()) wn = std::make_unique<data::WordNet>(wordnet_dir);
  }
  for (const std::string& name : attacks) {
    train::AttackOptions ai = a;
    if (name != "synonym") ai.method = name;
    if (image) {
      rows.push_back({name, attack_image_model(model_dir, data, split, ai, examples)});
      continue;
    }
    AttackReport r = name == "synonym" ? synonym_attack(*c, test, *wn, s) : embedding_attack(*c, test, ai);
    r.model = model_dir;
    r.data = data;
    rows.push_back({name, r});
  }
  return rows;
}

}  // namespace dsforge::robust
