// Byte-level BPE: train, encode, decode, and Hugging Face tokenizer.json io.
//
// Ids of a trained tokenizer: the special tokens first (in the order given; the first is
// end-of-text), then the 256 single bytes in GPT-2's byte-to-unicode order (printable bytes first, as
// in GPT-2's vocabulary), then one token per merge. Training breaks count ties toward the
// lexicographically greater pair of byte strings.
//
// Encoding follows Hugging Face `tokenizers`: added tokens (tokenizer.json `added_tokens`) are found
// in the raw text first (added_tokens.h: leftmost-longest); each match becomes its id, and only the
// text between matches is pre-tokenized (pretokenize.h) and merged, so no merge crosses an added
// token. Non-special added tokens (e.g. DeepSeek's 2,398 user-defined ones) always match; special
// tokens match only when encode() is asked to (allow_special). Both decode to their content.
//
//   auto tok = BpeTokenizer::train(docs, {.vocab_size = 1024, .special_tokens = {"<|endoftext|>"}});
//   tok.save("tokenizer.json");
//   std::vector<int32_t> ids = tok.encode("dog: a domestic animal");
//   assert(tok.decode(ids) == "dog: a domestic animal");
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "dsforge/tokenizer/pair_map.h"

namespace dsforge::tok {

class PreTokenizer;
class AddedTokenMatcher;

// GPT-2's reversible map from bytes to printable code points (as UTF-8), e.g. ' ' -> "Ġ".
const std::string& byte_to_unicode(uint8_t b);
// The 256 bytes in GPT-2's order (printable bytes first): the order of the byte tokens' ids.
const std::vector<uint8_t>& gpt2_byte_order();
// Inverse over a whole token string; returns false when a code point is not in the map.
bool unicode_to_bytes(const std::string& s, std::string& out);

class BpeTokenizer {
 public:
  struct TrainOptions {
    int64_t vocab_size = 1024;
    std::vector<std::string> special_tokens{"<|endoftext|>"};
    std::string pretokenizer = "gpt2";  // or "deepseek-v3" (pretokenize.h)
  };

  // An entry of tokenizer.json's added_tokens.
  struct AddedToken {
    std::string content;       // matched verbatim in raw text; what the id decodes to
    bool special = true;       // special: matched only when allow_special; listed by special_tokens()
    bool normalized = false;   // HF: matched in a second pass, inside the text between other matches
  };
  // Where a vocabulary and its merges were read from, so that errors name the file and the entry:
  // vocab "tokenizer.json: model.vocab"; merges "tokenizer.json: model.merges" (merge r is
  // reported as "[r]") or "merges.txt" with merge_lines (merge r as ":line").
  struct Source {
    std::string vocab = "tokenizer: vocab";
    std::string merges = "tokenizer: merges";
    std::vector<int64_t> merge_lines;
  };

  BpeTokenizer();
  BpeTokenizer(const BpeTokenizer& other);
  BpeTokenizer& operator=(const BpeTokenizer& other);

  static BpeTokenizer train(const std::vector<std::string>& docs, const TrainOptions& opts);
  // Streaming form: feed documents to a PieceCounter (memory grows with distinct pre-tokens, not
  // with the corpus), then train from its counts.
  class PieceCounter {
   public:
    explicit PieceCounter(const TrainOptions& opts);
    void add(std::string_view doc);
    const std::unordered_map<std::string, int64_t>& counts() const { return counts_; }

