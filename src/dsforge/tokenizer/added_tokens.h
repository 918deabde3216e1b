// Matching of added tokens (tokenizer.json `added_tokens`) in raw text, before pre-tokenization.
// Internal to the tokenizer module.
//
// Hugging Face `tokenizers` (AddedVocabulary::extract_and_normalize) splits the input in two passes:
// first on the tokens with "normalized": false, then, inside the text between those matches, on the
// tokens with "normalized": true (after the normalizer; dsforge has none, so on the same text). Each
// pass is an Aho-Corasick scan with leftmost-longest semantics: of the matches that start earliest,
// the longest wins, and scanning resumes after it. A byte trie walked from each candidate position
// gives the same answer, and a 256-entry table of first bytes lets text with no candidate pass at
// the cost of one table look-up per byte.
//
//   AddedTokenMatcher m;
//   m.add("<|endoftext|>", 0, /*special=*/true, /*normalized=*/false);
//   m.split(text, /*with_special=*/true, [](std::string_view seg, int32_t id) { ... });  // id -1: plain text
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dsforge::tok {

class AddedTokenMatcher {
 public:
  // Later additions of the same content replace the earlier id.
  void add(std::string_view content, int32_t id, bool special, bool normalized) {
    tries_[normalized ? 1 : 0].add(content, id, special);
  }
  // Whether any token can match: with_special = false leaves only the non-special ones.
  bool active(bool with_special) const { return tries_[0].active(with_special) || tries_[1].active(with_special); }

  // Calls emit(segment, id) in text order: id >= 0 for a matched token, -1 for the (non-empty) text
  // between matches. Special tokens take part only when with_special.
  template <typename F>
  void split(std::string_view text, bool with_special, F&& emit) const {
    const Trie& second = tries_[1];
    if (!tries_[0].active(with_special)) {
      second.split(text, with_special, emit);
      return;
    }
    tries_[0].split(text, with_special, [&](std::string_view seg, int32_t id) {
      if (id >= 0) emit(seg, id);
      else second.split(seg, with_special, emit);
    });
  }

 private:
  class Trie {
   public:
    void add(std::string_view s, int32_t id, bool special) {
      if (s.empty()) return;
      int32_t node = 0;
      for (unsigned char c : s) {
        int32_t next = child(node, c);
        if (next < 0) {
          next = static_cast<int32_t>(nodes_.size());
          nodes_.emplace_back();
          nodes_[node].kids.emplace_back(c, next);
        }
        node = next;
      }
      nodes_[node].id = id;
      nodes_[node].special = special;
      const uint8_t bit = special ? kSpecial : kPlain;
      first_[static_cast<unsigned char>(s[0])] |= bit;
      kinds_ |= bit;
    }
    bool active(bool with_special) const { return (kinds_ & mask(with_special)) != 0; }

    template <typename F>
    void split(std::string_view text, bool with_special, F&& emit) const {
      const uint8_t want = mask(with_special);
      if (!(kinds_ & want)) {
        if (!text.empty()) emit(text, -1);
        return;
      }
      const size_t n = text.size();
      size_t start = 0, pos = 0;
      while (pos < n) {
        if (!(first_[static_cast<unsigned char>(text[pos])] & want)) {
          ++pos;
          continue;
        }
        int32_t best_id = -1;
        size_t best_len = 0;
        int32_t node = 0;
        for (size_t i = pos; i < n; ++i) {
          node = child(node, static_cast<unsigned char>(text[i]));
          if (node < 0) break;
          const Node& nd = nodes_[node];
          if (nd.id >= 0 && (with_special || !nd.special)) best_id = nd.id, best_len = i + 1 - pos;
        }
        if (best_id < 0) {
          ++pos;
          continue;
        }
        if (pos > start) emit(text.substr(start, pos - start), -1);
        emit(text.substr(pos, best_len), best_id);
        pos += best_len;
        start = pos;
      }
      if (start < n) emit(text.substr(start), -1);
    }

   private:
    static constexpr uint8_t kPlain = 1, kSpecial = 2;
    static uint8_t mask(bool with_special) { return with_special ? kPlain | kSpecial : kPlain; }
    struct Node {
      std::vector<std::pair<unsigned char, int32_t>> kids;  // few per node: a linear scan is fastest
      int32_t id = -1;
      bool special = false;
    };
    int32_t child(int32_t node, unsigned char c) const {
      for (const auto& [k, next] : nodes_[node].kids)
        if (k == c) return next;
      return -1;
    }
    std::vector<Node> nodes_ = std::vector<Node>(1);  // nodes_[0] is the root
    std::array<uint8_t, 256> first_{};                // kPlain / kSpecial: some token starts with this byte
    uint8_t kinds_ = 0;
  };
  Trie tries_[2];  // [0]: "normalized": false (first pass), [1]: "normalized": true
};

}  // namespace dsforge::tok
