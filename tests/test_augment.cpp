#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/data/augment.h"
#include "test_util.h"

using namespace dsforge;
using namespace dsforge::data;

namespace {
const char* kWordNet = "/usr/share/wordnet";
bool have_wordnet() { return file_exists(std::string(kWordNet) + "/data.noun"); }

std::vector<std::string> words_of(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

bool contains(const std::vector<std::string>& v, const std::string& x) { return std::find(v.begin(), v.end(), x) != v.end(); }
}  // namespace

TEST(WordNetLexicon, MorphyBaseFormsAndSynonyms) {
  if (!have_wordnet()) GTEST_SKIP() << "wordnet-base not installed";
  WordNet wn(kWordNet);
  EXPECT_GT(wn.lemma_count(), 140000u);  // WordNet 3.0: 147,306 distinct lemmas
  EXPECT_TRUE(contains(wn.base_forms("dogs"), "dog"));      // rule: -s
  EXPECT_TRUE(contains(wn.base_forms("went"), "go"));       // verb.exc
  EXPECT_TRUE(contains(wn.base_forms("better"), "good"));   // adj.exc
  EXPECT_TRUE(contains(wn.base_forms("churches"), "church"));  // rule: -ches -> -ch
  EXPECT_TRUE(contains(wn.base_forms("running"), "run"));   // verb.exc (doubled consonant)
  auto car = wn.synonyms("car");
  EXPECT_TRUE(contains(car, "automobile"));
  EXPECT_TRUE(contains(car, "motorcar"));
  EXPECT_FALSE(contains(car, "car"));
  EXPECT_TRUE(contains(wn.synonyms("cars"), "automobile"));  // inflected forms find their synsets
  EXPECT_TRUE(wn.synonyms("qwzx").empty());
  EXPECT_THROW_MSG(WordNet("/nonexistent"), DataError, "cannot open WordNet data file");
}

TEST(Augment, OperationsAreDeterministicAndDoWhatTheySay) {
  if (!have_wordnet()) GTEST_SKIP() << "wordnet-base not installed";
  WordNet wn(kWordNet);
  const std::string text = "the quick brown fox jumps over the lazy dog near the old river bank";
  EXPECT_EQ(Augmenter(wn, {0, 0, 0, 0}).augment(text, 1), text);  // all probabilities 0: identity
  Augmenter all(wn, {0.3, 0.2, 0.2, 0.1});
  EXPECT_EQ(all.augment(text, 42), all.augment(text, 42));  // same seed, same copy
  int differ = 0;
  for (uint64_t s = 0; s < 10; ++s) differ += all.augment(text, s) != all.augment(text, s + 100);
  EXPECT_GE(differ, 8);
  // Swap only: the same multiset of words.
  auto swapped = words_of(Augmenter(wn, {0, 0, 0.5, 0}).augment(text, 3));
  auto orig = words_of(text);
  EXPECT_TRUE(std::is_permutation(swapped.begin(), swapped.end(), orig.begin(), orig.end()));
  // Deletion only: a subsequence, never empty.
  for (uint64_t s = 0; s < 20; ++s) {
    auto kept = words_of(Augmenter(wn, {0, 0, 0, 0.5}).augment(text, s));
    EXPECT_FALSE(kept.empty());
    size_t j = 0;
    for (const auto& w : orig)
      if (j < kept.size() && kept[j] == w) ++j;
    EXPECT_EQ(j, kept.size());
  }
  EXPECT_EQ(Augmenter(wn, {0, 0, 0, 1.0}).augment("single", 0), "single");
  // Synonym replacement only: stopwords stay, replaced words are WordNet synonyms of the originals.
  auto replaced = words_of(Augmenter(wn, {1.0, 0, 0, 0}).augment("the car and the dog", 5));
  EXPECT_EQ(replaced.front(), "the");
  EXPECT_NE(replaced, words_of("the car and the dog"));
  // Insertion only: words are added, originals kept in order.
  auto inserted = words_of(Augmenter(wn, {0, 0.5, 0, 0}).augment(text, 9));
  EXPECT_GT(inserted.size(), orig.size());
}
