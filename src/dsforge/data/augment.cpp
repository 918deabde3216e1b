#include "dsforge/data/augment.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <random>
#include <sstream>
#include <unordered_set>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/data/corpus.h"

namespace dsforge::data {
namespace {

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// WordNet's Morphy detachment rules (morph.c), all parts of speech together.
const std::vector<std::pair<std::string, std::string>> kRules = {
    {"s", ""},   {"ses", "s"}, {"xes", "x"}, {"zes", "z"}, {"ches", "ch"}, {"shes", "sh"}, {"men", "man"},
    {"ies", "y"}, {"es", "e"},  {"es", ""},   {"ed", "e"},  {"ed", ""},     {"ing", "e"},   {"ing", ""},
    {"er", ""},  {"est", ""},  {"er", "e"},  {"est", "e"}};

const std::unordered_set<std::string> kStopwords = {
    "a",    "an",   "the",  "of",   "to",   "in",   "on",   "at",    "by",   "for",  "with", "and",  "or",
    "but",  "is",   "are",  "was",  "were", "be",   "been", "it",    "its",  "this", "that", "as",   "from",
    "not",  "no",   "he",   "she",  "they", "we",   "you",  "i",     "his",  "her",  "their", "our", "your",
    "who",  "which", "what", "when", "where", "how", "than", "then", "so",   "if",   "do",   "does", "did"};

// lexnames(5WN): 0 adj.all, 1 adj.pert, 2 adv.all, 3-28 noun.*, 29-43 verb.*, 44 adj.ppl.
char lexname_pos(int lex_filenum) {
  if (lex_filenum == 2) return 'r';
  if (lex_filenum >= 3 && lex_filenum <= 28) return 'n';
  if (lex_filenum >= 29 && lex_filenum <= 43) return 'v';
  return 'a';
}

}  // namespace

bool is_stopword(const std::string& lower_word) { return kStopwords.count(lower_word) > 0; }

WordNet::WordNet(const std::string& dir) {
  for_each_wordnet_synset(dir, [&](const WordNetSynset& syn) {
    const auto id = static_cast<uint32_t>(synset_lemmas_.size());
    std::vector<std::string> lemmas;
    for (const auto& w : syn.words) {
      lemmas.push_back(lower(w));
      auto& v = synsets_of_[lemmas.back()];
      if (v.empty() || v.back() != id) v.push_back(id);
    }
    synset_lemmas_.push_back(std::move(lemmas));
    synset_pos_.push_back(lexname_pos(syn.lex_filenum));
  });
  for (const char* pos : {"noun", "verb", "adj", "adv"}) {
    std::ifstream in(path_join(dir, std::string(pos) + ".exc"));
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string inflected, base;
      f >> inflected;
      while (f >> base) exceptions_[inflected].push_back(base);
    }
  }
}

std::vector<std::string> WordNet::base_forms(const std::string& word) const {
  const std::string w = lower(word);
  std::vector<std::string> out;
  auto add = [&](const std::string& b) {
    if (synsets_of_.count(b) && std::find(out.begin(), out.end(), b) == out.end()) out.push_back(b);
  };
  auto ex = exceptions_.find(w);
  if (ex != exceptions_.end())
    for (const auto& b : ex->second) add(b);
  add(w);
  for (const auto& [suffix, ending] : kRules)
    if (w.size() > suffix.size() && w.compare(w.size() - suffix.size(), suffix.size(), suffix) == 0)
      add(w.substr(0, w.size() - suffix.size()) + ending);
  return out;
}

std::vector<std::string> WordNet::synonyms(const std::string& word) const { return synonyms(word, 0); }

char WordNet::dominant_pos(const std::string& word) const {
  const std::string order = "nvar";
  int64_t count[4] = {0, 0, 0, 0};
  for (const auto& b : base_forms(word))
    for (uint32_t id : synsets_of_.at(b)) ++count[order.find(synset_pos_[id])];
  size_t best = 0;
  for (size_t i = 1; i < 4; ++i)
    if (count[i] > count[best]) best = i;
  return count[best] > 0 ? order[best] : 0;
}

std::vector<std::string> WordNet::synonyms(const std::string& word, char pos) const {
  std::vector<std::string> out;
  const auto bases = base_forms(word);
  for (const auto& b : bases)
    for (uint32_t id : synsets_of_.at(b)) {
      if (pos != 0 && synset_pos_[id] != pos) continue;
      for (const auto& l : synset_lemmas_[id]) {
        if (std::find(bases.begin(), bases.end(), l) != bases.end()) continue;
        std::string s = l;
        std::replace(s.begin(), s.end(), '_', ' ');
        if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
      }
    }
  return out;
}

std::string Augmenter::augment(const std::string& text, uint64_t seed) const {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  std::vector<std::string> words;
  {
    std::istringstream in(text);
    for (std::string w; in >> w;) words.push_back(w);
  }
  if (words.empty()) return text;
  // The alphabetic core of a token ("dog," -> "dog") is what WordNet is asked about.
  auto core = [](const std::string& w) {
    size_t a = 0, b = w.size();
    while (a < b && !std::isalpha(static_cast<unsigned char>(w[a]))) ++a;
    while (b > a && !std::isalpha(static_cast<unsigned char>(w[b - 1]))) --b;
    return std::make_pair(a, b);
  };
  auto synonym_of = [&](const std::string& w) -> std::string {
    auto [a, b] = core(w);
    const std::string c = w.substr(a, b - a);
    if (c.empty() || kStopwords.count(lower(c))) return "";
    auto syn = wn_.synonyms(c);
    return syn.empty() ? "" : syn[pick(syn.size())];
  };
  // 1. synonym replacement (keeps the token's punctuation)
  for (auto& w : words)
    if (uniform(rng) < opts_.synonym_prob) {
      std::string s = synonym_of(w);
      if (!s.empty()) {
        auto [a, b] = core(w);
        w = w.substr(0, a) + s + w.substr(b);
      }
    }
  // 2. random insertion of a synonym of a random word
  const auto n_insert = static_cast<size_t>(std::lround(opts_.insert_prob * static_cast<double>(words.size())));
  for (size_t i = 0; i < n_insert; ++i) {
    for (int attempt = 0; attempt < 10; ++attempt) {
      std::string s = synonym_of(words[pick(words.size())]);
      if (s.empty()) continue;
      words.insert(words.begin() + static_cast<long>(pick(words.size() + 1)), s);
      break;
    }
  }
  // 3. random swaps
  const auto n_swap = static_cast<size_t>(std::lround(opts_.swap_prob * static_cast<double>(words.size())));
  for (size_t i = 0; i < n_swap && words.size() > 1; ++i) std::swap(words[pick(words.size())], words[pick(words.size())]);
  // 4. random deletion, keeping at least one word
  if (opts_.delete_prob > 0 && words.size() > 1) {
    std::vector<std::string> kept;
    for (auto& w : words)
      if (uniform(rng) >= opts_.delete_prob) kept.push_back(w);
    if (kept.empty()) kept.push_back(words[pick(words.size())]);
    words = std::move(kept);
  }
  std::string out;
  for (size_t i = 0; i < words.size(); ++i) out += (i ? " " : "") + words[i];
  return out;
}

}  // namespace dsforge::data
