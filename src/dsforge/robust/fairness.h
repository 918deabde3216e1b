// Measuring bias, from the definitions of the papers that introduced each measure:
//
// - WEAT (Caliskan et al. 2017): for target word sets X, Y and attribute sets A, B, with
//   s(w, A, B) = mean_a cos(w, a) - mean_b cos(w, b), the effect size
//   d = (mean_x s(x) - mean_y s(y)) / std_{w in X u Y} s(w) (sample standard deviation), and the one-sided
//   permutation p-value P[S(X_i, Y_i) > S(X, Y)] over the splits (X_i, Y_i) of X u Y into sets of the
//   sizes of X and Y, where S = sum_x s(x) - sum_y s(y): exact when there are at most `exact_limit`
//   splits, else estimated from `permutations` seeded random splits. Words missing from the vocabulary
//   are dropped and reported.
// - Counterfactual token fairness (Garg et al. 2019): the mean over test texts that mention an identity
//   term of the total-variation distance between the class distributions of the text and of its
//   counterfactual (terms swapped); for two classes this is |p(x) - p(x')| of either class. Also the
//   share of predictions that flip.
// - Group fairness, when the data has a group column: demographic parity difference
//   max_g P(yhat = pos | g) - min_g P(yhat = pos | g), and equalised-odds difference
//   max(TPR gap, FPR gap) across groups (Hardt et al. 2016).
// - Language-model probe: the perplexity of template sentences with each group's terms in the slot;
//   the gap between the groups' mean log-perplexities.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace dsforge::data {
class TermSwapper;
}
namespace dsforge::tasks {
class TextClassifier;
struct ClassifyData;
struct FinetuneOptions;
}  // namespace dsforge::tasks

