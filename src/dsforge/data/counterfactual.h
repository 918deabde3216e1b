// Counterfactual copies of a text: identity terms swapped for their counterparts (he <-> she, man <->
// woman). Counterfactual data augmentation (`data augment`, augment.cda_pairs), counterfactual token
// fairness and counterfactual logit pairing (robust/fairness.h, tasks/classify.h) all use one list.
//
// A list file has one line per set of interchangeable terms ("he she"); '#' starts a comment. Each term
// is replaced by the next term on its line (cyclically); a term on several lines follows its first.
// Matching is by whole word (core/text.h word_spans), case-insensitive; a capitalised or upper-case
// word stays so ("He" -> "She", "MR" -> "MRS").
//
//   TermSwapper s = TermSwapper::load("data/fairness/gender_pairs.txt");
//   s.swap("He thanked his sister.");   // "She thanked her brother."
#pragma once
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace dsforge::data {

class TermSwapper {
 public:
  TermSwapper() = default;
  // Errors name the file and line (a line with one term, a term that is not a word). `path` is looked
  // up with repo_data_file.
  static TermSwapper load(const std::string& path);
  explicit TermSwapper(const std::vector<std::vector<std::string>>& groups, const std::string& origin = "term list");

  // The text with every listed term replaced at once; unchanged when it mentions none.
  std::string swap(const std::string& text) const;
  // How many listed terms the text contains.
  int64_t mentions(const std::string& text) const;
  size_t terms() const { return next_.size(); }
  const std::vector<std::vector<std::string>>& groups() const { return groups_; }

 private:
  std::vector<std::vector<std::string>> groups_;
  std::unordered_map<std::string, std::string> next_;  // lower-case term -> its replacement
};

// A data file dsforge keeps in its repository (data/fairness/...): `path` as given when it exists, else
// relative to the working directory or to a folder above the dsforge executable (build/dsforge ->
// data/...). IoError when none has it.
std::string repo_data_file(const std::string& path);

}  // namespace dsforge::data
