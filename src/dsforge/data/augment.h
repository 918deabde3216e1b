// Text augmentation (EDA: Wei & Zou 2019): synonym replacement from WordNet, random insertion of a
// synonym, random swap and random deletion, each with its own probability, deterministic per seed.
//
// WordNet is read straight from Debian's `wordnet-base` database files (data.{noun,verb,adj,adv} for
// synsets, *.exc for irregular forms); inflected words find their base forms the way WordNet's
// Morphy does (exception lists first, then suffix detachment), so "dogs", "went" and "better"
// reach "dog", "go" and "good".
//
//   WordNet wn("/usr/share/wordnet");
//   Augmenter aug(wn, {.synonym_prob = 0.1, .insert_prob = 0.1, .swap_prob = 0.1, .delete_prob = 0.1});
//   std::string copy = aug.augment("the dog ran home", /*seed=*/7);
#pragma once
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace dsforge::data {

class WordNet {
 public:
  explicit WordNet(const std::string& dir);
  // Lower-case base forms that exist in WordNet, exceptions first; the word itself when it is a lemma.
  std::vector<std::string> base_forms(const std::string& word) const;
  // Other lemmas of every synset of every base form, in database order, without duplicates
  // ("motor_car" is returned as "motor car").
  std::vector<std::string> synonyms(const std::string& word) const;
  // The same restricted to synsets of one part of speech: 'n', 'v', 'a' (adjectives, satellites
  // included) or 'r' (adverbs).
  std::vector<std::string> synonyms(const std::string& word, char pos) const;
  // The part of speech with the most synsets of the word's base forms (ties: n, v, a, r); 0 when
  // WordNet does not know the word. What a substitution keeps when no tagger is at hand.
  char dominant_pos(const std::string& word) const;
  size_t lemma_count() const { return synsets_of_.size(); }

 private:
  std::unordered_map<std::string, std::vector<uint32_t>> synsets_of_;  // lemma -> synset ids
  std::vector<std::vector<std::string>> synset_lemmas_;
  std::vector<char> synset_pos_;
  std::unordered_map<std::string, std::vector<std::string>> exceptions_;  // inflected -> bases
};

// Function words EDA and the synonym attack leave alone ("the", "is", "not", ...), lower case.
bool is_stopword(const std::string& lower_word);

struct AugmentOptions {
  double synonym_prob = 0.1;  // each content word replaced by a synonym with this probability
  double insert_prob = 0.1;   // round(p * words) synonyms inserted at random positions
  double swap_prob = 0.1;     // round(p * words) random swaps of two words
  double delete_prob = 0.1;   // each word deleted with this probability (at least one word stays)
};

class Augmenter {
 public:
  Augmenter(const WordNet& wn, const AugmentOptions& opts) : wn_(wn), opts_(opts) {}
  std::string augment(const std::string& text, uint64_t seed) const;

 private:
  const WordNet& wn_;
  AugmentOptions opts_;
};

}  // namespace dsforge::data