namespace dsforge::robust {

// ---- WEAT ----
struct WordSet {
  std::string label;
  std::vector<std::string> words;
};
struct WeatTest {
  std::string name, description;
  WordSet x, y, a, b;
};
// The tests of a WEAT file (data/fairness/weat.txt's format); errors name file:line.
std::vector<WeatTest> read_weat_tests(const std::string& path);

// The vector of a word, or nullopt when the vocabulary lacks it.
using WordVectorLookup = std::function<std::optional<std::vector<float>>(const std::string& word)>;

struct WeatResult {
  std::string name, description;
  double effect_size = 0, p_value = 0, statistic = 0;
  bool exact = false;            // p from every split, not a sample
  int64_t permutations = 0;      // splits counted
  std::vector<std::string> missing;  // dropped words
  int64_t x = 0, y = 0, a = 0, b = 0;  // words used per set
};
// Throws DataError naming the test and set when a set has no word in the vocabulary (or X u Y fewer than 3).
WeatResult run_weat(const WeatTest& t, const WordVectorLookup& vectors, int64_t permutations = 100000, uint64_t seed = 0,
                    int64_t exact_limit = 200000);
// s(w, A, B) on raw vectors, for tests and reports.
double weat_association(const std::vector<float>& w, const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b);

// Word vectors of a language model's input embeddings: the mean embedding row of the tokens of " word"
// (the leading space: how a word mid-sentence is tokenized). With single_token, words that take more
// than one token count as missing.
WordVectorLookup lm_embedding_lookup(const std::string& model_dir, bool single_token);
// A word-vector file (word2vec text/binary or dsforge's safetensors); a word missing as written is looked
// up in lower case, then capitalised.
WordVectorLookup vector_file_lookup(const std::string& path);

// ---- Classifiers ----
struct CounterfactualResult {
  int64_t examples = 0, mentioning = 0;  // test texts, and those with an identity term
  double mean_gap = 0, max_gap = 0;      // total-variation distance, over the mentioning texts
  double flip_rate = 0;                  // predictions that change
  struct Pair {
    std::string text, counterfactual;
    double gap = 0;
  };
  std::vector<Pair> largest;  // the 10 largest gaps
};
CounterfactualResult counterfactual_fairness(const tasks::TextClassifier& c, const std::vector<std::string>& texts,
                                             const data::TermSwapper& swapper);

struct GroupExample {
  std::string text, label, group;
};
// text<TAB>label<TAB>group per line (header allowed); errors name file:line.
std::vector<GroupExample> read_group_examples(const std::string& path);
struct GroupFairness {
  std::string positive;
  struct Group {
    std::string name;
    int64_t n = 0;
    double positive_rate = 0, tpr = 0, fpr = 0, accuracy = 0;
  };
  std::vector<Group> groups;
  double demographic_parity_difference = 0, equalized_odds_difference = 0;
};
// From predictions: the rates per group of `positive` (a label name) and the differences.
GroupFairness group_fairness(const std::vector<std::string>& predicted, const std::vector<GroupExample>& data, const std::string& positive);

// ---- Language model ----
struct LmProbe {
  struct Group {
    std::string name;
    std::vector<std::string> terms;
    double mean_log_perplexity = 0;
  };
  std::vector<Group> groups;
  std::vector<std::string> templates;
  std::vector<std::vector<double>> template_group_log_ppl;  // [template][group]
  double gap = 0;        // max - min of the groups' mean log-perplexity
  double ratio = 0;      // exp(gap): the perplexity ratio of the most to the least surprising group
  std::string most, least;
};
// The probe file's groups ("= name: terms") and templates (with "{}"); errors name file:line.
LmProbe read_lm_probe(const std::string& path);
void run_lm_probe(const std::string& model_dir, LmProbe& probe);

// ---- Outputs ----
nlohmann::ordered_json weat_json(const std::vector<WeatResult>& r);
nlohmann::ordered_json counterfactual_json(const CounterfactualResult& r);
nlohmann::ordered_json group_json(const GroupFairness& g);
nlohmann::ordered_json lm_probe_json(const LmProbe& p);
std::string weat_html(const std::vector<WeatResult>& r);
std::string counterfactual_html(const std::vector<std::pair<std::string, CounterfactualResult>>& rows);
std::string group_html(const GroupFairness& g);
std::string lm_probe_html(const LmProbe& p);

// counterfactual_fairness (and group_fairness with `groups`: data is text<TAB>label<TAB>group; `positive`
// defaults to the classifier's last label) of a saved text classifier on a file: one line per measure
// for the terminal, the JSON and the report sections.
struct ClassifierFairness {
  std::string summary;
  nlohmann::ordered_json json;
  std::string html;
};
ClassifierFairness classifier_fairness(const std::string& model_dir, const std::string& data, const data::TermSwapper& swapper,
                                       bool groups, const std::string& positive);

// ---- Mitigation: before and after ----
struct MitigationResult {
  std::vector<std::pair<std::string, CounterfactualResult>> rows;  // baseline, mitigated
  std::vector<double> accuracy;                                    // test accuracy of each row
  nlohmann::ordered_json json;
};
// Fine-tunes `model_dir` on data.train plainly (out_dir/baseline, unless `baseline` names a fine-tuned
// classifier or it is "none") and with the mitigation (out_dir/mitigated): "cda" adds a counterfactual
// copy of every training text that mentions a term (same label); "clp" adds the counterfactual logit
// pairing penalty with weight clp_weight. Measures counterfactual fairness and accuracy on data.test;
// writes fairness.json and fairness.html.
MitigationResult mitigate_classifier(const std::string& model_dir, const tasks::ClassifyData& data, const data::TermSwapper& swapper,
                                     const std::string& out_dir, const tasks::FinetuneOptions& finetune, const std::string& method,
                                     double clp_weight, const std::string& baseline);

// fairness.json and fairness.html (the sections given, in order) in out_dir.
void write_fairness_outputs(const std::string& out_dir, const nlohmann::ordered_json& j, const std::string& body_html);

}  // namespace dsforge::robust
