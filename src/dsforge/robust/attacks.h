// Measuring adversarial robustness of the models dsforge trains: gradient attacks (FGSM, PGD under
// L-infinity or L2; train/adversarial.h) on image classifiers in pixel space and on text classifiers'
// token embeddings, and a discrete black-box attack on text: WordNet synonym substitution (words ranked
// by how much deleting each lowers the gold class's probability, then each replaced by the synonym of the
// same part of speech that lowers it most, within a budget of substituted words).
//
// Every attack reports clean accuracy, robust accuracy (correct after the attack; an example the model
// already gets wrong counts as not robust), the success rate (of the examples classified correctly, the
// share the attack flips), the mean perturbation (in the attack's norm; the synonym attack: the share
// of words substituted) and model queries per example. Attacks are seeded: the same call gives the same
// numbers.
//
//   AttackReport r = attack_image_model("runs/mnist/cnn/model", "runs/mnist/data", "val", pgd, 1000);
//   AttackReport s = synonym_attack(load_text_classifier("runs/sst2"), test, wordnet, {.budget = 0.25});
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dsforge/train/attack_options.h"

namespace dsforge::data {
class WordNet;
}
namespace dsforge::tasks {
class TextClassifier;
struct Example;
}  // namespace dsforge::tasks

namespace dsforge::robust {

struct AttackExample {
  std::string source;              // image file / text
  std::string adversarial;         // the attacked text (text attacks)
  std::string gold, clean_pred, adversarial_pred;
  double perturbation = 0;
  std::string png_base64;          // images: original | attacked | perturbation (x4 around grey), a PNG
};

struct AttackReport {
  std::string target;  // "image" or "text"
  std::string attack;  // what was run (AttackOptions::describe, or the synonym attack's settings)
  std::string model, data;
  int64_t examples = 0;
  double clean_accuracy = 0, robust_accuracy = 0;
  double success_rate = 0;        // flipped / correct before
  double mean_perturbation = 0;   // over the attacked (correct before) examples
  double relative_perturbation = 0;  // embedding attacks: ||delta|| / ||embeddings|| (mean)
  double queries_per_example = 0;    // forward (and backward) passes per attacked example
  double seconds = 0;
  std::vector<AttackExample> shown;  // the first few successful attacks
};

nlohmann::ordered_json attack_json(const AttackReport& r);
// One line per report: clean, robust, success, perturbation, queries.
std::string attack_table(const std::vector<std::pair<std::string, AttackReport>>& rows);
// The report page's section: the table and the examples (images inline).
std::string attack_html_section(const std::string& title, const std::vector<std::pair<std::string, AttackReport>>& rows);

// FGSM / PGD (L-infinity or L2) in pixel space [0, 1] on `split` of a prepared image folder, the first
// `max_examples` images (0 = all), in batches of `batch`.
AttackReport attack_image_model(const std::string& model_dir, const std::string& data_dir, const std::string& split,
                                const train::AttackOptions& a, int64_t max_examples = 0, int64_t batch = 128);

// FGSM / PGD on the token embeddings of a text classifier (a DeepSeek backbone), over real tokens only;
// `perturbation` is the norm of delta in embedding units.
AttackReport embedding_attack(const tasks::TextClassifier& c, const std::vector<tasks::Example>& examples,
                              const train::AttackOptions& a, int64_t batch = 32);

struct SynonymAttackOptions {
  double budget = 0.25;        // at most this share of a text's words substituted (at least one)
  int64_t max_candidates = 30;  // synonyms tried per word
  bool keep_pos = true;         // only synonyms of the word's dominant part of speech
};
// With `found`, every successful adversarial text is appended to it with its gold label (what adversarial
// training on the attack's examples trains on).
AttackReport synonym_attack(const tasks::TextClassifier& c, const std::vector<tasks::Example>& examples, const data::WordNet& wn,
                            const SynonymAttackOptions& o, std::vector<tasks::Example>* found = nullptr);

// The synonym attack's candidates at random: each content word with a single-word synonym of its
// dominant part of speech is replaced by a random one with probability `p` (seeded). The synonym
// defence trains on these, so the model sees the substitutions the attack will try.
std::string random_synonym_substitution(const std::string& text, const data::WordNet& wn, double p, uint64_t seed);

}  // namespace dsforge::robust