   private:
    std::shared_ptr<const AddedTokenMatcher> specials_;  // no merge crosses a special token
    const PreTokenizer* pre_;  // a shared named instance (pretokenize.h)
    std::unordered_map<std::string, int64_t> counts_;
    std::vector<std::string_view> pieces_;
  };
  static BpeTokenizer train_from_counts(const std::unordered_map<std::string, int64_t>& piece_counts,
                                        const TrainOptions& opts);
  // From a GPT-2-style vocabulary (token string in byte-to-unicode form -> id) and ranked merges.
  // Tokens named in `special_tokens` are matched verbatim in text and never split.
  static BpeTokenizer from_vocab_and_merges(const std::map<std::string, int32_t>& vocab,
                                            const std::vector<std::pair<std::string, std::string>>& merges,
                                            const std::vector<std::string>& special_tokens);
  // The general form: `added` (special or not, in file order) are vocabulary entries whose key is
  // their content, not a byte-level string. Errors are DataErrors that name `source`.
  static BpeTokenizer from_vocab_and_merges(const std::map<std::string, int32_t>& vocab,
                                            const std::vector<std::pair<std::string, std::string>>& merges,
                                            const std::vector<AddedToken>& added, const Source& source);
  // Reads vocab.json + merges.txt (GPT-2 release format).
  static BpeTokenizer from_gpt2_files(const std::string& vocab_json, const std::string& merges_txt,
                                      const std::vector<std::string>& special_tokens);

  static BpeTokenizer load(const std::string& tokenizer_json_path);
  static BpeTokenizer from_json(const std::string& json_text, const std::string& origin);
  std::string to_json() const;  // Hugging Face tokenizer.json
  void save(const std::string& path) const;

  // Special tokens in `text` become their ids when allow_special, else they are encoded as text;
  // non-special added tokens always become their ids.
  std::vector<int32_t> encode(std::string_view text, bool allow_special = true) const;
  // The last cut p of `text` such that encode(text[0, p)) + encode(text[p, end)) == encode(text),
  // for any continuation of text: tok::last_safe_split's newline rule, skipping any cut that falls
  // inside (or at the start of an unfinished) added token. 0 when there is none.
  size_t last_safe_split(std::string_view text) const;
  // Encodes documents on `threads` threads (0 = all cores); results in input order.
  std::vector<std::vector<int32_t>> encode_batch(const std::vector<std::string>& texts, bool allow_special = false,
                                                 int threads = 0) const;
  std::string decode(const std::vector<int32_t>& ids) const;

  int64_t vocab_size() const { return static_cast<int64_t>(bytes_.size()); }
  const std::string& token_bytes(int32_t id) const { return bytes_.at(static_cast<size_t>(id)); }
  int32_t special_id(const std::string& token) const;  // throws DataError when absent
  int32_t eot_id() const { return special_tokens_.empty() ? -1 : special_id(special_tokens_[0]); }
  const std::vector<std::string>& special_tokens() const { return special_tokens_; }
  // The non-special added tokens ("special": false), in file order.
  const std::vector<std::string>& added_tokens() const { return added_tokens_; }
  // Content -> id of an added token, special or not; -1 when `content` is not one.
  int32_t added_token_id(const std::string& content) const;
  const std::vector<std::pair<int32_t, int32_t>>& merges() const { return merges_; }
  // The pre-tokenizer's regex patterns, applied in order as isolated splits.
  const std::vector<std::string>& pretokenizer_patterns() const;
  void set_pretokenizer(const std::vector<std::string>& patterns);

 private:
  void build_index(const Source* source = nullptr);
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;

  std::shared_ptr<const PreTokenizer> pre_;             // shared; never null
  std::vector<std::string> bytes_;                      // id -> raw bytes (an added token: its content)
  std::vector<AddedToken> added_;                       // all added tokens, in file order
  std::vector<int32_t> added_ids_;                      // their ids
  std::vector<std::string> special_tokens_;             // the special ones' contents
  std::unordered_map<std::string, int32_t> special_ids_;
  std::vector<std::string> added_tokens_;               // the non-special ones' contents
  std::shared_ptr<const AddedTokenMatcher> matcher_;    // built from added_; never null
  std::vector<std::string> newline_tokens_;             // added tokens containing '\n' (last_safe_split)
  std::vector<int32_t> byte_ids_ = std::vector<int32_t>(256, -1);
  std::vector<std::pair<int32_t, int32_t>> merges_;     // rank -> (left, right)
  std::vector<int32_t> merge_result_;                   // rank -> merged id
  PairMap<int32_t> merge_rank_{1 << 10};                 // (left << 32 | right) -> rank

  // Pre-token results are cached per thread (no locks), under this instance's id: ids are never
  // reused, so a cache can never be read by another tokenizer that happens to share an address.
  uint64_t id_;
};

}  // namespace dsforge::tok
