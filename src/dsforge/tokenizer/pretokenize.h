// The byte-level pre-tokenizer: the GPT-2 split pattern, compiled once with PCRE2 (UTF, UCP, JIT).
//
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// This is the pattern a Hugging Face `ByteLevel` pre-tokenizer with use_regex=true applies, so
// splitting here matches `tokenizers`. Bytes that are not valid UTF-8 never match the pattern; each
// maximal run of them becomes its own piece, so the pieces always concatenate back to the input.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace dsforge::tok {

// A sequence of patterns applied as Hugging Face "Split" steps with behaviour "Isolated": each
// pattern splits every piece left by the previous ones into its matches and the gaps between them.
// GPT-2 is one pattern; DeepSeek-V3 is three (digit groups of 1-3, CJK runs, then words/punctuation).
class PreTokenizer {
 public:
  explicit PreTokenizer(std::vector<std::string> patterns);
  PreTokenizer();  // GPT-2
  ~PreTokenizer();
  const std::vector<std::string>& patterns() const { return patterns_; }
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  // Appends the pieces of `text` to `out` (views into `text`). Thread-safe.
  void split(std::string_view text, std::vector<std::string_view>& out) const;

 private:
  void split_one(size_t k, std::string_view text, std::vector<std::string_view>& out) const;
  std::vector<std::string> patterns_;
  std::vector<void*> code_;  // pcre2_code* per pattern
};

// Named pattern sets: "gpt2" and "deepseek-v3" (llama.cpp's DEEPSEEK3_LLM, the V3 tokenizer.json's).
const std::vector<std::string>& pretokenizer_patterns(const std::string& name);

// The last position p in `text` where splitting text into [0, p) and [p, end) provably yields the
// same pieces as the whole: right after a '\n' that has non-space on both sides (no pattern
// alternative can cross it). 0 when there is none. Lets streams be encoded chunk by chunk.
size_t last_safe_split(std::string_view text);
// The same, skipping cuts that an occurrence of one of `atomic` (tokens matched whole before
// pre-tokenization: added or special tokens) would straddle, including one that runs past the end
// of `text` and may be completed by what follows. Only tokens containing '\n' can straddle a cut,
// so callers pass just those (usually none).
size_t last_safe_split(std::string_view text, const std::vector<std::string>& atomic);

// The default instance (compiled on first use).
const PreTokenizer& gpt2_pretokenizer();
// Shared compiled instances of the named pattern sets.
const PreTokenizer& named_pretokenizer(const std::string& name);

}  // namespace dsforge::tok
