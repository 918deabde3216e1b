// Adversarial training as a before/after experiment: a model trained plainly (or one given) and one
// trained with a defence, both attacked on the same held-out examples, one table.
//
// Images: PGD adversarial training (Madry et al. 2018) through the one training loop
// (vision::ImageTrainOptions::adversarial). Text classifiers: embedding-space PGD, FreeLB, or WordNet
// synonym augmentation (tasks::FinetuneOptions), judged by the synonym attack and an embedding attack.
//
//   RobustImageOptions o;  o.train.adversarial = pgd;   // eps 0.1, 20 steps
//   DefenceResult r = defend_image_model("runs/mnist/data", "runs/mnist/robust", o);
//   // runs/mnist/robust/{baseline,adversarial}/model, robust.json, robust.html
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "dsforge/robust/attacks.h"
#include "dsforge/tasks/classify.h"
#include "dsforge/vision/train_image.h"

namespace dsforge::robust {

struct DefenceResult {
  std::vector<std::pair<std::string, AttackReport>> rows;  // "baseline / PGD", "adversarial / PGD", ...
  nlohmann::ordered_json json;
};

struct RobustImageOptions {
  vision::ImageTrainOptions train;  // train.adversarial: the training attack (required)
  train::AttackOptions attack;      // the evaluation attack
  int64_t examples = 0;             // held-out images attacked (0 = all)
  std::string baseline;             // a trained model folder to compare with; empty = train one plainly
  bool skip_baseline = false;       // no before row
};
// Writes out_dir/{baseline,adversarial}/ (image train's run folders), robust.json and robust.html.
DefenceResult defend_image_model(const std::string& data_dir, const std::string& out_dir, const RobustImageOptions& o);

struct RobustTextOptions {
  tasks::FinetuneOptions finetune;
  // pgd | freelb: embedding space (finetune.adversarial); synonym: random substitutions from the attack's
  // candidates (augmentation); synonym-attack: the synonym attack run on `attack_train` training texts
  // against the baseline, its successes added to the training set with their gold labels (adversarial
  // training in the discrete input space).
  std::string defence = "pgd";
  train::AttackOptions training_attack;  // pgd / freelb
  double synonym_prob = 0.3;             // synonym: each content word replaced with this probability
  std::string wordnet_dir = "/usr/share/wordnet";
  SynonymAttackOptions synonym;          // the evaluation attacks
  train::AttackOptions embedding_attack;
  int64_t examples = 500;                // test examples attacked (0 = all)
  int64_t attack_train = 2000;           // synonym-attack: training texts attacked per round (a seeded sample)
  int64_t rounds = 1;                    // synonym-attack: attack-and-retrain rounds
  std::string baseline;                  // a fine-tuned classifier folder; empty = fine-tune one plainly
  bool skip_baseline = false;
};
// Fine-tunes `model_dir` on data.train with the defence (out_dir/defended) and, unless given, without
// (out_dir/baseline); attacks both on data.test; writes robust.json and robust.html.
DefenceResult defend_text_classifier(const std::string& model_dir, const tasks::ClassifyData& data, const std::string& out_dir,
                                     const RobustTextOptions& o);

// Attacks on a saved model: an image classifier (`data` a prepared folder, `split`) or a text classifier
// (`data` a text<TAB>label file); `attacks` are "fgsm", "pgd" (with `a`'s norm, eps, steps) and
// "synonym" (text). Rows named by attack.
std::vector<std::pair<std::string, AttackReport>> attack_saved_model(const std::string& model_dir, const std::string& data,
                                                                     const std::string& split, const std::vector<std::string>& attacks,
                                                                     const train::AttackOptions& a, const SynonymAttackOptions& s,
                                                                     const std::string& wordnet_dir, int64_t examples);

// robust.json / robust.html for a set of rows.
void write_robust_outputs(const std::string& out_dir, const std::string& title, const std::vector<std::pair<std::string, AttackReport>>& rows,
                          const nlohmann::ordered_json& extra = {});

}  // namespace dsforge::robust
